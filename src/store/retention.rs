//! Retention: pruning what is finished and older than `[database] retention`.

use super::{Store, StoreError, now_ms};

impl Store {
    /// Deletes what is older than `before_ms` and finished: `done` queue
    /// rows, outcomes, and sent or abandoned messages. Pending, leased and
    /// dead rows are never pruned. Returns (rows, outcomes) deleted.
    pub async fn prune(&self, before_ms: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("DELETE FROM queue WHERE state = 'done' AND updated_at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let outcomes = sqlx::query("DELETE FROM outcomes WHERE at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM outbox WHERE state != 'pending' AND created_at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        // Event ids are kept at least 7 days, longer than HelpCrunch retries.
        sqlx::query("DELETE FROM webhook_events WHERE received_at < ?")
            .bind(before_ms.min(now_ms() - 7 * 86_400_000))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((rows, outcomes))
    }
}
