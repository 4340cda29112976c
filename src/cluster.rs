//! Several daemons on one database (SPEC §11).
//!
//! Every daemon registers itself in `daemons` and keeps a heartbeat there.
//! One lease with a fencing epoch decides who does what:
//!
//! - **SQLite** (`daemon` lease): one daemon per file. A second one waits
//!   as a hot standby (not ready, taking no work) and takes over when the
//!   holder stops (it lets the lease go), dies (its pid is gone: seen at
//!   the next heartbeat) or hangs (the lease expires).
//! - **PostgreSQL** (`leader` lease): every daemon claims and assigns; the
//!   leader alone runs the periodic jobs (reconciliation, the poller,
//!   follow-ups, retention) and takes back the rows of daemons that died.
//!
//! A daemon that finds its lease taken by another (it hung past the expiry)
//! stops working at once: on SQLite it exits, on PostgreSQL it stops
//! leading.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use rand::RngExt;

use crate::limiter::{BudgetFuture, Fence, SharedBudget, Take};
use crate::store::{Backend, LeaseHolder, Store, StoreError};

/// How often a daemon renews its heartbeat and its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// A daemon not heard from for this long is gone: its rows are taken back.
pub const GONE_AFTER: Duration = Duration::from_secs(5);
/// How much sooner than the database a holder counts its own lease out:
/// for clock rates and the time a renewal takes to commit.
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// How long a stopping daemon tries to remove its row.
const GOODBYE_TIMEOUT: Duration = Duration::from_millis(400);
/// How often a call waits to look again whether a lapsed hold is back.
const FENCE_NAP: Duration = Duration::from_millis(20);

/// This daemon's place among the daemons of its database.
pub struct Membership {
    store: Store,
    owner: String,
    host: String,
    lease: &'static str,
    /// The fencing epoch while this daemon holds its lease, else 0.
    epoch: AtomicI64,
    holding: watch::Sender<bool>,
    /// Set when the lease was taken away from under this daemon.
    lost: CancellationToken,
    /// Set once a heartbeat found the lease held by another daemon.
    stood_by: std::sync::atomic::AtomicBool,
    /// Until when the held lease certainly lasts, by this process's
    /// monotonic clock (it runs on while the process is stopped): the
    /// moment before its last renewal, plus the lease, less a margin.
    valid_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What a standby waits behind, for its log line and `status`.
#[derive(Debug, Clone)]
pub struct Holder(pub LeaseHolder);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.0;
        let since = jiff::Timestamp::from_millisecond(h.since_ms)
            .map(|t| format!("{t:.0}"))
            .unwrap_or_else(|_| h.since_ms.to_string());
        write!(
            f,
            "host {}, pid {}, since {since}",
            h.host.as_deref().unwrap_or("unknown"),
            h.pid.map_or_else(|| "unknown".into(), |p| p.to_string())
        )
    }
}

impl Membership {
    /// Registers this daemon under a new owner key (`<pid>-<random>`): the
    /// key every row and message it claims carries.
    pub async fn join(store: Store) -> Result<Arc<Self>, StoreError> {
        let owner = format!("{}-{}", std::process::id(), rand::rng().random::<u32>());
        let owner = owner.as_str();
        let host = hostname();
        store
            .register_daemon(owner, &host, std::process::id())
            .await?;
        let lease = match store.backend() {
            Backend::Sqlite => "daemon",
            Backend::Postgres => "leader",
        };
        Ok(Arc::new(Self {
            store,
            owner: owner.to_string(),
            host,
            lease,
            epoch: AtomicI64::new(0),
            holding: watch::channel(false).0,
            lost: CancellationToken::new(),
            stood_by: std::sync::atomic::AtomicBool::new(false),
            valid_until: std::sync::Mutex::new(None),
        }))
    }

    /// Whether this daemon may claim rows: always on PostgreSQL; on SQLite
    /// only while it holds the file and its hold certainly lasts.
    pub fn may_work(&self) -> bool {
        self.store.backend() == Backend::Postgres || (self.holds() && self.lasts())
    }

