//! `assignd check`: validate like `nginx -t`, then summarise and warn.

use std::path::Path;

use super::Failure;
use crate::config::Config;
use crate::rules::{self, Target};

pub(super) fn run(config_path: &Path) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::Invalid(e.into()))?;
    let rules = rules::load_path(&config.rules.path).map_err(|e| Failure::Invalid(e.into()))?;
    println!("config {}: ok", config_path.display());
    for f in &rules.files {
        println!("rules  {}: ok", f.display());
    }
    println!("time zone: {}", rules.timezone.iana_name().unwrap_or("UTC"));
    println!("agents ({}):", rules.agents.len());
    for a in &rules.agents {
        let shift = a
            .schedule
            .map(|s| format!(", shift {}", rules.schedules[s].name))
            .unwrap_or_default();
        let skills = if a.skills.is_empty() {
            String::new()
        } else {
            format!(", skills {}", a.skills.join(" "))
        };
        println!("  {} (id {}{skills}{shift})", a.name, a.id);
    }
    println!("schedules ({}):", rules.schedules.len());
    for s in &rules.schedules {
        println!(
            "  {} ({})",
            s.name,
            s.tz.iana_name().unwrap_or("fixed offset")
        );
    }
    println!("pools ({}):", rules.pools.len());
    for p in &rules.pools {
        let members: Vec<&str> = p
            .members
            .iter()
            .map(|&a| rules.agents[a].name.as_str())
            .collect();
        println!(
            "  {}: {} [{}], when_full = {}",
            p.name,
            p.strategy.name(),
            members.join(", "),
            p.when_full.name()
        );
    }
    println!("rules ({}):", rules.rules.len());
    for (i, r) in rules.rules.iter().enumerate() {
        let target = match r.target {
            Target::Agent(a) => rules.agents[a].name.clone(),
            Target::Pool(p) => format!("pool:{}", rules.pools[p].name),
            Target::Nobody => "none".into(),
        };
        let keys: Vec<&str> = r.conditions.iter().map(|c| c.key()).collect();
        let when = if keys.is_empty() {
            "every chat".to_string()
        } else {
            keys.join(" + ")
        };
        println!("  {}. {} ({when}) -> {target}", i + 1, r.name);
    }
    match config.api_key() {
        Ok(Some(_)) => println!("API key: found"),
        Ok(None) => println!(
            "warning: no API key found (credential helpcrunch-api-key, api_key_file, HELPCRUNCH_API_KEY)"
        ),
        Err(e) => println!("warning: {e}"),
    }
    let warnings = rules.warnings();
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "ok: {} agents, {} pools, {} schedules, {} rules, {} warning(s)",
        rules.agents.len(),
        rules.pools.len(),
        rules.schedules.len(),
        rules.rules.len(),
        warnings.len()
    );
    Ok(())
}
