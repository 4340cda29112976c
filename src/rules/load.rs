//! Reading and merging rules files: each is parsed into the TOML model of
//! [`super::raw`], which [`super::compile`] turns into [`Rules`].
//!
//! A rules path is one `.toml` file or a directory whose `*.toml` files are
//! merged in name order. Every error names the file, line and column.

use std::path::{Path, PathBuf};

use super::Rules;
use super::compile::compile;
use super::raw::{File, RawFile};
use crate::diag::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no rules: rules directory {path} has no *.toml file, so every chat would end no_match; \
         add a file with at least one [[rule]] that assigns an agent or a pool"
    )]
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

/// Merges already-read files, given in merge order. A set in which no rule
/// can ever assign a chat (none at all, say) is an error too.
pub fn load_sources(sources: &[(PathBuf, String)]) -> Result<Rules, RulesError> {
    let mut files = Vec::new();
    for (path, text) in sources {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        files.push(File { path, text, raw });
    }
    let rules = compile(&files)?;
    super::validate::ensure_can_assign(&rules, sources)?;
    Ok(rules)
}

/// [`load_sources`] from (name, text) pairs, for tests.
#[cfg(test)]
pub(super) fn load_texts(files: &[(&str, &str)]) -> Result<Rules, RulesError> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    load_sources(&sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Rules, RulesError> {
        load_texts(files)
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

    const ONE_POOL: &str = "[agents]\na = { id = 1 }\n[pools.p]\nagents = [\"a\"]\n";

    #[test]
    fn priority_is_an_integer_zero_by_default_and_may_be_negative() {
        let r = load(&[(
            "r.toml",
            &format!(
                "{ONE_POOL}[[rule]]\nname = \"urgent\"\npriority = 10\nassign = \"pool:p\"\n\
                 [[rule]]\nname = \"low\"\npriority = -5\nassign = \"a\"\n\
                 [[rule]]\nname = \"plain\"\nassign = \"a\"\n"
            ),
        )])
        .unwrap();
        let p: Vec<i64> = r.rules.iter().map(|r| r.priority).collect();
        assert_eq!(p, [10, -5, 0]);
        let err = load(&[(
            "r.toml",
            "[agents]\na = { id = 1 }\n[[rule]]\nname = \"x\"\npriority = \"high\"\nassign = \"a\"\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("r.toml:5:12: "), "{err}");
    }

    #[test]
    fn max_per_hour_on_agents_and_pools_with_the_agents_winning() {
        let r = load(&[(
            "r.toml",
            "[agents]\na = { id = 1, max_per_hour = 3 }\nb = { id = 2 }\n\
             [pools.p]\nagents = [\"a\", \"b\"]\nmax_per_hour = 5\n\
             [[rule]]\nname = \"all\"\nassign = \"pool:p\"\n",
        )])
        .unwrap();
        let p = &r.pools[0];
        assert_eq!(p.max_per_hour, Some(5));
        assert_eq!(p.hourly_cap(&r.agents[0]), Some(3), "the agent's own wins");
        assert_eq!(p.hourly_cap(&r.agents[1]), Some(5));
    }

    #[test]
    fn max_per_hour_must_be_at_least_one() {
        let rule = "[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";
        for (text, at) in [
            (
                format!(
                    "[agents]\na = {{ id = 1, max_per_hour = 0 }}\n[pools.p]\nagents = [\"a\"]\n{rule}"
                ),
                "r.toml:2:30",
            ),
            (
                format!(
                    "[agents]\na = {{ id = 1, max_per_hour = -2 }}\n[pools.p]\nagents = [\"a\"]\n{rule}"
                ),
                "r.toml:2:30",
            ),
            (format!("{ONE_POOL}max_per_hour = 0\n{rule}"), "r.toml:5:16"),
        ] {
            let err = load(&[("r.toml", &text)]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "{at}: `max_per_hour` must be a whole number of assignments from 1"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn sticky_for_is_a_duration_of_30_days_by_default() {
        let rule = "[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";
        let r = load(&[("r.toml", &format!("{ONE_POOL}{rule}"))]).unwrap();
        assert_eq!(
            r.pools[0].sticky_for,
            std::time::Duration::from_secs(30 * 86_400)
        );
        let text = format!("{ONE_POOL}strategy = \"sticky\"\nsticky_for = \"36h\"\n{rule}");
        let r = load(&[("r.toml", &text)]).unwrap();
        assert_eq!(
            r.pools[0].sticky_for,
            std::time::Duration::from_secs(36 * 3600)
        );
        for (bad, message) in [
            ("\"0s\"", "`sticky_for` must be longer than zero"),
            ("\"soon\"", "`soon` is not a duration"),
        ] {
            let text = format!("{ONE_POOL}sticky_for = {bad}\n{rule}");
            let err = load(&[("r.toml", &text)]).unwrap_err().to_string();
            assert!(
                err.starts_with("r.toml:5:14: ") && err.contains(message),
                "{err}"
            );
        }
    }
}
