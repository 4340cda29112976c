//! SQLite only: a row another process inserts (a producer's plain `INSERT
//! INTO queue`, `assignd enqueue`) wakes the claim loop at once, as
//! LISTEN/NOTIFY does on PostgreSQL, without polling.
//!
//! inotify reports each write to the database's WAL (where every commit
//! goes in WAL mode). A write is not yet a commit, and a commit is visible
//! only once the WAL index (shared memory, which inotify does not see) is
//! updated after its last write and its fsync; so each write is followed
//! by checks, closely spaced at first, for two seconds (`next_check`);
//! while nothing writes, nothing is read. A check is `PRAGMA data_version` on
//! the watcher's own connection (a cheap read that changes only when
//! another connection committed) and, when it changed, the queue's
//! generation ([`QUEUE_GENERATION`]: its AUTOINCREMENT sequence plus
//! `queue_signal`, two small rows, not the queue), which a new row or a
//! revived one raises. Rows this daemon made pending itself are known
//! ([`Store::commit_queue_change`]): it wakes the loop for those when it
//! writes them, and they are not reported again. The same check also runs
//! every `poll_interval` without an event: the fallback for what inotify
//! cannot see (a network filesystem).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::{StoreError, Tx};

/// The queue's generation: its highest id ever given (0 before the first
/// row) plus the rows made pending again (`queue_signal`); it rises with
/// every new or revived row, and with nothing else.
pub(super) const QUEUE_GENERATION: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0)
          + COALESCE((SELECT n FROM queue_signal WHERE id = 1), 0)";

/// How long after a write its commit may still become visible: a
/// producer's commit writes its frames, then waits for its fsync
/// (`synchronous = FULL`, SQLite's default), and only then updates the WAL
/// index. Checks stop this long after the last write.
const SETTLE: Duration = Duration::from_secs(2);

/// When to check again, `since` the last write: every millisecond at
/// first, then every 5 ms up to 100 ms (a slow fsync), then at doubling
/// intervals up to [`SETTLE`]. Each check is one `PRAGMA data_version`.
fn next_check(since: Duration) -> Option<Duration> {
    let wait = if since < Duration::from_millis(10) {
        Duration::from_millis(1)
    } else if since < Duration::from_millis(100) {
        Duration::from_millis(5)
    } else {
        since
    };
    (since + wait <= SETTLE).then_some(wait)
}

/// Watches one SQLite database for rows that other processes insert.
pub struct SqliteWatch {
    events: EventStream<Vec<u8>>,
    /// The database file's name and its WAL's, in their directory.
    names: [OsString; 2],
    conn: SqliteConnection,
    data_version: i64,
    /// The highest queue id seen so far.
    seen: i64,
    /// The highest queue id this daemon inserted itself.
    own: Arc<AtomicI64>,
}

impl SqliteWatch {
    /// Starts watching the database `options` open; `None` for a database
    /// without a file (in memory).
    pub(super) async fn open(
        options: &SqliteConnectOptions,
        own: Arc<AtomicI64>,
    ) -> Result<Option<Self>, StoreError> {
        let file = options.get_filename();
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            return Ok(None);
        };
        if name == ":memory:" || name.is_empty() {
            return Ok(None);
        }
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut wal = name.to_os_string();
        wal.push("-wal");
        let inotify = Inotify::init().map_err(StoreError::Watch)?;
        let mask = WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO;
        inotify
            .watches()
            .add(dir, mask)
            .map_err(StoreError::Watch)?;
        let events = inotify
            .into_event_stream(vec![0; 4096])
            .map_err(StoreError::Watch)?;
        let mut conn = options.clone().read_only(true).connect().await?;
        let data_version = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await?;
        let seen = sqlx::query_scalar(QUEUE_GENERATION)
            .fetch_one(&mut conn)
            .await?;
        Ok(Some(Self {
            events,
            names: [name.to_os_string(), wal],
            conn,
            data_version,
            seen,
            own,
        }))
    }

    /// Waits until another process has made queue rows pending; checks
    /// every `every` without an event too.
    pub async fn next(&mut self, every: Duration) -> Result<(), StoreError> {
        loop {
            let found = tokio::select! {
                write = self.write() => {
                    write?;
                    self.checked().await?
                }
                _ = tokio::time::sleep(every) => self.new_rows().await?,
            };
            if found {
                return Ok(());
            }
        }
    }

    /// Checks after a write, then again on [`next_check`]'s schedule,
    /// which starts over at each further write; whether a new row showed.
    async fn checked(&mut self) -> Result<bool, StoreError> {
        let mut last_write = tokio::time::Instant::now();
        loop {
            if self.new_rows().await? {
                return Ok(true);
            }
            let Some(wait) = next_check(last_write.elapsed()) else {
                return Ok(false);
            };
            tokio::select! {
                write = self.write() => {
                    write?;
                    last_write = tokio::time::Instant::now();
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Whether a commit of another connection raised the queue's sequence
    /// past every row seen or inserted by this daemon.
    async fn new_rows(&mut self) -> Result<bool, StoreError> {
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut self.conn)
            .await?;
        if version == self.data_version {
            return Ok(false);
        }
        self.data_version = version;
        let seq: i64 = sqlx::query_scalar(QUEUE_GENERATION)
            .fetch_one(&mut self.conn)
            .await?;
        let known = self.seen.max(self.own.load(Ordering::Acquire));
        self.seen = self.seen.max(seq);
        Ok(seq > known)
    }

    /// Waits for a write to the database or its WAL (or for lost events).
    async fn write(&mut self) -> Result<(), StoreError> {
        loop {
            let event = match self.events.next().await {
                Some(event) => event.map_err(StoreError::Watch)?,
                None => {
                    let closed = std::io::Error::other("the inotify stream ended");
                    return Err(StoreError::Watch(closed));
                }
            };
            if event.mask.contains(EventMask::Q_OVERFLOW)
                || event.name.is_some_and(|n| self.names.contains(&n))
            {
                return Ok(());
            }
        }
    }
}

/// The queue's generation inside `tx`, on SQLite; what a transaction that
/// made rows pending reads before its commit.
pub(super) async fn queue_generation(tx: &mut Tx) -> Result<Option<i64>, sqlx::Error> {
    if !matches!(tx, Tx::Sqlite(_)) {
        return Ok(None);
    }
    let rows: Vec<(i64,)> = tx.all(QUEUE_GENERATION, super::vals![]).await?;
    Ok(rows.first().map(|(seq,)| *seq))
}

/// Announces, inside `tx`, rows it makes pending again without an INSERT
/// (revived, released, reclaimed): on PostgreSQL as the insert trigger
/// does (`NOTIFY assignd_queue`, sent at the commit), on SQLite by raising
/// the queue's generation.
pub(super) async fn announce(tx: &mut Tx) -> Result<(), sqlx::Error> {
    let sql = super::db::Stmt::each(
        "UPDATE queue_signal SET n = n + 1 WHERE id = 1",
        "SELECT pg_notify('assignd_queue', '')",
    );
    tx.run(sql, super::vals![]).await?;
    Ok(())
}
