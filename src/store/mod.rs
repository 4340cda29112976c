//! All SQL lives here, one file per table (`queue.rs`, `outcomes.rs`,
//! `outbox.rs`, `routing.rs`, ...), each adding its methods to [`Store`].
//! Rows cross the boundary as the typed structs of `rows.rs` and the enums
//! of `domain.rs`; nothing of sqlx leaks past this module.
//!
//! **The backend seam is [`Store`] itself**: its methods are the whole
//! database API the daemon sees. A second backend (PostgreSQL) joins as an
//! enum over backends inside `Store`, not as a trait object: most
//! statements are the same text on both, so they are written once, with
//! `$N` placeholders, `ON CONFLICT … DO UPDATE` and `RETURNING`, all of
//! which SQLite reads too, and run through [`exec`] / [`args!`]; only what
//! really differs (claims with `FOR UPDATE SKIP LOCKED`, the database's
//! clock, leases between daemons) is written once per backend.
//!
//! One writer connection (SQLite allows one writer at a time; a pool of one
//! makes that explicit and avoids SQLITE_BUSY between our own tasks) and a
//! small reader pool. Every write transaction starts with `BEGIN IMMEDIATE`
//! so it takes the write lock up front, and none is held across an HTTP call.

mod agents;
mod audit;
mod busy;
mod claim;
mod cluster;
pub mod compare;
mod console;
mod console_sessions;
mod daemon_state;
mod db;
mod experiment;
mod failover;
mod followups;
pub mod handback;
mod health;
mod history;
mod intents;
mod listen;
mod migrate;
mod outbox;
mod outcomes;
mod queue;
mod rank;
mod read_plans;
pub mod report;
mod retention;
mod retry;
mod routing;
mod rows;
mod seats;
mod watch;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::{DatabaseLocation, Pooler, Synchronous};
use crate::secrets::Secret;
pub use audit::{AuditRow, NewAudit};
pub use cluster::{DaemonRow, LeaseHolder};
pub use console::{ChatInput, ConsoleRow, QueueCursor};
pub use console_sessions::{ConsoleSession, NewConsoleSession};
pub use db::Backend;
use db::{Db, Tx, vals};
pub use experiment::ModeEntry;
pub use history::{FirstFact, History, HistoryOutcome, HistoryRow};
pub use intents::{Began, CallClaim, Intent};
pub use listen::QueueListener;
pub use queue::BadRow;
pub use rank::{Ranker, UnrankedRow};
pub use retention::WEBHOOK_IDS_KEPT_MS;
pub use routing::RoutingLock;
pub use rows::*;
pub use webhooks::Applied;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot watch the database file for changes: {0}")]
    Watch(std::io::Error),
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database error: {0} (if PgBouncer runs in transaction mode in front of the database, set [database] pooler = \"pgbouncer\")"
    )]
    Pooler(sqlx::Error),
    /// New queue rows cannot be listened for (`listen.rs`): why.
    #[error("LISTEN/NOTIFY is unavailable: {0}")]
    ListenUnavailable(String),
}

/// Every database error the store returns passes here: one that is the
/// server's state (read-only, going away) is about the connection, and
/// the pools drop it (`failover.rs`).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        failover::observe(&e);
        StoreError::Sql(e)
    }
}

/// The current time in Unix milliseconds, as stored.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// SQLite: the queue's generation after this process's last change
    /// to it (`watch.rs`).
    own_queue_generation: Arc<AtomicI64>,
}

impl Store {
    /// Opens the configured database ([`crate::config::Config::database_login`]:
    /// a PostgreSQL url comes with its password); does not migrate.
    pub async fn connect(
        location: &DatabaseLocation,
        synchronous: Synchronous,
    ) -> Result<Self, StoreError> {
        match location {
            DatabaseLocation::Sqlite(path) => Self::open(path, synchronous).await,
            DatabaseLocation::Postgres(url) => {
                Self::login_postgres(url.expose(), url.password(), url.pooler()).await
            }
        }
    }

