//! Retention: pruning what is finished and older than `[database] retention`.

use super::{Store, StoreError, now_ms, vals};

/// How long a webhook event's id is remembered at least: an event created
/// longer ago is refused (its id may be forgotten, so a captured event
/// could otherwise be replayed).
pub const WEBHOOK_IDS_KEPT_MS: i64 = 7 * 86_400_000;

impl Store {
    /// Deletes what is older than `before_ms` and finished: `done` queue
    /// rows, outcomes, and sent or abandoned messages; and console sessions
    /// that have ended, however recently. Pending, leased and dead rows are
    /// never pruned. Returns (rows, outcomes) deleted.
    pub async fn prune(&self, before_ms: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = "DELETE FROM queue WHERE state = 'done' AND updated_at < $1";
        let rows = tx.run(done, vals![before_ms]).await?;
        let outcomes = tx
            .run("DELETE FROM outcomes WHERE at < $1", vals![before_ms])
            .await?;
        let sent = "DELETE FROM outbox WHERE state != 'pending' AND created_at < $1";
        tx.run(sent, vals![before_ms]).await?;
        let busy = "DELETE FROM busy_replies WHERE at < $1";
        tx.run(busy, vals![before_ms]).await?;
        tx.run("DELETE FROM audit WHERE at < $1", vals![before_ms])
            .await?;
        let history = "DELETE FROM chat_history WHERE arrived_at < $1";
        tx.run(history, vals![before_ms]).await?;
        // Event ids are kept at least 7 days, longer than HelpCrunch retries;
        // an older event is refused at the listener, not deduplicated.
        let events_before = before_ms.min(now_ms() - WEBHOOK_IDS_KEPT_MS);
        let events = "DELETE FROM webhook_events WHERE received_at < $1";
        tx.run(events, vals![events_before]).await?;
        // Ended console sessions open nothing; their end is their own.
        let sessions = "DELETE FROM console_sessions WHERE ends_at <= $1";
        tx.run(sessions, vals![now_ms()]).await?;
        tx.commit().await?;
        Ok((rows, outcomes))
    }

    /// Forgets the customers whose last agent had them before `before_ms`:
    /// `sticky` ignores them anyway (the caller passes the longest
    /// `sticky_for` of the rules). Kept apart from [`Store::prune`]: this is
    /// routing state, and its horizon is the rules', not the history's.
    pub async fn prune_customers(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = "DELETE FROM customer_agent WHERE at < $1";
        let customers = tx.run(sql, vals![before_ms]).await?;
        tx.commit().await?;
        Ok(customers)
    }
}
