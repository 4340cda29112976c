//! A primary failover as this process's connections meet it (PostgreSQL).
//!
//! sqlx knows one address and no failover. After one (the primary dies, a
//! replica is promoted, the address moves by DNS, a virtual IP or a
//! proxy), pooled connections may still reach the old primary: gone, or
//! up and refusing writes (fenced with `default_transaction_read_only`,
//! restarted as a standby, reached through a stale DNS answer). Three
//! guards, on every pool of the process:
//!
//! - **An error that says the server refuses writes or is going away**
//!   (SQLSTATE 25006 `read_only_sql_transaction`, 57P01-57P03) is about the
//!   connection, not the row: [`observe`] marks every connection opened
//!   before it stale, and each is closed when next released or acquired,
//!   the pool opening new ones ([`guard`]). The rows it touched are retried
//!   as for any database error, their attempts given back.
//! - **A new connection must reach a writable primary** (as libpq's
//!   `target_session_attrs=read-write`): one to a read-only server, or to
//!   a server on an older timeline than one already seen (an old primary
//!   that came back beside the promoted one), is refused.
//! - **A connection to a newer timeline means a replica was promoted.**
//!   With asynchronous replication the old primary's last commits may be
//!   lost: outcomes, claims, intents, budget steps. Before the connection
//!   is used, the shared budget counts its burst as spent (the lost steps
//!   were calls made), and for a while every decision reads its chat from
//!   HelpCrunch first ([`Store::promoted_within`], `worker/process.rs`).
//!
//! Each episode is logged once, and counted in
//! `assignd_database_read_only` and `assignd_database_promotions`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgDatabaseError, PgPoolOptions};
use tokio::sync::watch;

use super::Store;

/// Read-only errors this close to the last one belong to the same episode
/// (one log line).
const EPISODE_GAP: Duration = Duration::from_secs(60);

/// Why a statement failed, when it is the server's state and not the row's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The server refuses writes: a standby, or a fenced old primary.
    ReadOnly,
    /// The server is shutting down, restarting or terminated the session.
    Terminated,
}

/// What every pool of this process knows of the failovers it met.
struct Failover {
    /// Connections opened before this instant are closed at their next use.
    stale_before: Mutex<Option<Instant>>,
    /// The last read-only error or refusal, and whether its episode's
    /// recovery was logged.
    last_fault: Mutex<Option<(Instant, bool)>>,
    /// The highest timeline a connection found (0: none yet).
    timeline: AtomicI64,
    /// The highest timeline whose promotion the shared budget accounted for.
    budget_timeline: AtomicI64,
    /// When a connection last found a newer timeline.
    promoted_at: Mutex<Option<Instant>>,
    /// The budget's burst (ms) as last asked for: spent at a promotion.
    burst_ms: AtomicU64,
    /// Bumped when an episode begins or a promotion is seen: a listener on
    /// an old connection opens a new one.
    changes: watch::Sender<u64>,
}

static FAILOVER: LazyLock<Failover> = LazyLock::new(Failover::new);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The server's state behind a PostgreSQL error, if that is what failed.
fn fault_of(e: &sqlx::Error) -> Option<Fault> {
    let pg = e
        .as_database_error()?
        .try_downcast_ref::<PgDatabaseError>()?;
    match pg.code() {
        "25006" => Some(Fault::ReadOnly),
        "57P01" | "57P02" | "57P03" => Some(Fault::Terminated),
        _ => None,
    }
}

/// Looks at every database error the store returns: one that is the
/// server's state makes the connections opened before it stale.
pub(super) fn observe(e: &sqlx::Error) {
    if let Some(fault) = fault_of(e) {
        FAILOVER.fault(fault, &e.to_string());
    }
}

/// `options` with the guards: new connections checked, stale ones closed.
pub(super) fn guard(options: PgPoolOptions) -> PgPoolOptions {
    options
        .after_connect(|conn, _| Box::pin(FAILOVER.check(conn)))
        .before_acquire(|_, meta| Box::pin(async move { Ok(FAILOVER.fresh(meta.age)) }))
        .after_release(|_, meta| Box::pin(async move { Ok(FAILOVER.fresh(meta.age)) }))
}

