//! Reading, merging and validating rules files.
//!
//! A rules path is one `.toml` file or a directory whose `*.toml` files are
//! merged in name order. Every error names the file, line and column.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::matcher::{Condition, Field, Pattern, RegexPattern, Substring};
use super::schedule::{self, Schedule};
use super::template::{Placeholder, Template};
use super::{Agent, Pool, Reply, Rule, Rules, Strategy, Target, WhenFull};
use crate::diag::{Location, SourceError};
use crate::duration::HumanDuration;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rules directory {path} has no *.toml file")]
    NoFiles { path: PathBuf },
    #[error(transparent)]
    Invalid(#[from] SourceError),
}

/// Loads a rules file, or every `*.toml` of a directory in name order.
pub fn load_path(path: &Path) -> Result<Rules, RulesError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| RulesError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let meta = std::fs::metadata(path).map_err(|source| RulesError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut sources = Vec::new();
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| RulesError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(RulesError::NoFiles {
                path: path.to_path_buf(),
            });
        }
        for f in files {
            let text = read(&f)?;
            sources.push((f, text));
        }
    } else {
        sources.push((path.to_path_buf(), read(path)?));
    }
    load_sources(&sources)
}

/// Merges already-read files, given in merge order.
pub fn load_sources(sources: &[(PathBuf, String)]) -> Result<Rules, RulesError> {
    let mut files = Vec::new();
    for (path, text) in sources {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        files.push(File { path, text, raw });
    }
    Ok(compile(&files)?)
}

struct File<'a> {
    path: &'a Path,
    text: &'a str,
    raw: RawFile,
}

impl File<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> SourceError {
        SourceError::new(self.path, self.text, span, message)
    }
    fn location(&self, span: Range<usize>) -> Location {
        Location::at(self.path, self.text, span.start)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    agents: BTreeMap<Spanned<String>, Spanned<RawAgent>>,
    #[serde(default)]
    schedules: BTreeMap<Spanned<String>, Spanned<RawSchedule>>,
    #[serde(default)]
    pools: BTreeMap<Spanned<String>, Spanned<RawPool>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: Spanned<i64>,
    #[serde(default)]
    skills: Vec<String>,
    schedule: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    max_open: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    hours: BTreeMap<Spanned<String>, Spanned<OneOrMany>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    agents: Spanned<Vec<Spanned<String>>>,
    strategy: Option<Spanned<String>>,
    when_full: Option<Spanned<String>>,
    max_open: Option<u32>,
    reassign_after: Option<Spanned<HumanDuration>>,
    max_reassign: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(rename = "match")]
    matches: Option<Spanned<RawValue>>,
    assign: Spanned<String>,
    #[serde(default)]
    require_skills: Vec<String>,
    note: Option<Spanned<String>>,
    reply: Option<Spanned<RawReply>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    from: Spanned<String>,
    text: Spanned<String>,
}

