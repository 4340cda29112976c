//! The files `assignd init` writes, from the team as the account lists it:
//! pure, the account's answers in and text out, so that tests can load
//! what comes out (its commented examples included).

use std::collections::HashSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::helpcrunch::types::AgentRef;
use crate::helpcrunch::{DepartmentRef, Departments};

/// The pool every agent is put in.
pub(super) const POOL: &str = "team";
/// Names the rules file itself uses: no agent, pool or rule may take them.
const RESERVED: [&str; 4] = ["none", POOL, "after-hours", "everyone"];

/// An agent of the account, with the name the rules give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    pub name: String,
    pub id: i64,
    /// Who it is in the account (name, email, role), for a comment.
    pub about: String,
}

/// A department of the account, with the names of its agents in the rules.
#[derive(Debug, Clone)]
pub(super) struct Department {
    /// The name the example pool and rule take.
    pub slug: String,
    pub source: DepartmentRef,
    pub members: Vec<String>,
}

/// The account's team, named for the rules.
#[derive(Debug, Clone)]
pub(super) struct Team {
    /// By name.
    pub members: Vec<Member>,
    /// Or why the account lists none.
    pub departments: Result<Vec<Department>, String>,
}

impl Team {
    pub(super) fn new(agents: &[AgentRef], departments: &Departments) -> Self {
        let mut agents = agents.to_vec();
        agents.sort_by_key(|a| a.id.0);
        agents.dedup_by_key(|a| a.id.0);
        let mut members: Vec<Member> = agent_names(&agents)
            .into_iter()
            .zip(&agents)
            .map(|(name, a)| Member {
                name,
                id: a.id.0,
                about: about(a),
            })
            .collect();
        // Named in id order (so that a suffix goes to the newer agent),
        // listed by name, as round-robin rotates.
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let departments = match departments {
            Departments::Listed(list) => Ok(named_departments(list, &members)),
            Departments::Unavailable(why) => Err(why.clone()),
        };
        Self {
            members,
            departments,
        }
    }
}

fn about(a: &AgentRef) -> String {
    let mut text = a.name.clone().unwrap_or_default();
    for (sep, part) in [
        (" ", a.email.as_ref().map(|e| format!("<{e}>"))),
        (", ", a.role.clone()),
    ] {
        if let Some(part) = part {
            if !text.is_empty() {
                text.push_str(sep);
            }
            text.push_str(&part);
        }
    }
    comment_text(&text)
}

fn named_departments(list: &[DepartmentRef], members: &[Member]) -> Vec<Department> {
    let mut taken: HashSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    list.iter()
        .map(|d| {
            let base = d
                .name
                .as_deref()
                .and_then(slug)
                .unwrap_or_else(|| format!("department-{}", d.id));
            Department {
                slug: unique(&base, &mut taken),
                source: d.clone(),
                members: members
                    .iter()
                    .filter(|m| d.agents.iter().any(|a| a.0 == m.id))
                    .map(|m| m.name.clone())
                    .collect(),
            }
        })
        .collect()
}

/// Names for the rules, one per agent (sorted by id): the first name when
/// no one else in the team has it, else the whole name, else the email's
/// local part, else `agent-<id>`; made unique with `-2`, `-3`, ...
pub(super) fn agent_names(agents: &[AgentRef]) -> Vec<String> {
    let first: Vec<Option<String>> = agents
        .iter()
        .map(|a| a.name.as_deref()?.split_whitespace().next().and_then(slug))
        .collect();
    let mut taken: HashSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    agents
        .iter()
        .zip(&first)
        .map(|(a, own)| {
            let shared = |f: &String| first.iter().flatten().filter(|g| *g == f).count() > 1;
            let wanted = match own {
                Some(f) if !shared(f) => f.clone(),
                _ => full_name(a),
            };
            unique(&wanted, &mut taken)
        })
        .collect()
}

fn full_name(a: &AgentRef) -> String {
    let local = |e: &String| e.split('@').next().and_then(slug);
    a.name
        .as_deref()
        .and_then(slug)
        .or_else(|| a.email.as_ref().and_then(local))
        .unwrap_or_else(|| format!("agent-{}", a.id))
}

