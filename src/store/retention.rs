//! Retention: pruning what is finished and older than `[database] retention`.

use super::{Store, StoreError, now_ms, vals};

/// How long a webhook event's id is remembered at least: an event created
/// longer ago is refused (its id may be forgotten, so a captured event
/// could otherwise be replayed).
pub const WEBHOOK_IDS_KEPT_MS: i64 = 7 * 86_400_000;

/// Rows deleted per transaction by [`Store::prune`]: a few milliseconds of
/// the write lock each, so that webhooks, claims and settlements go on
/// between batches however much history is due to go.
const BATCH: i64 = 2000;

/// The tables that grow with history, each emptied of what is older than
/// `$1` in batches of `$2`, through its time index.
const BATCHED: [&str; 6] = [
    "DELETE FROM queue WHERE id IN (
        SELECT id FROM queue WHERE state = 'done' AND updated_at < $1 LIMIT $2)",
    "DELETE FROM outcomes WHERE id IN (SELECT id FROM outcomes WHERE at < $1 LIMIT $2)",
    "DELETE FROM chat_history WHERE chat_id IN (
        SELECT chat_id FROM chat_history WHERE arrived_at < $1 LIMIT $2)",
    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 LIMIT $2)",
    "DELETE FROM chat_arms WHERE chat_id IN (
        SELECT chat_id FROM chat_arms WHERE at < $1 LIMIT $2)",
    "DELETE FROM webhook_events WHERE id IN (
        SELECT id FROM webhook_events WHERE received_at < $1 LIMIT $2)",
];

impl Store {
    /// Deletes what is older than `before_ms` and finished: `done` queue
    /// rows, outcomes, history, audit entries, chats' arms and remembered webhook ids
    /// in batches ([`BATCH`]), and sent or abandoned messages, busy
    /// replies, and console sessions that have ended, however recently.
    /// Pending, leased and dead rows are never pruned. Returns (rows,
    /// outcomes) deleted.
    pub async fn prune(&self, before_ms: i64) -> Result<(u64, u64), StoreError> {
        // Event ids are kept at least 7 days, longer than HelpCrunch retries;
        // an older event is refused at the listener, not deduplicated.
        let events_before = before_ms.min(now_ms() - WEBHOOK_IDS_KEPT_MS);
        let mut deleted = [0; BATCHED.len()];
        for (i, sql) in BATCHED.into_iter().enumerate() {
            let before = if i == BATCHED.len() - 1 {
                events_before
            } else {
                before_ms
            };
            deleted[i] = self.delete_in_batches(sql, before).await?;
        }
        let mut tx = self.begin_write().await?;
        let sent = "DELETE FROM outbox WHERE state != 'pending' AND created_at < $1";
        tx.run(sent, vals![before_ms]).await?;
        let busy = "DELETE FROM busy_replies WHERE at < $1";
        tx.run(busy, vals![before_ms]).await?;
        // Ended console sessions open nothing; their end is their own.
        let sessions = "DELETE FROM console_sessions WHERE ends_at <= $1";
        tx.run(sessions, vals![now_ms()]).await?;
        tx.commit().await?;
        Ok((deleted[0], deleted[1]))
    }

    /// Runs `sql` (a batched delete: `$1` the horizon, `$2` the batch) in
    /// one short transaction after another until a batch comes up short.
    async fn delete_in_batches(&self, sql: &'static str, before: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let n = tx.run(sql, vals![before, BATCH]).await?;
            tx.commit().await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
            // Others' writes go between two batches.
            tokio::task::yield_now().await;
        }
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
