//! `assignd status`: what the queue holds and how the daemon is doing.

use anyhow::Context;
use jiff::Timestamp;

use super::{Failure, open_store};
use crate::cluster::GONE_AFTER;
use crate::config::{Config, DatabaseLocation};
use crate::rules;
use crate::store::{Backend, Store, now_ms};

pub(super) async fn run(config: &Config) -> Result<(), Failure> {
    if let DatabaseLocation::Sqlite(path) = config.database()
        && !path.exists()
    {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "no database at {} (has `assignd run` or `assignd migrate` been run?)",
            path.display()
        )));
    }
    let store = open_store(config).await?;
    print_queue(&store).await?;
    print_today(&store, config).await?;
    print_recent(&store).await?;
    print_daemon_state(&store).await?;
    print_daemons(&store).await?;
    store.close().await;
    Ok(())
}

/// Depth by state, the waiting chats with their reasons, the dead letters.
async fn print_queue(store: &Store) -> anyhow::Result<()> {
    let depth = store.queue_depth().await.context("cannot read the queue")?;
    let count = |s: &str| depth.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    println!(
        "queue: pending {}, leased {}, done {}, dead {}",
        count("pending"),
        count("leased"),
        count("done"),
        count("dead")
    );
    let waiting = store.waiting(20).await.context("cannot read the queue")?;
    if !waiting.is_empty() {
        println!("waiting:");
        let now = now_ms();
        for (id, chat, next, why) in waiting {
            let due = if next <= now {
                "due now".to_string()
            } else {
                format!("next try in {}s", (next - now + 999) / 1000)
            };
            println!("  chat {chat} (row {id}), {due}: {why}");
        }
    }
    if count("dead") == 0 {
        return Ok(());
    }
    let dead = store
        .list_queue(Some("dead"), 10)
        .await
        .context("cannot read the queue")?;
    println!("dead letters (newest first; all with `assignd queue list --state dead`):");
    for r in dead {
        let why = r.last_error.as_deref().unwrap_or("no reason recorded");
        println!("  chat {} (row {}): {why}", r.chat_id, r.id);
    }
    Ok(())
}

/// Assignments per agent since midnight in the rules' time zone.
async fn print_today(store: &Store, config: &Config) -> anyhow::Result<()> {
    // "Today" is in the rules' time zone when the rules load, else UTC.
    let tz = rules::load_path(&config.rules.path)
        .map(|r| r.timezone)
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let midnight = Timestamp::now()
        .to_zoned(tz.clone())
        .start_of_day()
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(0);
    let today = store
        .assignments_since(midnight)
        .await
        .context("cannot read outcomes")?;
    let listed: Vec<String> = today.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!(
        "assigned today ({}): {}",
        tz.iana_name().unwrap_or("UTC"),
        if listed.is_empty() {
            "none".into()
        } else {
            listed.join(", ")
        }
    );
    Ok(())
}

async fn print_recent(store: &Store) -> anyhow::Result<()> {
    let recent = store
        .recent_outcomes(10)
        .await
        .context("cannot read outcomes")?;
    if !recent.is_empty() {
        println!("last outcomes:");
        for o in recent {
            let at = Timestamp::from_millisecond(o.at_ms)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let http = o
                .http_status
                .map(|s| format!(" HTTP {s}"))
                .unwrap_or_default();
            println!(
                "  {at} chat {} {} {}{http}: {}",
                o.chat_id,
                o.result,
                o.agent.as_deref().unwrap_or("-"),
                o.reason.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// What the running daemon reports about itself (API, limiter, rules).
async fn print_daemon_state(store: &Store) -> anyhow::Result<()> {
    let state = store
        .daemon_state()
        .await
        .context("cannot read daemon state")?;
    for (key, value, at) in state {
        if value.is_empty() {
            continue;
        }
        let at = Timestamp::from_millisecond(at)
            .map(|t| t.to_string())
            .unwrap_or_default();
        println!("{key}: {value} (as of {at})");
    }
    Ok(())
}

/// The daemons heard from lately: host, pid, since, and which one holds
/// the lease (SQLite: works the file; PostgreSQL: leads).
async fn print_daemons(store: &Store) -> anyhow::Result<()> {
    let (lease, role) = match store.backend() {
        Backend::Sqlite => ("daemon", "holder"),
        Backend::Postgres => ("leader", "leader"),
    };
    let daemons = store
        .live_daemons(GONE_AFTER, lease)
        .await
        .context("cannot read the daemons")?;
    if daemons.is_empty() {
        println!("daemons: none running");
        return Ok(());
    }
    println!("daemons:");
    for d in daemons {
        let since = Timestamp::from_millisecond(d.started_at_ms)
            .map(|t| format!("{t:.0}"))
            .unwrap_or_default();
        let mark = if d.holder {
            format!(" {role}")
        } else {
            String::new()
        };
        let idle = if d.holder || store.backend() == Backend::Postgres {
            ""
        } else {
            " standby"
        };
        println!("  {} pid {} since {since}{mark}{idle}", d.host, d.pid);
    }
    Ok(())
}
