//! `assignd check`: validate like `nginx -t`, then summarise and warn.

use std::path::Path;

use super::Failure;
use crate::config::Config;
use crate::rules::{self, Target};

pub(super) async fn run(config_path: &Path, online: bool) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::Invalid(e.into()))?;
    let rules = rules::load_path(&config.rules.path).map_err(|e| Failure::Invalid(e.into()))?;
    // Arm b's rules, as `run` loads and checks them.
    let rules_b = crate::experiment::load_b_rules(&config.experiment)
        .map_err(|e| Failure::Invalid(anyhow::anyhow!("[experiment] b_rules: {e}")))?;
    if let Some(b) = &rules_b {
        crate::experiment::check_b_rules(&rules, b)
            .map_err(|e| Failure::Invalid(anyhow::anyhow!(e)))?;
    }
    println!("config {}: ok", config_path.display());
    for f in &rules.files {
        println!("rules  {}: ok", f.display());
    }
    println!("time zone: {}", rules.timezone.iana_name().unwrap_or("UTC"));
    print_agents(&rules);
    print_pools(&rules);
    print_rules(&rules);
    match config.api_key() {
        Ok(Some(_)) => println!("API key: found"),
        Ok(None) => println!(
            "warning: no API key found (credential helpcrunch-api-key, api_key_file, HELPCRUNCH_API_KEY)"
        ),
        Err(e) => println!("warning: {e}"),
    }
    print_webhook_address(&config);
    if let Some(files) = config.http.tls_files() {
        // As `run` loads it: a renewed pair is checked before the reload.
        crate::http::ServerTls::load(files.clone()).map_err(|e| Failure::Invalid(e.into()))?;
        println!("TLS certificate {}: ok", files.cert.display());
    }
    let warnings = week_warnings(&rules)?;
    for w in &warnings {
        println!("warning: {w}");
    }
    if online {
        check_online(&config, &rules).await?;
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

/// Where HelpCrunch is to send its webhooks (Settings → Developers →
/// Webhooks), or how to find out when the listener is on.
fn print_webhook_address(config: &Config) {
    match (config.http.webhook_url(), config.http.listen) {
        (Some(url), _) => {
            println!("webhook address (paste into HelpCrunch): {url}");
            println!("webhook events: {}", crate::http::WEBHOOK_EVENTS.join(", "));
        }
        (None, Some(_)) => println!(
            "webhook address: set [http] public_url (how HelpCrunch reaches this daemon, e.g. https://assignd.example.com) to see it"
        ),
        (None, None) => {}
    }
}

/// The agents with their skills and shifts, and the schedules.
fn print_agents(rules: &rules::Rules) {
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
        let zone = s.tz.iana_name().unwrap_or("fixed offset");
        println!("  {} ({zone})", s.name);
    }
}

fn print_pools(rules: &rules::Rules) {
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
}

fn print_rules(rules: &rules::Rules) {
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
}

/// Shift coverage over the current week, in the rules' zone.
fn week_warnings(rules: &rules::Rules) -> Result<Vec<String>, Failure> {
    let today = jiff::Timestamp::now()
        .to_zoned(rules.timezone.clone())
        .date();
    let monday = today
        .checked_sub(jiff::Span::new().days(today.weekday().to_monday_zero_offset() as i64))
        .and_then(|d| d.to_zoned(rules.timezone.clone()))
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot compute this week: {e}")))?;
    Ok(rules.warnings_for_week(&monday))
}

/// `--online`: every agent id in the rules must exist in the account, and
/// every department they name, where the account lists its departments.
async fn check_online(config: &Config, rules: &rules::Rules) -> Result<(), Failure> {
    let key = config
        .api_key()
        .map_err(|e| Failure::Invalid(e.into()))?
        .ok_or_else(|| {
            Failure::Invalid(anyhow::anyhow!("--online needs the HelpCrunch API key"))
        })?;
    let client = super::online_client(
        &config.helpcrunch.base_url,
        &key,
        config.helpcrunch.timeout.0,
    )?;
    let team = client
        .agents()
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot list the account's agents: {e}")))?;
    println!("online: the account has {} agents", team.len());
    let mut problems: Vec<String> = Vec::new();
    let missing: Vec<String> = rules
        .agents
        .iter()
        .filter(|a| !team.iter().any(|t| t.id == a.id))
        .map(|a| format!("`{}` (id {})", a.name, a.id))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "agent ids not in the HelpCrunch account: {}",
            missing.join(", ")
        ));
    }
    problems.extend(check_departments(&client, rules).await?);
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::Invalid(anyhow::anyhow!("{}", problems.join("; "))))
}

/// The departments the rules name exactly, against GET /departments; a
/// problem when one is not in the account.
async fn check_departments(
    client: &crate::helpcrunch::Client,
    rules: &rules::Rules,
) -> Result<Option<String>, Failure> {
    use crate::helpcrunch::Departments;
    let named = rules::refs::departments(rules);
    if named.is_empty() {
        return Ok(None);
    }
    let listed = match client.departments().await {
        Ok(Departments::Listed(list)) => list,
        Ok(Departments::Unavailable(why)) => {
            println!(
                "online: the account lists no departments ({why}); the departments the rules name are not checked"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "cannot list the account's departments: {e}"
            )));
        }
    };
    println!("online: the account has {} departments", listed.len());
    let unknown: Vec<String> = named
        .iter()
        .filter(|n| {
            !listed
                .iter()
                .any(|d| n.names(d.id, d.name.as_deref().unwrap_or("")))
        })
        .map(|n| format!("`{}` (rule `{}`)", n.value, n.rule))
        .collect();
    Ok((!unknown.is_empty()).then(|| {
        format!(
            "departments not in the HelpCrunch account: {}",
            unknown.join(", ")
        )
    }))
}
