//! `assignd enqueue` and `assignd queue list | retry`.

use anyhow::Context;

use super::{Failure, QueueAction, open_store};
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
        QueueAction::List { state, limit } => list(&store, state.as_deref(), limit).await?,
        QueueAction::Retry {
            ids,
            dead,
            no_match,
        } => retry(&store, &ids, dead, no_match).await?,
    }
    store.close().await;
    Ok(())
}

async fn list(store: &Store, state: Option<&str>, limit: u32) -> anyhow::Result<()> {
    let rows = store
        .list_queue(state, limit)
        .await
        .context("cannot read the queue")?;
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
        let n = store.retry_ids(ids).await.context(BACK)?;
        println!("{n} of {} row(s) put back on the queue", ids.len());
    }
    if dead {
        let n = store.retry_dead(None).await.context(BACK)?;
        println!("{n} dead row(s) put back on the queue");
    }
    if no_match {
        let n = store.retry_no_match().await.context(BACK)?;
        println!("{n} no_match row(s) put back on the queue");
    }
    Ok(())
}
