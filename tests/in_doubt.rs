//! SPEC §15.1 and §15.2 where a call's answer is lost: an assignment
//! HelpCrunch applied but answered only after the client's timeout keeps
//! its seat, and the chat is read before anything else is decided for it,
//! so its row's snapshot (which still says "unassigned") never sends a
//! second assignment. On SQLite, and on PostgreSQL with two daemons.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use assignd::domain::ChatId;
use assignd::sandbox::Faults;
use assignd::store::{NewQueueItem, Store};
use common::*;
use serde_json::json;

const RULES: &str = r#"
[agents]
alice = { id = 4188, max_open = 1 }
bob   = { id = 4761, max_open = 1 }

[pools.support]
agents = ["alice", "bob"]
strategy = "round-robin"

[[rule]]
name = "all"
assign = "pool:support"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_is_resolved_by_reading_the_chat_on_sqlite() {
    lost_answer(None, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_is_resolved_by_reading_the_chat_with_two_daemons_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    lost_answer(Some(server.database().await), 2).await;
}

fn item(chat: i64) -> NewQueueItem {
    NewQueueItem {
        chat_id: ChatId(chat),
        attrs: None,
        // What a webhook carried: the chat as it was, unassigned.
        snapshot: Some(json!({"id": chat, "status": "new", "assignee": null})),
        priority: 0,
        ranked: false,
    }
}

/// Waits until no row is pending or leased.
async fn drained(store: &Store, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while store.active_count().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue did not drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Chat 10's PUT is applied but answered after the client gave up; chat
/// 11 comes while it is in doubt. Each agent has one seat.
async fn lost_answer(database: Option<String>, daemons: usize) {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("concurrency = 4\nfetch_chat = \"never\"\nlease = \"20s\"")
        .build()
        .await;
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"1s\""));
    if let Some(url) = &database {
        app.use_database(url);
    }
    app.sandbox.set_faults(Faults {
        slow: 1.0,
        slow_for: Duration::from_millis(2500),
        ..Faults::default()
    });
    let mut running = Vec::new();
    for _ in 0..daemons {
        running.push(app.start_in_process().await);
    }
    let store = running[0].runtime.store.clone();
    store.enqueue(&[item(10)]).await.unwrap();
    running[0].runtime.worker.wake();
    wait_for(
        "chat 10 assigned in HelpCrunch",
        Duration::from_secs(10),
        || app.sandbox.assignee(10).is_some(),
    )
    .await;
    let first = app.sandbox.assignee(10).unwrap();
    // The client's timeout passes; the row goes back to wait for a retry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.sandbox.set_faults(Faults::default());
    store.enqueue(&[item(11)]).await.unwrap();
    for d in &running {
        d.runtime.worker.wake();
    }
    drained(&store, Duration::from_secs(30)).await;
    let puts_10 = app
        .sandbox
        .assign_calls()
        .into_iter()
        .filter(|(chat, _, _)| *chat == 10)
        .count();
    let outcomes = store.chat_outcomes(ChatId(10), 50).await.unwrap();
    let assigned: Vec<_> = outcomes.iter().filter(|o| o.result == "assigned").collect();
    let intents = store.intents().await.unwrap();
    let second = app.sandbox.assignee(11);
    for d in running {
        d.stop().await;
    }
    assert_eq!(
        puts_10, 1,
        "one assignment call for chat 10, never a second"
    );
    assert_eq!(app.sandbox.assignee(10), Some(first), "chat 10 never moved");
    assert_eq!(assigned.len(), 1, "one recorded assignment: {outcomes:#?}");
    assert_eq!(assigned[0].agent_id, Some(first));
    assert!(
        assigned[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("answer was lost")),
        "{:?}",
        assigned[0].reason
    );
    // The seat chat 10 holds was kept while its answer was unknown: chat
    // 11 went to the other agent, never over a cap of one.
    assert!(
        second.is_some() && second != Some(first),
        "chat 11 went to {second:?}"
    );
    assert!(intents.is_empty(), "intents left: {intents:?}");
}

