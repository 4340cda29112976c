//! `busy_replies`: which chats got their pool's "all busy" message, so that
//! each gets it once, and the place in line each was told.
//!
//! A pool's line is the chats whose last decision left them waiting for a
//! seat in it (`queue.waiting_pool`), pending or being decided again, in
//! claim order (priority plus aging, then oldest). A place is handed out
//! in the settlement's transaction, one chat of the pool at a time (SQLite:
//! the one writer; PostgreSQL: a transaction lock per pool), so two chats
//! settled at once never count the line without each other. It is the
//! chat's place, or one more than the highest place told to a chat still
//! waiting ahead of it if that is higher (the line moved since), so the
//! places told to the chats that wait rise in claim order. A chat is not
//! told while a row ahead of it is being decided for the first time (it
//! may join the line ahead): it is told on its next turn.

use super::db::Stmt;
use super::routing::INSERT_MESSAGE;
use super::{BusyWait, OutboxKind, Store, StoreError, Tx, vals};
use crate::domain::ChatId;

/// For row `$1` in pool `$2`'s line at `$3`: the chats ahead of it, the
/// rows ahead of it decided for the first time right now (in no line yet),
/// and the highest place told to a chat ahead of it. `$rank` is the
/// claim's rank (priority, bounded, plus aging) in the dialect.
macro_rules! line {
    ($rank:literal) => {
        concat!(
            "WITH ranked AS (
                SELECT id, chat_id, waiting_pool, ",
            $rank,
            " AS rank FROM queue
                 WHERE id = $1
                    OR (state IN ('pending', 'leased') AND waiting_pool = $2)
                    OR (state = 'leased' AND waiting_pool IS NULL AND lease_until > $3)),
             me AS (SELECT rank FROM ranked WHERE id = $1)
            SELECT COALESCE(SUM(CASE WHEN r.waiting_pool IS NOT NULL THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN r.waiting_pool IS NULL THEN 1 ELSE 0 END), 0),
                   MAX(b.position)
              FROM ranked r CROSS JOIN me
              LEFT JOIN busy_replies b ON b.chat_id = r.chat_id AND b.pool = $2
             WHERE r.id != $1 AND (r.rank > me.rank OR (r.rank = me.rank AND r.id < $1))"
        )
    };
}

const LINE: Stmt = Stmt::each(
    line!(
        "CASE WHEN typeof(priority) = 'integer' THEN MIN(MAX(priority, -1000000), 1000000)
              ELSE 0 END
         - CASE WHEN typeof(enqueued_at) = 'integer'
                THEN MAX(enqueued_at, 0) ELSE $3 END / 600000"
    ),
    line!("LEAST(GREATEST(priority, -1000000), 1000000) - GREATEST(enqueued_at, 0) / 600000"),
);

const REMEMBER: &str = "INSERT INTO busy_replies (chat_id, at, pool, position)
    VALUES ($1, $2, $3, $4) ON CONFLICT (chat_id) DO NOTHING";

/// One place at a time per pool, across daemons (the key's first half is
/// this lock's own; the routing lock and the producers' use others).
const LOCK_LINE: &str = "SELECT pg_advisory_xact_lock(1095976774, hashtext($1))";

impl Store {
    /// Whether the chat already got a busy reply.
    pub async fn busy_replied(&self, chat_id: ChatId) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM busy_replies WHERE chat_id = $1";
        let n: i64 = self.db.value(sql, vals![chat_id]).await?;
        Ok(n > 0)
    }
}

/// Tells row `queue_id`'s chat its place in `wait`'s pool line, with the
/// pool's busy reply, unless it already got one or a row ahead of it is
/// still being decided for the first time. In the settlement's
/// transaction, after the row itself is written, so it goes only with the
/// row's own claim.
pub(super) async fn queue_busy_reply(
    tx: &mut Tx,
    wait: &BusyWait,
    queue_id: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let Some(m) = &wait.reply else {
        return Ok(());
    };
    if let Tx::Postgres(..) = tx {
        tx.run(LOCK_LINE, vals![&wait.pool]).await?;
    }
    let line: Vec<(i64, i64, Option<i64>)> = tx.all(LINE, vals![queue_id, &wait.pool, now]).await?;
    let (ahead, undecided, told) = line.first().copied().unwrap_or((0, 0, None));
    if undecided > 0 {
        return Ok(());
    }
    let position = (ahead + 1).max(told.map_or(0, |t| t + 1));
    let values = vals![m.chat_id, now, &wait.pool, position];
    if tx.run(REMEMBER, values).await? == 0 {
        return Ok(());
    }
    let text = m.text.fill(position);
    let values = vals![
        m.chat_id,
        queue_id,
        OutboxKind::Message,
        Some(m.agent_id),
        &text,
        now
    ];
    tx.run(INSERT_MESSAGE, values).await?;
    Ok(())
}
