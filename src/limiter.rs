//! The one rate limiter every HelpCrunch call goes through.
//!
//! HelpCrunch allows `requests` per `per` for the whole account and does not
//! say how it counts, so the limiter must hold under a *sliding* window of
//! any phase. A GCRA with burst `b` and period `T` admits at most
//! `b + ceil(W/T) - 1` calls in any window `W`; with
//! `T = per / (requests - b + 1)` that is exactly `requests` per `per`. The
//! period is stretched by [`SAFETY`] so that scheduling jitter between our
//! clock and the server's cannot push two calls into one window. For the
//! same reason a slot is good for half that margin only: a call that could
//! not go in time (the process stalled, was stopped or starved) asks again.
//!
//! Also here, because every caller must obey them: the pause after a 429
//! (Retry-After, else 1 s doubling to 60 s), and priority: calls of rows in
//! flight go first, then the processing loop's slot for its next claim, and
//! background calls wait while either is waiting. The loop claims a row
//! only once it holds a slot ([`Limiter::with_slot`] hands it to the row's
//! first call), so the row that goes is the best one at that instant.

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rate::SAFETY;
pub use crate::rate::busiest_window;

mod budget;
mod gcra;
mod send_cap;
pub use budget::{BudgetFuture, Fence, SharedBudget};
use gcra::Gcra;
pub use gcra::Take;
use send_cap::SendCap;
pub use send_cap::SendTurn;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A shared budget's wait longer than this is taken for a 429 pause.
const SHARED_PAUSE_AT: Duration = Duration::from_secs(1);
/// Below this, a caller yields instead of sleeping (the timer's granularity).
const PRECISE_WAIT: Duration = Duration::from_millis(2);
/// How often the loop's claim looks whether rows in flight still wait.
const CLAIM_NAP: Duration = Duration::from_millis(5);
/// The share of [`SAFETY`]'s margin a slot may age before it is sent: a
/// call sent later than that (the process stalled, stopped or starved
/// between its slot and its send) could land in the next call's window.
const SEND_WITHIN: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Assignment calls and the reads they need, for rows in flight.
    Assign,
    /// The processing loop's slot for the next row it claims: after the
    /// calls of rows already in flight, before background calls.
    Claim,
    /// Notes, replies, reconciliation reads.
    Background,
}

/// How far ahead of its slot the loop's claim may be admitted at most: the
/// claim waits no longer than this before its call may go.
const MAX_LEAD: Duration = Duration::from_secs(1);

pub struct Limiter {
    gcra: Mutex<Gcra>,
    period: Duration,
    /// How far ahead of its time a call may go: the burst, as time.
    tau: Duration,
    /// How long a slot stays good: see [`SEND_WITHIN`].
    send_within: Duration,
    /// How long before its slot the loop's claim is admitted (µs): about
    /// the time from a claim to its row's first call, learned from the
    /// calls (see [`Limiter::learn_lead`]).
    lead_micros: AtomicU64,
    shared: Option<Arc<dyn SharedBudget>>,
    fence: Option<Arc<dyn Fence>>,
    send_cap: Option<SendCap>,
    urgent_waiting: AtomicUsize,
    claim_waiting: AtomicUsize,
    /// One caller at a time waits for the next slot; the rest queue, FIFO.
    turn: tokio::sync::Mutex<()>,
    pause: Mutex<Pause>,
    /// Fired when a pause begins, here or learned from the shared budget:
    /// a waiter for the next slot hears of it at once.
    pause_began: tokio::sync::Notify,
    admitted: AtomicU64,
    forfeited: AtomicU64,
    waited_micros: AtomicU64,
    /// Closed after a 401: a rejected key makes every call pointless.
    closed: AtomicBool,
    /// Fired at shutdown: every wait, a 429 pause included, ends at once.
    stopping: CancellationToken,
}

