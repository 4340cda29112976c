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

#[tokio::test]
async fn never_more_than_the_limit_in_any_window_whatever_the_burst() {
    for burst in [1, 3, 10] {
        let per = Duration::from_millis(500);
        let l = Limiter::new(nz(20), per, nz(burst));
        let times = admitted_times(&l, 30).await;
        assert!(
            busiest_window(&times, per) <= 20,
            "burst {burst}: {}",
            busiest_window(&times, per)
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
async fn a_slot_not_sent_in_time_goes_stale() {
    // 1 s windows with a 1.5% margin: a slot keeps for 7.5 ms.
    let l = Limiter::new(nz(10), Duration::from_secs(1), nz(1));
    let slot = l.acquire(Priority::Assign).await.unwrap();
    assert!(slot.fresh());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!slot.fresh(), "a call stalled past the margin must not go");
    l.forfeit(slot);
    assert_eq!(l.stats().forfeited, 1);
    assert!(l.acquire(Priority::Assign).await.unwrap().fresh());
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

/// A fence whose state a test sets.
struct Switch(std::sync::atomic::AtomicBool);

impl Fence for Switch {
    fn shut_for(&self) -> Option<Duration> {
        self.0
            .load(Ordering::Acquire)
            .then_some(Duration::from_millis(5))
    }
}

#[tokio::test]
async fn a_shut_fence_holds_every_call_until_it_opens() {
    use std::sync::Arc;
    let fence = Arc::new(Switch(AtomicBool::new(true)));
    let l =
        Arc::new(Limiter::new(nz(100), Duration::from_secs(1), nz(5)).with_fence(fence.clone()));
    let waiting = tokio::spawn({
        let l = l.clone();
        async move { l.acquire(Priority::Assign).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "no call goes while the fence is shut"
    );
    // A slot handed out before the fence shut does not go either.
    fence.0.store(false, Ordering::Release);
    let slot = l.acquire(Priority::Assign).await.unwrap();
    fence.0.store(true, Ordering::Release);
    let (used, _) = Limiter::with_slot(slot, async { l.ticket().is_some() }).await;
    assert!(!used, "a ticket must not pass a shut fence");
    fence.0.store(false, Ordering::Release);
    let admitted = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert!(admitted.unwrap().unwrap().is_ok());
}

#[tokio::test]
async fn a_spent_burst_admits_the_next_call_a_period_later() {
    let per = Duration::from_secs(1);
    let l = Limiter::new(nz(10), per, nz(5));
    l.spend_burst();
    let started = std::time::Instant::now();
    l.acquire(Priority::Assign).await.unwrap();
    let waited = started.elapsed();
    // Burst 5 of 10 a second: a period is 1/6 s (plus the margin).
    assert!(
        waited >= l.period() - Duration::from_millis(5),
        "{waited:?}"
    );
}

/// Whoever waits for the next slot hears of a pause as it begins, with no
/// polling: the notification is ready the moment the pause is set, and
/// not before.
#[tokio::test]
async fn a_pause_wakes_whoever_listens_for_one() {
    use futures_util::FutureExt;
    let l = Limiter::new(nz(10), Duration::from_secs(1), nz(1));
    let quiet = l.pause_began();
    tokio::pin!(quiet);
    quiet.as_mut().enable();
    assert!(quiet.as_mut().now_or_never().is_none(), "no pause yet");
    l.pause(Some(Duration::from_secs(60)));
    assert!(quiet.now_or_never().is_some(), "heard at once");
    // A pause learned from the shared budget, too.
    let learned = l.pause_began();
    tokio::pin!(learned);
    learned.as_mut().enable();
    l.pause_local(Instant::now() + Duration::from_secs(5));
    assert!(learned.now_or_never().is_some());
}

/// The loop's claim is admitted a lead before its slot is due, to claim
/// and decide meanwhile; its row's first call then goes when the slot is
/// due, never earlier, and the schedule after it is unchanged.
#[tokio::test]
async fn a_claim_is_admitted_a_lead_early_and_its_call_goes_when_due() {
    let l = Limiter::new(nz(10), Duration::from_secs(1), nz(1));
    let before = std::time::Instant::now();
    l.acquire(Priority::Assign).await.unwrap();
    let due = before + l.period();
    let slot = l.acquire(Priority::Claim).await.unwrap();
    let claimed = std::time::Instant::now();
    assert!(
        claimed + l.period() / 4 < due,
        "admitted {:?} before its slot; the lead starts at half a period",
        due - claimed
    );
    let (sent, unused) = Limiter::with_slot(slot, async {
        l.acquire(Priority::Assign).await.unwrap();
        std::time::Instant::now()
    })
    .await;
    assert!(
        unused.is_none(),
        "the row's first call used the claim's slot"
    );
    assert!(sent >= due, "sent {:?} before its slot", due - sent);
    l.acquire(Priority::Assign).await.unwrap();
    assert!(
        std::time::Instant::now() >= due + l.period(),
        "the next slot is a period after the one handed out early"
    );
}

/// The lead follows a slower claim at once and a faster one slowly, and
/// never passes a period.
#[test]
fn the_lead_follows_how_long_claims_take() {
    let l = Limiter::new(nz(10), Duration::from_secs(1), nz(1));
    assert_eq!(l.lead(), (l.period() / 2));
    l.learn_lead(Duration::from_secs(5));
    assert_eq!(l.lead(), l.period(), "at most a period");
    l.learn_lead(Duration::ZERO);
    let eased = l.lead();
    assert!(
        eased < l.period() && eased > l.period() * 9 / 10,
        "{eased:?}"
    );
    l.learn_lead(Duration::from_millis(100));
    assert!(l.lead() >= Duration::from_millis(125).min(l.period()));
}
