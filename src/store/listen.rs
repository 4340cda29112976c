//! New queue rows as they come: PostgreSQL announces them (`NOTIFY
//! assignd_queue`, sent by the queue's insert trigger and by
//! `watch::announce`), SQLite's file changes show them (`watch.rs`).
//!
//! LISTEN needs a session of its own. Through a pooler in transaction mode
//! it stays on whichever server connection ran it, its notifications go to
//! whichever client holds that connection later (sqlx's ordinary
//! connections take one for a protocol error), and none reaches the
//! listener. So behind `[database] pooler = "pgbouncer"` nothing listens,
//! and elsewhere a new listener first proves itself with a NOTIFY of its
//! own, sent on another connection, which must come back within [`PROBE`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::{Db, Store, StoreError};
use crate::config::Pooler;

/// The channel the queue's trigger notifies.
const CHANNEL: &str = "assignd_queue";

/// How long a listener's own NOTIFY may take to come back.
const PROBE: Duration = Duration::from_secs(5);

/// Probes this process sent: each probe's payload is its own.
static PROBES: AtomicU64 = AtomicU64::new(0);

/// New queue rows: as PostgreSQL announces them, or as SQLite's file
/// changes show them (`watch.rs`).
pub enum QueueListener {
    Postgres(PgListener),
    Sqlite(Box<super::watch::SqliteWatch>),
}

impl QueueListener {
    /// How new rows are learned of, for the log.
    pub fn how(&self) -> &'static str {
        match self {
            QueueListener::Postgres(_) => "LISTEN assignd_queue",
            QueueListener::Sqlite(_) => "the database file's changes (inotify)",
        }
    }

    /// Waits for the next new rows; SQLite's watch also looks every
    /// `every` without an event (`watch.rs`).
    pub async fn next(&mut self, every: Duration) -> Result<(), StoreError> {
        match self {
            QueueListener::Postgres(listener) => {
                listener.recv().await?;
                Ok(())
            }
            QueueListener::Sqlite(watch) => watch.next(every).await,
        }
    }
}

impl Store {
    /// Listens for new queue rows; `None` for an SQLite database in memory,
    /// [`StoreError::ListenUnavailable`] where LISTEN cannot work.
    pub async fn listen_queue(&self) -> Result<Option<QueueListener>, StoreError> {
        let (pool, pooler) = match &self.db {
            Db::Postgres(pool, pooler) => (pool, *pooler),
            Db::Sqlite { writer, .. } => {
                let options = writer.connect_options();
                let own = self.own_queue_generation.clone();
                let watch = super::watch::SqliteWatch::open(&options, own).await?;
                return Ok(watch.map(|w| QueueListener::Sqlite(Box::new(w))));
            }
        };
        if pooler == Pooler::Pgbouncer {
            return Err(StoreError::ListenUnavailable(
                "PgBouncer in transaction mode keeps no LISTEN ([database] pooler = \"pgbouncer\")"
                    .into(),
            ));
        }
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        self.probe(pool, &mut listener).await?;
        Ok(Some(QueueListener::Postgres(listener)))
    }

    /// Sends a NOTIFY of its own on another connection and waits for it
    /// on `listener`; other notifications meanwhile are dropped (the listen
    /// job looks at the queue once the listener is up).
    async fn probe(&self, pool: &PgPool, listener: &mut PgListener) -> Result<(), StoreError> {
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let token = format!("probe {} {n}", std::process::id());
        // The sender is a listener too (on no channel): behind a pooler the
        // notification may come to it, which an ordinary connection takes
        // for a protocol error. Plain text, which prepares nothing; the
        // payload is this function's own digits.
        let mut sender = PgListener::connect_with(pool).await?;
        let notify = format!("NOTIFY {CHANNEL}, '{token}'");
        sqlx::raw_sql(sqlx::AssertSqlSafe(notify))
            .execute(&mut sender)
            .await?;
        drop(sender);
        let heard = tokio::time::timeout(PROBE, async {
            loop {
                if listener.recv().await?.payload() == token {
                    return Ok::<_, sqlx::Error>(());
                }
            }
        })
        .await;
        match heard {
            Ok(heard) => Ok(heard?),
            Err(_) => {
                // Best effort: the LISTEN may sit on a server connection
                // that this one no longer reaches.
                let _ = listener.unlisten_all().await;
                Err(StoreError::ListenUnavailable(format!(
                    "a NOTIFY of this daemon did not come back within {PROBE:?}; if a pooler in \
                     transaction mode is in front of the database, set [database] pooler = \"pgbouncer\""
                )))
            }
        }
    }
}
