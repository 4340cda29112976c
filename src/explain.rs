//! The inputs of `explain` that live in the database, read the same way by
//! `assignd explain` and the console: the routing state (rotation, open
//! chats, away flags, the last hour's assignments), the customer's last
//! agent, and how long the chat has waited in the queue. Nothing is written.

use jiff::Timestamp;

use crate::helpcrunch::types::Chat;
use crate::rules::decide::hour_before;
use crate::rules::{ChatContext, RoutingState};
use crate::store::{Store, StoreError};

/// The routing state `store` holds at `now`, and `context` completed with
/// what the worker would add to it (last agent, time enqueued).
pub async fn routing_state(
    store: &Store,
    context: &mut ChatContext,
    now: Timestamp,
) -> Result<RoutingState, StoreError> {
    let stored = store.load_routing().await?;
    if let Some(key) = context.customer_key() {
        context.last_agent = store.customer_last_agent(&key).await?;
    }
    // A chat still in the queue has waited since its row was enqueued: the
    // escalation steps it reached show.
    let enqueued = store.active_enqueued_at(context.chat_id).await?;
    context.enqueued_at = enqueued.and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let recent = store.recent_assignments(hour_before(now)).await?;
    Ok(RoutingState {
        recent,
        ..stored.into_state()
    })
}

/// Why the worker would not decide `chat` at all, if it would not: closed,
/// or already assigned while `worker.reassign` is off.
pub fn skip_note(chat: &Chat, reassign: bool) -> Option<String> {
    if chat.is_closed() {
        Some("the chat is closed: the worker would skip it".to_string())
    } else if let (Some(a), false) = (&chat.assignee, reassign) {
        Some(format!(
            "the chat is already assigned to agent {}: the worker would skip it (worker.reassign = false)",
            a.id
        ))
    } else {
        None
    }
}
