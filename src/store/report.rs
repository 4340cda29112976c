//! What `assignd report` reads: the outcomes of a window with their queue
//! rows' enqueue times, and the rows dead-lettered in it. Only reads.

use super::db::Stmt;
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

/// Outcomes a page of [`Store::report_outcomes`] reads.
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
        mut each: impl FnMut(ReportOutcome),
    ) -> Result<(), StoreError> {
        let mut after = (since_ms, i64::MIN);
        loop {
            let values = vals![after.0, after.1, until_ms, PAGE];
            let page: Vec<ReportOutcome> = self.db.all(OUTCOMES, values).await?;
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last() {
                after = (last.at_ms, last.id);
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
