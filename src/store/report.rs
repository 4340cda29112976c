//! What `assignd report` reads: the outcomes of a window with their queue
//! rows' enqueue times, the chats that arrived in it (`chat_history`), and
//! the rows dead-lettered in it. Only reads.

use super::db::{FromDb, Stmt};
use super::{ChatId, Route, Store, StoreError, vals};

/// The outcomes that say who got a chat or why it moved (`assigned` and
/// `skipped`) after ($1 at, $2 id) and before $3 (Unix ms), oldest first,
/// at most $4: one range of the outcomes' time index a page, read in its
/// order (a query of the whole window would be sorted by PostgreSQL), with
/// the enqueue time of their queue row (none for a reassignment hop). A
/// producer's `enqueued_at` of the wrong type reads as none.
pub(super) const OUTCOMES: Stmt = Stmt::each(
    "SELECT o.id, o.chat_id, o.queue_id, o.at, o.rule, o.pool, o.agent, o.result, o.reason, o.route,
            CASE WHEN typeof(q.enqueued_at) = 'integer' THEN q.enqueued_at END AS enqueued_at
       FROM outcomes o LEFT JOIN queue q ON q.id = o.queue_id
      WHERE (o.at, o.id) > ($1, $2) AND o.at < $3 AND o.result IN ('assigned', 'skipped')
      ORDER BY o.at, o.id LIMIT $4",
    "SELECT o.id, o.chat_id, o.queue_id, o.at, o.rule, o.pool, o.agent, o.result, o.reason, o.route,
            q.enqueued_at
       FROM outcomes o LEFT JOIN queue q ON q.id = o.queue_id
      WHERE (o.at, o.id) > ($1, $2) AND o.at < $3 AND o.result IN ('assigned', 'skipped')
      ORDER BY o.at, o.id LIMIT $4",
);

/// Rows that became `dead` between $1 and $2, newest first, with their
/// reasons; any value a producer wrote reads as text, never a panic.
pub(super) const DEAD: Stmt = Stmt::each(
    "SELECT id,
            CASE typeof(chat_id) WHEN 'integer' THEN CAST(chat_id AS TEXT) ELSE quote(chat_id) END AS chat_id,
            CASE typeof(last_error) WHEN 'text' THEN last_error WHEN 'null' THEN NULL
                 ELSE quote(last_error) END AS last_error,
            CAST(updated_at AS INTEGER) AS updated_at
       FROM queue WHERE state = 'dead' AND queue.updated_at >= $1 AND queue.updated_at < $2
      ORDER BY queue.updated_at DESC, queue.id DESC LIMIT $3",
    "SELECT id, CAST(chat_id AS TEXT) AS chat_id, last_error, updated_at
       FROM queue WHERE state = 'dead' AND updated_at >= $1 AND updated_at < $2
      ORDER BY updated_at DESC, id DESC LIMIT $3",
);

/// The chats that arrived after ($1 arrived_at, $2 chat_id) and before $3
/// (Unix ms) and whose arrival is known, in that order, at most $4: one
/// range of `chat_history_arrived` a page, as [`OUTCOMES`] reads.
pub(super) const CHATS: &str = "SELECT chat_id, arrived_at, assigned_at, assigned_by,
        first_reply_at
   FROM chat_history
  WHERE (arrived_at, chat_id) > ($1, $2) AND arrived_at < $3 AND arrival != 'seen'
  ORDER BY arrived_at, chat_id LIMIT $4";

/// Rows a page of [`Store::report_outcomes`] and [`Store::report_chats`]
/// reads.
const PAGE: i64 = 5000;

/// One outcome as the report reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReportOutcome {
    pub id: i64,
    pub chat_id: ChatId,
    pub queue_id: Option<i64>,
    #[sqlx(rename = "at")]
    pub at_ms: i64,
    pub rule: Option<String>,
    pub pool: Option<String>,
    pub agent: Option<String>,
    /// `assigned` or `skipped`.
    pub result: String,
    pub reason: Option<String>,
    /// An escalation, a hand-back or a reassignment hop.
    pub route: Option<Route>,
    /// When the outcome's queue row was enqueued (Unix ms).
    #[sqlx(rename = "enqueued_at")]
    pub enqueued_at_ms: Option<i64>,
}

/// A chat as the report reads it: what measuring routing needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportChat {
    pub chat_id: ChatId,
    #[sqlx(rename = "arrived_at")]
    pub arrived_at_ms: i64,
    /// Its first assignment (Unix ms), and who made it: `assignd` or `other`.
    #[sqlx(rename = "assigned_at")]
    pub assigned_at_ms: Option<i64>,
    pub assigned_by: Option<String>,
    /// Its first agent reply (Unix ms).
    #[sqlx(rename = "first_reply_at")]
    pub first_reply_at_ms: Option<i64>,
}

/// A row read a page at a time by its place in a time index.
pub(super) trait Paged {
    /// (time, id): where the next page starts after this row.
    fn key(&self) -> (i64, i64);
}

impl Paged for ReportOutcome {
    fn key(&self) -> (i64, i64) {
        (self.at_ms, self.id)
    }
}

impl Paged for ReportChat {
    fn key(&self) -> (i64, i64) {
        (self.arrived_at_ms, self.chat_id.0)
    }
}

/// A dead-lettered queue row and why.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    /// As stored: digits, or the SQL literal a producer wrote.
    pub chat_id: String,
    pub last_error: Option<String>,
    /// When the row became dead (Unix ms).
    #[sqlx(rename = "updated_at")]
    pub at_ms: i64,
}

impl Store {
    /// The `assigned` and `skipped` outcomes of `[since_ms, until_ms)`,
    /// oldest first, each handed to `each` as it is read, a page of
    /// [`PAGE`] at a time: a month of them is never held at once.
    pub async fn report_outcomes(
        &self,
        since_ms: i64,
        until_ms: i64,
        each: impl FnMut(ReportOutcome),
    ) -> Result<(), StoreError> {
        self.pages(OUTCOMES, (since_ms, until_ms), each).await
    }

    /// The chats that arrived in `[since_ms, until_ms)` and whose arrival
    /// is known, oldest first, each handed to `each` as it is read, a page
    /// of [`PAGE`] at a time.
    pub async fn report_chats(
        &self,
        since_ms: i64,
        until_ms: i64,
        each: impl FnMut(ReportChat),
    ) -> Result<(), StoreError> {
        self.pages(CHATS.into(), (since_ms, until_ms), each).await
    }

    /// Reads `stmt` ($1, $2: after this key; $3: before this time; $4:
    /// the page) page after page, handing each row to `each`.
    pub(super) async fn pages<T: FromDb + Paged>(
        &self,
        stmt: Stmt,
        (since_ms, until_ms): (i64, i64),
        mut each: impl FnMut(T),
    ) -> Result<(), StoreError> {
        let mut after = (since_ms, i64::MIN);
        loop {
            let values = vals![after.0, after.1, until_ms, PAGE];
            let page: Vec<T> = self.db.all(stmt, values).await?;
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last() {
                after = last.key();
            }
            page.into_iter().for_each(&mut each);
            if !full {
                return Ok(());
            }
        }
    }

    /// At most `limit` rows dead-lettered in `[since_ms, until_ms)`, newest first.
    pub async fn report_dead_letters(
        &self,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        Ok(self.db.all(DEAD, vals![since_ms, until_ms, limit]).await?)
    }
}
