//! The `queue` table: claims, settlements, releases and listings.
//!
//! Producers write this table with plain SQL, and SQLite's type affinity
//! lets any value into any column. Nothing read from it may panic: a claimed
//! row whose producer columns hold the wrong type is dead-lettered in the
//! claim's own transaction, with a reason naming the column, and the rest
//! go on. Columns that are ours (attempts, times, the last error) are
//! repaired rather than trusted, and a `snapshot` that is not JSON text is
//! ignored like a malformed one (the chat is fetched instead).

use super::busy::queue_busy_reply;
use super::outcomes::insert_outcome;
use super::rank::Ranker;
use super::routing::apply_assigned;
use std::time::Duration;

use sqlx::FromRow;

use super::db::Stmt;

use super::{
    ChatId, LeaseKey, NewQueueItem, Next, QueueListing, QueueRow, QueueState, Settlement, Store,
    StoreError, Tx, Wait, now_ms, vals,
};

/// Settles one claimed row, fenced by its claim (owner and epoch).
/// A chat's `waiting_pool` is the pool its decision left it waiting for a
/// seat in (`$11`), kept as it was when the row is only put back (`$12`).
const SETTLE: &str = "UPDATE queue
    SET state = $1, next_attempt_at = $2, last_error = $3, waiting = $9,
        waiting_pool = CASE WHEN $12 = 1 THEN waiting_pool ELSE $11 END,
        priority = CASE WHEN $10 > priority THEN $10 ELSE priority END, lease_owner = NULL,
        lease_epoch = NULL, lease_until = NULL, attempts = CASE WHEN attempts > $4 THEN attempts - $4 ELSE 0 END, updated_at = $5,
        settled_owner = $7, settled_epoch = $8
  WHERE id = $6 AND state = 'leased' AND lease_owner = $7 AND lease_epoch = $8";

/// Whether the claim settled the row already (its earlier commit went
/// through, its answer was lost).
const SETTLED_BY: &str =
    "SELECT id FROM queue WHERE id = $1 AND settled_owner = $2 AND settled_epoch = $3";

/// Makes one claimed row dead, fenced by its claim.
const DEAD_LETTER: &str = "UPDATE queue
    SET state = 'dead', last_error = $1, waiting = NULL, waiting_pool = NULL, lease_owner = NULL, lease_epoch = NULL,
        lease_until = NULL, updated_at = $2
  WHERE id = $3 AND state = 'leased' AND lease_owner = $4 AND lease_epoch = $5";

const ENQUEUE: &str =
    "INSERT INTO queue (chat_id, attrs, snapshot, priority, ranked, enqueued_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Who holds leases, for releasing those of processes that died.
const LEASE_OWNERS: Stmt = Stmt::each(
    "SELECT lease_owner FROM queue WHERE state = 'leased' AND typeof(lease_owner) = 'text'
     UNION SELECT lease_owner FROM outbox WHERE typeof(lease_owner) = 'text'",
    "SELECT lease_owner FROM queue WHERE state = 'leased' AND lease_owner IS NOT NULL
     UNION SELECT lease_owner FROM outbox WHERE lease_owner IS NOT NULL",
);

const RELEASE_ROWS: &str = "UPDATE queue
    SET state = 'pending', lease_owner = NULL, lease_epoch = NULL, lease_until = NULL,
        attempts = CASE WHEN attempts > $1 THEN attempts - $1 ELSE 0 END, updated_at = $2
  WHERE state = 'leased' AND lease_owner = $3";

const RELEASE_MESSAGES: &str = "UPDATE outbox
    SET lease_owner = NULL, next_attempt_at = $1,
        attempts = CASE WHEN attempts > $2 THEN attempts - $2 ELSE 0 END
  WHERE lease_owner = $3 AND state = 'pending'";

/// The earliest due time: each MIN is the first entry of its index
/// (`queue_due`, `queue_leases`); the cast comes after, so that it does
/// not make every entry read (a text value, which sorts last, casts to a
/// number the claim then finds due).
pub(super) const NEXT_DUE: &str = "SELECT CAST(MIN(t) AS BIGINT) FROM (
    SELECT MIN(next_attempt_at) AS t FROM queue WHERE state = 'pending'
    UNION ALL SELECT MIN(lease_until) FROM queue WHERE state = 'leased') AS due";

