//! The names a rule set defines (agents, schedules, pools), so that files
//! may refer to each other, and resolving a reference to one: an unknown
//! name is an error at the reference, with the nearest known name.

use std::collections::HashMap;

use toml::Spanned;

use super::Target;
use super::raw::File;
use crate::diag::{Location, SourceError};

/// Where each name is defined, for duplicate errors.
pub(super) struct Names {
    pub(super) agents: HashMap<String, usize>,
    pub(super) schedules: HashMap<String, usize>,
    pub(super) pools: HashMap<String, usize>,
}

/// Pass 1: every name of every file, each defined once; agents numbered in
/// name order.
pub(super) fn declare(files: &[File]) -> Result<Names, SourceError> {
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
    }
    let mut agent_names: Vec<&str> = files
        .iter()
        .flat_map(|f| f.raw.agents.keys().map(|k| k.get_ref().as_str()))
        .collect();
    agent_names.sort_unstable();
    Ok(Names {
        agents: agent_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i))
            .collect(),
        schedules: HashMap::new(),
        pools: HashMap::new(),
    })
}

/// The index `name` has in `table`; `kind` names the table in the error.
pub(super) fn lookup(
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

/// `assign`: `"none"`, `"pool:<name>"` or an agent's name.
pub(super) fn compile_target(
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
