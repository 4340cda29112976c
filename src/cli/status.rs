//! `assignd status`: what the queue holds and how the daemon is doing, as
//! text for a person or, with `--json`, one JSON document with the same
//! facts for scripts.

use std::collections::BTreeMap;

use anyhow::Context;
use jiff::Timestamp;
use serde::Serialize;

use super::{Failure, open_existing_store};
use crate::cluster::GONE_AFTER;
use crate::config::Config;
use crate::domain::ChatId;
use crate::rules;
use crate::store::{Backend, Store, now_ms};

/// Everything `status` reports.
#[derive(Serialize)]
struct Status {
    /// The SQLite file or the PostgreSQL url (never with a password).
    database: String,
    backend: &'static str,
    queue: Depth,
    /// Pending rows that wait, oldest first, with why.
    waiting: Vec<Waiting>,
    /// The newest dead rows (all with `assignd queue list --state dead`).
    dead_letters: Vec<DeadLetter>,
    assigned_today: Today,
    /// Newest first.
    last_outcomes: Vec<Outcome>,
    /// What the running daemon reports about itself (API, limiter, rules).
    daemon_state: BTreeMap<String, StateValue>,
    /// The daemons heard from lately.
    daemons: Vec<Daemon>,
}

#[derive(Serialize)]
struct Depth {
    pending: i64,
    leased: i64,
    done: i64,
    dead: i64,
}

#[derive(Serialize)]
struct Waiting {
    row: i64,
    chat_id: i64,
    next_attempt_at: Option<String>,
    /// Whole seconds until the next attempt; 0 when due now.
    next_attempt_in_secs: i64,
    reason: String,
}

#[derive(Serialize)]
struct DeadLetter {
    row: i64,
    /// As stored: a number, or the SQL literal a producer wrote.
    chat_id: serde_json::Value,
    reason: Option<String>,
}

#[derive(Serialize)]
struct Today {
    /// The rules' time zone (UTC when the rules do not load).
    timezone: String,
    since: Option<String>,
    /// Assignments per agent name.
    agents: BTreeMap<String, i64>,
}

#[derive(Serialize)]
struct Outcome {
    at: Option<String>,
    chat_id: ChatId,
    result: String,
    rule: Option<String>,
    agent: Option<String>,
    http_status: Option<i64>,
    reason: Option<String>,
}

#[derive(Serialize)]
struct StateValue {
    value: String,
    at: Option<String>,
}

#[derive(Serialize)]
struct Daemon {
    host: String,
    pid: i64,
    since: Option<String>,
    /// SQLite: the one that works the file; PostgreSQL: the leader.
    holder: bool,
    /// SQLite only: waiting to take over from the holder.
    standby: bool,
}

pub(super) async fn run(config: &Config, json: bool) -> Result<(), Failure> {
    let store = open_existing_store(config).await?;
    let status = gather(&store, config).await;
    store.close().await;
    let status = status?;
    if json {
        let text = serde_json::to_string_pretty(&status).context("cannot write JSON")?;
        println!("{text}");
    } else {
        print_text(&status);
    }
    Ok(())
}

fn rfc3339(ms: i64) -> Option<String> {
    Timestamp::from_millisecond(ms).ok().map(|t| t.to_string())
}

/// A chat id as `queue list` stores it: a number when it is one.
pub(super) fn chat_id_value(stored: &str) -> serde_json::Value {
    stored
        .parse::<i64>()
        .map_or_else(|_| stored.into(), serde_json::Value::from)
}

async fn gather(store: &Store, config: &Config) -> anyhow::Result<Status> {
    let depth = store.queue_depth().await.context(QUEUE)?;
    let count = |s: &str| depth.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let queue = Depth {
        pending: count("pending"),
        leased: count("leased"),
        done: count("done"),
        dead: count("dead"),
    };
    let dead_letters = if queue.dead == 0 {
        Vec::new()
    } else {
        dead_letters(store).await?
    };
    Ok(Status {
        database: config.database().to_string(),
        backend: match store.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        },
        queue,
        waiting: waiting(store).await?,
        dead_letters,
        assigned_today: today(store, config).await?,
        last_outcomes: last_outcomes(store).await?,
        daemon_state: daemon_state(store).await?,
        daemons: daemons(store).await?,
    })
}

const QUEUE: &str = "cannot read the queue";

/// Rows that wait for a later attempt, and why.
async fn waiting(store: &Store) -> anyhow::Result<Vec<Waiting>> {
    let now = now_ms();
    let rows = store.waiting(20).await.context(QUEUE)?;
    Ok(rows
        .into_iter()
        .map(|(row, chat_id, next, reason)| Waiting {
            row,
            chat_id,
            next_attempt_at: rfc3339(next),
            next_attempt_in_secs: if next <= now {
                0
            } else {
                (next - now + 999) / 1000
            },
            reason,
        })
        .collect())
}

async fn dead_letters(store: &Store) -> anyhow::Result<Vec<DeadLetter>> {
    // The newest dead rows from their own index (`queue_dead`), however
    // many rows of other states came after them.
    let rows = store.dead_rows(None, 10).await.context(QUEUE)?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetter {
            row: r.id,
            chat_id: chat_id_value(&r.chat_id),
            reason: r.last_error,
        })
        .collect())
}