/// `queue list`: any value a producer wrote on SQLite shows as its SQL
/// literal (`'abc'`, `X'00'`), so reading the listing never fails.
const LIST: Stmt = Stmt::each(
    "SELECT id,
            CASE typeof(chat_id) WHEN 'integer' THEN CAST(chat_id AS TEXT) ELSE quote(chat_id) END AS chat_id,
            state, CAST(attempts AS INTEGER) AS attempts,
            CAST(next_attempt_at AS INTEGER) AS next_attempt_at,
            CASE typeof(last_error) WHEN 'text' THEN last_error WHEN 'null' THEN NULL
                 ELSE quote(last_error) END AS last_error
       FROM queue WHERE $1 IS NULL OR state = $1 ORDER BY id DESC LIMIT $2",
    "SELECT id, CAST(chat_id AS TEXT) AS chat_id, state, attempts, next_attempt_at, last_error
       FROM queue WHERE $1::TEXT IS NULL OR state = $1 ORDER BY id DESC LIMIT $2",
);

/// Rows per state. Each count reads its state's partial index alone
/// (`queue_due`, `queue_leases`, `queue_finished`, `queue_dead`), never the
/// table: a GROUP BY over the table reads every row ever kept.
pub(super) const DEPTH: &str = "SELECT 'dead', COUNT(*) FROM queue WHERE state = 'dead'
    UNION ALL SELECT 'done', COUNT(*) FROM queue WHERE state = 'done'
    UNION ALL SELECT 'leased', COUNT(*) FROM queue WHERE state = 'leased'
    UNION ALL SELECT 'pending', COUNT(*) FROM queue WHERE state = 'pending'";

/// Rows waiting for a retry or a candidate, with their reasons, the
/// soonest first: the head of `queue_waiting`, whatever the backlog of new
/// rows (`last_error IS NOT NULL` is what lets SQLite use that index).
pub(super) const WAITING: Stmt = Stmt::each(
    "SELECT id, chat_id, CAST(next_attempt_at AS INTEGER), last_error FROM queue
      WHERE state = 'pending' AND last_error IS NOT NULL AND typeof(last_error) = 'text'
        AND typeof(chat_id) = 'integer'
      ORDER BY next_attempt_at LIMIT $1",
    "SELECT id, chat_id, next_attempt_at, last_error FROM queue
      WHERE state = 'pending' AND last_error IS NOT NULL
      ORDER BY next_attempt_at LIMIT $1",
);

/// A claimed row that cannot be processed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub id: i64,
    pub reason: String,
}

/// A claimed row as the claim returns it: each producer column with the
/// storage class SQLite reports for it, and its value only where that
/// class is the right one, so reading it never fails.
#[derive(FromRow)]
pub(super) struct ClaimedRow {
    id: i64,
    chat_id: Option<i64>,
    attrs: Option<String>,
    priority: Option<i64>,
    attempts: i64,
    snapshot: Option<String>,
    enqueued_at: i64,
    last_error: Option<String>,
    waiting: Option<Wait>,
    handback: Option<String>,
    chat_id_type: String,
    attrs_type: String,
    priority_type: String,
}

impl ClaimedRow {
    /// The first column that holds a value of the wrong type, described.
    fn problem(&self) -> Option<String> {
        let wrong = |column: &str, found: &str, wanted: &str| {
            Some(format!(
                "queue.{column} holds {} value, not {wanted}; fix the producer, then `assignd queue retry {}`",
                article(found),
                self.id
            ))
        };
        if self.chat_id_type != "integer" {
            return wrong("chat_id", &self.chat_id_type, "an integer chat id");
        }
        if self.priority_type != "integer" {
            return wrong("priority", &self.priority_type, "an integer");
        }
        if self.attrs_type != "text" && self.attrs_type != "null" {
            return wrong("attrs", &self.attrs_type, "JSON text");
        }
        None
    }
}

/// "a text", "an integer", "a blob", "a real", "a null".
fn article(class: &str) -> String {
    let an = class.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {class}", if an { "an" } else { "a" })
}

/// Checks one claimed row; never panics, whatever the row holds.
pub(super) fn check_claimed(r: ClaimedRow) -> Result<QueueRow, BadRow> {
    if let Some(reason) = r.problem() {
        return Err(BadRow { id: r.id, reason });
    }
    let (Some(chat_id), Some(priority)) = (r.chat_id, r.priority) else {
        return Err(BadRow {
            id: r.id,
            reason: "queue row cannot be read".into(),
        });
    };
    if chat_id <= 0 {
        return Err(BadRow {
            id: r.id,
            reason: format!(
                "queue.chat_id {chat_id} is not a HelpCrunch chat id (ids are positive)"
            ),
        });
    }
    Ok(QueueRow {
        id: r.id,
        chat_id: ChatId(chat_id),
        attrs: r.attrs,
        snapshot: r.snapshot,
        priority,
        attempts: r.attempts,
        enqueued_at_ms: r.enqueued_at,
        last_error: r.last_error,
        waiting: r.waiting,
        handback: r.handback,
    })
}

