//! All SQL lives here, one file per table (`queue.rs`, `outcomes.rs`,
//! `outbox.rs`, `routing.rs`, ...), each adding its methods to [`Store`].
//! Rows cross the boundary as the typed structs of `rows.rs`; nothing of
//! sqlx leaks past this module.
//!
//! One writer connection (SQLite allows one writer at a time; a pool of one
//! makes that explicit and avoids SQLITE_BUSY between our own tasks) and a
//! small reader pool. Every write transaction starts with `BEGIN IMMEDIATE`
//! so it takes the write lock up front, and none is held across an HTTP call.

mod agents;
mod daemon_state;
mod followups;
mod health;
mod outbox;
mod outcomes;
mod queue;
mod retention;
mod retry;
mod routing;
mod rows;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::Synchronous;
pub use queue::BadRow;
pub use rows::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The current time in Unix milliseconds, as stored.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database file; does not migrate.
    pub async fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE` on the one writer
    /// connection.
    ///
    /// When a COMMIT fails (a full disk, say), SQLite rolls the transaction
    /// back itself, sqlx's own ROLLBACK then fails, and sqlx keeps counting
    /// the connection as inside a transaction: it could never begin again.
    /// Such a connection is closed here and a fresh one takes its place, so
    /// the daemon recovers by itself when the fault clears.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        match self.writer.begin_with("BEGIN IMMEDIATE").await {
            Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::BeginFailed) => {
                tracing::warn!(
                    "the database writer connection is stuck after a failed commit; opening a new one"
                );
                self.writer.acquire().await?.close().await?;
                self.writer.begin_with("BEGIN IMMEDIATE").await
            }
            other => other,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
