//! The `console_sessions` table: one row per console sign-in, so that any
//! daemon of the database accepts a session and a sign-out on one ends it
//! on all. The console decides the times (`http::console::session`); here
//! a session is live while its `ends_at` is ahead, and nothing else.

use super::audit::NewAudit;
use super::{Store, StoreError, vals};

const INSERT: &str = "INSERT INTO console_sessions
    (id, name, created_at, last_seen, expires_at, ends_at) VALUES ($1, $2, $3, $3, $4, $5)";

const LIVE: &str = "SELECT name, last_seen AS last_seen_ms, expires_at AS expires_at_ms
    FROM console_sessions WHERE id = $1 AND ends_at > $2";

/// Only a live session is kept alive: a row that ended stays ended.
const TOUCH: &str = "UPDATE console_sessions SET last_seen = $2, ends_at = $3
    WHERE id = $1 AND ends_at > $2";

const END: &str = "DELETE FROM console_sessions WHERE id = $1";

/// A session to record at sign-in; `key` is the hash of the cookie's id.
#[derive(Debug, Clone)]
pub struct NewConsoleSession<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub now_ms: i64,
    pub expires_ms: i64,
    pub ends_ms: i64,
}

/// A live session, as a request finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsoleSession {
    pub name: String,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
}

impl Store {
    /// Records a sign-in: the session and its audit line, together.
    pub async fn open_console_session(
        &self,
        session: &NewConsoleSession<'_>,
        audit: &NewAudit<'_>,
    ) -> Result<(), StoreError> {
        let s = session;
        let mut tx = self.begin_write().await?;
        let v = vals![s.key, s.name, s.now_ms, s.expires_ms, s.ends_ms];
        tx.run(INSERT, v).await?;
        audit.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session under `key`, if it is live at `now_ms`.
    pub async fn console_session(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        Ok(self.db.first(LIVE, vals![key, now_ms]).await?)
    }

    /// Notes a use of a live session at `now_ms`, which now ends at
    /// `ends_ms` unless used again; whether it was still live.
    pub async fn touch_console_session(
        &self,
        key: &str,
        now_ms: i64,
        ends_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.db.run(TOUCH, vals![key, now_ms, ends_ms]).await? == 1)
    }

    /// Ends a session (a sign-out); whether there was one.
    pub async fn end_console_session(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.db.run(END, vals![key]).await? == 1)
    }
}