impl Store {
    /// Adds chats to the queue; a chat that already has a pending or leased
    /// row is left alone. Returns how many rows were added.
    pub async fn enqueue(&self, items: &[NewQueueItem]) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        let now = now_ms();
        for item in items {
            let attrs = item
                .attrs
                .as_ref()
                .map(|a| serde_json::Value::Object(a.clone()).to_string());
            let snapshot = item.snapshot.as_ref().map(|s| s.to_string());
            let values = vals![
                item.chat_id,
                attrs,
                snapshot,
                item.priority,
                item.ranked,
                now,
                now
            ];
            added += tx.run(ENQUEUE, values).await?;
        }
        self.commit_queue_change(tx).await?;
        Ok(added)
    }

    /// Rows per state, each state in the list even at zero, in the order
    /// of [`DEPTH`].
    pub async fn queue_depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self.db.all(DEPTH, vals![]).await?)
    }

    /// Rows that are not finished (pending or leased).
    pub async fn active_count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'leased')";
        Ok(self.db.value(sql, vals![]).await?)
    }

    /// When the chat's active (pending or leased) row was enqueued, if it
    /// has one: how long it has waited, for `explain`.
    pub async fn active_enqueued_at(&self, chat_id: ChatId) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MAX(CAST(enqueued_at AS BIGINT)) FROM queue
                    WHERE chat_id = $1 AND state IN ('pending', 'leased')";
        Ok(self.db.value(sql, vals![chat_id]).await?)
    }

    /// How long the oldest row not yet finished (pending or leased) has
    /// waited since it was enqueued, by this host's clock; zero when none.
    pub async fn oldest_active_age(&self) -> Result<Duration, StoreError> {
        let sql = "SELECT MIN(enqueued_at) FROM queue WHERE state IN ('pending', 'leased')";
        let oldest: Option<i64> = self.db.value(sql, vals![]).await?;
        let age = oldest.map_or(0, |at| (now_ms() - at).max(0));
        Ok(Duration::from_millis(age as u64))
    }

    /// Leases up to `limit` rows that are due, highest priority first, and
    /// also takes back rows whose lease expired (their owner died). Counts an
    /// attempt on each. Rows that cannot be processed are made `dead` with
    /// their reason in the same transaction and are not returned. Ranks
    /// no row: see [`Store::claim_ranked`].
    pub async fn claim(
        &self,
        lease_key: &LeaseKey,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<QueueRow>, StoreError> {
        self.claim_after_ranking(lease_key, lease, limit, None)
            .await
    }

    /// [`Store::claim`], after giving the pending rows no intake ranked
    /// their rule priority with `rank`, in the same transaction: on SQLite
    /// every row committed before the claim is ranked when it picks; on
    /// PostgreSQL every row committed before the ranking statement.
    pub async fn claim_ranked(
        &self,
        lease_key: &LeaseKey,
        lease: Duration,
        limit: u32,
        rank: Ranker<'_>,
    ) -> Result<Vec<QueueRow>, StoreError> {
        self.claim_after_ranking(lease_key, lease, limit, Some(rank))
            .await
    }

    /// Settles a leased row and records what happened, in one transaction:
    /// the outcomes, the round-robin position, and the row's new state. The
    /// row changes only while this claim (owner and epoch) still holds its
    /// lease; returns whether it did (false: the lease was lost).
    pub async fn settle(&self, s: &Settlement<'_>) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let (state, next_at, uncount) = match s.next {
            Next::Done => (QueueState::Done, 0, false),
            Next::Dead => (QueueState::Dead, 0, false),
            Next::Retry {
                at_ms,
                count_attempt,
            } => (QueueState::Pending, at_ms, !count_attempt),
            Next::Release => (QueueState::Pending, now, true),
        };
        let values = vals![
            state,
            next_at,
            s.last_error.as_deref(),
            uncount,
            now,
            s.queue_id,
            &s.lease.owner,
            s.lease.epoch,
            s.waiting,
            s.priority,
            s.busy_reply.as_ref().map(|w| w.pool.as_str()),
            matches!(s.next, Next::Release),
        ];
        let held = tx.run(SETTLE, values).await? == 1;
        if !held {
            let again = vals![s.queue_id, &s.lease.owner, s.lease.epoch];
            let settled: Vec<(i64,)> = tx.all(SETTLED_BY, again).await?;
            if !settled.is_empty() {
                // A retry of a settlement that was written: nothing twice
                // (the transaction rolls back as it drops).
                return Ok(true);
            }
        }
        super::history::record_arrival(&mut tx, s.queue_id, now).await?;
        // What was done is recorded either way; what it moves (notes,
        // follow-ups, open chats) only while this claim holds the row, so a
        // daemon that lost it late adds no second note.
        for o in &s.outcomes {
            insert_outcome(&mut tx, o, Some(s.queue_id), now).await?;
        }
        if let (true, Some(assigned)) = (held, &s.assigned) {
            apply_assigned(&mut tx, assigned, Some(s.queue_id), now).await?;
        }
        // After what it moves: the open chat reads the intent's time.
        if let super::Doubt::Resolved { queue_id } = s.doubt {
            super::intents::settle_intent(&mut tx, s.chat_id, queue_id).await?;
        }
        if let (true, Some(wait)) = (held, &s.busy_reply) {
            queue_busy_reply(&mut tx, wait, s.queue_id, now).await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    /// Makes one claimed row `dead` with `reason`, fenced by its claim
    /// (a row whose processing failed in a way no retry can fix).
    pub async fn dead_letter(
        &self,
        lease_key: &LeaseKey,
        bad: &BadRow,
    ) -> Result<bool, StoreError> {
        let values = vals![
            &bad.reason,
            now_ms(),
            bad.id,
            &lease_key.owner,
            lease_key.epoch
        ];
        let changed = self.db.run(DEAD_LETTER, values).await?;
        Ok(changed == 1)
    }

    /// Puts back the rows and outbox messages leased by processes that no
    /// longer run, so they need not wait for their leases to expire. Owners
    /// are `<pid>-<random>` (`#<batch>` followed in older versions); `alive`
    /// says whether a pid runs. The attempt a row spent stays counted: a
    /// row that kills its process must still reach `max_attempts`.
    pub async fn release_orphans(&self, alive: impl Fn(u32) -> bool) -> Result<u64, StoreError> {
        let owners: Vec<(String,)> = self.db.all(LEASE_OWNERS, vals![]).await?;
        let mut released = 0;
        for (owner,) in owners {
            let pid = owner
                .split(['-', '#'])
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(&alive) {
                continue;
            }
            let (rows, _) = self.release(&owner, false).await?;
            released += rows;
        }
        Ok(released)
    }

    /// Puts every row and outbox message leased by `owner` back, with the
    /// attempt its claim counted given back (shutdown). Returns (rows,
    /// messages).
    pub async fn release_all(&self, owner: &str) -> Result<(u64, u64), StoreError> {
        self.release(owner, true).await
    }

    async fn release(&self, owner: &str, uncount: bool) -> Result<(u64, u64), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let rows = tx.run(RELEASE_ROWS, vals![uncount, now, owner]).await?;
        let messages = tx.run(RELEASE_MESSAGES, vals![now, uncount, owner]).await?;
        if rows > 0 {
            // Another daemon (PostgreSQL) or the next holder takes them.
            super::watch::announce(&mut tx).await?;
        }
        tx.commit().await?;
        Ok((rows, messages))
    }

    /// When the next pending row becomes due, if any.
    pub async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.db.value(NEXT_DUE, vals![]).await?)
    }

    /// Queue rows, newest first, optionally of one state. Any value a
    /// producer wrote is shown, never a panic.
    pub async fn list_queue(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueueListing>, StoreError> {
        Ok(self.db.all(LIST, vals![state, limit]).await?)
    }

    /// Rows waiting for a retry or a candidate, with their reasons:
    /// (row id, chat id, due at, reason).
    pub async fn waiting(&self, limit: u32) -> Result<Vec<(i64, i64, i64, String)>, StoreError> {
        Ok(self.db.all(WAITING, vals![limit]).await?)
    }
}

/// Makes a row that cannot be processed `dead`, inside the claim's
/// transaction, and says so in the log.
pub(super) async fn mark_dead(tx: &mut Tx, bad: &BadRow, now: i64) -> Result<(), sqlx::Error> {
    tracing::error!(queue_id = bad.id, reason = %bad.reason, "dead-lettering a queue row that cannot be processed");
    let sql =
        "UPDATE queue SET state = 'dead', last_error = $1, waiting = NULL, waiting_pool = NULL, lease_owner = NULL,
                      lease_epoch = NULL, lease_until = NULL, updated_at = $2
                WHERE id = $3";
    tx.run(sql, vals![&bad.reason, now, bad.id]).await?;
    Ok(())
}
