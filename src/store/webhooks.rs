//! Webhook events, applied once each with their effect.

use super::routing::{upsert_open_chat, wake_waiting};
use super::{Store, StoreError, WebhookEffect, now_ms};

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
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let new = sqlx::query(
            "INSERT OR IGNORE INTO webhook_events (id, event, received_at) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(event)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !new {
            return Ok(false);
        }
        match effect {
            WebhookEffect::Enqueue(item) => {
                sqlx::query("INSERT INTO queue (chat_id, snapshot, enqueued_at, updated_at) VALUES (?, ?, ?, ?)")
                    .bind(item.chat_id)
                    .bind(&item.snapshot)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
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
                sqlx::query("DELETE FROM open_chats WHERE chat_id = ?")
                    .bind(chat_id)
                    .execute(&mut *tx)
                    .await?;
                if matches!(effect, WebhookEffect::Closed { .. }) {
                    sqlx::query("DELETE FROM followups WHERE chat_id = ?")
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                }
                // A seat may have freed up.
                wake_waiting(&mut tx).await?;
            }
            WebhookEffect::Answered { chat_id } => {
                sqlx::query("UPDATE followups SET answered_at = ? WHERE chat_id = ?")
                    .bind(now)
                    .bind(chat_id)
                    .execute(&mut *tx)
                    .await?;
            }
            WebhookEffect::Ignored => {}
        }
        tx.commit().await?;
        Ok(true)
    }
}
