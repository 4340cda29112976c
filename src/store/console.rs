//! What the console's pages read: the live queue with each row's reason and
//! age, dead letters, and a chat's stored snapshot (its decisions are
//! `outcomes.rs`'s). Values a
//! producer wrote with the wrong type are shown as SQL literals, never a
//! failed page (as `queue list` does).

use super::db::Stmt;
use super::{ChatId, Store, StoreError, vals};

/// A listed queue row's columns on SQLite, `$at` its time column: a value
/// a producer wrote with the wrong type reads as an SQL literal.
macro_rules! sqlite_listed {
    ($at:literal) => {
        concat!(
            "SELECT id,
            CASE typeof(chat_id) WHEN 'integer' THEN CAST(chat_id AS TEXT) ELSE quote(chat_id) END AS chat_id,
            state, CAST(priority AS INTEGER) AS priority,
            CAST(",
            $at,
            " AS INTEGER) AS enqueued_at,
            CAST(next_attempt_at AS INTEGER) AS next_attempt_at,
            CASE typeof(last_error) WHEN 'text' THEN last_error WHEN 'null' THEN NULL
                 ELSE quote(last_error) END AS last_error
       FROM queue "
        )
    };
}

/// The same columns on PostgreSQL, whose types are enforced.
macro_rules! postgres_listed {
    ($at:literal) => {
        concat!(
            "SELECT id, CAST(chat_id AS TEXT) AS chat_id, state, priority, ",
            $at,
            " AS enqueued_at, next_attempt_at, last_error FROM queue "
        )
    };
}

/// The order of active rows on a page, `queue_active_order`'s: the
/// table's columns, not the listed ones of the same names (which SQLite's
/// ORDER BY would take, and no index serves).
macro_rules! active_order {
    () => {
        "ORDER BY queue.priority DESC, queue.enqueued_at, queue.id LIMIT $4"
    };
}

/// Active rows (pending, leased), the most urgent first: priority, then
/// oldest. The first page: the head of `queue_active_order`.
pub(super) const ACTIVE: Stmt = Stmt::each(
    concat!(
        sqlite_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') ",
        "ORDER BY queue.priority DESC, queue.enqueued_at, queue.id LIMIT $1"
    ),
    concat!(
        postgres_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') ",
        "ORDER BY queue.priority DESC, queue.enqueued_at, queue.id LIMIT $1"
    ),
);

/// The page after the row ($1 priority, $2 enqueued at, $3 id): the rest
/// of its priority, then the lower priorities; each part one range of
/// `queue_active_order` read for at most $4 rows, whatever the backlog.
pub(super) const ACTIVE_AFTER: Stmt = Stmt::each(
    concat!(
        "SELECT * FROM (",
        sqlite_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') AND queue.priority = $1 AND (queue.enqueued_at, queue.id) > ($2, $3) ",
        active_order!(),
        ") AS same UNION ALL SELECT * FROM (",
        sqlite_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') AND queue.priority < $1 ",
        active_order!(),
        ") AS below ORDER BY priority DESC, enqueued_at, id LIMIT $4"
    ),
    concat!(
        "SELECT * FROM (",
        postgres_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') AND queue.priority = $1 AND (queue.enqueued_at, queue.id) > ($2, $3) ",
        active_order!(),
        ") AS same UNION ALL SELECT * FROM (",
        postgres_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') AND queue.priority < $1 ",
        active_order!(),
        ") AS below ORDER BY priority DESC, enqueued_at, id LIMIT $4"
    ),
);

/// Dead rows before row $1, the newest first (`queue_dead`); their time
/// is when they died.
pub(super) const DEAD: Stmt = Stmt::each(
    concat!(
        sqlite_listed!("updated_at"),
        // Else SQLite takes `id < $1` from the table's own key and reads
        // rows of every state back to the newest dead ones.
        "INDEXED BY queue_dead WHERE state = 'dead' AND queue.id < $1 ORDER BY queue.id DESC LIMIT $2"
    ),
    concat!(
        postgres_listed!("updated_at"),
        "WHERE state = 'dead' AND queue.id < $1 ORDER BY queue.id DESC LIMIT $2"
    ),
);

/// The snapshot and attributes of a chat's newest queue row.
const CHAT_INPUT: Stmt = Stmt::each(
    "SELECT CASE typeof(snapshot) WHEN 'text' THEN snapshot END AS snapshot,
            CASE typeof(attrs) WHEN 'text' THEN attrs END AS attrs,
            CASE WHEN state IN ('pending', 'leased') THEN 1 ELSE 0 END AS active
       FROM queue WHERE chat_id = $1 ORDER BY id DESC LIMIT 1",
    "SELECT snapshot, attrs,
            CASE WHEN state IN ('pending', 'leased') THEN 1 ELSE 0 END::BIGINT AS active
       FROM queue WHERE chat_id = $1 ORDER BY id DESC LIMIT 1",
);

/// A queue row as a page shows it. For a dead row, `enqueued_at_ms` is
/// when it died.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleRow {
    pub id: i64,
    /// Digits, or an SQL literal for a value of the wrong type.
    pub chat_id: String,
    pub state: String,
    pub priority: i64,
    #[sqlx(rename = "enqueued_at")]
    pub enqueued_at_ms: i64,
    #[sqlx(rename = "next_attempt_at")]
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
}

/// What a chat's last queue row carried: the chat as the producer or the
/// webhook saw it, the enqueue-time attributes, and whether the row still
/// waits to be decided.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct ChatInput {
    pub snapshot: Option<String>,
    pub attrs: Option<String>,
    /// 1 when the row is pending or leased.
    pub active: i64,
}

/// Where a page of active rows starts: after this row, in page order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCursor {
    pub priority: i64,
    pub enqueued_at_ms: i64,
    pub id: i64,
}

impl QueueCursor {
    /// The cursor after `row`.
    pub fn after(row: &ConsoleRow) -> Self {
        Self {
            priority: row.priority,
            enqueued_at_ms: row.enqueued_at_ms,
            id: row.id,
        }
    }
}

impl Store {
    /// Pending and leased rows in page order (priority, then oldest), at
    /// most `limit`, from the first or from after `after`.
    pub async fn active_rows(
        &self,
        after: Option<QueueCursor>,
        limit: u32,
    ) -> Result<Vec<ConsoleRow>, StoreError> {
        Ok(match after {
            None => self.db.all(ACTIVE, vals![limit]).await?,
            Some(c) => {
                let values = vals![c.priority, c.enqueued_at_ms, c.id, limit];
                self.db.all(ACTIVE_AFTER, values).await?
            }
        })
    }

    /// Dead rows, the newest first, at most `limit`, from the newest or
    /// from before row `before`.
    pub async fn dead_rows(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ConsoleRow>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        Ok(self.db.all(DEAD, vals![before, limit]).await?)
    }

    /// The stored snapshot and attributes of a chat's newest queue row.
    pub async fn chat_input(&self, chat_id: ChatId) -> Result<Option<ChatInput>, StoreError> {
        Ok(self.db.first(CHAT_INPUT, vals![chat_id]).await?)
    }
}
