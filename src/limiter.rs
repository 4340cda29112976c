//! The one rate limiter every HelpCrunch call goes through.
//!
//! HelpCrunch allows `requests` per `per` for the whole account and does not
//! say how it counts, so the limiter must hold under a *sliding* window of
//! any phase. A GCRA with burst `b` and period `T` admits at most
//! `b + ceil(W/T) - 1` calls in any window `W`; with
//! `T = per / (requests - b + 1)` that is exactly `requests` per `per`. The
//! period is stretched by [`SAFETY`] so that scheduling jitter between our
//! clock and the server's cannot push two calls into one window.
//!
//! Also here, because every caller must obey them: the pause after a 429
//! (Retry-After, else 1 s doubling to 60 s), and priority: assignment calls
//! go first; background calls wait while any assignment call is waiting.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How much slower than the exact limit calls are spaced (1.5%).
pub const SAFETY: f64 = 0.015;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Below this, a caller yields instead of sleeping (the timer's granularity).
const PRECISE_WAIT: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Assignment calls and the reads they need.
    Assign,
    /// Notes, replies, reconciliation reads.
    Background,
}

type Gcra = RateLimiter<
    NotKeyed,
    InMemoryState,
    MonotonicClock,
    NoOpMiddleware<<MonotonicClock as Clock>::Instant>,
>;

pub struct Limiter {
    gcra: Gcra,
    clock: MonotonicClock,
    period: Duration,
    urgent_waiting: AtomicUsize,
    /// One caller at a time waits for the next slot; the rest queue, FIFO.
    turn: tokio::sync::Mutex<()>,
    pause: Mutex<Pause>,
    admitted: AtomicU64,
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

/// Counters for `status` and metrics.
#[derive(Debug, Clone, Copy)]
pub struct LimiterStats {
    pub admitted: u64,
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
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(burst);
        let clock = MonotonicClock;
        Self {
            gcra: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            period,
            urgent_waiting: AtomicUsize::new(0),
            turn: tokio::sync::Mutex::new(()),
            pause: Mutex::new(Pause {
                until: None,
                next_backoff: FIRST_BACKOFF,
            }),
            admitted: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stopping: CancellationToken::new(),
        }
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

    /// Waits until a call may be made now; returns how long that took, or
    /// [`Closed`] if the limiter is closed (checked last, after the wait) or
    /// stopped (at once, whatever the wait).
    pub async fn acquire(&self, priority: Priority) -> Result<Duration, Closed> {
        if self.stopping.is_cancelled() {
            return Err(Closed::Stopping);
        }
        tokio::select! {
            admitted = self.wait_for_slot(priority) => admitted,
            _ = self.stopping.cancelled() => Err(Closed::Stopping),
        }
    }

    ///
    /// Callers queue in FIFO order for their turn, and the holder of the
    /// turn sleeps until just before its slot and yields through the last
    /// millisecond: tokio's timer wakes up to a millisecond late, and with a
    /// burst of 1 every late wake-up would be budget lost for good.
    async fn wait_for_slot(&self, priority: Priority) -> Result<Duration, Closed> {
        let started = Instant::now();
        let _urgent =
            (priority == Priority::Assign).then(|| UrgentGuard::new(&self.urgent_waiting));
        loop {
            if priority == Priority::Background && self.urgent_waiting.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(self.period).await;
                continue;
            }
            let _turn = self.turn.lock().await;
            loop {
                // A background caller gives its turn up to any assignment call.
                if priority == Priority::Background
                    && self.urgent_waiting.load(Ordering::Acquire) > 0
                {
                    break;
                }
                if let Some(until) = self.paused_until() {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                if self.is_closed() {
                    return Err(Closed::Unauthorized);
                }
                match self.gcra.check() {
                    Ok(()) => {
                        let waited = started.elapsed();
                        self.admitted.fetch_add(1, Ordering::Relaxed);
                        self.waited_micros
                            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                        return Ok(waited);
                    }
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(self.clock.now());
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
        length
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
            waited: Duration::from_micros(self.waited_micros.load(Ordering::Relaxed)),
            paused_for: self.paused_until().map(|u| u - Instant::now()),
        }
    }
}

/// Counts a waiting assignment call for as long as it waits, even if the
/// waiting future is dropped.
struct UrgentGuard<'a>(&'a AtomicUsize);

impl<'a> UrgentGuard<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::AcqRel);
        Self(c)
    }
}

