//! Store operations that race in production, run against each other on
//! both backends: a `chat.closed` webhook and a reconciliation of the same
//! agent, committed at the same moment, over and over.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::time::Duration;

use assignd::domain::ChatId;
use assignd::store::{WebhookEffect, now_ms};

use store_fixture::*;

const ROUNDS: i64 = 150;

/// A chat closes while its agent's reconciliation, whose search started
/// before the close and still saw the chat open, is writing: the close
/// wins every time (the chat is not counted open afterwards), whichever
/// commits first.
async fn a_close_is_never_undone_by_a_reconciliation_under_way(f: Fixture) {
    for chat in 1..=ROUNDS {
        let opened = WebhookEffect::Assigned {
            chat_id: ChatId(chat),
            agent: Some("amy".into()),
        };
        let id = format!("o{chat}");
        f.store
            .apply_webhook(&id, "chat.assigned", &opened)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let since = now_ms();
        let found = [ChatId(chat)];
        let reconcile = f
            .store
            .reconcile_open_chats("amy", &found, since, since - 60_000);
        let closed = WebhookEffect::Closed {
            chat_id: ChatId(chat),
        };
        let id = format!("c{chat}");
        let close = f.store.apply_webhook(&id, "chat.closed", &closed);
        let (reconciled, applied) = tokio::join!(reconcile, close);
        reconciled.unwrap();
        applied.unwrap();
        let open = f.store.open_chats().await.unwrap();
        assert!(
            !open.contains_key(&ChatId(chat)),
            "round {chat}: the chat closed, yet it is counted open"
        );
    }
}

both!(a_close_is_never_undone_by_a_reconciliation_under_way);
