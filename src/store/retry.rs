//! Putting finished rows back on the queue (`assignd queue retry`): dead
//! letters, and chats that ended `no_match` (say, under an empty or broken
//! rule set) so that the fixed rules can still assign them.

use super::{AuditAction, NewAudit, Store, StoreError, Tx, now_ms, vals};

/// Makes a dead row (`$2`) pending again, unless its chat has an active row.
const REVIVE_DEAD: &str = "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = 0,
        last_error = NULL, waiting = NULL, lease_owner = NULL, lease_epoch = NULL, lease_until = NULL,
        updated_at = $1
  WHERE id = $2 AND state = 'dead'
    AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.chat_id = queue.chat_id AND q.state IN ('pending', 'leased'))";

/// [`REVIVE_DEAD`] for a dead row or a done one whose last outcome (the
/// highest outcome id for the row) is `no_match`.
const REVIVE_DEAD_OR_NO_MATCH: &str = "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = 0,
        last_error = NULL, waiting = NULL, lease_owner = NULL, lease_epoch = NULL, lease_until = NULL,
        updated_at = $1
  WHERE id = $2
    AND (state = 'dead'
         OR (state = 'done'
             AND (SELECT o.result FROM outcomes o WHERE o.queue_id = queue.id
                   ORDER BY o.id DESC LIMIT 1) = 'no_match'))
    AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.chat_id = queue.chat_id AND q.state IN ('pending', 'leased'))";

/// Every done row whose last outcome is `no_match`, in one pass over
/// outcomes. Only a chat's newest row: an older one whose chat was enqueued
/// again since has been dealt with by the newer row.
const DONE_NO_MATCH: &str = "SELECT q.id FROM queue q
      JOIN (SELECT queue_id, MAX(id) AS last FROM outcomes
             WHERE queue_id IS NOT NULL GROUP BY queue_id) l ON l.queue_id = q.id
      JOIN outcomes o ON o.id = l.last
     WHERE q.state = 'done' AND o.result = 'no_match'
       AND NOT EXISTS (SELECT 1 FROM queue newer WHERE newer.chat_id = q.chat_id AND newer.id > q.id)
     ORDER BY q.id";

impl Store {
    /// Puts dead rows back on the queue as new: all of them, or those in
    /// `ids` that are dead. A row whose chat already has an active row
    /// stays dead (the active one will do). Returns how many came back.
    pub async fn retry_dead(&self, ids: Option<&[i64]>, actor: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let targets: Vec<i64> = match ids {
            Some(ids) => ids.to_vec(),
            None => {
                let dead: Vec<(i64,)> = tx
                    .all(
                        "SELECT id FROM queue WHERE state = 'dead' ORDER BY id",
                        vals![],
                    )
                    .await?;
                dead.into_iter().map(|(id,)| id).collect()
            }
        };
        let revived = revive(&mut tx, &targets, REVIVE_DEAD, actor).await?;
        self.commit_queue_change(tx).await?;
        Ok(revived)
    }

    /// Puts the rows `ids` back on the queue as new (attempts 0, due now,
    /// no lease), each if it is dead or done with a last outcome of
    /// `no_match`; any other row, and a row whose chat already has an
    /// active (pending or leased) row, stays as it is. Returns how many
    /// came back.
    pub async fn retry_ids(&self, ids: &[i64], actor: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let revived = revive(&mut tx, ids, REVIVE_DEAD_OR_NO_MATCH, actor).await?;
        self.commit_queue_change(tx).await?;
        Ok(revived)
    }

    /// Puts back every done row whose last outcome is `no_match`, as
    /// [`Store::retry_ids`] does. Returns how many came back.
    pub async fn retry_no_match(&self, actor: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let targets: Vec<(i64,)> = tx.all(DONE_NO_MATCH, vals![]).await?;
        let targets: Vec<i64> = targets.into_iter().map(|(id,)| id).collect();
        let revived = revive(&mut tx, &targets, REVIVE_DEAD_OR_NO_MATCH, actor).await?;
        self.commit_queue_change(tx).await?;
        Ok(revived)
    }
}

/// Runs `update` (one of the `REVIVE_*` statements) for each of `ids`. One
/// row at a time, so that two finished rows of one chat never both come back.
/// Records the rows that came back, if any, as `actor`'s retry.
async fn revive(
    tx: &mut Tx,
    ids: &[i64],
    update: &'static str,
    actor: &str,
) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let mut back = Vec::new();
    for &id in ids {
        if tx.run(update, vals![now, id]).await? > 0 {
            back.push(id.to_string());
        }
    }
    if !back.is_empty() {
        super::watch::announce(tx).await?;
        let subject = format!("{} row(s)", back.len());
        let detail = format!("queue rows {}", back.join(", "));
        let audit = NewAudit {
            actor,
            action: AuditAction::Retry,
            subject: &subject,
            until_ms: None,
            detail: &detail,
        };
        audit.write(tx).await?;
    }
    Ok(back.len() as u64)
}
