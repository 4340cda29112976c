//! Intake ranking: pending rows that no intake has ranked (a producer's
//! plain INSERT, `assignd enqueue`) take their rule priority in the claim's
//! own transaction, before the claim picks, so that no claim passes over a
//! row that would rank first. Which priority is the caller's to say (the
//! rules are not the store's); the row keeps the higher of the two. Only
//! due rows are ranked (the claim promotes those that came due first): a
//! row that waits an hour is ranked when it can be claimed, so a bulk load
//! of future rows costs the claims of the hour before it nothing.

use super::db::Stmt;
use super::{Tx, vals};

/// How many rows one claim ranks at most: a bulk load is ranked over a few
/// claims, oldest first, rather than in one long write transaction.
pub(super) const RANK_BATCH: i64 = 200;

/// Due pending rows not yet ranked, oldest first, each column only where
/// it has the right type (a wrong one is the claim's to dead-letter).
/// SQLite is told the index: its planner would rather seek `queue_due` for
/// `next_attempt_at = 0` and read every due row, ranked or not.
pub(super) const UNRANKED: Stmt = Stmt::each(
    "SELECT id, CASE WHEN typeof(chat_id) = 'integer' THEN chat_id END,
            CASE WHEN typeof(attrs) = 'text' THEN attrs END,
            CASE WHEN typeof(snapshot) = 'text' THEN snapshot END
       FROM queue INDEXED BY queue_unranked
      WHERE state = 'pending' AND ranked = 0 AND next_attempt_at = 0
      ORDER BY id LIMIT $1",
    // Another daemon ranking the same rows is passed by, not waited for.
    "SELECT id, chat_id, attrs, snapshot
       FROM queue WHERE state = 'pending' AND ranked = 0 AND next_attempt_at = 0
      ORDER BY id LIMIT $1
        FOR UPDATE SKIP LOCKED",
);

/// Marks a row ranked, raised to `$2` (never lowered; NULL changes nothing).
const RANK: Stmt = Stmt::each(
    "UPDATE queue SET ranked = 1,
            priority = CASE WHEN typeof(priority) = 'integer' AND $2 > priority
                            THEN $2 ELSE priority END
      WHERE id = $1",
    "UPDATE queue SET ranked = 1,
            priority = CASE WHEN $2 > priority THEN $2 ELSE priority END
      WHERE id = $1",
);

/// A pending row as a producer left it, for its rule priority at intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrankedRow {
    pub id: i64,
    /// `None` when the column does not hold an integer.
    pub chat_id: Option<i64>,
    /// JSON text as the producer wrote it; may be malformed.
    pub attrs: Option<String>,
    pub snapshot: Option<String>,
}

/// What gives a new row its rule priority (`None`: none is known).
pub type Ranker<'a> = &'a (dyn Fn(&UnrankedRow) -> Option<i64> + Send + Sync);

/// Ranks up to [`RANK_BATCH`] unranked pending rows with `rank`.
pub(super) async fn rank_unranked(tx: &mut Tx, rank: Ranker<'_>) -> Result<(), sqlx::Error> {
    type Raw = (i64, Option<i64>, Option<String>, Option<String>);
    let rows: Vec<Raw> = tx.all(UNRANKED, vals![RANK_BATCH]).await?;
    for (id, chat_id, attrs, snapshot) in rows {
        let row = UnrankedRow {
            id,
            chat_id,
            attrs,
            snapshot,
        };
        tx.run(RANK, vals![id, rank(&row)]).await?;
    }
    Ok(())
}
