//! `assignd enqueue` and `assignd queue list | retry`.

use anyhow::Context;
use serde::Serialize;

use super::status::chat_id_value;
use super::{Failure, QueueAction, cli_actor, open_store};
use crate::config::Config;
use crate::domain::ChatId;
use crate::store::{NewQueueItem, Store};

/// `assignd enqueue CHAT_ID... [--attr K=V]... [--priority N]`.
pub(super) async fn enqueue(
    config: &Config,
    chat_ids: &[i64],
    attrs: Vec<(String, String)>,
    priority: i64,
) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let attrs = (!attrs.is_empty()).then(|| {
        attrs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect::<serde_json::Map<_, _>>()
    });
    let items: Vec<NewQueueItem> = chat_ids
        .iter()
        .map(|&chat_id| NewQueueItem {
            chat_id: ChatId(chat_id),
            attrs: attrs.clone(),
            snapshot: None,
            priority,
            // The daemon ranks it with the rules it runs, before its first claim.
            ranked: false,
        })
        .collect();
    let added = store.enqueue(&items).await.context("cannot enqueue")?;
    let already = items.len() as u64 - added;
    let already = if already > 0 {
        format!(", {already} already queued")
    } else {
        String::new()
    };
    println!("enqueued {added} chat(s){already}");
    store.close().await;
    Ok(())
}

/// `assignd queue list` and `assignd queue retry`.
pub(super) async fn run(config: &Config, action: QueueAction) -> Result<(), Failure> {
    let store = open_store(config).await?;
    match action {
        QueueAction::List { state, limit, json } => {
            list(&store, state.as_deref(), limit, json).await?
        }
        QueueAction::Retry {
            ids,
            dead,
            no_match,
        } => retry(&store, &ids, dead, no_match).await?,
    }
    store.close().await;
    Ok(())
}

/// `queue list --json`: the filter it was asked for and the rows, newest first.
#[derive(Serialize)]
struct List<'a> {
    state: Option<&'a str>,
    limit: u32,
    rows: Vec<Row>,
}

/// One row of `queue list --json`.
#[derive(Serialize)]
struct Row {
    row: i64,
    /// As stored: a number, or the SQL literal a producer wrote (`'abc'`).
    chat_id: serde_json::Value,
    state: String,
    attempts: i64,
    /// Why the row is dead or waiting.
    reason: Option<String>,
}

async fn list(store: &Store, state: Option<&str>, limit: u32, json: bool) -> anyhow::Result<()> {
    let rows = store
        .list_queue(state, limit)
        .await
        .context("cannot read the queue")?;
    if json {
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|r| Row {
                row: r.id,
                chat_id: chat_id_value(&r.chat_id),
                state: r.state,
                attempts: r.attempts,
                reason: r.last_error,
            })
            .collect();
        let doc = List { state, limit, rows };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:>8} {:>12} {:<8} {:>8}  reason",
        "row", "chat", "state", "attempts"
    );
    for r in rows {
        println!(
            "{:>8} {:>12} {:<8} {:>8}  {}",
            r.id,
            r.chat_id,
            r.state,
            r.attempts,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn retry(store: &Store, ids: &[i64], dead: bool, no_match: bool) -> anyhow::Result<()> {
    const BACK: &str = "cannot put rows back";
    if !ids.is_empty() {
        let n = store.retry_ids(ids, &cli_actor()).await.context(BACK)?;
        println!("{n} of {} row(s) put back on the queue", ids.len());
    }
    if dead {
        let n = store.retry_dead(None, &cli_actor()).await.context(BACK)?;
        println!("{n} dead row(s) put back on the queue");
    }
    if no_match {
        let n = store.retry_no_match(&cli_actor()).await.context(BACK)?;
        println!("{n} no_match row(s) put back on the queue");
    }
    Ok(())
}
