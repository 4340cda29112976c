//! The in-memory routing state: merges, hourly counts, and bounds.

use super::*;

fn ids(list: &[i64]) -> HashSet<ChatId> {
    list.iter().map(|&c| ChatId(c)).collect()
}

/// Issue 14: a search that predates a reservation, an assignment or a
/// close does not undo them; what it reports from before is taken.
#[test]
fn reconcile_merges_what_the_search_cannot_know() {
    let loaded = [(ChatId(1), "amy".to_string()), (ChatId(4), "amy".into())];
    let mut r = Routing::new(RoutingState::default(), loaded.into_iter().collect());
    r.state.open.insert("amy".into(), 2);
    // In flight before the search started.
    r.reserved(ChatId(2), "amy");
    *r.state.open.get_mut("amy").unwrap() += 1;
    let since = Instant::now();
    // After it started: chat 3 opened (its seat reserved, then
    // settled), chat 4 closed.
    r.reserved(ChatId(3), "amy");
    r.in_flight.remove(&ChatId(3));
    r.open_chats.insert(ChatId(3), "amy".into());
    r.opened_at.insert(ChatId(3), Instant::now());
    r.open_chats.remove(&ChatId(4));
    r.closed_at.insert(ChatId(4), Instant::now());
    // The search saw 1, 4 and 5 (taken outside us) open with amy.
    r.reconcile("amy", &ids(&[1, 4, 5]), since, None);
    let mut open: Vec<i64> = r.open_chats.keys().map(|c| c.0).collect();
    open.sort();
    assert_eq!(open, vec![1, 3, 5]);
    assert_eq!(r.state.open["amy"], 4, "1, 3, 5 and the seat in flight");
    // A later search that finds nothing: only the seat in flight stays,
    // until it is stale.
    let later = Instant::now();
    r.reconcile("amy", &ids(&[]), later, None);
    assert_eq!(r.state.open["amy"], 1);
    r.reconcile("amy", &ids(&[]), Instant::now(), Some(Instant::now()));
    assert_eq!(r.state.open["amy"], 0);
}

/// The hourly counts loaded from the outcomes never drop below what
/// was applied here, and calls still in flight count on top.
#[test]
fn loaded_hourly_counts_merge_with_the_ones_applied_here() {
    let t = |m: i64| Timestamp::from_second(1_800_000_000 + m * 60).unwrap();
    let mut r = Routing::new(RoutingState::default(), HashMap::new());
    r.state.recent.insert("amy".into(), vec![t(10), t(50)]);
    r.state.recent.insert("bob".into(), vec![t(1), t(2), t(3)]);
    let stored: Recent = [
        ("amy".to_string(), vec![t(5), t(20), t(30)]),
        ("bob".to_string(), vec![t(2)]),
        ("cy".to_string(), vec![t(40)]),
    ]
    .into_iter()
    .collect();
    r.merge_recent(stored, t(55));
    assert!(r.recent_loaded);
    // amy: three stored, and t(50), in flight, after the newest.
    assert_eq!(r.state.recent["amy"], vec![t(5), t(20), t(30), t(50)]);
    assert_eq!(r.state.recent["bob"], vec![t(1), t(2), t(3)], "kept");
    assert_eq!(r.state.recent["cy"], vec![t(40)]);
}

/// Issue 23: no map keyed by chat outlives the chat. Chats reserved,
/// opened and closed (one in 25 closed while its call was on its way)
/// leave nothing open, opened or in flight; their closes go with the next
/// reconciliation round.
#[test]
fn chats_that_closed_leave_nothing_behind() {
    let mut r = Routing::new(RoutingState::default(), HashMap::new());
    for c in 0..10_000 {
        let (chat, agent) = (ChatId(c), if c % 2 == 0 { "amy" } else { "bob" });
        r.reserved(chat, agent);
        *r.state.open.entry(agent.into()).or_default() += 1;
        if c % 25 == 0 {
            r.note_open(chat, None, Instant::now());
            r.opened(chat, agent);
        } else {
            r.opened(chat, agent);
            r.note_open(chat, None, Instant::now());
        }
    }
    assert!(r.open_chats.is_empty() && r.opened_at.is_empty() && r.in_flight.is_empty());
    assert_eq!(r.state.open.values().sum::<u32>(), 0);
    let round_started = Instant::now();
    r.reconcile("amy", &ids(&[]), round_started, None);
    r.forget_closes(round_started);
    assert!(r.closed_at.is_empty());
}

/// Where no reconciliation runs, the closes kept are the last ten
/// minutes' (what a search could still predate), not every close.
#[test]
fn closes_are_forgotten_without_reconciliation() {
    let mut r = Routing::new(RoutingState::default(), HashMap::new());
    let start = Instant::now();
    for c in 0..20_000u64 {
        // A close every 100 ms.
        let at = start + Duration::from_millis(100 * c);
        r.note_open(ChatId(c as i64), None, at);
        assert!(r.closed_at.len() <= 6_001, "after {c}");
    }
}

/// Issue 23: a daemon that does not lead takes the open chats the
/// database holds, closes included, but not over what happened here
/// after the read started, nor over a seat in flight.
#[test]
fn a_resync_takes_the_database_but_not_what_came_after_its_read() {
    let held = |list: &[(i64, &str)]| -> HashMap<ChatId, String> {
        list.iter()
            .map(|(c, a)| (ChatId(*c), a.to_string()))
            .collect()
    };
    let mut r = Routing::new(
        RoutingState::default(),
        held(&[(1, "amy"), (2, "bob"), (3, "amy")]),
    );
    r.recount();
    let since = Instant::now();
    // After the read started: chat 4 opened here, chat 3 closed here, and
    // a decision reserved a seat for chat 6.
    r.note_open(ChatId(4), Some("bob"), Instant::now());
    r.note_open(ChatId(3), None, Instant::now());
    r.reserved(ChatId(6), "amy");
    r.recount();
    // The database: 1 closed elsewhere, 3 still open (read before its
    // close), 5 opened through another daemon, 6 reserved.
    r.resync(
        &held(&[(2, "bob"), (3, "amy"), (5, "amy"), (6, "amy")]),
        since,
    );
    let mut open: Vec<(i64, String)> = r.open_chats.iter().map(|(c, a)| (c.0, a.clone())).collect();
    open.sort();
    let want = [(2, "bob"), (4, "bob"), (5, "amy")];
    assert_eq!(open, want.map(|(c, a)| (c, a.to_string())).to_vec());
    assert_eq!(r.state.open["amy"], 2, "5, and the seat in flight for 6");
    assert_eq!(r.state.open["bob"], 2);
}
