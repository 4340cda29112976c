//! Webhook events, applied once each with their effect.

use super::handback::{forget_chat, record_answer, record_customer_message};
use super::history::{FirstFact, record_assignee, record_close, record_reply};
use super::routing::{close_open_chat, upsert_open_chat, wake_waiting};
use super::{Store, StoreError, Tx, WebhookEffect, now_ms, vals};

/// What applying a webhook event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// An id seen before: nothing changed.
    Duplicate,
    /// Applied, with the chat's first reply or assignment it recorded.
    New(Option<FirstFact>),
}

/// Records an event id; a repeated id changes nothing.
const RECORD_EVENT: &str = "INSERT INTO webhook_events (id, event, received_at) VALUES ($1, $2, $3)
    ON CONFLICT (id) DO NOTHING";

const ENQUEUE: &str =
    "INSERT INTO queue (chat_id, snapshot, priority, ranked, enqueued_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6)";

impl Store {
    /// Applies a webhook event once: returns `false` for an id seen before
    /// (nothing is changed then). The id and the effect commit together, so
    /// a 2xx is only ever answered for an event that is durably stored.
    pub async fn apply_webhook(
        &self,
        id: &str,
        event: &str,
        effect: &WebhookEffect,
    ) -> Result<bool, StoreError> {
        let applied = self.apply_webhook_event(id, event, effect).await?;
        Ok(applied != Applied::Duplicate)
    }

    /// [`Store::apply_webhook`], saying what the event first recorded of
    /// its chat (for the listener's histograms).
    pub async fn apply_webhook_event(
        &self,
        id: &str,
        event: &str,
        effect: &WebhookEffect,
    ) -> Result<Applied, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let new = tx.run(RECORD_EVENT, vals![id, event, now]).await? == 1;
        if !new {
            return Ok(Applied::Duplicate);
        }
        let first = record_history(&mut tx, effect, now).await?;
        match effect {
            WebhookEffect::Enqueue(item) => {
                let values = vals![
                    item.chat_id,
                    &item.snapshot,
                    item.priority,
                    item.ranked,
                    now,
                    now
                ];
                tx.run(ENQUEUE, values).await?;
            }
            WebhookEffect::Assigned {
                chat_id,
                agent: Some(agent),
            } => {
                upsert_open_chat(&mut tx, *chat_id, agent, now).await?;
            }
            WebhookEffect::Assigned {
                chat_id,
                agent: None,
            }
            | WebhookEffect::Closed { chat_id } => {
                close_open_chat(&mut tx, *chat_id, now).await?;
                if matches!(effect, WebhookEffect::Closed { .. }) {
                    // A hop whose answer is unknown keeps its follow-up:
                    // its check reads the chat and records what happened.
                    let unwatched = "DELETE FROM followups WHERE chat_id = $1
                        AND NOT EXISTS (SELECT 1 FROM assign_intents WHERE chat_id = $1)";
                    tx.run(unwatched, vals![chat_id]).await?;
                    forget_chat(&mut tx, *chat_id).await?;
                    // A row still waiting for this chat would be decided on
                    // its snapshot, the chat as it arrived (open), and hold
                    // a seat no close will free: without it, the chat is
                    // read first (`fetch_chat = "auto"`) and found closed.
                    let stale = "UPDATE queue SET snapshot = NULL
                        WHERE chat_id = $1 AND state = 'pending' AND snapshot IS NOT NULL";
                    tx.run(stale, vals![chat_id]).await?;
                }
                // A seat may have freed up.
                wake_waiting(&mut tx).await?;
            }
            WebhookEffect::Answered { chat_id, agent, .. } => {
                let answered = "UPDATE followups SET answered_at = $1 WHERE chat_id = $2";
                tx.run(answered, vals![now, chat_id]).await?;
                record_answer(&mut tx, *chat_id, agent.as_deref(), now).await?;
            }
            WebhookEffect::CustomerWrote { chat_id } => {
                record_customer_message(&mut tx, *chat_id, now).await?;
            }
            // Its history is all it records (above).
            WebhookEffect::Observed { .. } | WebhookEffect::Ignored => {}
        }
        self.commit_queue_change(tx).await?;
        Ok(Applied::New(first))
    }
}

/// What `effect` tells of its chat's history: the close, the first
/// assignment or reply. Written before the chat's other rows, in the order
/// a settle writes them, so that on PostgreSQL a webhook and a settle of
/// one chat never wait for each other's rows.
async fn record_history(
    tx: &mut Tx,
    effect: &WebhookEffect,
    now: i64,
) -> Result<Option<FirstFact>, sqlx::Error> {
    match effect {
        WebhookEffect::Closed { chat_id } => {
            record_close(tx, *chat_id, now).await?;
            Ok(None)
        }
        WebhookEffect::Assigned {
            chat_id,
            agent: Some(agent),
        }
        | WebhookEffect::Observed { chat_id, agent } => {
            record_assignee(tx, *chat_id, agent, now, false).await
        }
        WebhookEffect::Answered {
            chat_id,
            agent,
            text,
        } => record_reply(tx, *chat_id, agent.as_deref(), text.as_deref(), now).await,
        _ => Ok(None),
    }
}
