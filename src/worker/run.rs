//! The processing loop and its shutdown: claim rows and hand each to a
//! task, keep the peer jobs (outbox, follow-ups, reconciliation, poller)
//! alive, and stop within one deadline whatever is stalled.
//!
//! Nothing may fail silently here. A row whose task panics is dead-lettered
//! with the reason; a peer job that panics or returns ends the loop with an
//! error, so the daemon reports not-ready and exits non-zero for systemd to
//! restart it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Semaphore;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::jobs::Job;
use super::policy::{DRAIN_TIMEOUT, RELEASE_TIMEOUT, STOP_GRACE};
use super::{Worker, lock};
use crate::cluster::{GONE_AFTER, process_alive};
use crate::limiter::{Limiter, Priority, Slot};
use crate::store::{Backend, BadRow, LeaseKey, QueueRow, UnrankedRow, now_ms};

/// The longest a takeover waits for its reconciliation before deciding.
const TAKEOVER_RECONCILE: Duration = Duration::from_secs(10);
/// How often the loop turns while it need not read the queue (new rows
/// wake it): the systemd watchdog's ping and agents coming back are seen
/// at least this often.
const TURN: Duration = Duration::from_secs(1);

/// A peer job ended while the daemon was meant to run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {job} job stopped unexpectedly: {cause}")]
pub struct JobFailed {
    pub job: &'static str,
    pub cause: String,
}

/// Rows in flight: their tasks, and which row each task holds, so that a
/// task that panics can dead-letter its row.
struct InFlight {
    tasks: JoinSet<()>,
    rows: HashMap<Id, (i64, LeaseKey)>,
    permits: Arc<Semaphore>,
}

/// The peer jobs, by task id, so that one that ends is named.
struct Jobs {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

/// What the loop remembers between two turns.
struct Turn {
    last_auth_log: Option<Instant>,
    reported_auth: Option<bool>,
    store_backoff: Duration,
    last_ping: Option<Instant>,
    watchdog: Option<Duration>,
    /// The last claim found a row: more are probably due.
    backlog: bool,
    /// While new rows wake the loop: no row is due before this, as the
    /// queue said when last read; the loop turns (the watchdog, away
    /// agents) without reading it again until then or a wake.
    quiet_until: Option<Instant>,
}

impl Worker {
    /// Processes the queue until `shutdown` fires, then lets in-flight rows
    /// finish until [`DRAIN_TIMEOUT`] and releases whatever is left. Returns
    /// an error if a peer job stopped on its own (it is a bug, and the
    /// daemon must not run on without it).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), JobFailed> {
        // A standby (SQLite: another daemon holds the file) takes no work.
        if !self.cluster.wait_until_working(&shutdown).await {
            return Ok(());
        }
        // Whoever held the file before may have called up to now.
        self.client().limiter().spend_burst();
        self.take_back_orphans().await;
        if self.cluster.stood_by() || self.settings.reconcile_first {
            self.take_over(&shutdown).await;
        }
        let lost = self.cluster.lost();
        let stop = shutdown.child_token();
        let mut jobs = self.spawn_jobs(&stop);
        let mut rows = InFlight {
            tasks: JoinSet::new(),
            rows: HashMap::new(),
            permits: Arc::new(Semaphore::new(self.settings.concurrency as usize)),
        };
        let mut turn = Turn {
            last_auth_log: None,
            reported_auth: None,
            store_backoff: first_store_backoff(&self.settings),
            quiet_until: None,
            last_ping: None,
            watchdog: watchdog_interval(),
            backlog: false,
        };
        let (mut failure, mut stopped_at) = (None, None);
        while !stop.is_cancelled() {
            if let Some(failed) = jobs.ended() {
                failure = Some(failed);
                break;
            }
            if lost.is_cancelled() {
                failure = Some(JobFailed {
                    job: "lease",
                    cause: "another daemon took this database over; this one must not work on"
                        .into(),
                });
                break;
            }
            while let Some(done) = rows.tasks.try_join_next_with_id() {
                self.reap(&mut rows, done).await;
            }
            // A turn's waits end on a lost lease too: rows stuck where only
            // the file's holder may go on (the limiter) would otherwise keep
            // the loop waiting, and keep renewing their leases, with no end.
            let ends = stop.child_token();
            let this_turn = self.turn(&ends, &mut rows, &mut turn);
            tokio::pin!(this_turn);
            tokio::select! {
                _ = &mut this_turn => {}
                _ = lost.cancelled() => {
                    ends.cancel();
                    this_turn.await;
                }
                // A stop ends the turn's waits, not a database call in it (a
                // database down: the pool's acquire timeout). A claim rolls
                // back; a row claimed, not yet started, is released too.
                _ = stop.cancelled() => {
                    stopped_at = Some(Instant::now());
                    if tokio::time::timeout(STOP_GRACE, &mut this_turn).await.is_err() {
                        tracing::warn!("shutdown: the claim loop's database call did not end in time; leaving it");
                    }
                }
            }
        }
        if let Some(failed) = &failure {
            tracing::error!(error = %failed, "stopping: a job of the daemon failed");
            *lock(&self.failure) = Some(failed.to_string());
        }
        stop.cancel();
        self.drain(rows, jobs, stopped_at).await;
        failure.map_or(Ok(()), Err)
    }