fn unique(wanted: &str, taken: &mut HashSet<String>) -> String {
    let mut name = wanted.to_string();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{wanted}-{n}");
        n += 1;
    }
    name
}

/// Letters with diacritics, as their plain Latin letters.
const FOLDS: &[(&str, &str)] = &[
    ("àáâãäåāăą", "a"),
    ("æ", "ae"),
    ("çćč", "c"),
    ("ďđ", "d"),
    ("èéêëēėęě", "e"),
    ("ğ", "g"),
    ("ìíîïīı", "i"),
    ("ł", "l"),
    ("ñńň", "n"),
    ("òóôõöøō", "o"),
    ("œ", "oe"),
    ("ř", "r"),
    ("śšş", "s"),
    ("ß", "ss"),
    ("ť", "t"),
    ("ùúûüūů", "u"),
    ("ýÿ", "y"),
    ("źżž", "z"),
];

/// A name fit for a TOML bare key and the command line: lower-case ASCII
/// letters and digits joined by `-`, at most 32 characters; `None` if
/// nothing of `text` is left.
pub(super) fn slug(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if let Some((_, plain)) = FOLDS.iter().find(|(from, _)| from.contains(c)) {
            out.push_str(plain);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(32);
    let out = out.trim_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// Text fit for a one-line comment.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// Where the files go, and the key file the config names.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub rules_dir: PathBuf,
    pub rules: PathBuf,
    pub credentials: PathBuf,
    pub api_key_file: PathBuf,
}

impl Layout {
    /// The files under `dir` (absolute); the key file is `api_key_file`,
    /// else the credential's place under `dir`.
    pub(super) fn new(dir: &Path, api_key_file: Option<PathBuf>) -> Self {
        let credentials = dir.join("credentials");
        Self {
            dir: dir.to_path_buf(),
            config: dir.join("assignd.toml"),
            rules_dir: dir.join("rules"),
            rules: dir.join("rules").join("10-team.toml"),
            api_key_file: api_key_file
                .unwrap_or_else(|| credentials.join(crate::secrets::API_KEY.credential)),
            credentials,
        }
    }
}

/// `assignd.toml`: the account's address, where the key file goes, the
/// rules directory and a loopback listener; the rest at its defaults.
pub(super) fn config_text(layout: &Layout, base_url: &str) -> String {
    let path = |p: &Path| quoted(&p.display().to_string());
    format!(
        r#"# assignd's configuration, written by `assignd init`. Every key: README.md,
# "Configuration" (man assignd). Secrets are never written here.

[helpcrunch]
base_url = {base_url}
# The API key. The service reads its credential helpcrunch-api-key first
# (LoadCredential= in the unit); this file is for assignd run by hand.
api_key_file = {key}
timeout = "10s"

[helpcrunch.rate_limit]
requests = 120          # the account's limit, all calls together
per = "1m"

[database]
# url = "sqlite:///var/lib/assignd/assignd.db"  # default: $STATE_DIRECTORY/assignd.db under systemd, else /var/lib/assignd/assignd.db
synchronous = "full"

[rules]
path = {rules}   # every *.toml in it, in name order

[worker]
# Shadow mode: assignd decides every chat and records what it would have
# done, and writes nothing to HelpCrunch; the account's own routing and
# people go on as before. Compare with `assignd report --compare`, then
# go live: "live" (docs/experiments.md, "From shadow to live").
mode = "shadow"

[http]
listen = "127.0.0.1:9187"   # webhooks, /readyz, /metrics: keep it on loopback, behind your reverse proxy
# How HelpCrunch reaches the listener; `assignd check` then prints the webhook address.
# public_url = "https://assignd.example.com"
# The webhook signing key: the credential webhook-key, or
# webhook_key_file = {webhook_key}

[log]
format = "text"
"#,
        base_url = quoted(base_url),
        key = path(&layout.api_key_file),
        rules = path(&layout.rules_dir),
        webhook_key = path(
            &layout
                .credentials
                .join(crate::secrets::WEBHOOK_KEY.credential)
        ),
    )
}

/// `rules/10-team.toml`: every agent in one round-robin pool; office hours,
/// after hours and the departments as commented examples (uncommented when
/// `live`, for the tests that load them).
pub(super) fn rules_text(team: &Team, timezone: &str, live: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Routing rules, written by `assignd init` from the HelpCrunch account: every\n\
         # agent in one round-robin pool. Make them yours (docs/rules.md, man assignd);\n\
         # `assignd check` validates them and `systemctl reload assignd` applies them.\n\n\
         timezone = {}   # schedules and \"today\" are in this zone\n\n\
         [agents]\n\
         # name = {{ id = <HelpCrunch agent id> }}; add skills, max_open, a schedule (a shift), ...",
        quoted(timezone)
    );
    for m in &team.members {
        let _ = writeln!(out, "{} = {{ id = {} }}   # {}", m.name, m.id, m.about);
    }
    let ex = Example { live };
    out.push_str("\n# Office hours, for the after-hours rule below: uncomment both.\n");
    ex.lines(
        &mut out,
        &[
            "[schedules.office]",
            "hours = { mon-fri = \"09:00-18:00\" }",
            "holidays = [\"2026-12-25\", \"2027-01-01\"]",
        ],
    );
    let names: Vec<String> = team.members.iter().map(|m| quoted(&m.name)).collect();
    let _ = writeln!(
        out,
        "\n[pools.{POOL}]\nagents = [{}]\nstrategy = \"round-robin\"\n# max_open = 6            # a cap per agent: more chats wait until a seat frees",
        names.join(", ")
    );
    departments_text(&mut out, team, ex);
    after_hours_text(&mut out, team, ex);
    let _ = writeln!(
        out,
        "\n[[rule]]\nname = \"everyone\"\nassign = \"pool:{POOL}\""
    );
    out
}