    /// Opens (creating if needed) the SQLite database file; does not migrate.
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
        Ok(Self::on(Db::Sqlite { writer, reader }))
    }

    /// Connects to a PostgreSQL database (`postgres://…`); does not migrate.
    pub async fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        Self::login_postgres(url, None, Pooler::None).await
    }

    /// [`Store::connect_postgres`] with a password given apart from the url
    /// (the options keep it for every connection the pools open later),
    /// through `pooler`.
    async fn login_postgres(
        url: &str,
        password: Option<&Secret>,
        pooler: Pooler,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?.application_name("assignd");
        if let Some(password) = password {
            options = options.password(password.expose());
        }
        if pooler == Pooler::Pgbouncer {
            // PgBouncer refuses startup parameters it does not track, and
            // keeps no named statement for its client: none is asked for,
            // none cached (`db.rs`, `pg!`).
            options = options.extra_float_digits(None).statement_cache_capacity(0);
        }
        let pool = failover::guard(PgPoolOptions::new())
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| match pooler {
                Pooler::None if migrate::pooler_symptom(&e) => StoreError::Pooler(e),
                _ => StoreError::Sql(e),
            })?;
        Ok(Self::on(Db::Postgres(pool, pooler)))
    }

    /// A store on connections of its own, for work that must not wait
    /// behind the others (the heartbeat and the lease): on PostgreSQL a pool
    /// of two connections beside the main one, whose connections every
    /// decision waiting for the routing lock may hold; on SQLite the same
    /// store (one writer, whose transactions are short).
    pub async fn dedicated(&self) -> Result<Store, StoreError> {
        let Db::Postgres(pool, pooler) = &self.db else {
            return Ok(self.clone());
        };
        let options = (*pool.connect_options()).clone();
        let own = failover::guard(PgPoolOptions::new())
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self::on(Db::Postgres(own, *pooler)))
    }

    fn on(db: Db) -> Self {
        Self {
            db,
            own_queue_generation: Arc::default(),
        }
    }

    /// Commits `tx`, which made queue rows pending (inserted or revived):
    /// on SQLite the change watcher knows them as this daemon's own, which
    /// it wakes the claim loop for itself, and does not report them again.
    async fn commit_queue_change(&self, mut tx: Tx) -> Result<(), sqlx::Error> {
        let generation = watch::queue_generation(&mut tx).await?;
        tx.commit().await?;
        if let Some(generation) = generation {
            self.own_queue_generation
                .fetch_max(generation, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Which database is behind this store.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Starts a write transaction: on SQLite with `BEGIN IMMEDIATE` on the
    /// one writer connection, so it takes the write lock up front.
    ///
    /// When a COMMIT fails (a full disk, say), SQLite rolls the transaction
    /// back itself, sqlx's own ROLLBACK then fails, and sqlx keeps counting
    /// the connection as inside a transaction: it could never begin again.
    /// Such a connection is closed here and a fresh one takes its place, so
    /// the daemon recovers by itself when the fault clears.
    async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        let writer = match &self.db {
            Db::Postgres(pool, pooler) => return Ok(Tx::Postgres(pool.begin().await?, *pooler)),
            Db::Sqlite { writer, .. } => writer,
        };
        let tx = match writer.begin_with("BEGIN IMMEDIATE").await {
            Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::BeginFailed) => {
                tracing::warn!(
                    "the database writer connection is stuck after a failed commit; opening a new one"
                );
                writer.acquire().await?.close().await?;
                writer.begin_with("BEGIN IMMEDIATE").await
            }
            other => other,
        };
        Ok(Tx::Sqlite(tx?))
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { writer, reader } => {
                writer.close().await;
                reader.close().await;
            }
            Db::Postgres(pool, _) => pool.close().await,
        }
    }

    /// The one text a keyed lookup finds, if a row has the key.
    async fn text_by_key(
        &self,
        sql: &'static str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = self.db.first(sql, vals![key]).await?;
        Ok(row.map(|(text,)| text))
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = self.db.value("SELECT CAST(1 AS BIGINT)", vals![]).await?;
        Ok(())
    }
}
