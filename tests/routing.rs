//! The routing language end to end: capacity and waiting, away flags,
//! sticky customers, and notes and replies posted after an assignment.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CAPACITY: &str = r#"
[agents]
alice = { id = 4188, max_open = 1 }
bob   = { id = 4761 }

[pools.support]
agents = ["alice", "bob"]
strategy = "least-open"
max_open = 5

[[rule]]
name = "all"
assign = "pool:support"
"#;

async fn assignee_within(app: &TestApp, chat: i64, timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(a) = app.sandbox.assignee(chat) {
            return Some(a);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Asserts that `chat` is assigned to `agent` within `timeout`.
async fn expect_assignee(app: &TestApp, chat: i64, agent: i64, timeout: Duration) {
    assert_eq!(
        assignee_within(app, chat, timeout).await,
        Some(agent),
        "chat {chat}"
    );
}

/// alice is full and bob is away: the chat waits, visibly; `agent back bob`
/// wakes it at once, well before the wait's timed retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_chat_is_assigned_as_soon_as_an_agent_comes_back() {
    let app = TestApp::builder()
        .rules(CAPACITY)
        .worker("concurrency = 1")
        .build()
        .await;
    app.migrate().await;
    app.run_ok(&["agent", "away", "bob"]);
    let out = app.command(&["agent", "away", "bobby"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a typo is caught");

    let daemon = app.start_in_process().await;
    app.feed(&daemon, [1]).await;
    expect_assignee(&app, 1, 4188, Duration::from_secs(10)).await;

    app.feed(&daemon, [2]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = app.scalar("SELECT COUNT(*) FROM queue WHERE chat_id = 2 AND state = 'pending' AND last_error LIKE 'waiting:%'").await;
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "chat 2 never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = app.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("chat 2 (row 2)") && text.contains("pool `support` has no available agent"),
        "{text}"
    );
    let no_agent = app.count("outcomes WHERE chat_id = 2 AND result = 'no_agent'");
    assert_eq!(no_agent.await, 1);

    let back = Instant::now();
    let out = app.command(&["agent", "back", "bob"]).output().unwrap();
    assert!(out.status.success());
    let assigned = assignee_within(&app, 2, assignd::worker::WAIT_RETRY).await;
    println!("assigned {:?} after `agent back`", back.elapsed());
    assert_eq!(
        assigned,
        Some(4761),
        "woken by the event, before the timed retry"
    );
    daemon.stop().await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM open_chats").await, 2);
}

const MESSAGES: &str = r#"
[agents]
alice = { id = 4188 }
dave  = { id = 2533 }

[pools.support]
agents = ["alice"]

[[rule]]
name = "greeted"
assign = "pool:support"
note = "Routed to {agent} by rule {rule} (pool {pool}, chat {chat})"
reply = { from = "dave", text = "Thanks {customer}, {agent} will answer shortly." }
"#;

#[tokio::test]
async fn notes_and_replies_are_posted_after_the_assignment() {
    let app = TestApp::builder()
        .rules(MESSAGES)
        .agents(agents(&[("alice", 4188), ("dave", 2533)]))
        .build()
        .await;
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [7]).await;
    app.wait_drained(Duration::from_secs(10)).await;
    wait_until(
        Duration::from_secs(10),
        || "messages not posted".into(),
        || app.sandbox.messages().len() >= 2,
    )
    .await;
    daemon.stop().await;

    let requests = app.sandbox.requests();
    let put = requests.iter().position(|r| r.method == "PUT").unwrap();
    let first_post = requests.iter().position(|r| r.method == "POST").unwrap();
    assert!(put < first_post, "messages only after the assignment");
    let messages = app.sandbox.messages();
    let note = messages.iter().find(|m| m["type"] == "private").unwrap();
    assert_eq!(
        note["text"],
        "Routed to alice by rule greeted (pool support, chat 7)"
    );
    assert_eq!(note["agent"]["id"], 4188);
    let reply = messages.iter().find(|m| m["type"] == "message").unwrap();
    assert_eq!(
        reply["text"],
        "Thanks Customer 7, alice will answer shortly."
    );
    assert_eq!(reply["agent"]["id"], 2533);
    assert_eq!(app.count("outbox WHERE state = 'done'").await, 2);
}

/// A note that fails is retried on its own; the assignment is not repeated.
#[tokio::test]
async fn a_failed_note_never_repeats_the_assignment() {
    // dave is unknown to the sandbox: the reply is rejected (400), the note goes through.
    let app = TestApp::builder()
        .rules(MESSAGES)
        .agents(agents(&[("alice", 4188)]))
        .build()
        .await;
    app.process_raw([8], Duration::from_secs(10)).await;
    let daemon = app.start_in_process().await;
    let settled = "outbox WHERE state != 'pending'";
    app.wait_count(settled, 2, Duration::from_secs(10), "outbox not settled")
        .await;
    daemon.stop().await;
    assert_eq!(app.sandbox.assign_calls().len(), 1);
    let rejected = app.count("outbox WHERE state = 'dead' AND last_error LIKE '%400%'");
    assert_eq!(rejected.await, 1);
    assert_eq!(app.count("outbox WHERE state = 'done'").await, 1);
}

#[tokio::test]
async fn sticky_sends_a_returning_customer_to_the_same_agent() {
    let rules = support_rules(&ABC, "strategy = \"sticky\"", TO_SUPPORT);
    let app = TestApp::builder()
        .rules(&rules)
        .worker("concurrency = 1")
        .build()
        .await;
    // Chats 1, 2 and 4 are one customer's; 3 is someone else's.
    for chat in [2, 4] {
        app.sandbox.update_chat(chat, |c| c.customer_id = 500_001);
    }
    app.process_raw([1], Duration::from_secs(10)).await;
    app.process_raw([3], Duration::from_secs(10)).await;
    app.process_raw([2, 4], Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assignee(1), Some(4188));
    assert_eq!(
        app.sandbox.assignee(3),
        Some(4761),
        "a new customer: round-robin"
    );
    assert_eq!(
        app.sandbox.assignee(2),
        Some(4188),
        "the same customer: the same agent"
    );
    assert_eq!(app.sandbox.assignee(4), Some(4188));
}

/// `reassign_after`: the unanswered chat moves to the next agent, the
/// answered one stays, and after the last hop a private note says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_chat_moves_on_and_an_answered_one_stays() {
    let pool = "reassign_after = \"400ms\"\nmax_reassign = 1";
    let app = TestApp::builder()
        .rules(&support_rules(&ABC, pool, TO_SUPPORT))
        .worker("concurrency = 1")
        .build()
        .await;
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [1, 2]).await;
    expect_assignee(&app, 2, 4761, Duration::from_secs(5)).await;
    assert_eq!(app.sandbox.assignee(1), Some(4188));
    // bob answers chat 2; alice never answers chat 1.
    app.sandbox.update_chat(2, |c| c.agents = vec![4761]);

    wait_until(
        Duration::from_secs(10),
        || {
            format!(
                "no note after the last hop: {:?}",
                app.sandbox.assign_calls()
            )
        },
        || !app.sandbox.messages().is_empty(),
    )
    .await;
    daemon.stop().await;

    let calls = app.sandbox.assign_calls();
    let chat1: Vec<i64> = calls.iter().filter(|c| c.0 == 1).map(|c| c.1).collect();
    let chat2: Vec<i64> = calls.iter().filter(|c| c.0 == 2).map(|c| c.1).collect();
    assert_eq!(
        chat1,
        vec![4188, 6694],
        "alice, then the next in rotation after bob: carol"
    );
    assert_eq!(chat2, vec![4761], "an answered chat is left alone");
    let note = &app.sandbox.messages()[0];
    assert_eq!(note["type"], "private");
    assert_eq!(note["chat"], 1);
    assert_eq!(
        note["text"],
        "Nobody answered within 400ms after 1 reassignment(s); the chat stays with carol."
    );
    let hops = app
        .rows("SELECT chat_id, result, reason FROM outcomes WHERE chat_id = 1 ORDER BY id")
        .await;
    assert_eq!(hops.len(), 3, "{hops:?}");
    assert_eq!(hops[1].1, "assigned");
    assert!(
        hops[1]
            .2
            .as_deref()
            .unwrap()
            .starts_with("reassigned: alice did not answer within 400ms -> carol (hop 1 of 1)"),
        "{hops:?}"
    );
    assert_eq!(hops[2].1, "skipped");
    let routes = "outcomes WHERE chat_id = 1 AND route = 'reassigned' AND result = 'assigned'";
    assert_eq!(app.count(routes).await, 1, "the hop is recorded as one");
    assert_eq!(app.count("outcomes WHERE route IS NOT NULL").await, 1);
    assert_eq!(app.count("followups").await, 0);
    // The open chat moved from alice to carol.
    let moved = app.count("open_chats WHERE agent = 'carol' AND chat_id = 1");
    assert_eq!(moved.await, 1);
}