    /// A standby that takes over a database reads the state the holder
    /// left (open chats, rotation, away flags, seats of calls in doubt)
    /// and reconciles open chats with HelpCrunch before its first decision:
    /// what it loaded when it started is stale by everything the holder did.
    async fn take_over(&self, stop: &CancellationToken) {
        while let Err(e) = self.reload_state().await {
            tracing::error!(error = %e, "cannot read the routing state after taking over; trying again");
            self.idle(stop, Duration::from_secs(1)).await;
            if stop.is_cancelled() {
                return;
            }
        }
        let rules = self.rules();
        let capped = rules.agents.iter().any(|a| a.max_open.is_some())
            || rules.pools.iter().any(|p| p.max_open.is_some());
        if !capped {
            // Open counts decide nothing without a cap: no search to wait for.
            tracing::info!("took over: routing state read from the database");
            return;
        }
        tracing::info!("took over: routing state read from the database; reconciling open chats");
        // Bounded: with HelpCrunch down, the state the holder left is the
        // best there is, and waiting chats must not wait on the search.
        let reconciled = tokio::time::timeout(TAKEOVER_RECONCILE, self.reconcile_round(stop));
        if reconciled.await.is_err() {
            tracing::warn!(
                "reconciling open chats at takeover is taking long; deciding on the state the holder left"
            );
        }
    }

    fn spawn_jobs(self: &Arc<Self>, stop: &CancellationToken) -> Jobs {
        let mut jobs = Jobs {
            tasks: JoinSet::new(),
            names: HashMap::new(),
        };
        for job in Job::enabled(self) {
            let ended = WakeOnEnd(self.clone());
            let work = faulty(job.name(), job.run(self.clone(), stop.clone()));
            let handle = jobs.tasks.spawn(async move {
                let _ended = ended;
                work.await
            });
            jobs.names.insert(handle.id(), job.name());
        }
        jobs
    }

    /// Puts back rows leased by daemons that died: on SQLite by their pid
    /// (one host), on PostgreSQL by their heartbeat.
    async fn take_back_orphans(&self) {
        let released = match self.store.backend() {
            Backend::Sqlite => self.store.release_orphans(process_alive).await,
            Backend::Postgres => self.store.release_gone(GONE_AFTER).await.map(|(r, _)| r),
        };
        match released {
            Ok(0) => {}
            Ok(rows) => tracing::warn!(
                rows,
                "took back rows leased by a daemon that no longer runs"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot take back rows of daemons that died; their leases will expire")
            }
        }
    }

