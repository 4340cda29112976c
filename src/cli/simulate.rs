//! `assignd simulate`: replay chats through one or two rule sets offline.

use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;

use super::counts::{get, keys};
use super::{Failure, simulate_history};
use crate::config::Config;
use crate::rules::{self, Rules};
use crate::simulate::{Replay, SimChat, replay};

/// `assignd simulate`: its flags.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["chats", "history"])))]
pub struct Command {
    /// One chat object per line; optional `at` and `attrs` fields.
    #[arg(long)]
    pub chats: Option<PathBuf>,
    /// Replay the chats this daemon saw in the last DURATION (e.g. "7d", "24h") over time.
    #[arg(long, value_name = "DURATION", value_parser = simulate_history::parse_history)]
    pub history: Option<std::time::Duration>,
    /// With `--history`: how many differing chats to list.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "history")]
    pub diff: usize,
    /// Rules to use instead of the config's.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// A second rule set to compare with.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Decide chats without `at` as at this instant (default: now).
    #[arg(long, conflicts_with = "history")]
    pub at: Option<jiff::Timestamp>,
    /// One JSON document with the same figures, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Runs the replay the flags ask for: `--history`, else `--chats`.
pub(super) async fn dispatch(config_path: &Path, c: Command) -> Result<(), Failure> {
    match (c.history, c.chats) {
        (Some(window), _) => {
            let args = simulate_history::Args {
                window,
                rules: c.rules,
                against: c.against,
                diff: c.diff,
                json: c.json,
            };
            simulate_history::run(config_path, args).await
        }
        (None, Some(chats)) => {
            let args = Args {
                chats,
                rules: c.rules,
                against: c.against,
                at: c.at,
                json: c.json,
            };
            run(config_path, args)
        }
        (None, None) => Err(Failure::Invalid(anyhow::anyhow!(
            "`simulate` needs --chats FILE or --history DURATION"
        ))),
    }
}

pub(super) struct Args {
    pub chats: PathBuf,
    pub rules: Option<PathBuf>,
    pub against: Option<PathBuf>,
    pub at: Option<Timestamp>,
    pub json: bool,
}

fn load(path: &Path) -> Result<Rules, Failure> {
    rules::load_path(path).map_err(|e| Failure::Invalid(e.into()))
}

pub(super) fn run(config_path: &Path, args: Args) -> Result<(), Failure> {
    let rules_path = match args.rules {
        Some(p) => p,
        None => {
            Config::load(config_path)
                .map_err(|e| Failure::Invalid(e.into()))?
                .rules
                .path
        }
    };
    let base = load(&rules_path)?;
    let text = std::fs::read_to_string(&args.chats)
        .with_context(|| format!("cannot read {}", args.chats.display()))?;
    let mut chats = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let chat = SimChat::parse(line).map_err(|e| {
            Failure::Invalid(anyhow::anyhow!("{}:{}: {e}", args.chats.display(), i + 1))
        })?;
        chats.push(chat);
    }
    let at = args.at.unwrap_or_else(Timestamp::now);
    let first = replay(&base, &chats, at);
    let second = match &args.against {
        Some(p) => Some((p, replay(&load(p)?, &chats, at))),
        None => None,
    };
    if args.json {
        let value = serde_json::json!({
            "rules": rules_path.display().to_string(),
            "result": first,
            "against": second.as_ref().map(|(p, r)| serde_json::json!({"rules": p.display().to_string(), "result": r})),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("cannot serialise")?
        );
        return Ok(());
    }
    match &second {
        None => print_one(&rules_path, &first),
        Some((p, r)) => print_two(&rules_path, &first, p, r),
    }
    Ok(())
}

fn print_one(path: &Path, r: &Replay) {
    println!("{} chats through {}", r.chats, path.display());
    println!("results:");
    for (k, v) in &r.per_result {
        println!("  {k:<20} {v}");
    }
    println!("per rule:");
    for (k, v) in &r.per_rule {
        println!("  {k:<20} {v}");
    }
    println!("per agent:");
    for (k, v) in &r.per_agent {
        println!("  {k:<20} {v}");
    }
    println!("fairness per pool (max/min assignments, Jain's index):");
    for f in &r.fairness {
        println!("  {:<20} {}/{}  {:.3}", f.pool, f.max, f.min, f.jain);
    }
    let unassigned: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| o.result != "assigned")
        .collect();
    if !unassigned.is_empty() {
        println!("not assigned:");
        for o in unassigned {
            println!("  chat {}: {} ({})", o.chat_id, o.result, o.reason);
        }
    }
}

fn print_two(a_path: &Path, a: &Replay, b_path: &Path, b: &Replay) {
    let (an, bn) = (a_path.display().to_string(), b_path.display().to_string());
    println!("{} chats: {an} (A) against {bn} (B)", a.chats);
    let row = |name: &str, x: u32, y: u32| {
        let mark = if x != y { "  *" } else { "" };
        println!("  {name:<20} {x:>6} {y:>6}{mark}");
    };
    println!("  {:<20} {:>6} {:>6}", "", "A", "B");
    println!("results:");
    for k in keys(&a.per_result, &b.per_result) {
        row(&k, get(&a.per_result, &k), get(&b.per_result, &k));
    }
    println!("per rule:");
    for k in keys(&a.per_rule, &b.per_rule) {
        row(&k, get(&a.per_rule, &k), get(&b.per_rule, &k));
    }
    println!("per agent:");
    for k in keys(&a.per_agent, &b.per_agent) {
        row(&k, get(&a.per_agent, &k), get(&b.per_agent, &k));
    }
    println!("fairness (Jain's index):");
    for f in &a.fairness {
        let other = b
            .fairness
            .iter()
            .find(|g| g.pool == f.pool)
            .map_or("-".to_string(), |g| format!("{:.3}", g.jain));
        println!("  {:<20} {:>6.3} {:>6}", f.pool, f.jain, other);
    }
    let changed: Vec<_> = a
        .outcomes
        .iter()
        .zip(&b.outcomes)
        .filter(|(x, y)| x.agent != y.agent || x.result != y.result)
        .collect();
    println!(
        "chats decided differently: {} (* marks a changed count)",
        changed.len()
    );
    for (x, y) in changed.iter().take(20) {
        let who = |o: &crate::simulate::SimOutcome| {
            o.agent.clone().unwrap_or_else(|| o.result.to_string())
        };
        println!("  chat {}: {} -> {}", x.chat_id, who(x), who(y));
    }
}