/// A row whose own call timed out comes back for a retry while HelpCrunch
/// may still apply that call: read too early, the chat still says
/// "unassigned", and a second call would go out while the first is on its
/// way (found by the nemesis, three daemons on PostgreSQL, seed 3: two
/// PUTs for one chat in flight at once). The retry waits a lease after
/// the call, then reads the chat and records the first call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_does_not_read_the_chat_while_its_own_call_may_land() {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("concurrency = 1\nfetch_chat = \"never\"\nlease = \"3s\"")
        .build()
        .await;
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"1s\""));
    // Applied 2.5 s after it arrives: past the client's timeout (1 s) and
    // past the row's first retry (0.5-1 s after that).
    app.sandbox.set_faults(Faults {
        hold_put: Duration::from_millis(2500),
        ..Faults::default()
    });
    let daemon = app.start_in_process().await;
    let store = daemon.runtime.store.clone();
    store.enqueue(&[item(10)]).await.unwrap();
    daemon.runtime.worker.wake();
    wait_for("the first call applied", Duration::from_secs(10), || {
        app.sandbox.assignee(10).is_some()
    })
    .await;
    app.sandbox.set_faults(Faults::default());
    let first = app.sandbox.assignee(10).unwrap();
    drained(&store, Duration::from_secs(20)).await;
    let puts: Vec<_> = app.sandbox.assign_calls();
    let outcomes = store.chat_outcomes(ChatId(10), 50).await.unwrap();
    let intents = store.intents().await.unwrap();
    daemon.stop().await;
    assert_eq!(
        puts.len(),
        1,
        "one call for chat 10: {puts:?}\n{outcomes:#?}"
    );
    assert_eq!(app.sandbox.assignee(10), Some(first));
    let assigned: Vec<_> = outcomes.iter().filter(|o| o.result == "assigned").collect();
    assert_eq!(assigned.len(), 1, "{outcomes:#?}");
    assert_eq!(assigned[0].agent_id, Some(first));
    assert!(intents.is_empty(), "intents left: {intents:?}");
}

const OPEN_RULES: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }

[pools.support]
agents = ["alice", "bob"]

[[rule]]
name = "all"
assign = "pool:support"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_pause_longer_than_the_lease_sends_each_chat_once_on_sqlite() {
    pause_past_the_lease(None, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_pause_longer_than_the_lease_sends_each_chat_once_with_two_daemons_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    pause_past_the_lease(Some(server.database().await), 2).await;
}

/// Rows in flight wait out a 429 pause three times their lease: their
/// leases are renewed meanwhile, so no claim (of this daemon or another)
/// takes them, and each chat is assigned by exactly one call.
async fn pause_past_the_lease(database: Option<String>, daemons: usize) {
    const CHATS: i64 = 8;
    let app = TestApp::builder()
        .rules(OPEN_RULES)
        .worker("concurrency = 4\nfetch_chat = \"never\"\nlease = \"3s\"")
        .build()
        .await;
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"1s\""));
    if let Some(url) = &database {
        app.use_database(url);
    }
    let retry_after = reqwest::header::HeaderValue::from_static("9");
    app.sandbox
        .set_trick(Some(assignd::sandbox::Trick::RetryAfter(retry_after)));
    let mut running = Vec::new();
    for _ in 0..daemons {
        running.push(app.start_in_process().await);
    }
    let store = running[0].runtime.store.clone();
    let items: Vec<NewQueueItem> = (1..=CHATS).map(|c| item(100 + c)).collect();
    store.enqueue(&items).await.unwrap();
    for d in &running {
        d.runtime.worker.wake();
    }
    wait_for("the first 429", Duration::from_secs(10), || {
        app.sandbox.rejected_429() > 0
    })
    .await;
    app.sandbox.set_trick(None);
    drained(&store, Duration::from_secs(40)).await;
    let intents = store.intents().await.unwrap();
    for d in running {
        d.stop().await;
    }
    let calls = app.sandbox.assign_calls();
    for c in 101..=100 + CHATS {
        let applied = calls
            .iter()
            .filter(|(chat, _, status)| *chat == c && *status == 200)
            .count();
        assert_eq!(applied, 1, "chat {c} applied {applied} times: {calls:?}");
    }
    assert!(intents.is_empty(), "intents left: {intents:?}");
}

