//! The `outbox` table: notes and replies to post after an assignment.

use std::time::Duration;

use super::db::Stmt;
use super::{OutboxRow, Store, StoreError, now_ms, vals};

/// Takes due messages for one owner, counting an attempt; on PostgreSQL,
/// rows another daemon is claiming are skipped, not waited for.
const CLAIM: Stmt = Stmt::each(
    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, lease_owner = $4
      WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2
                    ORDER BY id LIMIT $3)
  RETURNING id, chat_id, kind, agent_id, text, attempts",
    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, lease_owner = $4
      WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2
                    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
  RETURNING id, chat_id, kind, agent_id, text, attempts",
);

/// Records a send, fenced by the claim's owner.
const SETTLE: &str = "UPDATE outbox
    SET state = $1, next_attempt_at = $2,
        attempts = CASE WHEN attempts > $3 THEN attempts - $3 ELSE 0 END,
        last_error = $4, lease_owner = NULL
  WHERE id = $5 AND lease_owner = $6";

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
        let until = now + lease.as_millis() as i64;
        let mut out: Vec<OutboxRow> = tx.all(CLAIM, vals![until, now, limit, owner]).await?;
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
        let values = vals![state, next_ms, uncount, error, id, owner];
        let changed = self.db.run(SETTLE, values).await?;
        Ok(changed == 1)
    }

    /// Outbox messages not yet sent or given up.
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM outbox WHERE state = 'pending'";
        Ok(self.db.value(sql, vals![]).await?)
    }

    /// When the next outbox message is due, if any.
    pub async fn outbox_next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'";
        Ok(self.db.value(sql, vals![]).await?)
    }
}
