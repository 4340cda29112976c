//! The whole path against the sandbox on 127.0.0.1 and a real SQLite file.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use assignd::sandbox::{SandboxLimit, Window};
use common::*;

fn counts(calls: &[(i64, i64, u16)]) -> HashMap<i64, usize> {
    let mut m = HashMap::new();
    for (_, agent, status) in calls {
        if *status == 200 {
            *m.entry(*agent).or_default() += 1;
        }
    }
    m
}

/// 30 chats inserted with plain SQL go 10/10/10 over a 3-agent round-robin
/// pool, and stopping the real daemon halfway does not reset the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_raw_sql_chats_split_evenly_across_a_restart() {
    let app = TestApp::builder().worker("concurrency = 1").build().await;
    app.migrate().await;

    app.insert_raw(1..=14).await;
    let mut daemon = app.spawn_daemon("run1.log");
    app.wait_drained(Duration::from_secs(30)).await;
    let status = terminate(&mut daemon, Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}: {}", app.log("run1.log"));

    let first_half = app.sandbox.assign_calls();
    assert_eq!(first_half.len(), 14);

    app.insert_raw(15..=30).await;
    let mut daemon = app.spawn_daemon("run2.log");
    app.wait_drained(Duration::from_secs(30)).await;
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());

    let calls = app.sandbox.assign_calls();
    assert_eq!(calls.len(), 30, "one PUT per chat");
    let by_agent = counts(&calls);
    assert_eq!(by_agent.get(&4188), Some(&10), "{by_agent:?}");
    assert_eq!(by_agent.get(&4761), Some(&10), "{by_agent:?}");
    assert_eq!(by_agent.get(&6694), Some(&10), "{by_agent:?}");
    // The rotation is strict, also over the restart: a, b, c, a, b, c ...
    let order: Vec<i64> = calls.iter().map(|c| c.1).collect();
    for w in order.windows(2) {
        assert_ne!(w[0], w[1], "same agent twice in a row: {order:?}");
    }
    assert_eq!(
        order[13..16],
        [4761, 6694, 4188],
        "the 15th chat continues after the 14th"
    );
    assert_eq!(app.count("queue WHERE state = 'done'").await, 30);
    assert_eq!(app.count("outcomes WHERE result = 'assigned'").await, 30);
    for id in 1..=30 {
        assert!(app.sandbox.assignee(id).is_some(), "chat {id} unassigned");
    }
}

/// A chat HelpCrunch does not know is dead after exactly one PUT, with the reason.
#[tokio::test]
async fn unknown_chat_is_dead_after_one_put() {
    let app = TestApp::builder().worker(NO_FETCH).build().await;
    let daemon = app.start_in_process().await;
    daemon
        .runtime
        .store
        .enqueue(&[assignd::store::NewQueueItem {
            chat_id: assignd::domain::ChatId(999_999_999),
            ..Default::default()
        }])
        .await
        .unwrap();
    daemon.runtime.worker.wake();
    app.wait_drained(Duration::from_secs(10)).await;
    daemon.stop().await;

    assert_eq!(app.sandbox.assign_calls().len(), 1);
    let rows = app
        .rows("SELECT chat_id, state, last_error FROM queue")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "dead");
    let why = rows[0].2.clone().unwrap();
    assert!(why.contains("404") && why.contains("not_f"), "{why}");
    let failed = app.count("outcomes WHERE result = 'failed' AND http_status = 404");
    assert_eq!(failed.await, 1);
}