    /// Whether the held lease is known to last now: renewed less than a
    /// lease ago, by this process's clock, which runs on while the
    /// process is stopped. A holder stopped past its lease wakes up with
    /// this false, before its next heartbeat can tell it the file is gone.
    fn lasts(&self) -> bool {
        let until = *self.valid_until.lock().expect("lease clock");
        until.is_some_and(|u| tokio::time::Instant::now() < u)
    }

    /// Whether this daemon holds its lease now (SQLite: the file;
    /// PostgreSQL: leadership).
    pub fn holds(&self) -> bool {
        *self.holding.borrow()
    }

    /// The fencing epoch of the lease while held.
    pub fn epoch(&self) -> Option<i64> {
        let e = self.epoch.load(Ordering::Acquire);
        (e > 0).then_some(e)
    }

    /// Whether this daemon holds its lease now by the database itself, at
    /// the epoch it took it with: the fencing check before leader work.
    pub async fn confirm(&self) -> bool {
        let Some(epoch) = self.epoch() else {
            return false;
        };
        match self.store.holds_lease(self.lease, &self.owner, epoch).await {
            Ok(true) => true,
            Ok(false) => {
                // Expired with nobody else taking it (a database locked past
                // the lease): the next heartbeat renews it at the same epoch.
                if !self.expired_only(epoch).await {
                    self.lose();
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm the lease; skipping this round");
                false
            }
        }
    }

    /// Whether the lease this daemon held at `epoch` has only expired: no
    /// other daemon took it since (a database error counts as taken).
    async fn expired_only(&self, epoch: i64) -> bool {
        matches!(
            self.store.lease_holder(self.lease).await,
            Ok(Some(h)) if h.owner == self.owner && h.epoch == epoch
        )
    }

    /// The lease was found held by another while this daemon held it (a
    /// heartbeat, or the fencing check before leader work, saw it first).
    /// Losing the file is fatal: the worker's state is the holder's no
    /// more, and a SQLite daemon exits; losing leadership is not.
    fn lose(&self) {
        let was = self.epoch.swap(0, Ordering::AcqRel);
        *self.valid_until.lock().expect("lease clock") = None;
        self.holding.send_replace(false);
        self.stood_by.store(true, Ordering::Release);
        if was > 0 {
            tracing::error!(
                lease = self.lease,
                "the {} lease was taken by another daemon",
                self.lease
            );
        }
        if self.lease == "daemon" {
            self.lost.cancel();
        }
    }

    /// Whether this daemon ever found its lease held by another (it waited
    /// as a standby, or stopped leading).
    pub fn stood_by(&self) -> bool {
        self.stood_by.load(Ordering::Acquire)
    }

    /// Fires when the lease was taken from this daemon while it held it.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    pub fn lease_name(&self) -> &'static str {
        self.lease
    }

