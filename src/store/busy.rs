//! `busy_replies`: which chats got their pool's "all busy" message, so that
//! each gets it once; and a waiting chat's place in the queue for it.

use super::routing::INSERT_MESSAGE;
use super::{ChatId, OutboxMessage, Store, StoreError, Tx, vals};

/// The chat's place among the rows waiting for a seat, in claim order
/// (priority, then oldest), itself included; the row is leased while it is
/// decided, so it is counted apart.
const POSITION: &str = "SELECT COUNT(*) + 1 FROM queue
    WHERE state = 'pending' AND waiting = 'candidate' AND id != $1
      AND (priority > $2 OR (priority = $2 AND id < $1))";

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
    /// at `priority`.
    pub async fn waiting_position(&self, queue_id: i64, priority: i64) -> Result<i64, StoreError> {
        Ok(self.db.value(POSITION, vals![queue_id, priority]).await?)
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