impl Drop for UrgentGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// Admits calls as fast as allowed and checks the sliding-window bound.
    async fn admitted_times(l: &Limiter, n: usize) -> Vec<std::time::Instant> {
        let mut times = Vec::new();
        for _ in 0..n {
            l.acquire(Priority::Assign).await.unwrap();
            times.push(std::time::Instant::now());
        }
        times
    }

    fn max_in_window(times: &[std::time::Instant], window: Duration) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[tokio::test]
    async fn never_more_than_the_limit_in_any_window_whatever_the_burst() {
        for burst in [1, 3, 10] {
            let per = Duration::from_millis(500);
            let l = Limiter::new(nz(20), per, nz(burst));
            let times = admitted_times(&l, 30).await;
            assert!(
                max_in_window(&times, per) <= 20,
                "burst {burst}: {}",
                max_in_window(&times, per)
            );
        }
    }

    #[test]
    fn period_budgets_the_burst_inside_the_window() {
        let l = Limiter::new(nz(120), Duration::from_secs(60), nz(1));
        assert!((l.period().as_secs_f64() - 0.5 * (1.0 + SAFETY)).abs() < 1e-9);
        let l = Limiter::new(nz(120), Duration::from_secs(60), nz(21));
        assert!((l.period().as_secs_f64() - 0.6 * (1.0 + SAFETY)).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_closed_limiter_admits_nothing() {
        let l = Limiter::new(nz(10), Duration::from_secs(1), nz(1));
        assert!(l.close());
        assert_eq!(l.acquire(Priority::Assign).await, Err(Closed::Unauthorized));
        assert!(l.reopen());
        assert!(l.acquire(Priority::Assign).await.is_ok());
    }

    #[tokio::test]
    async fn stop_ends_a_pause_at_once() {
        let l = std::sync::Arc::new(Limiter::new(nz(10), Duration::from_secs(1), nz(1)));
        l.pause(Some(Duration::from_secs(3600)));
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.acquire(Priority::Assign).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a paused limiter admits nothing");
        l.stop();
        let refused = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(refused.unwrap().unwrap(), Err(Closed::Stopping));
        assert_eq!(l.acquire(Priority::Background).await, Err(Closed::Stopping));
    }

    #[tokio::test]
    async fn backoff_doubles_and_resets() {
        let l = Limiter::new(nz(10), Duration::from_secs(1), nz(1));
        assert_eq!(l.pause(None), Duration::from_secs(1));
        assert_eq!(l.pause(None), Duration::from_secs(2));
        assert_eq!(
            l.pause(Some(Duration::from_millis(5))),
            Duration::from_millis(5)
        );
        assert!(l.paused_until().is_some());
        l.succeeded();
        assert_eq!(l.pause(None), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn assignments_go_before_background_calls() {
        use std::sync::Arc;
        let l = Arc::new(Limiter::new(nz(20), Duration::from_secs(1), nz(1)));
        l.acquire(Priority::Assign).await.unwrap(); // spend the burst
        let order = Arc::new(Mutex::new(Vec::new()));
        let bg = {
            let (l, order) = (l.clone(), order.clone());
            tokio::spawn(async move {
                l.acquire(Priority::Background).await.unwrap();
                order.lock().unwrap().push("background");
            })
        };
        tokio::task::yield_now().await;
        let urgent = {
            let (l, order) = (l.clone(), order.clone());
            tokio::spawn(async move {
                for _ in 0..3 {
                    l.acquire(Priority::Assign).await.unwrap();
                    order.lock().unwrap().push("assign");
                }
            })
        };
        urgent.await.unwrap();
        bg.await.unwrap();
        let order = order.lock().unwrap();
        assert_eq!(order.last(), Some(&"background"), "{order:?}");
    }
}