/// HelpCrunch rejects an agent id (400 invalid_chat_value): the agent is
/// dropped and the chat decided again, and that id is never sent again.
#[tokio::test]
async fn rejected_agent_is_not_retried_unchanged() {
    let rules = support_rules(&[("aaron", 999), ("bob", 4761)], "", TO_SUPPORT);
    let app = TestApp::builder()
        .rules(&rules)
        .agents(agents(&[("bob", 4761)]))
        .worker("concurrency = 1")
        .build()
        .await;
    app.process_raw([11, 12, 13], Duration::from_secs(10)).await;

    let calls = app.sandbox.assign_calls();
    let rejected: Vec<_> = calls.iter().filter(|c| c.1 == 999).collect();
    assert_eq!(
        rejected.len(),
        1,
        "the rejected agent was sent once: {calls:?}"
    );
    assert_eq!(rejected[0].2, 400);
    assert_eq!(
        calls.iter().filter(|c| c.1 == 4761 && c.2 == 200).count(),
        3,
        "{calls:?}"
    );
    // No (chat, agent) pair was sent twice.
    let mut pairs: Vec<_> = calls.iter().map(|c| (c.0, c.1)).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), calls.len());
    assert_eq!(app.count("queue WHERE state = 'done'").await, 3);
    let invalid =
        app.count("outcomes WHERE result = 'failed' AND error_code = 'invalid_chat_value'");
    assert_eq!(invalid.await, 1);
}

async fn survive_429s(retry_after: bool) {
    // The daemon believes it may make 6000 calls a minute; the sandbox allows 5 a second.
    let limit = SandboxLimit {
        requests: 5,
        per: Duration::from_secs(1),
        window: Window::Sliding,
        retry_after,
    };
    let app = TestApp::builder()
        .limit(limit)
        .worker("max_attempts = 2\nfetch_chat = \"never\"")
        .build()
        .await;
    app.process_raw(1..=20, Duration::from_secs(60)).await;

    assert!(app.sandbox.rejected_429() > 0, "the test must provoke 429s");
    let done = app.count("queue WHERE state = 'done'").await;
    assert_eq!(done, 20, "no chat lost");
    assert_eq!(app.count("queue WHERE state = 'dead'").await, 0);
    // 429s give their attempt back: every row took exactly one counted attempt.
    assert_eq!(app.scalar("SELECT MAX(attempts) FROM queue").await, 1);
    let retried = app.count("outcomes WHERE result = 'retry' AND http_status = 429");
    assert!(retried.await > 0);
    for id in 1..=20 {
        assert!(app.sandbox.assignee(id).is_some(), "chat {id} unassigned");
    }
}

#[tokio::test]
async fn rate_limited_with_retry_after_loses_nothing() {
    survive_429s(true).await;
}

#[tokio::test]
async fn rate_limited_without_retry_after_loses_nothing() {
    survive_429s(false).await;
}

/// Configured with the account's real limit, the daemon drains a backlog
/// without a single 429, under a sliding and a fixed window, with any burst.
async fn drain_without_429(window: Window, burst: u32) {
    let limit = SandboxLimit {
        requests: 30,
        per: Duration::from_secs(2),
        window,
        retry_after: true,
    };
    let rate = format!("requests = 30\nper = \"2s\"\nburst = {burst}");
    let app = TestApp::builder()
        .limit(limit)
        .worker("concurrency = 8")
        .rate(&rate)
        .build()
        .await;
    let daemon = app.start_in_process().await;
    app.feed(&daemon, 1..=45).await; // each needs a GET and a PUT: 90 calls, 6 windows
    app.wait_drained(Duration::from_secs(60)).await;
    daemon.stop().await;

    let requests = app.sandbox.requests();
    assert_eq!(requests.len(), 90);
    assert_eq!(app.sandbox.rejected_429(), 0, "{window:?} burst {burst}");
    let span = (requests.last().unwrap().at - requests[0].at).as_secs_f64();
    let rate = (requests.len() - 1) as f64 / span / 15.0;
    // Measured, not asserted: timing bars belong to benchmarks, not tests.
    println!(
        "{window:?} window, burst {burst}: drained at {:.1}% of the limit",
        rate * 100.0
    );
    assert_eq!(app.count("queue WHERE state = 'done'").await, 45);
}

#[tokio::test]
async fn backlog_drains_without_429_sliding_window() {
    drain_without_429(Window::Sliding, 1).await;
}

#[tokio::test]
async fn backlog_drains_without_429_fixed_window_with_burst() {
    drain_without_429(Window::Fixed, 5).await;
}

