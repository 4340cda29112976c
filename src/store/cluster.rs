//! The `daemons` and `leases` tables, and PostgreSQL's shared API budget:
//! what several daemons on one database agree on.
//!
//! Times on SQLite come from this host's clock (one host uses the file);
//! on PostgreSQL from the database's, so that daemons on hosts whose
//! clocks differ still agree. Each statement takes the caller's time as
//! `$1` and PostgreSQL's text ignores it for `assignd_now_ms()`.

use std::time::Duration;

use super::db::{Side, Stmt};
use super::{Backend, Db, Store, StoreError, now_ms, vals};

/// A daemon on this database, as `assignd status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DaemonRow {
    pub owner: String,
    pub host: String,
    pub pid: i64,
    #[sqlx(rename = "started_at")]
    pub started_at_ms: i64,
    #[sqlx(rename = "heartbeat_at")]
    pub heartbeat_at_ms: i64,
    /// Holds the lease named by the listing (`daemon` or `leader`).
    pub holder: bool,
}

/// Who holds a lease, and since when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseHolder {
    pub owner: String,
    pub epoch: i64,
    #[sqlx(rename = "since")]
    pub since_ms: i64,
    #[sqlx(rename = "expires_at")]
    pub expires_at_ms: i64,
    /// From the holder's `daemons` row, if it has one.
    pub host: Option<String>,
    pub pid: Option<i64>,
}

const REGISTER: Stmt = Stmt::each(
    "INSERT INTO daemons (owner, host, pid, started_at, heartbeat_at) VALUES ($2, $3, $4, $1, $1)
     ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
    "INSERT INTO daemons (owner, host, pid, started_at, heartbeat_at)
     VALUES ($2, $3, $4, assignd_now_ms(), assignd_now_ms())
     ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
);

const HEARTBEAT: Stmt = Stmt::each(
    "UPDATE daemons SET heartbeat_at = $1 WHERE owner = $2",
    "UPDATE daemons SET heartbeat_at = assignd_now_ms() WHERE owner = $2",
);

/// Daemons heard from within `$2` ms, and whether each holds lease `$3`.
const LIVE: Stmt = Stmt::each(
    "SELECT d.owner, d.host, d.pid, d.started_at, d.heartbeat_at,
            EXISTS (SELECT 1 FROM leases l WHERE l.name = $3 AND l.owner = d.owner
                     AND l.expires_at > $1) AS holder
       FROM daemons d WHERE d.heartbeat_at > $1 - $2 ORDER BY d.started_at, d.owner",
    "SELECT d.owner, d.host, d.pid, d.started_at, d.heartbeat_at,
            EXISTS (SELECT 1 FROM leases l WHERE l.name = $3 AND l.owner = d.owner
                     AND l.expires_at > assignd_now_ms()) AS holder
       FROM daemons d WHERE d.heartbeat_at > assignd_now_ms() - $2 ORDER BY d.started_at, d.owner",
);

/// Takes lease `$2` for `$3` until `$1 + $4`: a new one, an expired one
/// (the epoch grows: a new holder), or one `$3` holds already (renewed, same
/// epoch). Returns the epoch when `$3` holds it.
const TAKE_LEASE: Stmt = Stmt::each(
    "INSERT INTO leases (name, owner, epoch, since, expires_at) VALUES ($2, $3, 1, $1, $1 + $4)
     ON CONFLICT (name) DO UPDATE
        SET epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END,
            since = CASE WHEN leases.owner = excluded.owner THEN leases.since ELSE excluded.since END,
            owner = excluded.owner, expires_at = excluded.expires_at
      WHERE leases.owner = excluded.owner OR leases.expires_at <= $1
     RETURNING epoch",
    "INSERT INTO leases (name, owner, epoch, since, expires_at)
     VALUES ($2, $3, 1, assignd_now_ms(), assignd_now_ms() + $4)
     ON CONFLICT (name) DO UPDATE
        SET epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END,
            since = CASE WHEN leases.owner = excluded.owner THEN leases.since ELSE excluded.since END,
            owner = excluded.owner, expires_at = excluded.expires_at
      WHERE leases.owner = excluded.owner OR leases.expires_at <= assignd_now_ms()
     RETURNING epoch",
);