/// A `match` value with the position of every part, for precise errors.
enum RawValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Other(&'static str),
    List(Vec<Spanned<RawValue>>),
    Table(Vec<(Spanned<String>, Spanned<RawValue>)>),
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number, a list or a table")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
                i64::try_from(v).map(RawValue::Int).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
                Ok(RawValue::Bool(v))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawValue, E> {
                Ok(RawValue::Other("a float"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawValue::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(RawValue::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where each name is defined, for duplicate errors.
struct Names {
    agents: HashMap<String, usize>,
    schedules: HashMap<String, usize>,
    pools: HashMap<String, usize>,
}

fn compile(files: &[File]) -> Result<Rules, SourceError> {
    let default_tz = |f: &File| -> Result<TimeZone, SourceError> {
        match &f.raw.timezone {
            Some(tz) => zone(f, tz),
            None => Ok(TimeZone::UTC),
        }
    };
    let rules_tz = match files.iter().find(|f| f.raw.timezone.is_some()) {
        Some(f) => default_tz(f)?,
        None => TimeZone::UTC,
    };

    // Pass 1: every name, so files may refer to each other.
    let mut names = Names {
        agents: HashMap::new(),
        schedules: HashMap::new(),
        pools: HashMap::new(),
    };
    let mut agent_names: Vec<&str> = Vec::new();
    let mut seen_places: HashMap<(&str, String), Location> = HashMap::new();
    for f in files {
        for (kind, keys) in [
            ("agent", f.raw.agents.keys().collect::<Vec<_>>()),
            ("schedule", f.raw.schedules.keys().collect()),
            ("pool", f.raw.pools.keys().collect()),
        ] {
            for key in keys {
                let here = f.location(key.span());
                if let Some(first) = seen_places.insert((kind, key.get_ref().clone()), here) {
                    return Err(f.err(
                        key.span(),
                        format!("{kind} `{}` is already defined at {first}", key.get_ref()),
                    ));
                }
            }
        }
        agent_names.extend(f.raw.agents.keys().map(|k| k.get_ref().as_str()));
    }
    agent_names.sort_unstable();
    for (i, n) in agent_names.iter().enumerate() {
        names.agents.insert(n.to_string(), i);
    }

    // Schedules.
    let mut schedules = Vec::new();
    for f in files {
        let file_tz = default_tz(f)?;
        for (name, raw) in &f.raw.schedules {
            names
                .schedules
                .insert(name.get_ref().clone(), schedules.len());
            schedules.push(compile_schedule(
                f,
                name.get_ref(),
                raw.get_ref(),
                &file_tz,
            )?);
        }
    }

    // Agents, in name order.
    let mut agents: Vec<Option<Agent>> = vec![None; agent_names.len()];
    let mut ids: HashMap<i64, (String, Location)> = HashMap::new();
    for f in files {
        for (name, raw) in &f.raw.agents {
            let raw = raw.get_ref();
            if let Some(w) = &raw.weight
                && *w.get_ref() == 0
            {
                return Err(f.err(w.span(), "weight must be at least 1"));
            }
            let id = *raw.id.get_ref();
            if id <= 0 {
                return Err(f.err(
                    raw.id.span(),
                    format!("agent id {id} must be a positive HelpCrunch agent id"),
                ));
            }
            if let Some((other, at)) =
                ids.insert(id, (name.get_ref().clone(), f.location(raw.id.span())))
            {
                return Err(f.err(
                    raw.id.span(),
                    format!(
                        "agent id {id} of `{}` is also the id of `{other}` ({at})",
                        name.get_ref()
                    ),
                ));
            }
            let schedule = match &raw.schedule {
                Some(s) => Some(lookup(f, s, &names.schedules, "schedule")?),
                None => None,
            };
            agents[names.agents[name.get_ref()]] = Some(Agent {
                name: name.get_ref().clone(),
                id,
                skills: raw.skills.clone(),
                schedule,
                weight: raw.weight.as_ref().map_or(1, |w| *w.get_ref()),
                max_open: raw.max_open,
            });
        }
    }
    let agents: Vec<Agent> = agents
        .into_iter()
        .map(|a| a.expect("every name was filled"))
        .collect();

    // Pools.
    let mut pools = Vec::new();
    for f in files {
        for (name, raw) in &f.raw.pools {
            names.pools.insert(name.get_ref().clone(), pools.len());
            pools.push(compile_pool(f, name.get_ref(), raw.get_ref(), &names)?);
        }
    }

    // Rules, in file order.
    let mut rules = Vec::new();
    let mut rule_names: HashMap<String, Location> = HashMap::new();
    for f in files {
        let file_tz = default_tz(f)?;
        for raw in &f.raw.rules {
            let raw = raw.get_ref();
            let here = f.location(raw.name.span());
            if let Some(first) = rule_names.insert(raw.name.get_ref().to_lowercase(), here.clone())
            {
                return Err(f.err(
                    raw.name.span(),
                    format!(
                        "rule name `{}` is already used at {first}",
                        raw.name.get_ref()
                    ),
                ));
            }
            let conditions =
                match &raw.matches {
                    Some(m) => match m.get_ref() {
                        RawValue::Table(entries) => compile_match(f, entries, &names, &file_tz)?,
                        _ => return Err(f.err(
                            m.span(),
                            "`match` must be a table, e.g. match = { department = \"Billing\" }",
                        )),
                    },
                    None => Vec::new(),
                };
            let target = compile_target(f, &raw.assign, &names)?;
            let note = raw.note.as_ref().map(|n| template(f, n)).transpose()?;
            let reply = match &raw.reply {
                Some(r) => {
                    let r = r.get_ref();
                    Some(Reply {
                        from: lookup(f, &r.from, &names.agents, "agent")?,
                        text: template(f, &r.text)?,
                    })
                }
                None => None,
            };
            let schedule = conditions.iter().find_map(|c| match c {
                Condition::Within { schedule } | Condition::Outside { schedule } => Some(*schedule),
                _ => None,
            });
            let uses_next_open = note
                .iter()
                .chain(reply.iter().map(|r| &r.text))
                .any(|t| t.uses(Placeholder::NextOpen));
            if uses_next_open && schedule.is_none() {
                let span = raw
                    .note
                    .as_ref()
                    .map(|n| n.span())
                    .or(raw.reply.as_ref().map(|r| r.span()))
                    .unwrap_or(0..0);
                return Err(f.err(
                    span,
                    "`{next_open}` needs the rule to match `within` or `outside` a schedule",
                ));
            }
            rules.push(Rule {
                name: raw.name.get_ref().clone(),
                conditions,
                target,
                require_skills: raw.require_skills.clone(),
                note,
                reply,
                schedule,
                location: here,
            });
        }
    }

    Ok(Rules {
        timezone: rules_tz,
        agents,
        schedules,
        pools,
        index: super::index::RuleIndex::build(&rules),
        rules,
        files: files.iter().map(|f| f.path.to_path_buf()).collect(),
    })
}

/// Parses a template, locating errors inside the string. The offset is
/// exact for strings without escapes, which templates rarely have.
fn template(f: &File, text: &Spanned<String>) -> Result<Template, SourceError> {
    Template::parse(text.get_ref()).map_err(|e| {
        let start = text.span().start + 1 + e.offset;
        f.err(start..start, e.message)
    })
}

fn zone(f: &File, name: &Spanned<String>) -> Result<TimeZone, SourceError> {
    TimeZone::get(name.get_ref()).map_err(|_| {
        f.err(
            name.span(),
            format!(
                "unknown time zone `{}` (use an IANA name like \"Europe/Kyiv\")",
                name.get_ref()
            ),
        )
    })
}

fn lookup(
    f: &File,
    name: &Spanned<String>,
    table: &HashMap<String, usize>,
    kind: &str,
) -> Result<usize, SourceError> {
    table.get(name.get_ref()).copied().ok_or_else(|| {
        let nearest = table
            .keys()
            .map(|k| (strsim::jaro_winkler(k, name.get_ref()), k))
            .filter(|(s, _)| *s > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        f.err(
            name.span(),
            format!("unknown {kind} `{}`{nearest}", name.get_ref()),
        )
    })
}

fn compile_schedule(
    f: &File,
    name: &str,
    raw: &RawSchedule,
    file_tz: &TimeZone,
) -> Result<Schedule, SourceError> {
    let tz = match &raw.timezone {
        Some(tz) => zone(f, tz)?,
        None => file_tz.clone(),
    };
    let mut days: [Vec<schedule::Range>; 7] = Default::default();
    for (key, value) in &raw.hours {
        let indexes = schedule::parse_days(key.get_ref()).map_err(|e| f.err(key.span(), e))?;
        let texts = match value.get_ref() {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        };
        for text in texts {
            let range = schedule::parse_range(text).map_err(|e| f.err(value.span(), e))?;
            for &d in &indexes {
                days[d].push(range);
            }
        }
    }
    let mut holidays = BTreeSet::new();
    for h in &raw.holidays {
        let date: jiff::civil::Date = h.get_ref().parse().map_err(|_| {
            f.err(
                h.span(),
                format!("holiday `{}` is not a date like 2026-12-25", h.get_ref()),
            )
        })?;
        holidays.insert(date);
    }
    Ok(Schedule {
        name: name.to_string(),
        tz,
        days,
        holidays,
    })
}

fn compile_pool(f: &File, name: &str, raw: &RawPool, names: &Names) -> Result<Pool, SourceError> {
    if let (Some(m), None) = (&raw.max_reassign, &raw.reassign_after) {
        return Err(f.err(m.span(), "`max_reassign` needs `reassign_after`"));
    }
    if let Some(r) = &raw.reassign_after
        && r.get_ref().0.is_zero()
    {
        return Err(f.err(r.span(), "`reassign_after` must be longer than zero"));
    }
    if raw.agents.get_ref().is_empty() {
        return Err(f.err(raw.agents.span(), format!("pool `{name}` has no agents")));
    }
    let mut members = Vec::new();
    for a in raw.agents.get_ref() {
        let i = lookup(f, a, &names.agents, "agent")?;
        if !members.contains(&i) {
            members.push(i);
        }
    }
    members.sort_unstable();
    let strategy = match &raw.strategy {
        None => Strategy::RoundRobin,
        Some(s) => match Strategy::ALL.iter().find(|st| st.name() == s.get_ref()) {
            Some(st) => *st,
            None => {
                let known: Vec<&str> = Strategy::ALL.iter().map(|st| st.name()).collect();
                return Err(f.err(
                    s.span(),
                    format!(
                        "unknown strategy `{}` (use {})",
                        s.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        },
    };
    let when_full = match &raw.when_full {
        None => WhenFull::Wait,
        Some(w) => match w.get_ref().as_str() {
            "wait" => WhenFull::Wait,
            "next" => WhenFull::Next,
            "leave" => WhenFull::Leave,
            other => {
                return Err(f.err(
                    w.span(),
                    format!("unknown when_full `{other}` (use wait, next or leave)"),
                ));
            }
        },
    };
    Ok(Pool {
        name: name.to_string(),
        members,
        strategy,
        when_full,
        max_open: raw.max_open,
        reassign_after: raw.reassign_after.as_ref().map(|r| r.get_ref().0),
        max_reassign: raw.max_reassign.as_ref().map_or(1, |m| *m.get_ref()),
    })
}

fn compile_target(
    f: &File,
    assign: &Spanned<String>,
    names: &Names,
) -> Result<Target, SourceError> {
    let text = assign.get_ref();
    if text == "none" {
        return Ok(Target::Nobody);
    }
    if let Some(pool) = text.strip_prefix("pool:") {
        let spanned = Spanned::new(assign.span(), pool.to_string());
        return lookup(f, &spanned, &names.pools, "pool").map(Target::Pool);
    }
    lookup(f, assign, &names.agents, "agent").map(Target::Agent)
}

const MATCH_KEYS: &[&str] = &[
    "department",
    "customer.email",
    "customer.name",
    "customer.id",
    "customer.user_id",
    "status",
    "created_with",
    "message",
    "attr.<key>",
    "within",
    "outside",
    "weekday",
    "any",
    "not",
];

fn compile_match(
    f: &File,
    entries: &[(Spanned<String>, Spanned<RawValue>)],
    names: &Names,
    tz: &TimeZone,
) -> Result<Vec<Condition>, SourceError> {
    let mut out = Vec::new();
    for (key, value) in entries {
        compile_key(f, key.get_ref(), key.span(), value, names, tz, &mut out)?;
    }
    Ok(out)
}

fn compile_key(
    f: &File,
    key: &str,
    key_span: Range<usize>,
    value: &Spanned<RawValue>,
    names: &Names,
    tz: &TimeZone,
    out: &mut Vec<Condition>,
) -> Result<(), SourceError> {
    // `customer = { email = ... }` (a dotted key) and `"customer.email"` (a
    // quoted one) mean the same.
    if let ("customer" | "attr", RawValue::Table(sub)) = (key, value.get_ref()) {
        for (k, v) in sub {
            compile_key(
                f,
                &format!("{key}.{}", k.get_ref()),
                k.span(),
                v,
                names,
                tz,
                out,
            )?;
        }
        return Ok(());
    }
    let field = match key {
        "department" => Some(Field::Department),
        "customer.email" => Some(Field::CustomerEmail),
        "customer.name" => Some(Field::CustomerName),
        "customer.id" => Some(Field::CustomerId),
        "customer.user_id" => Some(Field::CustomerUserId),
        "status" => Some(Field::Status),
        "created_with" => Some(Field::CreatedWith),
        "message" => Some(Field::Message),
        k if k.starts_with("attr.") && k.len() > 5 => Some(Field::Attr(k[5..].to_lowercase())),
        _ => None,
    };
    if let Some(field) = field {
        let pattern = compile_pattern(f, value)?;
        out.push(Condition::Field {
            key: key.to_string(),
            field,
            pattern,
        });
        return Ok(());
    }
    match key {
        "within" | "outside" => {
            let RawValue::Str(name) = value.get_ref() else {
                return Err(f.err(value.span(), format!("`{key}` takes a schedule name")));
            };
            let schedule = lookup(
                f,
                &Spanned::new(value.span(), name.clone()),
                &names.schedules,
                "schedule",
            )?;
            out.push(if key == "within" {
                Condition::Within { schedule }
            } else {
                Condition::Outside { schedule }
            });
        }
        "weekday" => {
            let items: Vec<&Spanned<RawValue>> = match value.get_ref() {
                RawValue::List(items) => items.iter().collect(),
                _ => vec![value],
            };
            let mut days = 0u8;
            for item in items {
                let RawValue::Str(s) = item.get_ref() else {
                    return Err(f.err(
                        item.span(),
                        "`weekday` takes day names like \"mon\" or \"mon-fri\"",
                    ));
                };
                for d in schedule::parse_days(s).map_err(|e| f.err(item.span(), e))? {
                    days |= 1 << d;
                }
            }
            out.push(Condition::Weekday {
                days,
                tz: tz.clone(),
            });
        }
        "any" | "not" => {
            let groups = match value.get_ref() {
                // A list of tables: each table is one group.
                RawValue::List(items) => items
                    .iter()
                    .map(|item| match item.get_ref() {
                        RawValue::Table(entries) => compile_match(f, entries, names, tz),
                        _ => Err(f.err(item.span(), format!("`{key}` takes tables of conditions"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                // One table: for `any`, each key alone; for `not`, all together.
                RawValue::Table(entries) if key == "any" => entries
                    .iter()
                    .map(|e| compile_match(f, std::slice::from_ref(e), names, tz))
                    .collect::<Result<Vec<_>, _>>()?,
                RawValue::Table(entries) => vec![compile_match(f, entries, names, tz)?],
                _ => {
                    return Err(f.err(
                        value.span(),
                        format!("`{key}` takes a table or a list of tables"),
                    ));
                }
            };
            out.push(if key == "any" {
                Condition::Any(groups)
            } else {
                Condition::Not(groups)
            });
        }
        _ => {
            let known = MATCH_KEYS
                .iter()
                .map(|k| (strsim::jaro_winkler(k, key), k))
                .filter(|(s, _)| *s > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("; did you mean `{k}`?"))
                .unwrap_or_else(|| format!("; known keys: {}", MATCH_KEYS.join(", ")));
            return Err(f.err(key_span, format!("unknown match key `{key}`{known}")));
        }
    }
    Ok(())
}

fn compile_pattern(f: &File, value: &Spanned<RawValue>) -> Result<Pattern, SourceError> {
    match value.get_ref() {
        RawValue::Str(s) => Ok(Pattern::text(s)),
        RawValue::Int(n) => Ok(Pattern::Exact(n.to_string())),
        RawValue::List(items) => Ok(Pattern::AnyOf(
            items
                .iter()
                .map(|i| compile_pattern(f, i))
                .collect::<Result<_, _>>()?,
        )),
        RawValue::Table(entries) => {
            let [(k, v)] = entries.as_slice() else {
                return Err(f.err(
                    value.span(),
                    "a match table takes exactly one of `regex`, `contains`, `exists`",
                ));
            };
            match (k.get_ref().as_str(), v.get_ref()) {
                ("regex", RawValue::Str(r)) => {
                    RegexPattern::new(r).map(Pattern::Regex).map_err(|e| {
                        f.err(
                            v.span(),
                            format!("bad regex: {}", e.to_string().lines().last().unwrap_or("")),
                        )
                    })
                }
                ("contains", RawValue::Str(s)) => {
                    Ok(Pattern::Contains(Substring::new(&s.to_lowercase())))
                }
                ("exists", RawValue::Bool(b)) => Ok(Pattern::Exists(*b)),
                ("regex" | "contains", _) => {
                    Err(f.err(v.span(), format!("`{}` takes a string", k.get_ref())))
                }
                ("exists", _) => Err(f.err(v.span(), "`exists` takes true or false")),
                (other, _) => Err(f.err(
                    k.span(),
                    format!("unknown match operator `{other}` (use regex, contains or exists)"),
                )),
            }
        }
        RawValue::Bool(_) => Err(f.err(value.span(), "a match value cannot be a boolean")),
        RawValue::Other(what) => {
            Err(f.err(value.span(), format!("a match value cannot be {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Rules, RulesError> {
        let sources: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        load_sources(&sources)
    }

    #[test]
    fn files_merge_in_order_and_refer_to_each_other() {
        let r = load(&[
            ("10-agents.toml", "timezone = \"Europe/Kyiv\"\n[agents]\nbob = { id = 2 }\nalice = { id = 1 }\n[pools.p]\nagents = [\"bob\", \"alice\"]\n"),
            ("20-rules.toml", "[[rule]]\nname = \"first\"\nassign = \"pool:p\"\n[[rule]]\nname = \"second\"\nassign = \"bob\"\n"),
        ])
        .unwrap();
        let names: Vec<&str> = r.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"], "agents sorted by name");
        assert_eq!(r.pools[0].members, vec![0, 1]);
        assert_eq!(r.rules[1].location.to_string(), "20-rules.toml:5:8");
        assert_eq!(r.timezone.iana_name(), Some("Europe/Kyiv"));
    }

    #[test]
    fn a_name_defined_twice_across_files_names_both_places() {
        let err = load(&[
            ("10-a.toml", "[agents]\nalice = { id = 1 }\n"),
            ("20-b.toml", "\n[agents]\nalice = { id = 2 }\n"),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "20-b.toml:3:1: agent `alice` is already defined at 10-a.toml:2:1"
        );
    }

    #[test]
    fn every_match_value_form_compiles() {
        let r = load(&[(
            "r.toml",
            r#"
[agents]
a = { id = 1 }
[schedules.s]
hours = { all = "00:00-24:00" }
[[rule]]
name = "all forms"
match = { department = 7, customer.email = ["x@y.z", "*@corp.com"], customer.name = { contains = "CEO" }, customer.user_id = { exists = true }, message = { regex = "(?i)refund" }, "attr.tier" = "gold", weekday = ["mon", "sat-sun"], within = "s", any = { status = "new", created_with = "public_api" }, not = [{ customer.id = 5 }] }
assign = "a"
"#,
        )])
        .unwrap();
        let keys: Vec<&str> = r.rules[0].conditions.iter().map(|c| c.key()).collect();
        assert_eq!(
            keys,
            [
                "department",
                "customer.email",
                "customer.name",
                "customer.user_id",
                "message",
                "attr.tier",
                "weekday",
                "within",
                "any",
                "not"
            ]
        );
    }
}
