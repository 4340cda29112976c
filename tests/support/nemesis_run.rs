//! A campaign's phases: the chaos (the plan carried out while traffic
//! flows), the heal and the drain within a stated bound, the clean stop,
//! and the history the checker reads.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::act::Undo;
use assignd::sandbox::{Injected, PutRecord};

use crate::check::{Call, Cap, Drain, History, seated};
use crate::plan::{AGENTS, ALICE_PER_HOUR, MAX_OPEN, Step};
use crate::traffic::Produced;
use crate::world::{Cast, LEASE, PER, REQUESTS, Stage, TIMEOUT};

/// Carries out `steps` for `span`, undoing each action when its time is
/// up; the undos still pending at the end.
pub async fn chaos(
    stage: &Stage,
    cast: &mut Cast,
    steps: &[Step],
    span: Duration,
) -> Vec<(Instant, Undo)> {
    let start = Instant::now();
    let mut undos: Vec<(Instant, Undo)> = Vec::new();
    let mut steps = steps.iter().peekable();
    while start.elapsed() < span {
        cast.refresh(stage).await;
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = undos.into_iter().partition(|(t, _)| *t <= now);
        undos = later;
        for (_, undo) in due {
            cast.undo(stage, undo).await;
        }
        if let Some(step) = steps.next_if(|s| start + s.at <= now)
            && let Some((lasts, undo)) = cast.act(stage, &step.action).await
        {
            undos.push((Instant::now() + lasts, undo));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    undos
}

/// The bound on the drain after the heal: 20 s (a 429 pause of up to 8 s
/// still running, a restarted daemon's start, a gone daemon's rows taken
/// back after 5 s), plus one `[load] refresh` (a close that reached a
/// standby during the chaos is seen by the holder at its next
/// reconciliation), plus 5 s for every 5 active rows (a chat waiting for a
/// seat is tried again at least every 5 s, and each round frees at least
/// the 5 seats of bob and carol, since every chat closes once assigned;
/// alice may be at her hourly cap and dave off shift), plus 0.3 s per
/// active row (three calls each at the limit's pace), plus the latest
/// retry a row is scheduled for (its backoff), plus one row lease.
async fn bound(stage: &Stage, cast: &mut Cast) -> (Duration, String) {
    let since = Instant::now();
    loop {
        let active = stage.active().await;
        let latest = stage
            .int("SELECT COALESCE(MAX(next_attempt_at), 0) FROM queue WHERE state = 'pending'")
            .await;
        if let (Ok(active), Ok(latest)) = (active, latest) {
            let retry = (latest - jiff::Timestamp::now().as_millisecond()).max(0) as u64;
            let pace = PER.mul_f64(3.0 * active as f64 / f64::from(REQUESTS));
            let rounds = Duration::from_secs(5 * (active as u64).div_ceil(5));
            let refresh = stage.setup.refresh;
            let bound = Duration::from_secs(20)
                + refresh
                + rounds
                + pace
                + LEASE
                + Duration::from_millis(retry);
            let why = format!(
                "20 s + the refresh {refresh:?} + {active} active rows x (1 s for seats + 0.3 s \
                 for calls) + the latest scheduled retry {retry} ms + the lease {LEASE:?}"
            );
            return (bound, why);
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the database stays unreachable after the heal"
        );
        cast.refresh(stage).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for the backlog to drain after the heal, at most the bound.
pub async fn drain(stage: &Stage, cast: &mut Cast) -> Drain {
    let healed = Instant::now();
    let (bound, why) = bound(stage, cast).await;
    cast.note(stage, format!("draining; the bound is {bound:?}: {why}"));
    loop {
        cast.refresh(stage).await;
        if stage.active().await.is_ok_and(|n| n == 0)
            && let Ok(last_row) = stage.last_row().await
        {
            let took = healed.elapsed();
            cast.note(stage, format!("drained in {took:?}"));
            return Drain {
                bound,
                why,
                took: Some(took),
                left: String::new(),
                last_row,
            };
        }
        if healed.elapsed() > bound {
            let left: Vec<(i64, String, Option<String>)> = stage
                .fetch("SELECT chat_id, state, last_error FROM queue WHERE state IN ('pending', 'leased') ORDER BY id")
                .await
                .unwrap_or_default();
            let left = format!(
                "{} rows, first {:?}",
                left.len(),
                &left[..left.len().min(5)]
            );
            return Drain {
                bound,
                why,
                took: None,
                left,
                last_row: i64::MAX,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The history after the clean stop: the sandbox's record (once every
/// late answer is out) and the database's rows.
pub async fn collect(
    stage: &Stage,
    produced: &Produced,
    drain: Drain,
    unclean_stops: Vec<String>,
) -> History {
    let sandbox = &stage.app.sandbox;
    let since = Instant::now();
    while sandbox.put_history().iter().any(|p| p.answered.is_none())
        && since.elapsed() < TIMEOUT * 5
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = sandbox.requests().iter().map(Call::from).collect();
    let outcomes = stage
        .fetch(
            "SELECT id, chat_id AS chat, agent_id, result, route, reason FROM outcomes ORDER BY id",
        )
        .await
        .unwrap();
    let rows = stage
        .fetch("SELECT id, chat_id AS chat, state, last_error, lease_owner FROM queue ORDER BY id")
        .await
        .unwrap();
    let outbox: Vec<(i64,)> = stage
        .fetch("SELECT id FROM outbox WHERE lease_owner IS NOT NULL")
        .await
        .unwrap();
    History {
        epoch: stage.started,
        puts: sandbox.put_history(),
        closes: sandbox.closes(),
        calls,
        outcomes,
        rows,
        outbox_leased: outbox.into_iter().map(|(id,)| id).collect(),
        enqueued: produced.acked.clone(),
        requests: REQUESTS as usize,
        per: PER,
        caps: caps(),
        drain,
        unclean_stops,
    }
}

/// The agents' caps, as every rules variant sets them.
fn caps() -> HashMap<i64, Cap> {
    AGENTS
        .iter()
        .zip(MAX_OPEN)
        .map(|((name, id), max_open)| {
            let max_per_hour = (*name == "alice").then_some(ALICE_PER_HOUR);
            (
                *id,
                Cap {
                    max_open: Some(max_open),
                    max_per_hour,
                },
            )
        })
        .collect()
}

/// The campaign's figures, from the history: what the sandbox saw.
pub fn figures(h: &History) -> BTreeMap<String, usize> {
    let mut f = BTreeMap::new();
    for c in &h.calls {
        // One entry per endpoint, not per chat.
        let what: String = c.what.chars().filter(|c| !c.is_ascii_digit()).collect();
        *f.entry(format!("calls {what}")).or_default() += 1;
    }
    let mut count = |name: &str, n: usize| f.insert(name.to_string(), n);
    count("calls", h.calls.len());
    count(
        "PUTs applied",
        h.puts.iter().filter(|p| p.applied.is_some()).count(),
    );
    let late = |p: &&PutRecord| {
        p.answered
            .is_some_and(|a| a.duration_since(p.received) > TIMEOUT)
    };
    count(
        "PUTs answered after the timeout",
        h.puts.iter().filter(late).count(),
    );
    count(
        "answers cut off",
        h.puts.iter().filter(|p| p.dropped).count(),
    );
    for (kind, name) in [
        (Injected::Throttle, "429s injected"),
        (Injected::Reset, "resets injected"),
        (Injected::ServerError, "5xx injected"),
    ] {
        count(
            name,
            h.calls.iter().filter(|c| c.injected == Some(kind)).count(),
        );
    }
    count("chats closed", h.closes.len());
    count(
        "outcomes assigned",
        h.outcomes.iter().filter(|o| o.result == "assigned").count(),
    );
    f
}

/// The most open chats each agent held at once, by name, with its cap.
pub fn peaks(h: &History) -> BTreeMap<&'static str, (usize, usize)> {
    let mut peaks: BTreeMap<&'static str, (usize, usize)> = AGENTS
        .iter()
        .zip(MAX_OPEN)
        .map(|((name, _), cap)| (*name, (0, cap)))
        .collect();
    for s in seated(h) {
        if let Some((name, _)) = AGENTS.iter().find(|(_, id)| *id == s.agent) {
            let peak = &mut peaks.get_mut(name).expect("every agent").0;
            *peak = (*peak).max(s.chats.len());
        }
    }
    peaks
}