/// Lines that are examples: commented, unless live.
#[derive(Clone, Copy)]
struct Example {
    live: bool,
}

impl Example {
    fn lines(self, out: &mut String, lines: &[&str]) {
        for line in lines {
            let _ = writeln!(out, "{}{line}", if self.live { "" } else { "# " });
        }
    }
}

fn departments_text(out: &mut String, team: &Team, ex: Example) {
    let list = match &team.departments {
        Err(why) => {
            let _ = writeln!(
                out,
                "\n# The account lists no departments ({}).",
                comment_text(why)
            );
            return;
        }
        Ok(list) if list.is_empty() => {
            out.push_str("\n# The account has no departments.\n");
            return;
        }
        Ok(list) => list,
    };
    out.push_str(
        "\n# The account's departments: to route one apart, uncomment its lines. Set its\n\
         # auto-assignment to \"Manual\" in HelpCrunch, or it competes with assignd.\n",
    );
    for d in list {
        department_text(out, d, ex);
    }
}

fn department_text(out: &mut String, d: &Department, ex: Example) {
    let name = d.source.label();
    // A name with a wildcard would match more than itself: its id then.
    let value = match &d.source.name {
        Some(n) if !n.contains(['*', '?']) => quoted(n),
        _ => d.source.id.to_string(),
    };
    let _ = writeln!(out, "\n# {} (id {})", comment_text(&name), d.source.id);
    let target = if d.members.is_empty() {
        format!("pool:{POOL}")
    } else {
        let members: Vec<String> = d.members.iter().map(|m| quoted(m)).collect();
        ex.lines(
            out,
            &[
                &format!("[pools.{}]", d.slug),
                &format!("agents = [{}]", members.join(", ")),
            ],
        );
        format!("pool:{}", d.slug)
    };
    ex.lines(
        out,
        &[
            "[[rule]]",
            &format!("name = {}", quoted(&d.slug)),
            &format!("match = {{ department = {value} }}"),
            &format!("assign = {}", quoted(&target)),
        ],
    );
}

fn after_hours_text(out: &mut String, team: &Team, ex: Example) {
    let Some(first) = team.members.first() else {
        return;
    };
    out.push_str(
        "\n# After hours: the team still gets the chat, and the customer a reply saying\n\
         # when the office opens. Needs [schedules.office] above.\n",
    );
    ex.lines(
        out,
        &[
            "[[rule]]",
            "name = \"after-hours\"",
            "match = { outside = \"office\" }",
            &format!("assign = \"pool:{POOL}\""),
            &format!(
                "reply = {{ from = {}, text = \"Thanks for writing! We are back at {{next_open}}.\" }}",
                quoted(&first.name)
            ),
        ],
    );
}

#[cfg(test)]
mod tests;
