//! The peer jobs beside the processing loop, all of one shape: a round of
//! work that says how long to wait before the next round, run by
//! [`Job::run`] until shutdown. A wake-up (a new message in the outbox)
//! cuts the wait short. Each job's round lives in its own file.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Worker;
use super::policy::PRUNE_EVERY;
use crate::cluster::{GONE_AFTER, HEARTBEAT};
use crate::store::{Backend, StoreError, now_ms};

/// The background work of a daemon, apart from claiming queue rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// Notes and replies (`outbox.rs`).
    Outbox,
    /// Checks whether an assignee answered in time (`reassign.rs`).
    Followups,
    /// Open chats per agent from HelpCrunch (`reconcile.rs`).
    Reconcile,
    /// New unassigned chats, for accounts without webhooks (`poller.rs`).
    Poller,
    /// Finished rows and outcomes past the retention.
    Retention,
    /// Rows of daemons that died, put back (PostgreSQL; SQLite does it at
    /// start, by pid).
    Reclaim,
    /// New rows another process inserted wake the loop (`listen.rs`).
    Listen,
    /// Chats of absent agents back through the rules (`handback.rs`).
    Handback,
}

impl Job {
    /// The jobs this worker runs.
    pub(super) fn enabled(worker: &Worker) -> Vec<Job> {
        let mut jobs = vec![
            Job::Outbox,
            Job::Followups,
            Job::Reconcile,
            Job::Retention,
            Job::Listen,
        ];
        // Always: a reload may give a pool `handback`; idle rounds read nothing.
        jobs.push(Job::Handback);
        if worker.settings.poll_new_chats.is_some() {
            jobs.push(Job::Poller);
        }
        if worker.store.backend() == Backend::Postgres {
            jobs.push(Job::Reclaim);
        }
        jobs
    }

    /// The name in logs and in `ASSIGND_DEBUG_PANIC`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Job::Outbox => "outbox",
            Job::Followups => "follow-up",
            Job::Reconcile => "reconcile",
            Job::Poller => "poller",
            Job::Retention => "retention",
            Job::Reclaim => "reclaim",
            Job::Listen => "listen",
            Job::Handback => "handback",
        }
    }

    /// Whether only the leader runs it: the periodic jobs, which would do
    /// the same work twice (or call HelpCrunch twice) on every daemon. The
    /// outbox is claimed row by row, so every daemon sends from it.
    fn leader_only(self) -> bool {
        !matches!(self, Job::Outbox | Job::Listen)
    }

    /// How long to wait before the first round. On SQLite reconciliation
    /// starts from what the database holds, so it first waits one interval
    /// (a takeover reconciles by itself, `run.rs` `take_over`). On
    /// PostgreSQL a daemon may become leader at any time, after a leader
    /// that died with its last round long past: whoever leads reconciles
    /// at once, and a non-leader is looking every heartbeat from the start.
    fn first_wait(self, w: &Worker) -> Duration {
        match self {
            Job::Reconcile if w.store.backend() == crate::store::Backend::Sqlite => {
                w.settings.load_refresh
            }
            _ => Duration::ZERO,
        }
    }

    /// What cuts a wait short, besides shutdown.
    fn wake(self, w: &Worker) -> Option<&Notify> {
        match self {
            Job::Outbox => Some(&w.outbox_wake),
            Job::Followups => Some(&w.followups_wake),
            _ => None,
        }
    }

    /// One round of work; returns how long to wait before the next.
    async fn round(self, w: &Arc<Worker>, stop: &CancellationToken) -> Duration {
        match self {
            Job::Outbox => w.outbox_round().await,
            Job::Followups => w.followups_round().await,
            Job::Reconcile => w.reconcile_round(stop).await,
            Job::Poller => w.poller_round(stop).await,
            Job::Retention => {
                w.prune().await;
                PRUNE_EVERY
            }
            Job::Reclaim => {
                w.reclaim().await;
                HEARTBEAT
            }
            Job::Listen => w.listen_round(stop).await,
            Job::Handback => w.handback_round().await,
        }
    }

    /// Runs rounds until `stop`; returns only then.
    pub(super) async fn run(self, w: Arc<Worker>, stop: CancellationToken) {
        let mut wait = self.first_wait(&w);
        let mut resynced: Option<std::time::Instant> = None;
        loop {
            let woken = async {
                match self.wake(&w) {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
            if stop.is_cancelled() {
                return;
            }
            if self.leader_only() && !(w.cluster.holds() && w.cluster.confirm().await) {
                if self == Job::Reconcile && w.store.backend() == Backend::Postgres {
                    w.resync_when_due(&mut resynced).await;
                }
                wait = HEARTBEAT;
                continue;
            }
            wait = self.round(&w, &stop).await;
        }
    }
}

impl Worker {
    /// Puts back what daemons not heard from within [`GONE_AFTER`] held.
    async fn reclaim(&self) {
        let done = self.store.release_gone(GONE_AFTER).await;
        log_counts(
            done,
            "took back from a daemon that stopped answering",
            ("rows", "messages"),
        );
    }

    /// Deletes finished rows and outcomes older than the retention.
    async fn prune(&self) {
        let before = now_ms() - self.settings.retention.as_millis() as i64;
        let done = self.store.prune(before).await;
        log_counts(done, "pruned past the retention", ("rows", "outcomes"));
        if let Err(e) = self.store.fold_seats().await {
            tracing::warn!(error = %e, "could not fold the seat changes; will try again");
        }
        // A customer's last agent matters for the longest `sticky_for`.
        let sticky_for = self.rules().longest_sticky_for().as_millis() as i64;
        match self.store.prune_customers(now_ms() - sticky_for).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("forgot the last agent of {n} customers, past sticky_for"),
            Err(e) => {
                tracing::warn!(error = %e, "could not forget customers past sticky_for; will try again")
            }
        }
    }

    /// One round of a job that works through items as they fall due: each
    /// claimed item is handled and the next round starts at once; with
    /// none due, it waits for the next (at most one poll interval); while
    /// the database fails, it waits longer.
    pub(super) async fn drain_due<T, F>(
        &self,
        what: &str,
        claimed: Result<Vec<T>, StoreError>,
        next_due: impl Future<Output = Result<Option<i64>, StoreError>>,
        mut handle: impl FnMut(T) -> F,
    ) -> Duration
    where
        F: Future<Output = ()>,
    {
        let poll = self.settings.poll_interval;
        let due = match claimed {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read {what}");
                return poll * 4;
            }
        };
        if due.is_empty() {
            return match next_due.await {
                Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(1) as u64).min(poll),
                _ => poll,
            };
        }
        for item in due {
            handle(item).await;
        }
        Duration::ZERO
    }
}

/// Logs what a maintenance round changed (nothing when it changed nothing),
/// or why it failed; the next round tries again either way.
fn log_counts(done: Result<(u64, u64), StoreError>, what: &str, names: (&str, &str)) {
    match done {
        Ok((0, 0)) => {}
        Ok((a, b)) => tracing::info!("{what}: {a} {}, {b} {}", names.0, names.1),
        Err(e) => tracing::warn!(error = %e, "could not finish: {what}; will try again"),
    }
}