/// A reassignment hop HelpCrunch applied but answered after the timeout,
/// and the chat closed before its follow-up read it: the hop is still
/// recorded (the close keeps a follow-up whose call is in doubt), so the
/// assignee's change has its decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hop_in_doubt_is_recorded_though_the_chat_closes() {
    hop_in_doubt_then(After::Close).await;
}

/// The same hop, and its new agent answered before the follow-up read the
/// chat: the answer does not end a follow-up whose hop is in doubt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hop_in_doubt_is_recorded_though_the_new_agent_answers() {
    hop_in_doubt_then(After::Answer).await;
}

/// The same hop, held on its way to HelpCrunch, and a queue row for its
/// chat claimed meanwhile: the row must not read the chat, see it still
/// with alice, and forget the hop's intent as a call that did nothing, or
/// nobody records the hop once it lands (found by the nemesis, three
/// daemons on PostgreSQL, seed 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hop_on_its_way_is_not_taken_for_one_that_did_nothing() {
    hop_in_doubt_then(After::RowMeanwhile).await;
}

/// What comes between a hop in doubt and its follow-up's check.
enum After {
    Close,
    Answer,
    /// A queue row for the chat while the hop is held on its way.
    RowMeanwhile,
}

/// Waits until the hop's intent (to bob) is recorded: its call is on its
/// way.
async fn hop_begun(store: &Store) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store
        .intents()
        .await
        .unwrap()
        .iter()
        .any(|i| i.agent == "bob")
    {
        assert!(std::time::Instant::now() < deadline, "no hop began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn hop_in_doubt_then(after: After) {
    const KEY: &str = "whk-in-doubt";
    let pool = "reassign_after = \"400ms\"\nmax_reassign = 1";
    let app = TestApp::builder()
        .rules(&support_rules(&ABC, pool, TO_SUPPORT))
        // The hop's chat is read a lease after the hop: keep it short.
        .worker("concurrency = 1\nlease = \"3s\"")
        .listen()
        .build()
        .await;
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"1s\""));
    let secrets =
        assignd::http::ListenerSecrets::new(Some(assignd::secrets::Secret::new(KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let base = format!("http://{}", daemon.http_addr.expect("the listener runs"));
    app.feed(&daemon, [1]).await;
    wait_for("chat 1 with alice", Duration::from_secs(5), || {
        app.sandbox.assignee(1) == Some(4188)
    })
    .await;
    // The hop is applied (at once, or after 800 ms on its way) and
    // answered 3 s later, past the timeout.
    let held = matches!(after, After::RowMeanwhile);
    app.sandbox.set_faults(Faults {
        late_put: 1.0,
        late_for: Duration::from_secs(3),
        hold_put: Duration::from_millis(if held { 800 } else { 0 }),
        ..Faults::default()
    });
    let store = daemon.runtime.store.clone();
    if held {
        hop_begun(&store).await;
        app.feed(&daemon, [1]).await;
    }
    wait_for("the hop applied", Duration::from_secs(10), || {
        app.sandbox.assignee(1) == Some(4761)
    })
    .await;
    app.sandbox.set_faults(Faults::default());
    let event = match after {
        After::RowMeanwhile => None,
        After::Close => {
            app.sandbox.update_chat(1, |c| c.status = "closed".into());
            let data = json!({"id": 1, "status": "closed"});
            Some(webhook_event("close-1", "chat.closed", data))
        }
        After::Answer => {
            app.sandbox.update_chat(1, |c| c.agents.push(4761));
            let data = json!({"chat": {"id": 1}, "agent": {"id": 4761}});
            Some(webhook_event("answer-1", "message.chat.agent", data))
        }
    };
    if let Some(event) = event {
        let status = post_webhook(&reqwest::Client::new(), &base, KEY, event).await;
        assert_eq!(status, 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let outcomes = store.chat_outcomes(ChatId(1), 20).await.unwrap();
        let hop = outcomes
            .iter()
            .any(|o| o.result == "assigned" && o.agent.as_deref() == Some("bob"));
        if hop {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hop to bob was never recorded: {outcomes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.intents().await.unwrap().is_empty(), "an intent left");
    daemon.stop().await;
}
