//! `busy_replies`: which chats got their pool's "all busy" message, so that
//! each gets it once; and a waiting chat's place in the queue for it.

use super::db::Stmt;
use super::routing::INSERT_MESSAGE;
use super::{ChatId, OutboxMessage, Store, StoreError, Tx, now_ms, vals};
use crate::domain::claim_rank;

/// The chat's place among the rows waiting for a seat, in claim order
/// (rank: priority plus aging, as the claim computes it; then oldest),
/// itself included; the row is leased while it is decided, so it is
/// counted apart. `$2` is its own rank, `$3` now.
const POSITION: Stmt = Stmt::each(
    "SELECT COUNT(*) + 1 FROM (
        SELECT id, CASE WHEN typeof(priority) = 'integer'
                        THEN MIN(MAX(priority, -1000000), 1000000) ELSE 0 END
                   + ($3 - CASE WHEN typeof(enqueued_at) = 'integer'
                                THEN MIN(MAX(enqueued_at, 0), $3) ELSE $3 END) / 600000 AS rank
          FROM queue WHERE state = 'pending' AND waiting = 'candidate' AND id != $1) AS w
      WHERE rank > $2 OR (rank = $2 AND id < $1)",
    "SELECT COUNT(*) + 1 FROM (
        SELECT id, LEAST(GREATEST(priority, -1000000), 1000000)
                   + ($3 - LEAST(GREATEST(enqueued_at, 0), $3)) / 600000 AS rank
          FROM queue WHERE state = 'pending' AND waiting = 'candidate' AND id != $1) AS w
      WHERE rank > $2 OR (rank = $2 AND id < $1)",
);

const REMEMBER: &str = "INSERT INTO busy_replies (chat_id, at) VALUES ($1, $2)
    ON CONFLICT (chat_id) DO NOTHING";

impl Store {
    /// Whether the chat already got a busy reply.
    pub async fn busy_replied(&self, chat_id: ChatId) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM busy_replies WHERE chat_id = $1";
        let n: i64 = self.db.value(sql, vals![chat_id]).await?;
        Ok(n > 0)
    }

    /// Row `queue_id`'s place among the chats waiting for a seat (1 = next),
    /// at `priority`, enqueued at `enqueued_at_ms`.
    pub async fn waiting_position(
        &self,
        queue_id: i64,
        priority: i64,
        enqueued_at_ms: i64,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let rank = claim_rank(priority, enqueued_at_ms, now);
        Ok(self.db.value(POSITION, vals![queue_id, rank, now]).await?)
    }
}

/// Queues the busy reply `m` unless the chat already got one; in the
/// settlement's transaction, so it goes only with the row's own claim.
pub(super) async fn queue_busy_reply(
    tx: &mut Tx,
    m: &OutboxMessage,
    queue_id: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    if tx.run(REMEMBER, vals![m.chat_id, now]).await? == 1 {
        let values = vals![m.chat_id, queue_id, m.kind, m.agent_id, &m.text, now];
        tx.run(INSERT_MESSAGE, values).await?;
    }
    Ok(())
}
