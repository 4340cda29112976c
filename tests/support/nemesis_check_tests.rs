//! The checker checked: each property on a small hand-made history that
//! violates it (so the checker is proven able to fail), and on its
//! repaired twin (so it does not fail on a good one).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use assignd::sandbox::{Applied, Closed, Injected, PutRecord};

use crate::check::*;

const A: i64 = 101;
const B: i64 = 103;

fn history() -> History {
    History {
        epoch: Instant::now(),
        puts: Vec::new(),
        closes: Vec::new(),
        calls: Vec::new(),
        outcomes: Vec::new(),
        rows: Vec::new(),
        outbox_leased: Vec::new(),
        enqueued: Vec::new(),
        requests: 3,
        per: Duration::from_secs(1),
        caps: HashMap::from([(
            A,
            Cap {
                max_open: Some(2),
                max_per_hour: Some(2),
            },
        )]),
        drain: Drain {
            bound: Duration::from_secs(10),
            why: "test".into(),
            took: Some(Duration::from_secs(1)),
            left: String::new(),
            last_row: i64::MAX,
        },
        unclean_stops: Vec::new(),
    }
}

fn at(h: &History, ms: u64) -> Instant {
    h.epoch + Duration::from_millis(ms)
}

/// A PUT of `chat` to `to`, arrived at `ms`, applied at once over
/// `before` (unless `before` is `Err`: not applied), answered at `done`.
fn put(
    h: &History,
    chat: i64,
    before: Result<Option<i64>, ()>,
    to: i64,
    ms: u64,
    done: u64,
) -> PutRecord {
    PutRecord {
        seq: h.puts.len(),
        chat,
        assignee: Some(to),
        received: at(h, ms),
        applied: before.ok().map(|before| Applied {
            before,
            at: at(h, ms + 1),
        }),
        answered: Some(at(h, done)),
        status: 200,
        injected: None,
        dropped: false,
    }
}

/// One PUT for [`add`]: chat, assignee before (`Err`: not applied),
/// assignee asked for, arrival and answer in ms.
type P = (i64, Result<Option<i64>, ()>, i64, u64, u64);

/// Adds `puts` to the history, in order.
fn add(h: &mut History, puts: &[P]) {
    for &(chat, before, to, ms, done) in puts {
        let p = put(h, chat, before, to, ms, done);
        h.puts.push(p);
    }
}

fn assigned(id: i64, chat: i64, agent: i64, route: Option<&str>) -> Outcome {
    Outcome {
        id,
        chat,
        agent_id: Some(agent),
        result: "assigned".into(),
        route: route.map(str::to_string),
        reason: None,
    }
}

fn kinds(v: &[Violation]) -> Vec<Kind> {
    let mut k: Vec<Kind> = v.iter().map(|v| v.kind).collect();
    k.sort();
    k
}

#[test]
fn an_applied_put_without_an_outcome_is_an_unrecorded_change() {
    let mut h = history();
    add(&mut h, &[(1, Ok(None), A, 0, 10)]);
    assert_eq!(kinds(&assignments(&h)), [Kind::UnrecordedChange]);
    h.outcomes.push(assigned(1, 1, A, None));
    assert!(assignments(&h).is_empty());
}

#[test]
fn a_second_decision_after_a_lost_outcome_is_a_double_assignment() {
    // The database outage of issue 21: the PUT to A went through, its
    // outcome was never written, the chat was decided again and moved.
    let mut h = history();
    add(
        &mut h,
        &[(1, Ok(None), A, 0, 10), (1, Ok(Some(A)), B, 5000, 5010)],
    );
    h.outcomes.push(assigned(1, 1, B, None));
    assert_eq!(
        kinds(&assignments(&h)),
        [Kind::UnrecordedChange, Kind::UnintendedHop]
    );
    // Recorded, and moved by a reassignment hop: as intended.
    h.outcomes = vec![
        assigned(1, 1, A, None),
        assigned(2, 1, B, Some("reassigned")),
    ];
    assert!(assignments(&h).is_empty());
    // A hand-back's new assignment is a hop too.
    h.outcomes[1].route = None;
    h.outcomes[1].reason = Some("hand-back (alice is away): rule `all`".into());
    assert!(assignments(&h).is_empty());
}

#[test]
fn an_outcome_without_an_applied_put_is_reported() {
    let mut h = history();
    h.outcomes.push(assigned(1, 1, A, None));
    assert_eq!(kinds(&assignments(&h)), [Kind::OutcomeWithoutCall]);
    // A PUT that failed (not applied) does not back it either.
    add(&mut h, &[(1, Err(()), A, 0, 10)]);
    assert_eq!(kinds(&assignments(&h)), [Kind::OutcomeWithoutCall]);
}

#[test]
fn repeated_puts_to_the_same_agent_need_one_outcome() {
    let mut h = history();
    add(
        &mut h,
        &[(1, Ok(None), A, 0, 3000), (1, Ok(Some(A)), A, 4000, 4010)],
    );
    h.outcomes.push(assigned(1, 1, A, None));
    assert!(assignments(&h).is_empty());
}

#[test]
fn a_put_arriving_before_the_last_one_answered_overlaps() {
    let mut h = history();
    // Answered after the client's timeout, and retried meanwhile.
    add(
        &mut h,
        &[(1, Ok(None), A, 0, 3000), (1, Ok(Some(A)), A, 2100, 2200)],
    );
    assert_eq!(kinds(&overlaps(&h)), [Kind::Overlap]);
    h.puts[1] = put(&h, 1, Ok(Some(A)), A, 3100, 3200);
    assert!(overlaps(&h).is_empty());
    // A call never answered is in flight forever.
    h.puts[0].answered = None;
    assert_eq!(kinds(&overlaps(&h)), [Kind::Overlap]);
    // Other chats never overlap with it.
    h.puts[1].chat = 2;
    assert!(overlaps(&h).is_empty());
}

