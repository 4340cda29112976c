//! The claim: the best due rows, in the documented order (priority, with
//! aging, then oldest by id), at a cost that does not grow with the queue.
//!
//! The order is served by an index, so a claim reads the rows it takes and
//! little more, whatever the backlog (issue 23):
//!
//! - Aging counts the 10-minute marks of the clock passed since a row was
//!   enqueued (`now / 10 min - enqueued_at / 10 min`), so a row's place is
//!   `order key + now / 10 min`, where the key (`priority - enqueued_at /
//!   10 min`, [`crate::domain::claim_key`]) does not change with time: the
//!   partial index `queue_claim_order` holds it.
//! - That index holds only rows due from the start (`next_attempt_at =
//!   0`). A row with a due time (a retry, a chat waiting for a seat) is
//!   promoted (its due time set to 0) by the first claim after that time,
//!   found through `queue_due` by a range that holds only rows due since
//!   the last claim. Rows that wait are never read by a claim.
//! - Rows whose lease expired (a daemon that died) are few and read
//!   through `queue_leases`.
//!
//! A producer's value of the wrong type still goes first, to be
//! dead-lettered (`queue.rs` `check_claimed`): a priority that is not an
//! integer, or an enqueue time that is not one, gives the highest key; a
//! due time that is not a number is promoted at once.

use std::time::Duration;

use super::db::Stmt;
use super::queue::{ClaimedRow, check_claimed, mark_dead};
use super::rank::{RANK_BATCH, Ranker, UNRANKED, rank_unranked};
use super::{LeaseKey, QueueRow, Store, StoreError, now_ms, vals};
use crate::domain::claim_rank;

/// The order key of the index `queue_claim_order`, in each dialect (the
/// migrations create the index with the same expression).
macro_rules! key {
    (sqlite) => {
        "(CASE WHEN typeof(priority) = 'integer' THEN MIN(MAX(priority, -1000000), 1000000)
               ELSE 2000000 END
          - CASE WHEN typeof(enqueued_at) = 'integer' THEN MAX(enqueued_at, 0) / 600000
                 ELSE 0 END)"
    };
    (postgres) => {
        "(LEAST(GREATEST(priority, -1000000), 1000000) - GREATEST(enqueued_at, 0) / 600000)"
    };
}

/// Takes the best `$5` rows: the head of `queue_claim_order` and the rows
/// whose lease expired, merged by key. SQLite is told the index (its
/// planner would rather seek `queue_due` for `next_attempt_at = 0` and sort
/// every fresh row); PostgreSQL picks it for the ORDER BY and LIMIT. `$1`–`$4`: the claim's owner,
/// epoch, lease end and now. The attempt count is cast and bounded, so
/// that no stored value can make it overflow into a real. A claimed row
/// needs no intake ranking any more: its decision gives it its rule's
/// priority.
const CLAIM: Stmt = Stmt::each(
    concat!(
        "UPDATE queue
    SET state = 'leased', lease_owner = $1, lease_epoch = $2, lease_until = $3, ranked = 1,
        attempts = MIN(MAX(CAST(attempts AS INTEGER), 0), 1000000000) + 1, updated_at = $4
  WHERE id IN (
        SELECT id FROM (
            SELECT * FROM (
                SELECT id, ",
        key!(sqlite),
        " AS k FROM queue INDEXED BY queue_claim_order
                 WHERE state = 'pending' AND next_attempt_at = 0
                 ORDER BY ",
        key!(sqlite),
        " DESC, id LIMIT $5)
            UNION ALL
            SELECT * FROM (
                SELECT id, ",
        key!(sqlite),
        " AS k FROM queue
                 WHERE state = 'leased'
                   AND (lease_until <= $4 OR typeof(lease_until) != 'integer')
                 ORDER BY 2 DESC, id LIMIT $5))
         ORDER BY k DESC, id LIMIT $5)
RETURNING id,
          CASE WHEN typeof(chat_id) = 'integer' THEN chat_id END AS chat_id,
          CASE WHEN typeof(attrs) = 'text' THEN attrs END AS attrs,
          CASE WHEN typeof(priority) = 'integer' THEN priority END AS priority, attempts,
          CASE WHEN typeof(snapshot) = 'text' THEN snapshot END AS snapshot,
          CASE WHEN typeof(enqueued_at) = 'integer' THEN enqueued_at ELSE $4 END AS enqueued_at,
          CASE WHEN typeof(last_error) = 'text' THEN last_error END AS last_error, waiting,
          CASE WHEN typeof(handback) = 'text' THEN handback END AS handback,
          typeof(chat_id) AS chat_id_type, typeof(attrs) AS attrs_type,
          typeof(priority) AS priority_type"
    ),
    // Types are the schema's own here; SKIP LOCKED lets daemons claim side
    // by side without waiting on each other's rows.
    concat!(
        "UPDATE queue
    SET state = 'leased', lease_owner = $1, lease_epoch = $2, lease_until = $3, ranked = 1,
        attempts = LEAST(GREATEST(attempts, 0), 1000000000) + 1, updated_at = $4
  WHERE id IN (
        SELECT id FROM (
            SELECT * FROM (SELECT id, ",
        key!(postgres),
        " AS k FROM queue
              WHERE state = 'pending' AND next_attempt_at = 0
              ORDER BY ",
        key!(postgres),
        " DESC, id LIMIT $5
              FOR UPDATE SKIP LOCKED) AS fresh
            UNION ALL
            SELECT * FROM (SELECT id, ",
        key!(postgres),
        " AS k FROM queue
              WHERE state = 'leased' AND lease_until <= $4
              ORDER BY 2 DESC, id LIMIT $5
              FOR UPDATE SKIP LOCKED) AS expired) AS candidates
         ORDER BY k DESC, id LIMIT $5)
RETURNING id, chat_id, attrs, priority, attempts, snapshot, enqueued_at, last_error, waiting,
          handback, 'integer' AS chat_id_type,
          CASE WHEN attrs IS NULL THEN 'null' ELSE 'text' END AS attrs_type,
          'integer' AS priority_type"
    ),
);

/// Makes due the rows whose due time (`$1`: now) has come: the range
/// holds only such rows, so promoting reads nothing that still waits.
const PROMOTE: Stmt = Stmt::each(
    "UPDATE queue SET next_attempt_at = 0
      WHERE state = 'pending' AND next_attempt_at > 0 AND next_attempt_at <= $1",
    "UPDATE queue SET next_attempt_at = 0 WHERE id IN (
        SELECT id FROM queue
         WHERE state = 'pending' AND next_attempt_at > 0 AND next_attempt_at <= $1
           FOR UPDATE SKIP LOCKED)",
);