    /// The key this daemon's claims carry.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Waits until this daemon may work, or `stop`; false on `stop`.
    pub async fn wait_until_working(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.holding.subscribe();
        loop {
            if self.may_work() {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                changed = rx.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// Keeps the heartbeat and the lease until `stop`, then lets both go.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut announced_standby = false;
        loop {
            // A beat waiting on a database that is down must not hold the exit.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.beat(&mut announced_standby) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
        // Bounded: a database that is down must not hold the exit.
        let gone = tokio::time::timeout(GOODBYE_TIMEOUT, self.store.unregister_daemon(&self.owner));
        match gone.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove this daemon's row; it will age out")
            }
            Err(_) => tracing::warn!(
                "the database did not answer in time to remove this daemon's row; it will age out"
            ),
        }
        self.holding.send_replace(false);
    }

    /// One heartbeat: the row, then the lease.
    async fn beat(&self, announced_standby: &mut bool) {
        if let Err(e) = self.store.heartbeat(&self.owner).await {
            tracing::warn!(error = %e, "cannot record this daemon's heartbeat");
        }
        if self.lost.is_cancelled() {
            // It exits: it must not take the file again on its way out.
            return;
        }
        let held = self.holds();
        let asked = tokio::time::Instant::now();
        match self.take().await {
            Ok(Some(epoch)) => {
                let before = self.epoch.load(Ordering::Acquire);
                if before > 0 && before != epoch {
                    // Another daemon held it in between: what this one
                    // knows is stale.
                    self.lose();
                    let _ = self.store.drop_lease(self.lease, &self.owner).await;
                    return;
                }
                if !held {
                    tracing::info!(lease = self.lease, epoch, "took the {} lease", self.lease);
                }
                *self.valid_until.lock().expect("lease clock") =
                    Some(asked + LEASE_TTL.saturating_sub(LEASE_MARGIN));
                self.epoch.store(epoch, Ordering::Release);
                self.holding.send_replace(true);
            }
            Ok(None) => {
                if held {
                    self.lose();
                }
                self.stood_by.store(true, Ordering::Release);
                if !*announced_standby && self.lease == "daemon" {
                    *announced_standby = true;
                    self.announce_standby().await;
                }
            }
            Err(e) => tracing::warn!(error = %e, lease = self.lease, "cannot renew the lease"),
        }
    }

    /// Takes or renews the lease. On SQLite a holder on this host whose
    /// process is gone loses it at once: no need to wait for the expiry.
    async fn take(&self) -> Result<Option<i64>, StoreError> {
        if let Some(epoch) = self
            .store
            .take_lease(self.lease, &self.owner, LEASE_TTL)
            .await?
        {
            return Ok(Some(epoch));
        }
        let holder = self.store.lease_holder(self.lease).await?;
        if let Some(h) = holder.filter(|h| self.is_dead_here(h)) {
            tracing::warn!(holder = %Holder(h.clone()), "the daemon holding the database is gone; taking over");
            self.store.drop_lease(self.lease, &h.owner).await?;
            return self
                .store
                .take_lease(self.lease, &self.owner, LEASE_TTL)
                .await;
        }
        Ok(None)
    }

    fn is_dead_here(&self, h: &LeaseHolder) -> bool {
        h.host.as_deref() == Some(self.host.as_str())
            && h.pid
                .and_then(|p| u32::try_from(p).ok())
                .is_some_and(|p| p != std::process::id() && !process_alive(p))
    }

    async fn announce_standby(&self) {
        match self.store.lease_holder(self.lease).await {
            Ok(Some(h)) => tracing::warn!(
                holder = %Holder(h.clone()),
                "another daemon works this database (host {}, pid {}); waiting as a standby until it stops",
                h.host.as_deref().unwrap_or("unknown"),
                h.pid.unwrap_or_default()
            ),
            _ => tracing::warn!("another daemon works this database; waiting as a standby"),
        }
    }
}

/// On SQLite no call goes while this daemon's hold on the file is not
/// known to last; on PostgreSQL every daemon calls, from the shared budget.
impl Fence for Membership {
    fn shut_for(&self) -> Option<Duration> {
        (!self.may_work()).then_some(FENCE_NAP)
    }
}

/// This host's name, for `status` and the standby's log line.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a process with this id runs (signal 0 checks without sending).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The account's API budget in the database (PostgreSQL), for the limiter.
pub struct DatabaseBudget(pub Store);

impl SharedBudget for DatabaseBudget {
    fn take(
        &self,
        period: Duration,
        tau: Duration,
        assignment: bool,
        ahead: Duration,
    ) -> BudgetFuture<'_, Take> {
        Box::pin(async move {
            match self.0.take_budget(period, tau, assignment, ahead).await {
                Ok((true, send_in)) => Ok(Take::Admitted(send_in)),
                Ok((false, wait)) => Ok(Take::Wait(wait)),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn pause(&self, pause: Duration) -> BudgetFuture<'_, ()> {
        Box::pin(async move { self.0.pause_budget(pause).await.map_err(|e| e.to_string()) })
    }
}