/// Why the limiter sent a call nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// HelpCrunch rejected the API key: closed until a reload.
    #[error("not sent: HelpCrunch rejected the API key (401); waiting for a reload")]
    Unauthorized,
    /// The daemon is shutting down: no wait may outlast the shutdown deadline.
    #[error("not sent: assignd is stopping")]
    Stopping,
}

struct Pause {
    until: Option<Instant>,
    next_backoff: Duration,
}

/// A call's admission: send it from `send_at` until `send_by`, or give it
/// up and ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// How long the caller waited for it.
    pub waited: Duration,
    send_at: Instant,
    send_by: Instant,
    /// When the loop handed it to a row (see [`Limiter::with_slot`]).
    handed: Instant,
}

impl Slot {
    /// Whether the call may still go: a slot sent late could crowd the next
    /// one into a window of the server's; the caller asks again instead.
    pub fn fresh(&self) -> bool {
        Instant::now() <= self.send_by
    }

    /// The slot, handed to the loop again now (kept unused, then taken for
    /// the next row): the time to its row's first call counts from here.
    pub fn rehanded(mut self) -> Self {
        self.handed = Instant::now();
        self
    }
}

/// Counters for `status` and metrics.
#[derive(Debug, Clone, Copy)]
pub struct LimiterStats {
    pub admitted: u64,
    /// Slots given up because the call could not go in time.
    pub forfeited: u64,
    pub waited: Duration,
    pub paused_for: Option<Duration>,
}

impl Limiter {
    pub fn new(requests: NonZeroU32, per: Duration, burst: NonZeroU32) -> Self {
        let burst = burst.min(requests);
        let slots = requests.get() - burst.get() + 1;
        let period = per
            .div_f64(slots as f64)
            .mul_f64(1.0 + SAFETY)
            .max(Duration::from_nanos(1));
        let tau = period * (burst.get() - 1);
        Self {
            gcra: Mutex::new(Gcra::new(period, tau)),
            period,
            tau,
            send_within: per.mul_f64(SAFETY * SEND_WITHIN),
            // Until calls teach it, half a period: every daemon of an
            // account starts alike, and whichever has waited longest asks
            // first (see `learn_lead`).
            lead_micros: AtomicU64::new((period / 2).min(MAX_LEAD).as_micros() as u64),
            shared: None,
            fence: None,
            send_cap: None,
            urgent_waiting: AtomicUsize::new(0),
            claim_waiting: AtomicUsize::new(0),
            turn: tokio::sync::Mutex::new(()),
            pause: Mutex::new(Pause {
                until: None,
                next_backoff: FIRST_BACKOFF,
            }),
            pause_began: tokio::sync::Notify::new(),
            admitted: AtomicU64::new(0),
            forfeited: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stopping: CancellationToken::new(),
        }
    }

    /// Takes every slot from `shared`, the budget of all the account's
    /// daemons, instead of this process's own GCRA.
    pub fn with_shared(mut self, shared: Arc<dyn SharedBudget>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Lets at most `requests` a `per` really go ([`Limiter::send_turn`]),
    /// however many slots it hands out: shadow mode (see `send_cap.rs`).
    pub fn with_send_cap(mut self, requests: NonZeroU32, per: Duration) -> Self {
        self.send_cap = Some(SendCap::new(requests, per));
        self
    }

    /// Waits, before a request that really goes takes its slot, for the
    /// send cap's turn if there is a cap; the turn is to be dropped right
    /// before the request goes.
    pub async fn send_turn(&self) -> Result<Option<SendTurn<'_>>, Closed> {
        let Some(cap) = &self.send_cap else {
            return Ok(None);
        };
        cap.turn(&self.stopping)
            .await
            .map(Some)
            .ok_or(Closed::Stopping)
    }

