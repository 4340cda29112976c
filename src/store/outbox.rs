//! The `outbox` table: notes and replies to post after an assignment.

use std::time::Duration;

use super::{OutboxRow, Store, StoreError, now_ms};

impl Store {
    /// Takes up to `limit` due outbox messages for `owner`, oldest first,
    /// counting an attempt.
    pub async fn claim_outbox(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // The lease is the retry time: a crash mid-send retries after it,
        // and a clean stop gives the message back by its owner.
        let mut out: Vec<OutboxRow> = sqlx::query_as(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?1, lease_owner = ?4
              WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3)
          RETURNING id, chat_id, kind, agent_id, text, attempts",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(limit as i64)
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// Records a send by `owner`'s claim: `state` is `done`, `dead`, or
    /// `pending` due at `next_ms`. Returns false if the claim was lost.
    pub async fn settle_outbox(
        &self,
        owner: &str,
        id: i64,
        state: &str,
        next_ms: i64,
        uncount: bool,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, attempts = MAX(attempts - ?, 0), last_error = ?,
                    lease_owner = NULL
              WHERE id = ? AND lease_owner = ?",
        )
        .bind(state)
        .bind(next_ms)
        .bind(uncount as i64)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Outbox messages not yet sent or given up.
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// When the next outbox message is due, if any.
    pub async fn outbox_next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.reader)
                .await?,
        )
    }
}