/// Without webhooks, `[load] refresh` learns from POST /chats/search that a
/// chat was closed, and the chat waiting for that seat is assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_refresh_frees_seats_that_webhooks_never_reported() {
    let rules = "[agents]\nalice = { id = 4188, max_open = 1 }\n[pools.p]\nagents = [\"alice\"]\n[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";
    let app = TestApp::builder()
        .rules(rules)
        .worker("concurrency = 1")
        .build()
        .await;
    app.edit_config(|c| c + "\n[load]\nrefresh = \"300ms\"\n");
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [81]).await;
    expect_assignee(&app, 81, 4188, Duration::from_secs(5)).await;
    app.feed(&daemon, [82]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.sandbox.assignee(82), None, "alice is full");
    // Closed in HelpCrunch, and no webhook says so.
    app.sandbox.update_chat(81, |c| c.status = "closed".into());
    expect_assignee(&app, 82, 4188, Duration::from_secs(5)).await;
    // The close is in the history too, for `simulate --history`.
    let closed = "chat_history WHERE chat_id = 81 AND closed_at IS NOT NULL";
    let timeout = Duration::from_secs(5);
    app.wait_count(closed, 1, timeout, "the close of 81").await;
    daemon.stop().await;
    assert!(
        app.sandbox
            .requests()
            .iter()
            .any(|r| r.path == "/v1/chats/search")
    );
}

/// `[poller]`: new unassigned chats are found with POST /chats/search and
/// enqueued with their snapshot; assigned or closed ones are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_enqueues_new_unassigned_chats() {
    let app = TestApp::builder().build().await;
    app.edit_config(|c| c + "\n[poller]\nenabled = true\ninterval = \"200ms\"\n");
    let daemon = app.start_in_process().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for id in [91, 92, 93] {
        app.sandbox.create_chat(id, |_| {});
    }
    app.sandbox.create_chat(94, |c| c.assignee = Some(6694));
    app.sandbox.create_chat(95, |c| c.status = "closed".into());
    for id in [91, 92, 93] {
        assert!(
            assignee_within(&app, id, Duration::from_secs(10))
                .await
                .is_some(),
            "chat {id}"
        );
    }
    app.wait_drained(Duration::from_secs(5)).await;
    daemon.stop().await;
    let queued = app.count("queue").await;
    assert_eq!(queued, 3, "only the unassigned, open ones");
    assert_eq!(app.count("queue WHERE snapshot IS NOT NULL").await, 3);
    assert!(
        app.sandbox.requests().iter().all(|r| r.method != "GET"),
        "snapshots saved the GETs"
    );
}