    /// Sends nothing while `fence` is shut.
    pub fn with_fence(mut self, fence: Arc<dyn Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Starts this process's budget as if the burst had just been spent: a
    /// daemon that starts or takes over a SQLite file follows one that may
    /// have called up to this instant, and the account's window holds those
    /// calls. (A shared budget already knows them.)
    pub fn spend_burst(&self) {
        if self.shared.is_none() {
            let mut gcra = self.gcra.lock().expect("limiter lock");
            while gcra.take(Instant::now(), Duration::ZERO) == Take::Admitted(Duration::ZERO) {}
        }
    }

    fn shut_for(&self) -> Option<Duration> {
        self.fence.as_ref().and_then(|f| f.shut_for())
    }

    /// Ends every wait now and refuses every later call with
    /// [`Closed::Stopping`]: shutdown must not wait out a 429 pause.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// The spacing between calls once the burst is spent.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Stops every call until [`Limiter::reopen`]; returns whether it was open.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Lets calls through again; returns whether it was closed.
    pub fn reopen(&self) -> bool {
        self.closed.swap(false, Ordering::AcqRel)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until a call may be made now and returns its [`Slot`], or
    /// [`Closed`] if the limiter is closed (checked last, after the wait) or
    /// stopped (at once, whatever the wait). The loop's claim
    /// ([`Priority::Claim`]) is admitted up to a lead before its slot is
    /// due, to claim and decide meanwhile; its row's first call then waits
    /// for the slot's time ([`Limiter::with_slot`]).
    pub async fn acquire(&self, priority: Priority) -> Result<Slot, Closed> {
        if self.stopping.is_cancelled() {
            return Err(Closed::Stopping);
        }
        let mut ticket = match priority {
            Priority::Assign => self.ticket(),
            _ => None,
        };
        tokio::select! {
            admitted = async {
                loop {
                    let mut slot = match ticket.take() {
                        Some(slot) => slot,
                        None => self.wait_for_slot(priority).await?,
                    };
                    if priority == Priority::Claim {
                        return Ok(slot);
                    }
                    let before = Instant::now();
                    until(slot.send_at).await;
                    slot.waited += before.elapsed();
                    // What shuts calls may have come while the slot was due.
                    if self.may_send() {
                        return Ok(slot);
                    }
                    self.forfeit(slot);
                }
            } => admitted,
            _ = self.stopping.cancelled() => Err(Closed::Stopping),
        }
    }

    /// Whether a call may go now: no 429 pause, no 401 and no shut fence.
    fn may_send(&self) -> bool {
        self.paused_until().is_none() && !self.is_closed() && self.shut_for().is_none()
    }

    ///
    /// Callers queue in FIFO order for their turn, and the holder of the
    /// turn sleeps until just before its slot and yields through the last
    /// millisecond: tokio's timer wakes up to a millisecond late, and with a
    /// burst of 1 every late wake-up would be budget lost for good.
    async fn wait_for_slot(&self, priority: Priority) -> Result<Slot, Closed> {
        let started = Instant::now();
        let _waiting = match priority {
            Priority::Assign => Some(WaitingGuard::new(&self.urgent_waiting)),
            Priority::Claim => Some(WaitingGuard::new(&self.claim_waiting)),
            Priority::Background => None,
        };
        loop {
            if self.outranked(priority) {
                // A caller that outranks this one takes at most one slot per
                // period; the loop's claim looks again soon, since a slot
                // taken late is budget lost.
                let nap = match priority {
                    Priority::Claim => self.period.min(CLAIM_NAP),
                    _ => self.period,
                };
                tokio::time::sleep(nap).await;
                continue;
            }
            let _turn = self.turn.lock().await;
            loop {
                // A caller gives its turn up to any that outranks it.
                if self.outranked(priority) {
                    break;
                }
                if let Some(until) = self.paused_until() {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                if self.is_closed() {
                    return Err(Closed::Unauthorized);
                }
                if let Some(nap) = self.shut_for() {
                    tokio::time::sleep(nap).await;
                    continue;
                }
                // Asked before the slot is taken: the slot's age counts the
                // shared budget's round trip too. Its time counts from the
                // answer: a call must never go before it.
                let asked = Instant::now();
                let ahead = self.ahead(priority);
                match self.check_slot(priority, ahead).await {
                    Ok(send_in) => {
                        let now = Instant::now();
                        let waited = now - started;
                        self.admitted.fetch_add(1, Ordering::Relaxed);
                        self.waited_micros
                            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                        return Ok(Slot {
                            waited,
                            send_at: now + send_in,
                            send_by: asked + send_in + self.send_within,
                            handed: now,
                        });
                    }
                    Err(wait) => {
                        if wait > PRECISE_WAIT {
                            tokio::time::sleep(wait - PRECISE_WAIT).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
        }
    }

    /// Whether a caller of higher priority is waiting.
    fn outranked(&self, priority: Priority) -> bool {
        let urgent = self.urgent_waiting.load(Ordering::Acquire);
        match priority {
            Priority::Assign => false,
            Priority::Claim => urgent > 0,
            Priority::Background => urgent + self.claim_waiting.load(Ordering::Acquire) > 0,
        }
    }

    /// The slot the processing loop handed to this task, if it still may
    /// go: not after a 429 pause or a 401 since, not behind a shut fence,
    /// and not stale.
    fn ticket(&self) -> Option<Slot> {
        let slot = TICKET.try_with(Cell::take).ok().flatten()?;
        self.learn_lead(slot.handed.elapsed());
        if slot.fresh() && self.may_send() {
            return Some(slot);
        }
        self.forfeit(slot);
        None
    }

    /// Runs `work` holding `slot`, which its first assignment call then
    /// uses instead of waiting; returns the slot too if no call used it,
    /// for the next row.
    pub async fn with_slot<F: Future>(slot: Slot, work: F) -> (F::Output, Option<Slot>) {
        TICKET
            .scope(Cell::new(Some(slot)), async move {
                let out = work.await;
                (out, TICKET.with(Cell::take))
            })
            .await
    }

    /// Whether a call may go now, else how long until it may: from the
    /// shared budget if there is one, else from this process's GCRA. A
    /// shared budget that cannot be read admits nothing (fail closed).
    async fn check_slot(&self, priority: Priority, ahead: Duration) -> Result<Duration, Duration> {
        let Some(shared) = &self.shared else {
            return match self
                .gcra
                .lock()
                .expect("limiter lock")
                .take(Instant::now(), ahead)
            {
                Take::Admitted(send_in) => Ok(send_in),
                Take::Wait(wait) => Err(wait),
            };
        };
        let assignment = priority != Priority::Background;
        match shared.take(self.period, self.tau, assignment, ahead).await {
            Ok(Take::Admitted(send_in)) => Ok(send_in),
            Ok(Take::Wait(wait)) => {
                // A wait this long is another daemon's 429 pause: obey it
                // as one, so that the worker stops claiming meanwhile.
                if wait > SHARED_PAUSE_AT.max(self.period * 4) {
                    self.pause_local(Instant::now() + wait);
                }
                Err(wait)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shared API budget; no call until it can");
                Err(FIRST_BACKOFF)
            }
        }
    }

    /// After a 429: every caller waits `retry_after`, or else a backoff that
    /// starts at 1 s and doubles to 60 s. Returns the pause.
    pub fn pause(&self, retry_after: Option<Duration>) -> Duration {
        let mut p = self.pause.lock().expect("limiter lock");
        let length = match retry_after {
            Some(d) => d.min(MAX_BACKOFF * 10),
            None => {
                let d = p.next_backoff;
                p.next_backoff = (d * 2).min(MAX_BACKOFF);
                d
            }
        };
        let until = Instant::now() + length;
        p.until = Some(p.until.map_or(until, |u| u.max(until)));
        drop(p);
        self.pause_began.notify_waiters();
        if let Some(shared) = self.shared.clone() {
            tokio::spawn(async move {
                if let Err(e) = shared.pause(length).await {
                    tracing::warn!(error = %e, "cannot share the 429 pause with the other daemons");
                }
            });
        }
        length
    }

    fn pause_local(&self, until: Instant) {
        let mut p = self.pause.lock().expect("limiter lock");
        p.until = Some(p.until.map_or(until, |u| u.max(until)));
        drop(p);
        self.pause_began.notify_waiters();
    }

    /// Resolves when a 429 pause begins. Made (and enabled) before
    /// [`Limiter::paused_until`] is asked, it misses none that begins after.
    pub fn pause_began(&self) -> tokio::sync::futures::Notified<'_> {
        self.pause_began.notified()
    }

    /// The caller gave `slot` up (it went stale before the call could go).
    pub fn forfeit(&self, slot: Slot) {
        self.forfeited.fetch_add(1, Ordering::Relaxed);
        // Said at info: each is a slot of the account's budget lost.
        tracing::info!(
            late_ms = Instant::now()
                .saturating_duration_since(slot.send_by)
                .as_millis() as u64,
            "a call's rate slot went stale before it was sent; taking another"
        );
    }

    /// How long before its slot a caller may be admitted: a row's call
    /// takes the next free slot at once (it is at most a lead and a period
    /// away while daemons claim), whoever of every daemon asks later; the
    /// loop's claim takes its slot a [`lead`](Self::lead) early; a
    /// background call only a slot due now. What is handed out goes even
    /// if another daemon meets a 429 meanwhile: a pause reaches those
    /// calls up to two periods late (before, up to a slot's margin).
    fn ahead(&self, priority: Priority) -> Duration {
        match priority {
            Priority::Assign => self.period * 2,
            Priority::Claim => self.lead(),
            Priority::Background => Duration::ZERO,
        }
    }

    /// How long before its slot the loop's claim is admitted now.
    fn lead(&self) -> Duration {
        Duration::from_micros(self.lead_micros.load(Ordering::Relaxed))
    }

    /// Learns from one row how long a claim takes to its first call: the
    /// lead follows a slower one at once (with a quarter to spare) and a
    /// faster one slowly, and stays within a period (and [`MAX_LEAD`]), the
    /// most an urgent chat that comes meanwhile may wait for the next call.
    fn learn_lead(&self, took: Duration) {
        let old = self.lead();
        let lead = took.mul_f64(1.25).max(old.mul_f64(0.95));
        let lead = lead.min(self.period).min(MAX_LEAD);
        self.lead_micros
            .store(lead.as_micros() as u64, Ordering::Relaxed);
    }

    /// A call succeeded: the next 429 starts the backoff afresh.
    pub fn succeeded(&self) {
        let mut p = self.pause.lock().expect("limiter lock");
        p.next_backoff = FIRST_BACKOFF;
    }

    pub fn paused_until(&self) -> Option<Instant> {
        let mut p = self.pause.lock().expect("limiter lock");
        match p.until {
            Some(u) if u > Instant::now() => Some(u),
            _ => {
                p.until = None;
                None
            }
        }
    }

    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            admitted: self.admitted.load(Ordering::Relaxed),
            forfeited: self.forfeited.load(Ordering::Relaxed),
            waited: Duration::from_micros(self.waited_micros.load(Ordering::Relaxed)),
            paused_for: self.paused_until().map(|u| u - Instant::now()),
        }
    }
}

/// Waits until `at`: sleeps to just before, then yields through the last
/// [`PRECISE_WAIT`] (tokio's timer wakes up to a millisecond late).
async fn until(at: Instant) {
    loop {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if left > PRECISE_WAIT {
            tokio::time::sleep(left - PRECISE_WAIT).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

tokio::task_local! {
    /// The slot a row's task was started with (see [`Limiter::with_slot`]).
    static TICKET: Cell<Option<Slot>>;
}

/// Counts a waiting call of its priority for as long as it waits, even if
/// the waiting future is dropped.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::AcqRel);
        Self(c)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