/// Chats 1, 2 and 3 to A, 100 ms apart.
fn three_chats_to_a(h: &mut History) {
    add(
        h,
        &[
            (1, Ok(None), A, 100, 105),
            (2, Ok(None), A, 200, 205),
            (3, Ok(None), A, 300, 305),
        ],
    );
}

#[test]
fn a_third_open_chat_breaks_a_cap_of_two() {
    let mut h = history();
    three_chats_to_a(&mut h);
    let v = max_open(&h);
    assert_eq!(kinds(&v), [Kind::OverMaxOpen]);
    assert_eq!(v[0].chat, Some(3));
    // Chat 1 closed before chat 3 came: two open at most.
    h.closes.push(Closed {
        chat: 1,
        at: at(&h, 250),
    });
    assert!(max_open(&h).is_empty());
    // A chat moved away from A frees its seat.
    h.closes.clear();
    h.puts[0] = put(&h, 1, Ok(None), B, 100, 105);
    add(
        &mut h,
        &[(1, Ok(Some(B)), A, 150, 155), (1, Ok(Some(A)), B, 250, 255)],
    );
    assert!(max_open(&h).is_empty(), "{:?}", max_open(&h));
}

#[test]
fn a_third_new_chat_in_an_hour_breaks_a_cap_of_two() {
    let mut h = history();
    three_chats_to_a(&mut h);
    for chat in 1..=3 {
        h.closes.push(Closed {
            chat,
            at: at(&h, chat as u64 * 100 + 50),
        });
    }
    assert!(max_open(&h).is_empty());
    assert_eq!(kinds(&per_hour(&h)), [Kind::OverPerHour]);
    // Repeats to the same agent are not new chats.
    h.puts[2] = put(&h, 2, Ok(Some(A)), A, 300, 305);
    assert!(per_hour(&h).is_empty());
}

fn call(h: &History, ms: u64, status: u16, injected: Option<Injected>) -> Call {
    Call {
        received: at(h, ms),
        status,
        injected,
        what: "PUT /v1/chats/assignee".into(),
    }
}

#[test]
fn four_calls_in_one_window_of_three_break_the_limit() {
    let mut h = history();
    for ms in [0, 300, 600, 900] {
        h.calls.push(call(&h, ms, 200, None));
    }
    assert_eq!(kinds(&rate(&h)), [Kind::OverRate]);
    h.calls[3] = call(&h, 1000, 200, None);
    assert!(rate(&h).is_empty());
}

#[test]
fn a_429_nobody_asked_for_is_reported() {
    let mut h = history();
    h.calls.push(call(&h, 0, 429, Some(Injected::Throttle)));
    h.calls.push(call(&h, 10, 429, Some(Injected::Trick)));
    assert!(rate(&h).is_empty());
    h.calls.push(call(&h, 20, 429, None));
    assert_eq!(kinds(&rate(&h)), [Kind::Untold429]);
}

fn row(id: i64, chat: i64, state: &str, last_error: Option<&str>) -> Row {
    Row {
        id,
        chat,
        state: state.into(),
        last_error: last_error.map(str::to_string),
        lease_owner: None,
    }
}

#[test]
fn a_chat_without_a_row_or_a_reason_is_lost() {
    let mut h = history();
    h.enqueued = (1..=6).map(|c| (c, "SQL".to_string())).collect();
    h.rows = vec![
        row(1, 1, "done", None),
        row(2, 2, "dead", Some("404 chat not found")),
        row(3, 3, "pending", Some("waiting: no candidate")),
        row(4, 4, "dead", None),
        row(5, 5, "pending", Some(" ")),
    ];
    let v = lost(&h);
    let mut chats: Vec<i64> = v.iter().filter_map(|v| v.chat).collect();
    chats.sort();
    assert_eq!(chats, [4, 5, 6], "{v:?}");
    // The newest row of a chat decides.
    h.rows.push(row(6, 4, "done", None));
    h.rows.push(row(7, 5, "done", None));
    h.rows.push(row(8, 6, "done", None));
    assert!(lost(&h).is_empty());
    // A hand-back enqueued while the daemons stopped, after the drain, is
    // queued for the next start; one from before the drain ended is lost.
    h.drain.last_row = 9;
    h.rows.push(row(9, 1, "pending", None));
    h.rows.push(row(10, 2, "pending", None));
    assert_eq!(
        lost(&h).iter().filter_map(|v| v.chat).collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn a_lease_left_after_a_clean_stop_is_reported() {
    let mut h = history();
    h.rows = vec![row(1, 1, "done", None), row(2, 2, "pending", Some("retry"))];
    assert!(leases(&h).is_empty());
    h.rows.push(Row {
        lease_owner: Some("123-abc".into()),
        ..row(3, 3, "leased", None)
    });
    h.outbox_leased.push(9);
    h.unclean_stops.push("d1 exited with 1".into());
    assert_eq!(kinds(&leases(&h)), [Kind::LeaseLeft; 3]);
}

#[test]
fn a_backlog_past_its_bound_is_not_drained() {
    let mut h = history();
    assert!(drained(&h).is_empty());
    h.drain.took = Some(Duration::from_secs(11));
    assert_eq!(kinds(&drained(&h)), [Kind::NotDrained]);
    h.drain.took = None;
    assert_eq!(kinds(&drained(&h)), [Kind::NotDrained]);
    assert_eq!(kinds(&check(&h)), [Kind::NotDrained]);
}
