//! Issue 14: the queue order. An urgent chat goes with the very next call,
//! however long the backlog at the rate limit; chats that wait for a seat
//! are taken by their rule's priority, then oldest first.

mod common;

use std::time::{Duration, Instant};

use common::{NO_FETCH, TestApp, puts, support_rules};

/// 10 calls a second with a burst of 1: a backlog of 80 takes 8 s.
const RATE: &str = "requests = 10\nper = \"1s\"\nburst = 1";

/// Inserts a chat with `priority` and `attrs` as a producer would;
/// returns when it was committed.
async fn insert(app: &TestApp, chat: i64, priority: i64, attrs: &str) -> Instant {
    let pool = app.producer().await;
    sqlx::query("INSERT INTO queue (chat_id, priority, attrs) VALUES (?, ?, ?)")
        .bind(chat)
        .bind(priority)
        .bind(attrs)
        .execute(&pool)
        .await
        .unwrap();
    let committed = Instant::now();
    pool.close().await;
    committed
}

/// How many other chats' PUTs reached HelpCrunch after `since` and before
/// `chat`'s own PUT; `None` while `chat` has none.
fn calls_before(app: &TestApp, chat: i64, since: Instant) -> Option<usize> {
    let all = puts(&app.sandbox);
    let own = all.iter().position(|p| p.chat == chat)?;
    Some(all[..own].iter().filter(|p| p.received > since).count())
}

async fn position_behind_backlog(fetch: &str) -> Vec<usize> {
    let mut builder = TestApp::builder().rate(RATE).worker("concurrency = 8");
    if !fetch.is_empty() {
        builder = builder.worker(fetch);
    }
    let app = builder.migrated().await;
    let daemon = app.start_in_process().await;
    app.feed(&daemon, 1..=80).await;
    let mut positions = Vec::new();
    // Five urgent chats at different moments of the drain, each while at
    // least 30 others wait at the limit.
    for (n, urgent) in (90_001..=90_005).enumerate() {
        let wait_for = 5 + n * 8;
        common::wait_for(
            "the backlog to drain at the limit",
            Duration::from_secs(30),
            || puts(&app.sandbox).len() >= wait_for,
        )
        .await;
        // Off the slot boundary by a varying amount.
        tokio::time::sleep(Duration::from_millis(17 * n as u64)).await;
        let committed = insert(&app, urgent, 10, "{}").await;
        daemon.runtime.worker.wake();
        let mut position = None;
        common::wait_for("the urgent chat's PUT", Duration::from_secs(10), || {
            position = calls_before(&app, urgent, committed);
            position.is_some()
        })
        .await;
        positions.push(position.unwrap());
    }
    let backlog_left = 80 - puts(&app.sandbox).iter().filter(|p| p.chat <= 80).count();
    assert!(
        backlog_left >= 30,
        "the backlog ran out too early: {backlog_left} left"
    );
    app.wait_drained(Duration::from_secs(30)).await;
    daemon.stop().await;
    positions
}

/// A call whose slot the limiter admitted just before the urgent row was
/// committed may still reach HelpCrunch after it: at most that one.
#[tokio::test]
async fn an_urgent_chat_goes_with_the_next_call_behind_a_backlog() {
    let positions = position_behind_backlog(NO_FETCH).await;
    println!("urgent chats behind a backlog of 80 at 10/s: other PUTs first {positions:?}");
    assert!(
        positions.iter().all(|&p| p <= 1),
        "an urgent chat waited behind the backlog: {positions:?}"
    );
}

/// With the chat read first (`GET /chats/{id}`), the urgent chat's read
/// goes with the next call and its PUT before any later row's.
#[tokio::test]
async fn an_urgent_chat_that_is_read_first_still_goes_next() {
    let positions = position_behind_backlog("fetch_chat = \"always\"").await;
    println!(
        "urgent chats (fetched) behind a backlog of 80 at 10/s: other PUTs first {positions:?}"
    );
    assert!(
        positions.iter().all(|&p| p <= 2),
        "an urgent chat waited behind the backlog: {positions:?}"
    );
}

/// Chats waiting for a seat: when one frees, the chat of the rule with the
/// higher `priority` gets it, though the others waited longer.
#[tokio::test]
async fn waiting_chats_are_taken_by_rule_priority_then_age() {
    let rules = support_rules(
        &[("alice", 4188)],
        "max_open = 1",
        "[[rule]]\nname = \"gold\"\nmatch = { attr.tier = \"gold\" }\nassign = \"pool:support\"\npriority = 5\n\n\
         [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n",
    );
    let app = TestApp::builder()
        .rules(&rules)
        .agents(common::agents(&[("alice", 4188)]))
        .worker(NO_FETCH)
        .migrated()
        .await;
    app.run_ok(&["agent", "away", "alice"]);
    let daemon = app.start_in_process().await;
    // Oldest first: two plain chats, then the gold one, all waiting.
    for (chat, attrs) in [(1, "{}"), (2, "{}"), (3, "{\"tier\": \"gold\"}")] {
        insert(&app, chat, 0, attrs).await;
        daemon.runtime.worker.wake();
    }
    app.wait_count(
        "queue WHERE waiting = 'candidate'",
        3,
        Duration::from_secs(10),
        "all three chats waiting",
    )
    .await;
    assert_eq!(
        app.scalar("SELECT priority FROM queue WHERE chat_id = 3")
            .await,
        5,
        "the gold rule's priority is kept on the waiting row"
    );
    app.cli_ok(&["agent", "back", "alice"]).await;
    common::wait_for(
        "the freed seat to be taken",
        Duration::from_secs(10),
        || !app.sandbox.assign_calls().is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = app.sandbox.assign_calls();
    assert_eq!(calls.len(), 1, "one seat, one assignment: {calls:?}");
    assert_eq!(calls[0].0, 3, "the gold chat goes first: {calls:?}");
    daemon.stop().await;
}
