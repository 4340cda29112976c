//! `assignd agent away | back`.

use anyhow::Context;

use super::{AgentAction, Failure, cli_actor, open_store};
use crate::config::Config;

pub(super) async fn run(config: &Config, action: AgentAction) -> Result<(), Failure> {
    let name = match &action {
        AgentAction::Away { name, .. } | AgentAction::Back { name } => name.clone(),
    };
    check_name(config, &name)?;
    let store = open_store(config).await?;
    match action {
        AgentAction::Away { until, .. } => {
            store
                .set_away(&name, until.map(|t| t.as_millisecond()), &cli_actor())
                .await
                .context("cannot mark the agent away")?;
            match until {
                Some(t) => println!("{name} is away until {t}"),
                None => println!("{name} is away until marked back"),
            }
        }
        AgentAction::Back { .. } => {
            let was = store
                .set_back(&name, &cli_actor())
                .await
                .context("cannot mark the agent back")?;
            let now = if was {
                "back"
            } else {
                "not away (nothing changed)"
            };
            println!("{name} is {now}");
        }
    }
    store.close().await;
    Ok(())
}

/// Catches a typo in the name, when the rules can be read.
fn check_name(config: &Config, name: &str) -> Result<(), Failure> {
    if let Ok(rules) = crate::rules::load_path(&config.rules.path)
        && rules.agent_by_name(name).is_none()
    {
        let known: Vec<&str> = rules.agents.iter().map(|a| a.name.as_str()).collect();
        return Err(Failure::Invalid(anyhow::anyhow!(
            "unknown agent `{name}` (the rules have: {})",
            known.join(", ")
        )));
    }
    Ok(())
}