async fn last_outcomes(store: &Store) -> anyhow::Result<Vec<Outcome>> {
    let rows = store
        .recent_outcomes(10)
        .await
        .context("cannot read outcomes")?;
    Ok(rows
        .into_iter()
        .map(|o| Outcome {
            at: rfc3339(o.at_ms),
            chat_id: o.chat_id,
            result: o.result,
            rule: o.rule,
            agent: o.agent,
            http_status: o.http_status,
            reason: o.reason,
        })
        .collect())
}

async fn daemon_state(store: &Store) -> anyhow::Result<BTreeMap<String, StateValue>> {
    let rows = store
        .daemon_state()
        .await
        .context("cannot read daemon state")?;
    Ok(rows
        .into_iter()
        .filter(|(_, value, _)| !value.is_empty())
        .map(|(key, value, at)| {
            let at = rfc3339(at);
            (key, StateValue { value, at })
        })
        .collect())
}

/// The live daemons on this database, and which holds the lease.
async fn daemons(store: &Store) -> anyhow::Result<Vec<Daemon>> {
    let lease = match store.backend() {
        Backend::Sqlite => "daemon",
        Backend::Postgres => "leader",
    };
    let rows = store
        .live_daemons(GONE_AFTER, lease)
        .await
        .context("cannot read the daemons")?;
    Ok(rows
        .into_iter()
        .map(|d| Daemon {
            host: d.host,
            pid: d.pid,
            since: Timestamp::from_millisecond(d.started_at_ms)
                .ok()
                .map(|t| format!("{t:.0}")),
            holder: d.holder,
            standby: !d.holder && store.backend() == Backend::Sqlite,
        })
        .collect())
}

/// Assignments per agent since midnight in the rules' time zone.
async fn today(store: &Store, config: &Config) -> anyhow::Result<Today> {
    // "Today" is in the rules' time zone when the rules load, else UTC.
    let tz = rules::load_path(&config.rules.path)
        .map(|r| r.timezone)
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let midnight = Timestamp::now()
        .to_zoned(tz.clone())
        .start_of_day()
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(0);
    let agents = store
        .assignments_since(midnight)
        .await
        .context("cannot read outcomes")?
        .into_iter()
        .collect();
    Ok(Today {
        timezone: tz.iana_name().unwrap_or("UTC").to_string(),
        since: rfc3339(midnight),
        agents,
    })
}

fn print_text(s: &Status) {
    let q = &s.queue;
    println!(
        "queue: pending {}, leased {}, done {}, dead {}",
        q.pending, q.leased, q.done, q.dead
    );
    if !s.waiting.is_empty() {
        println!("waiting:");
        for w in &s.waiting {
            let due = match w.next_attempt_in_secs {
                0 => "due now".to_string(),
                n => format!("next try in {n}s"),
            };
            println!("  chat {} (row {}), {due}: {}", w.chat_id, w.row, w.reason);
        }
    }
    if !s.dead_letters.is_empty() {
        println!("dead letters (newest first; all with `assignd queue list --state dead`):");
        for d in &s.dead_letters {
            let chat = match &d.chat_id {
                serde_json::Value::String(raw) => raw.clone(),
                other => other.to_string(),
            };
            let why = d.reason.as_deref().unwrap_or("no reason recorded");
            println!("  chat {chat} (row {}): {why}", d.row);
        }
    }
    let listed: Vec<String> = s
        .assigned_today
        .agents
        .iter()
        .map(|(a, n)| format!("{a} {n}"))
        .collect();
    println!(
        "assigned today ({}): {}",
        s.assigned_today.timezone,
        if listed.is_empty() {
            "none".into()
        } else {
            listed.join(", ")
        }
    );
    print_outcomes(s);
    for (key, v) in &s.daemon_state {
        println!(
            "{key}: {} (as of {})",
            v.value,
            v.at.as_deref().unwrap_or("")
        );
    }
    print_daemons(s);
}

fn print_outcomes(s: &Status) {
    if !s.last_outcomes.is_empty() {
        println!("last outcomes:");
        for o in &s.last_outcomes {
            let http = o
                .http_status
                .map(|s| format!(" HTTP {s}"))
                .unwrap_or_default();
            println!(
                "  {} chat {} {} {}{http}: {}",
                o.at.as_deref().unwrap_or(""),
                o.chat_id,
                o.result,
                o.agent.as_deref().unwrap_or("-"),
                o.reason.as_deref().unwrap_or("")
            );
        }
    }
}

/// The live daemons, and which one holds the lease.
fn print_daemons(s: &Status) {
    if s.daemons.is_empty() {
        println!("daemons: none running");
        return;
    }
    let role = if s.backend == "postgres" {
        "leader"
    } else {
        "holder"
    };
    println!("daemons:");
    for d in &s.daemons {
        let mark = if d.holder {
            format!(" {role}")
        } else {
            String::new()
        };
        let idle = if d.standby { " standby" } else { "" };
        println!(
            "  {} pid {} since {}{mark}{idle}",
            d.host,
            d.pid,
            d.since.as_deref().unwrap_or("")
        );
    }
}