const HOLDER: &str = "SELECT l.owner, l.epoch, l.since, l.expires_at, d.host, d.pid
       FROM leases l LEFT JOIN daemons d ON d.owner = l.owner WHERE l.name = $1";

/// Lets a lease go at once (a clean stop), so the next holder need not
/// wait for it to expire.
const DROP_LEASE: &str = "UPDATE leases SET expires_at = 0 WHERE name = $1 AND owner = $2";

/// Puts back rows whose owner is not a daemon heard from within `$2` ms,
/// once their leases have run out: a daemon only late with its heartbeat
/// may still be sending a row's call, and renews the lease while it does.
const RELEASE_GONE_ROWS: Stmt = Stmt::each(
    "UPDATE queue SET state = 'pending', lease_owner = NULL, lease_epoch = NULL, lease_until = NULL,
            updated_at = $1
      WHERE state = 'leased' AND lease_owner IS NOT NULL AND lease_until <= $1
        AND NOT EXISTS (SELECT 1 FROM daemons d WHERE d.owner = queue.lease_owner
                         AND d.heartbeat_at > $1 - $2)",
    "UPDATE queue SET state = 'pending', lease_owner = NULL, lease_epoch = NULL, lease_until = NULL,
            updated_at = assignd_now_ms()
      WHERE state = 'leased' AND lease_owner IS NOT NULL AND lease_until <= $1
        AND NOT EXISTS (SELECT 1 FROM daemons d WHERE d.owner = queue.lease_owner
                         AND d.heartbeat_at > assignd_now_ms() - $2)",
);

/// The same for outbox messages, due at once.
const RELEASE_GONE_MESSAGES: Stmt = Stmt::each(
    "UPDATE outbox SET lease_owner = NULL, next_attempt_at = $1
      WHERE state = 'pending' AND lease_owner IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM daemons d WHERE d.owner = outbox.lease_owner
                         AND d.heartbeat_at > $1 - $2)",
    "UPDATE outbox SET lease_owner = NULL, next_attempt_at = assignd_now_ms()
      WHERE state = 'pending' AND lease_owner IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM daemons d WHERE d.owner = outbox.lease_owner
                         AND d.heartbeat_at > assignd_now_ms() - $2)",
);

/// Forgets daemons not heard from for a day.
const FORGET_DAEMONS: Stmt = Stmt::each(
    "DELETE FROM daemons WHERE heartbeat_at < $1 - 86400000",
    "DELETE FROM daemons WHERE heartbeat_at < assignd_now_ms() - 86400000",
);

impl Store {
    /// Puts back the rows and messages of daemons not heard from within
    /// `gone_after` (they died); the attempt each claim counted stays
    /// counted. Returns (rows, messages).
    pub async fn release_gone(&self, gone_after: Duration) -> Result<(u64, u64), StoreError> {
        let values = || vals![now_ms(), gone_after.as_millis() as i64];
        let mut tx = self.begin_write().await?;
        let rows = tx.run(RELEASE_GONE_ROWS, values()).await?;
        let messages = tx.run(RELEASE_GONE_MESSAGES, values()).await?;
        tx.run(FORGET_DAEMONS, vals![now_ms()]).await?;
        if rows > 0 {
            super::watch::announce(&mut tx).await?;
        }
        tx.commit().await?;
        Ok((rows, messages))
    }

    /// Records this daemon (`owner` is its lease key) as running.
    pub async fn register_daemon(
        &self,
        owner: &str,
        host: &str,
        pid: u32,
    ) -> Result<(), StoreError> {
        self.db
            .run(REGISTER, vals![now_ms(), owner, host, pid])
            .await?;
        Ok(())
    }

    /// Keeps this daemon's row fresh; false if the row is gone.
    pub async fn heartbeat(&self, owner: &str) -> Result<bool, StoreError> {
        Ok(self.db.run(HEARTBEAT, vals![now_ms(), owner]).await? == 1)
    }

