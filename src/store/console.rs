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

/// Active rows (pending, leased), the most urgent first as the claim sees
/// them: priority, then oldest.
const ACTIVE: Stmt = Stmt::each(
    concat!(
        sqlite_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') ORDER BY priority DESC, enqueued_at, id LIMIT $1"
    ),
    concat!(
        postgres_listed!("enqueued_at"),
        "WHERE state IN ('pending', 'leased') ORDER BY priority DESC, enqueued_at, id LIMIT $1"
    ),
);

/// Dead rows, the newest first; their time is when they died.
const DEAD: Stmt = Stmt::each(
    concat!(
        sqlite_listed!("updated_at"),
        "WHERE state = 'dead' ORDER BY id DESC LIMIT $1"
    ),
    concat!(
        postgres_listed!("updated_at"),
        "WHERE state = 'dead' ORDER BY id DESC LIMIT $1"
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

impl Store {
    /// Pending and leased rows, in claim order, at most `limit`.
    pub async fn active_rows(&self, limit: u32) -> Result<Vec<ConsoleRow>, StoreError> {
        Ok(self.db.all(ACTIVE, vals![limit]).await?)
    }

    /// Dead rows, the newest first, at most `limit`.
    pub async fn dead_rows(&self, limit: u32) -> Result<Vec<ConsoleRow>, StoreError> {
        Ok(self.db.all(DEAD, vals![limit]).await?)
    }

    /// The stored snapshot and attributes of a chat's newest queue row.
    pub async fn chat_input(&self, chat_id: ChatId) -> Result<Option<ChatInput>, StoreError> {
        Ok(self.db.first(CHAT_INPUT, vals![chat_id]).await?)
    }
}