    /// One turn of the loop: report, wait if the API cannot be used, then
    /// claim the next row if a permit is free.
    async fn turn(self: &Arc<Self>, stop: &CancellationToken, rows: &mut InFlight, t: &mut Turn) {
        self.report_auth(t).await;
        if !self.api_authorized() {
            if t.last_auth_log
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
            {
                tracing::error!(
                    "HelpCrunch rejects the API key (401); not taking work until the key is fixed and assignd is reloaded (SIGHUP)"
                );
                t.last_auth_log = Some(Instant::now());
            }
            return self.idle(stop, self.settings.poll_interval).await;
        }
        // Claiming while paused would only age the leases.
        if let Some(until) = self.client().limiter().paused_until() {
            let resume = Timestamp::now() + (until - Instant::now());
            let text = format!("HelpCrunch answered 429; all calls paused until {resume:.0}");
            let _ = self.store.set_daemon_state("limiter", &text).await;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            return;
        }
        if let Some(every) = t.watchdog
            && t.last_ping.is_none_or(|at| at.elapsed() >= every)
        {
            use crate::notify::{NotifyState, notify};
            let status = self.status_line().await;
            notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            t.last_ping = Some(Instant::now());
        }
        self.refresh_away().await;
        if rows.permits.available_permits() == 0 {
            tokio::select! {
                _ = stop.cancelled() => {}
                Some(done) = rows.tasks.join_next_with_id() => self.reap(rows, done).await,
            }
            return;
        }
        self.claim_next(stop, rows, t).await;
    }

    /// Says in the database whether the API key is accepted, when that changes.
    async fn report_auth(&self, t: &mut Turn) {
        let authorized = self.api_authorized();
        if t.reported_auth == Some(authorized) {
            return;
        }
        let text = if authorized {
            "ok"
        } else {
            "unauthorized (HTTP 401): not taking work until the API key is fixed and assignd is reloaded"
        };
        if self.store.set_daemon_state("api", text).await.is_ok() {
            t.reported_auth = Some(authorized);
        }
    }