/// Enqueueing a chat that already has a pending or leased row adds no row,
/// whether by the CLI or by plain SQL.
#[tokio::test]
async fn duplicates_add_no_row() {
    let app = TestApp::builder().build().await;
    let args: Vec<&str> = "enqueue 5 5 6 --attr language=uk --priority 3"
        .split(' ')
        .collect();
    let out = app.run_ok(&args);
    assert_eq!(out.trim(), "enqueued 2 chat(s), 1 already queued");
    app.insert_raw([5, 6, 7]).await;
    assert_eq!(app.count("queue").await, 3);
    let five = app.count("queue WHERE chat_id = 5 AND priority = 3 AND attrs LIKE '%uk%'");
    assert_eq!(five.await, 1);
    // Once done, the chat may be queued again.
    app.execute("UPDATE queue SET state = 'done' WHERE chat_id = 5")
        .await;
    app.insert_raw([5]).await;
    assert_eq!(app.count("queue WHERE chat_id = 5").await, 2);
}

/// Closed chats and chats that already have an assignee are skipped.
#[tokio::test]
async fn closed_and_assigned_chats_are_skipped() {
    let app = TestApp::builder().build().await;
    app.sandbox.update_chat(21, |c| c.status = "closed".into());
    app.sandbox.update_chat(22, |c| c.assignee = Some(4761));
    app.process_raw([21, 22, 23], Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assign_calls().len(), 1);
    assert_eq!(app.count("outcomes WHERE result = 'skipped'").await, 2);
    assert_eq!(app.count("queue WHERE state = 'done'").await, 3);
}

/// 401: no row is consumed, work stops, and status shows why.
#[tokio::test]
async fn unauthorized_keeps_rows_pending() {
    let app = TestApp::builder().worker(NO_FETCH).build().await;
    app.sandbox.set_key_valid(false);
    let daemon = app.start_in_process().await;
    app.feed(&daemon, 1..=5).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while daemon.runtime.worker.api_authorized() {
        assert!(std::time::Instant::now() < deadline, "401 not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Calls already in flight may finish; none starts after the 401 is known.
    let sent = app.sandbox.requests().len();
    assert!(sent <= 4, "at most one call per worker slot: {sent}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.sandbox.requests().len(),
        sent,
        "calls continued after the 401"
    );
    daemon.stop().await;
    let untouched = app.count("queue WHERE state = 'pending' AND attempts = 0");
    assert_eq!(untouched.await, 5);
    let status = app.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("api: unauthorized"), "{text}");
}

/// Dead letters are listed with their reasons and can be put back; pruning
/// removes old finished rows and outcomes, never pending or dead ones.
#[tokio::test]
async fn dead_letters_are_listed_retried_and_never_pruned() {
    let app = TestApp::builder().worker(NO_FETCH).build().await;
    app.process_raw([999_999_991, 5], Duration::from_secs(10))
        .await;
    let text = app.run_ok(&["queue", "list", "--state", "dead"]);
    assert!(
        text.contains("999999991") && text.contains("dead") && text.contains("HTTP 404"),
        "{text}"
    );
    assert!(!text.contains("   5 "), "only dead rows: {text}");

    // Pruning: everything is "old" with a cut-off in the future.
    app.execute("INSERT INTO queue (chat_id) VALUES (77)").await;
    let store = assignd::store::Store::open(&app.db_path, assignd::config::Synchronous::Normal)
        .await
        .unwrap();
    let (rows, outcomes) = store
        .prune(assignd::store::now_ms() + 60_000)
        .await
        .unwrap();
    store.close().await;
    assert_eq!((rows, outcomes), (1, 2), "the done row and both outcomes");
    assert_eq!(app.count("queue WHERE state = 'dead'").await, 1);
    assert_eq!(app.count("queue WHERE state = 'pending'").await, 1);

    let out = app.command(&["queue", "retry", "--dead"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 dead row(s) put back on the queue"
    );
    let reset = app.count("queue WHERE state = 'pending' AND attempts = 0 AND last_error IS NULL");
    assert_eq!(reset.await, 2);
    let out = app.command(&["queue", "retry"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "ids or --dead");
}
