//! Notes and replies: sent from the outbox, apart from the assignments, so
//! a failed note is retried on its own and never repeats an assignment.

use std::sync::Arc;
use std::time::Duration;

use super::Worker;
use super::policy::{Disposition, dispose};
use crate::helpcrunch::ApiError;
use crate::helpcrunch::types::{MessageKind, NewMessage};
use crate::store::{OutboxKind, OutboxRow, now_ms};

impl Worker {
    /// One round of the outbox job: sends the notes and replies due now.
    pub(super) async fn outbox_round(self: &Arc<Self>) -> Duration {
        let claimed = self
            .store
            .claim_outbox(&self.owner, self.settings.lease, 8)
            .await;
        let next_due = self.store.outbox_next_due_ms();
        self.drain_due("the outbox", claimed, next_due, |m| self.send_message(m))
            .await
    }

    async fn send_message(&self, m: OutboxRow) {
        let message = NewMessage {
            chat: m.chat_id,
            text: m.text.clone(),
            kind: match m.kind {
                OutboxKind::Private => MessageKind::Private,
                OutboxKind::Message => MessageKind::Message,
            },
            agent: m.agent_id,
        };
        let call = self.client().post_message(&message).await;
        let (state, next, uncount) = match &call.result {
            Ok(_) => ("done", 0, false),
            // Shadow mode: what would have been posted, recorded as such.
            Err(ApiError::ReadOnly) => ("done", 0, false),
            Err(e) => match dispose(e, m.attempts, self.settings.max_attempts) {
                // Not sent because assignd is stopping: shutdown gives it back.
                Disposition::Release => return,
                Disposition::HoldForKey => ("pending", now_ms(), true),
                Disposition::Retry {
                    at_ms,
                    count_attempt,
                } => ("pending", at_ms, !count_attempt),
                Disposition::Dead { .. } => ("dead", 0, false),
            },
        };
        let error = call.result.as_ref().err().map(ToString::to_string);
        match (&call.result, state) {
            (Ok(_), _) => tracing::info!(chat_id = m.chat_id.0, kind = %m.kind, "message posted"),
            (Err(ApiError::ReadOnly), _) => {
                tracing::info!(chat_id = m.chat_id.0, kind = %m.kind, "shadow: message not posted")
            }
            (Err(e), "dead") => {
                tracing::error!(chat_id = m.chat_id.0, kind = %m.kind, error = %e, "message given up")
            }
            (Err(e), _) => {
                tracing::warn!(chat_id = m.chat_id.0, kind = %m.kind, error = %e, "message will be retried")
            }
        }
        match self
            .store
            .settle_outbox(&self.owner, m.id, state, next, uncount, error.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                chat_id = m.chat_id.0,
                "the message's claim was lost before it was recorded"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the message; it will be sent again after its lease")
            }
        }
    }
}