/// Makes due at once a due time no clock reaches, so that the row is
/// claimed and its columns judged: a negative one, and on SQLite one that
/// is not a number (text and blobs sort after numbers). Each is a range of
/// `queue_due` of its own: an OR of the two would read the whole index.
const PROMOTE_ODD: [Stmt; 2] = [
    Stmt::each(
        "UPDATE queue SET next_attempt_at = 0 WHERE state = 'pending' AND next_attempt_at < 0",
        "UPDATE queue SET next_attempt_at = 0 WHERE id IN (
            SELECT id FROM queue WHERE state = 'pending' AND next_attempt_at < 0
               FOR UPDATE SKIP LOCKED)",
    ),
    Stmt::each(
        "UPDATE queue SET next_attempt_at = 0 WHERE state = 'pending' AND next_attempt_at >= ''",
        // A BIGINT column: nothing to find.
        "SELECT 1 WHERE FALSE",
    ),
];

impl Store {
    /// [`Store::claim`], after giving the pending rows no intake ranked
    /// their rule priority with `rank` (if given), in the same transaction.
    pub(super) async fn claim_after_ranking(
        &self,
        lease_key: &LeaseKey,
        lease: Duration,
        limit: u32,
        rank: Option<Ranker<'_>>,
    ) -> Result<Vec<QueueRow>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // Promoted first: the rows that came due are ranked with the rest.
        tx.run(PROMOTE, vals![now]).await?;
        for odd in PROMOTE_ODD {
            tx.run(odd, vals![]).await?;
        }
        if let Some(rank) = rank {
            rank_unranked(&mut tx, rank).await?;
        }
        let until = now + lease.as_millis() as i64;
        let values = vals![&lease_key.owner, lease_key.epoch, until, now, limit];
        let rows: Vec<ClaimedRow> = tx.all(CLAIM, values).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            match check_claimed(r) {
                Ok(row) => out.push(row),
                Err(bad) => mark_dead(&mut tx, &bad, now).await?,
            }
        }
        tx.commit().await?;
        // RETURNING gives no order guarantee.
        let rank = |r: &QueueRow| claim_rank(r.priority, r.enqueued_at_ms, now);
        out.sort_by(|a, b| rank(b).cmp(&rank(a)).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

impl Store {
    /// The database's plan for a claim, then (after a `--` line) for its
    /// promotions, its intake ranking and the loop's look at the next due time (`EXPLAIN
    /// QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL), one line per node:
    /// what `docs/benchmarks.md` shows and a test checks, that each is
    /// served by its index and reads only what it needs.
    pub async fn claim_plan(&self) -> Result<String, StoreError> {
        let now = now_ms();
        let explain = |sql: &'static str| match self.backend() {
            super::Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            super::Backend::Postgres => format!("EXPLAIN {sql}"),
        };
        let claim = explain(CLAIM.text(self.backend()));
        let mut lines = self
            .db
            .plan(claim, vals!["plan", 0_i64, now, now, 1_i64])
            .await?;
        lines.push("--".to_string());
        let promote = explain(PROMOTE.text(self.backend()));
        lines.extend(self.db.plan(promote, vals![now]).await?);
        for odd in PROMOTE_ODD {
            let odd = explain(odd.text(self.backend()));
            lines.extend(self.db.plan(odd, vals![]).await?);
        }
        let unranked = explain(UNRANKED.text(self.backend()));
        lines.extend(self.db.plan(unranked, vals![RANK_BATCH]).await?);
        lines.extend(
            self.db
                .plan(explain(super::queue::NEXT_DUE), vals![])
                .await?,
        );
        Ok(lines.join("\n"))
    }
}