    /// Takes a rate slot, then claims the best due row for it and starts
    /// its task. Claiming only once a call can go means the row that goes is
    /// the highest-priority, oldest one at that instant: an urgent chat never
    /// waits behind rows claimed before it. Rows no intake ranked take their
    /// rule priority in the claim's transaction, before it picks. Idles when nothing is due, backs
    /// off while the database fails.
    async fn claim_next(
        self: &Arc<Self>,
        stop: &CancellationToken,
        rows: &mut InFlight,
        t: &mut Turn,
    ) {
        if !t.backlog && !self.work_due(stop, t).await {
            return;
        }
        let Some(slot) = self.take_slot(stop).await else {
            return;
        };
        let key = LeaseKey {
            owner: self.owner.clone(),
            epoch: self.batches.fetch_add(1, Ordering::Relaxed) as i64,
        };
        queue_read("claim");
        let rank = |row: &UnrankedRow| self.rank_row(row);
        let claimed = (self.store.claim_ranked(&key, self.settings.lease, 1, &rank)).await;
        self.storage_result(&claimed);
        match claimed {
            Ok(claimed) if !claimed.is_empty() => {
                t.store_backoff = first_store_backoff(&self.settings);
                t.backlog = true;
                let mut slot = Some(slot);
                for row in claimed {
                    self.start(rows, row, key.clone(), slot.take()).await;
                }
            }
            Ok(_) => {
                // Kept for a row that comes while it is still good.
                *lock(&self.spare_slot) = Some(slot);
                t.store_backoff = first_store_backoff(&self.settings);
                t.backlog = false;
            }
            Err(e) => {
                *lock(&self.spare_slot) = Some(slot);
                t.backlog = false;
                tracing::error!(error = %e, retry_in_ms = t.store_backoff.as_millis() as u64, "cannot claim work");
                self.idle(stop, t.store_backoff).await;
                t.store_backoff = (t.store_backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Whether a row is due now; if not, idles until one may be (or until
    /// woken) and says no. While new rows wake the loop, the queue is read
    /// again only once the row it said is next comes due, or on a wake;
    /// the loop still turns every [`TURN`] meanwhile.
    async fn work_due(&self, stop: &CancellationToken, t: &mut Turn) -> bool {
        let now = Instant::now();
        if let Some(until) = t.quiet_until.filter(|u| *u > now) {
            if self.idle_woken(stop, (until - now).min(TURN)).await {
                t.quiet_until = None;
            }
            return false;
        }
        queue_read("due");
        let wait = match self.store.next_due_ms().await {
            Ok(Some(due)) if due <= now_ms() => return true,
            Ok(Some(due)) => Duration::from_millis((due - now_ms()).max(1) as u64),
            // Unknown: try a claim, which reports a failing database.
            Err(_) => return true,
            Ok(None) => Duration::from_secs(3600),
        };
        t.quiet_until = None;
        if self.listening.load(Ordering::Acquire) {
            t.quiet_until = Some(now + wait);
        }
        let wait = wait.min(if t.quiet_until.is_some() {
            TURN
        } else {
            self.settings.poll_interval
        });
        if self.idle_woken(stop, wait).await {
            t.quiet_until = None;
        }
        false
    }

    /// A slot for the next row: one a finished row did not use, while it
    /// is good, else the limiter's next, after the calls of rows in flight.
    /// `None` when stopping, or when a 429 pause began: the loop's turn then
    /// reports the pause and waits it out.
    async fn take_slot(&self, stop: &CancellationToken) -> Option<Slot> {
        let limiter = self.client().limiter().clone();
        loop {
            if let Some(slot) = lock(&self.spare_slot).take() {
                if slot.fresh() {
                    return Some(slot.rehanded());
                }
                limiter.forfeit(slot);
            }
            // Enabled before the look: a pause that begins after it wakes
            // this wait at once (no polling).
            let began = limiter.pause_began();
            tokio::pin!(began);
            began.as_mut().enable();
            if limiter.paused_until().is_some() {
                return None;
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = self.slot_back.notified() => {}
                _ = began => {}
                // Closed or stopping: the next turn finds out why.
                got = limiter.acquire(Priority::Claim) => return got.ok(),
            }
        }
    }

    async fn start(
        self: &Arc<Self>,
        rows: &mut InFlight,
        row: QueueRow,
        key: LeaseKey,
        slot: Option<Slot>,
    ) {
        let Ok(permit) = rows.permits.clone().acquire_owned().await else {
            return;
        };
        let worker = Arc::clone(self);
        let id = row.id;
        let task_key = key.clone();
        let ended = WakeOnEnd(self.clone());
        let handle = rows.tasks.spawn(async move {
            // The loop reaps the task (a panic dead-letters its row) and
            // looks at the queue again, the row perhaps due again soon.
            let _ended = ended;
            injected_panic(&format!("row:{}", row.chat_id));
            let work = worker.process(row, &task_key);
            let unused = match slot {
                Some(slot) => Limiter::with_slot(slot, work).await.1,
                None => {
                    work.await;
                    None
                }
            };
            drop(permit);
            if let Some(slot) = unused {
                *lock(&worker.spare_slot) = Some(slot);
                worker.slot_back.notify_one();
            }
        });
        rows.rows.insert(handle.id(), (id, key));
    }

    /// Accounts for a finished row task: a panic dead-letters its row (the
    /// same row would panic again), so no row is left leased by a bug.
    async fn reap(&self, rows: &mut InFlight, done: Result<(Id, ()), JoinError>) {
        let (id, error) = match done {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let held = rows.rows.remove(&id);
        let (Some(e), Some((queue_id, key))) = (error, held) else {
            return;
        };
        if !e.is_panic() {
            return; // Aborted at shutdown: released with the rest.
        }
        let bad = BadRow {
            id: queue_id,
            reason: format!(
                "internal error while processing this row ({}); see the log",
                panic_message(e)
            ),
        };
        tracing::error!(queue_id, reason = %bad.reason, "a row's task panicked; dead-lettering the row");
        if let Err(e) = self.store.dead_letter(&key, &bad).await {
            tracing::error!(error = %e, queue_id, "cannot dead-letter the row; its lease will expire");
        }
    }

    /// Shutdown: no wait on the limiter outlasts it, in-flight calls get
    /// until [`DRAIN_TIMEOUT`] after the stop, then whatever runs is cut off,
    /// and every row and message this process holds is put back.
    async fn drain(&self, mut rows: InFlight, mut jobs: Jobs, stopped_at: Option<Instant>) {
        self.client().limiter().stop();
        let deadline = stopped_at.unwrap_or_else(Instant::now) + DRAIN_TIMEOUT;
        let finished = tokio::time::timeout_at(deadline, async {
            while let Some(done) = rows.tasks.join_next_with_id().await {
                self.reap(&mut rows, done).await;
            }
            while jobs.tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                rows = rows.tasks.len(),
                jobs = jobs.tasks.len(),
                "shutdown: cutting off work still in flight"
            );
            rows.tasks.abort_all();
            jobs.tasks.abort_all();
            while rows.tasks.join_next().await.is_some() {}
            while jobs.tasks.join_next().await.is_some() {}
        }
        let released = tokio::time::timeout(RELEASE_TIMEOUT, self.store.release_all(&self.owner));
        match released.await {
            Err(_) => tracing::error!(
                "shutdown: the database did not answer in time to release leased rows; their leases will expire"
            ),
            Ok(Ok((0, 0))) => {}
            Ok(Ok((rows, messages))) => {
                tracing::info!(
                    rows,
                    messages,
                    "shutdown: put back on the queue and the outbox"
                )
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "shutdown: cannot release leased rows; their leases will expire")
            }
        }
    }

    async fn idle(&self, shutdown: &CancellationToken, wait: Duration) {
        self.idle_woken(shutdown, wait).await;
    }

    /// [`Worker::idle`]; whether a wake (or the shutdown) ended it.
    async fn idle_woken(&self, shutdown: &CancellationToken, wait: Duration) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }
}

impl Jobs {
    /// A job that has ended, if any: before shutdown, that is a failure.
    fn ended(&mut self) -> Option<JobFailed> {
        let done = self.tasks.try_join_next_with_id()?;
        let (id, cause) = match done {
            Ok((id, ())) => (id, "it returned".to_string()),
            Err(e) => (e.id(), panic_message(e)),
        };
        Some(JobFailed {
            job: self.names.get(&id).copied().unwrap_or("a"),
            cause,
        })
    }
}

/// Wakes the claim loop when a job's or a row's task ends, returned or
/// panicked (the guard drops while unwinding too): the loop, which may
/// idle until the next row is due, then reaps it (a job that ended stops
/// the daemon; a row that panicked is dead-lettered).
struct WakeOnEnd(Arc<Worker>);

impl Drop for WakeOnEnd {
    fn drop(&mut self) {
        self.0.wake();
    }
}

/// A job's future, which panics first if the fault is injected for it.
async fn faulty(job: &str, work: impl std::future::Future<Output = ()>) {
    injected_panic(job);
    work.await
}

/// In debug builds only, `ASSIGND_DEBUG_PANIC=<job>` (or `row:<chat id>`)
/// makes that job (or that row's task) panic, so that tests can prove a
/// panic is never silent; release builds have no such switch.
fn injected_panic(target: &str) {
    if cfg!(debug_assertions) && std::env::var("ASSIGND_DEBUG_PANIC").is_ok_and(|v| v == target) {
        panic!("injected panic in {target} (ASSIGND_DEBUG_PANIC)");
    }
}

/// The message a panicking task left, for the log and the row.
fn panic_message(e: JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("panic: {text}")
}

/// Half of systemd's `WATCHDOG_USEC`, if the watchdog is on for this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Counts one of the claim loop's reads of the queue (`due`, `claim`).
fn queue_read(read: &str) {
    let m = crate::metrics::metrics();
    m.queue_reads
        .get_or_create(&vec![("read", read.to_string())])
        .inc();
}

/// The first wait after a claim the database failed: half a second (less
/// with a shorter `poll_interval`), doubling to 5 s.
fn first_store_backoff(settings: &super::Settings) -> Duration {
    settings.poll_interval.min(Duration::from_millis(500))
}