    /// Removes this daemon's row and lets its leases go (a clean stop).
    pub async fn unregister_daemon(&self, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.run("DELETE FROM daemons WHERE owner = $1", vals![owner])
            .await?;
        tx.run(
            "UPDATE leases SET expires_at = 0 WHERE owner = $1",
            vals![owner],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The daemons heard from within `within`, oldest first, each marked
    /// if it holds the lease `lease`.
    pub async fn live_daemons(
        &self,
        within: Duration,
        lease: &str,
    ) -> Result<Vec<DaemonRow>, StoreError> {
        let within = within.as_millis() as i64;
        Ok(self.db.all(LIVE, vals![now_ms(), within, lease]).await?)
    }

    /// Takes or renews the lease `name` for `ttl`; returns its fencing
    /// epoch if `owner` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let ttl = ttl.as_millis() as i64;
        let row: Option<(i64,)> = self
            .db
            .first_on(Side::Write, TAKE_LEASE, vals![now_ms(), name, owner, ttl])
            .await?;
        Ok(row.map(|(epoch,)| epoch))
    }

    /// Whether `owner` still holds the lease `name` at `epoch` now: the
    /// fence a leader's job checks before each round, so that a daemon
    /// that hung past its lease does no periodic work beside the new
    /// leader.
    pub async fn holds_lease(
        &self,
        name: &str,
        owner: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        const HOLDS: Stmt = Stmt::each(
            "SELECT COUNT(*) FROM leases
              WHERE name = $2 AND owner = $3 AND epoch = $4 AND expires_at > $1",
            "SELECT COUNT(*) FROM leases
              WHERE name = $2 AND owner = $3 AND epoch = $4 AND expires_at > assignd_now_ms()",
        );
        let n: i64 = self
            .db
            .value(HOLDS, vals![now_ms(), name, owner, epoch])
            .await?;
        Ok(n == 1)
    }

    /// Who holds (or last held) the lease `name`.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError> {
        Ok(self.db.first(HOLDER, vals![name]).await?)
    }

    /// Lets the lease `name` go if `owner` holds it.
    pub async fn drop_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.db.run(DROP_LEASE, vals![name, owner]).await?;
        Ok(())
    }

    /// The current time on the database's clock (this host's on SQLite),
    /// Unix ms: what lease expiries compare with.
    pub async fn clock_ms(&self) -> Result<i64, StoreError> {
        Ok(match &self.db {
            Db::Sqlite { .. } => now_ms(),
            Db::Postgres(..) => self.db.value("SELECT assignd_now_ms()", vals![]).await?,
        })
    }

    /// Takes one call's slot of the account's shared budget (PostgreSQL),
    /// handed out up to `ahead` before it is due: `(true, d)` when admitted,
    /// the call to go `d` from now and no earlier; else `(false, d)`, how
    /// long to wait before asking again.
    pub async fn take_budget(
        &self,
        period: Duration,
        tau: Duration,
        assignment: bool,
        ahead: Duration,
    ) -> Result<(bool, Duration), StoreError> {
        debug_assert_eq!(self.backend(), Backend::Postgres);
        super::failover::note_burst(tau);
        let sql = "SELECT admitted, ms FROM assignd_reserve_budget($1, $2, $3, $4 = 1, $5)";
        let slack = crate::rate::slack(period);
        let values = vals![ms(period), ms(tau), ms(slack), assignment, ms(ahead)];
        let row: Option<(bool, f64)> = self.db.first_on(Side::Write, sql.into(), values).await?;
        let (admitted, wait) = row.ok_or(sqlx::Error::RowNotFound)?;
        Ok((admitted, Duration::from_secs_f64(wait.max(0.0) / 1000.0)))
    }

    /// Pauses every daemon's calls for `pause` (after a 429).
    pub async fn pause_budget(&self, pause: Duration) -> Result<(), StoreError> {
        let sql = "SELECT CAST(1 AS BIGINT) FROM (SELECT assignd_pause_budget($1)) AS paused";
        let _: i64 = self.db.value_write(sql, vals![ms(pause)]).await?;
        Ok(())
    }
}

fn ms(d: Duration) -> Option<f64> {
    Some(d.as_secs_f64() * 1000.0)
}
