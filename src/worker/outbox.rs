//! Notes and replies: sent from the outbox, apart from the assignments, so
//! a failed note is retried on its own and never repeats an assignment.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Worker, retry_delay};
use crate::helpcrunch::ErrorClass;
use crate::helpcrunch::types::{MessageKind, NewMessage};
use crate::store::{OutboxRow, now_ms};

impl Worker {
    /// Sends notes and replies from the outbox, apart from the assignments:
    /// a failed note is retried on its own and never repeats an assignment.
    pub(super) async fn run_outbox(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let due = match self.store.claim_outbox(self.settings.lease, 8).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    self.idle(&shutdown, self.settings.poll_interval * 4).await;
                    continue;
                }
            };
            if due.is_empty() {
                let wait = match self.store.outbox_next_due_ms().await {
                    Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(1) as u64),
                    _ => self.settings.poll_interval,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = self.outbox_wake.notified() => {}
                    _ = tokio::time::sleep(wait.min(self.settings.poll_interval)) => {}
                }
                continue;
            }
            for m in due {
                self.send_message(m).await;
            }
        }
    }

    async fn send_message(&self, m: OutboxRow) {
        let message = NewMessage {
            chat: m.chat_id,
            text: m.text.clone(),
            kind: if m.kind == "private" {
                MessageKind::Private
            } else {
                MessageKind::Message
            },
            agent: m.agent_id,
        };
        let call = self.client().post_message(&message).await;
        let (state, next, uncount, error) = match &call.result {
            Ok(_) => ("done", 0, false, None),
            Err(e) => match e.class() {
                ErrorClass::Unauthorized | ErrorClass::RateLimited => {
                    ("pending", now_ms(), true, Some(e.to_string()))
                }
                ErrorClass::Permanent | ErrorClass::AgentRejected => {
                    ("dead", 0, false, Some(e.to_string()))
                }
                ErrorClass::Transient if m.attempts >= self.settings.max_attempts as i64 => {
                    ("dead", 0, false, Some(e.to_string()))
                }
                ErrorClass::Transient => (
                    "pending",
                    now_ms() + retry_delay(m.attempts).as_millis() as i64,
                    false,
                    Some(e.to_string()),
                ),
            },
        };
        match (&call.result, state) {
            (Ok(_), _) => tracing::info!(chat_id = m.chat_id, kind = %m.kind, "message posted"),
            (Err(e), "dead") => {
                tracing::error!(chat_id = m.chat_id, kind = %m.kind, error = %e, "message given up")
            }
            (Err(e), _) => {
                tracing::warn!(chat_id = m.chat_id, kind = %m.kind, error = %e, "message will be retried")
            }
        }
        if let Err(e) = self
            .store
            .settle_outbox(m.id, state, next, uncount, error.as_deref())
            .await
        {
            tracing::error!(error = %e, "cannot record the message; it will be sent again after its lease");
        }
    }
}