impl Failover {
    /// No fault seen, no timeline known.
    fn new() -> Self {
        Failover {
            stale_before: Mutex::new(None),
            last_fault: Mutex::new(None),
            timeline: AtomicI64::new(0),
            budget_timeline: AtomicI64::new(0),
            promoted_at: Mutex::new(None),
            burst_ms: AtomicU64::new(0),
            changes: watch::channel(0).0,
        }
    }

    fn fault(&self, fault: Fault, what: &str) {
        let now = Instant::now();
        *lock(&self.stale_before) = Some(now);
        if fault == Fault::ReadOnly {
            crate::metrics::metrics().database_read_only.inc();
        }
        let mut last = lock(&self.last_fault);
        let new_episode = last.is_none_or(|(at, _)| at.elapsed() > EPISODE_GAP);
        // Within an episode its recovery is logged once, whatever comes late.
        let recovery_logged = !new_episode && last.is_some_and(|(_, logged)| logged);
        *last = Some((now, recovery_logged));
        drop(last);
        if new_episode {
            let why = match fault {
                Fault::ReadOnly => {
                    "the database server refuses writes: a standby or a demoted primary, reached after a failover"
                }
                Fault::Terminated => "the database server ended the session: it is going away",
            };
            let then = "closing every connection opened before now and connecting again (logged once per episode)";
            match fault {
                Fault::ReadOnly => tracing::error!(error = %what, "{why}; {then}"),
                Fault::Terminated => tracing::warn!(error = %what, "{why}; {then}"),
            }
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Whether a pooled connection of this age may be used: opened after
    /// the last fault.
    fn fresh(&self, age: Duration) -> bool {
        let Some(mark) = *lock(&self.stale_before) else {
            return true;
        };
        Instant::now()
            .checked_sub(age)
            .is_some_and(|opened| opened > mark)
    }

    /// The check of a new connection: a writable primary, on the newest
    /// timeline seen; a newer one than before is a promotion.
    async fn check(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let read_only = text(conn, "SELECT current_setting('transaction_read_only')").await?;
        if read_only.as_deref() == Some("on") {
            let why = "the database server is read-only (a standby, or a primary fenced after a failover); assignd needs the primary";
            self.fault(Fault::ReadOnly, why);
            // Shown as it is in sqlx's log line; the acquire retries it.
            return Err(sqlx::Error::InvalidArgument(why.into()));
        }
        let wal_file = text(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
        let Some(timeline) = wal_file.ok().flatten().as_deref().and_then(timeline_of) else {
            // A server that does not show its WAL (some managed forks): no
            // timelines to compare, and no loss of commits to detect.
            self.recovered();
            return Ok(());
        };
        let known = self.timeline.fetch_max(timeline, Ordering::AcqRel);
        if timeline < known {
            let why = format!(
                "the database server is on timeline {timeline}, behind timeline {known} seen before: an old primary that came back after a failover; refusing it (restart assignd if this server is meant to be the primary now)"
            );
            self.fault(Fault::ReadOnly, &why);
            return Err(sqlx::Error::InvalidArgument(why));
        }
        if known != 0 && timeline > known {
            self.promoted(known, timeline);
        }
        // Every connection to a newer timeline spends the burst until one
        // did: none is used for a budget step before that.
        if known != 0 && timeline > self.budget_timeline.load(Ordering::Acquire) {
            spend_burst(conn, self.burst_ms.load(Ordering::Acquire)).await;
        }
        self.budget_timeline.fetch_max(timeline, Ordering::AcqRel);
        self.recovered();
        Ok(())
    }

    /// A replica was promoted (once per timeline): noted before the
    /// connection that found it is used.
    fn promoted(&self, from: i64, to: i64) {
        *lock(&self.promoted_at) = Some(Instant::now());
        crate::metrics::metrics().database_promotions.inc();
        tracing::warn!(
            from,
            to,
            "the database is on a new timeline: a replica was promoted. Its last commits before the failover may be lost; the shared API budget counts its burst as spent, and each chat is read from HelpCrunch before it is decided, for twice the row lease"
        );
        self.changes.send_modify(|n| *n += 1);
    }

    /// A writable primary answered: the end of a read-only episode, logged once.
    fn recovered(&self) {
        let mut last = lock(&self.last_fault);
        if let Some((at, logged @ false)) = last.as_mut() {
            *logged = true;
            let after = at.elapsed();
            drop(last);
            tracing::info!(
                after_ms = after.as_millis() as u64,
                "connected to a writable primary again"
            );
        }
    }
}

/// After a promotion the lost commits may include budget steps, calls
/// made: the budget starts as if its whole burst had just been spent.
async fn spend_burst(conn: &mut PgConnection, burst_ms: u64) {
    // The burst is this process's own number: text it may carry.
    let spend = format!(
        "UPDATE api_budget SET tat_ms = GREATEST(tat_ms,
             extract(epoch FROM clock_timestamp()) * 1000 + {burst_ms}) WHERE id = 1"
    );
    let spent = sqlx::raw_sql(sqlx::AssertSqlSafe(spend))
        .execute(conn)
        .await;
    if let Err(e) = spent {
        // No budget table yet (a database not migrated): nothing to spend.
        tracing::debug!(error = %e, "cannot spend the shared budget's burst after the promotion");
    }
}

/// The first column of `sql`'s first row, as text. A plain-text query,
/// which prepares nothing: a new connection may be PgBouncer's in
/// transaction mode, where a prepared statement outlives the check on a
/// server connection other clients then get (`db.rs`, `pg!`).
async fn text(conn: &mut PgConnection, sql: &'static str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::raw_sql(sql).fetch_optional(&mut *conn).await?;
    Ok(match row {
        Some(row) => sqlx::Row::try_get::<Option<String>, _>(&row, 0)?,
        None => None,
    })
}

/// The timeline of a WAL file name: its first eight hex digits.
fn timeline_of(wal_file: &str) -> Option<i64> {
    i64::from_str_radix(wal_file.get(..8)?, 16).ok()
}

impl Store {
    /// Whether a connection found a promoted replica within `window`: its
    /// last commits may be missing, so a chat is read before it is decided.
    pub fn promoted_within(&self, window: Duration) -> bool {
        lock(&FAILOVER.promoted_at).is_some_and(|at| at.elapsed() < window)
    }

    /// Changes when a read-only episode begins or a promotion is seen.
    pub fn failovers(&self) -> watch::Receiver<u64> {
        FAILOVER.changes.subscribe()
    }
}

/// Remembers the shared budget's burst, spent again at a promotion.
pub(super) fn note_burst(tau: Duration) {
    FAILOVER
        .burst_ms
        .store(tau.as_millis() as u64, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_is_the_wal_file_names_first_eight_digits() {
        assert_eq!(timeline_of("000000010000000000000003"), Some(1));
        assert_eq!(timeline_of("0000000A0000000000000003"), Some(10));
        assert_eq!(timeline_of("0000"), None);
        assert_eq!(timeline_of("zzzzzzzz0000000000000003"), None);
    }

    #[test]
    fn connections_opened_before_a_fault_are_stale() {
        let f = Failover::new();
        assert!(f.fresh(Duration::from_secs(3600)));
        let mut changes = f.changes.subscribe();
        f.fault(Fault::ReadOnly, "test");
        assert!(changes.has_changed().unwrap(), "a new episode is announced");
        assert!(!f.fresh(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(f.fresh(Duration::from_millis(1)));
        changes.mark_unchanged();
        f.fault(Fault::ReadOnly, "test");
        assert!(
            !changes.has_changed().unwrap(),
            "one episode, one announcement"
        );
    }
}
