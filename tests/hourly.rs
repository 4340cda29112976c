//! `max_per_hour` end to end: a real daemon, the sandbox and SQLite. An
//! agent at the cap gets no more chats, the waiting chat's reason says why,
//! and a daemon started afresh on the same database counts the earlier
//! assignments from the outcomes; `explain` shows the count too.

mod common;

use std::time::Duration;

use common::*;

const RULES: &str = r#"
[agents]
alice = { id = 4188, max_per_hour = 2 }

[pools.support]
agents = ["alice"]

[[rule]]
name = "all"
assign = "pool:support"
"#;

const CAPPED: &str = "rule `all`: pool `support` has no available agent (when_full = wait); \
                      at hourly cap: alice (2/2 this hour)";

/// Waits until `chat` has a `no_agent` outcome whose reason is [`CAPPED`].
async fn expect_capped(app: &TestApp, chat: i64, what: &str) {
    let from =
        format!("outcomes WHERE chat_id = {chat} AND result = 'no_agent' AND reason = '{CAPPED}'");
    app.wait_count(&from, 1, Duration::from_secs(10), what)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_cap_holds_and_survives_a_restart() {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("concurrency = 1")
        .worker(NO_FETCH)
        .migrated()
        .await;
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [1, 2, 3]).await;
    app.wait_count(
        "outcomes WHERE result = 'assigned' AND agent = 'alice'",
        2,
        Duration::from_secs(10),
        "alice gets two chats",
    )
    .await;
    expect_capped(&app, 3, "the third chat waits for the hour").await;
    let waiting = app
        .count("queue WHERE chat_id = 3 AND state = 'pending' AND last_error LIKE 'waiting:%hourly cap%'")
        .await;
    assert_eq!(waiting, 1, "the queue row says why it waits");
    assert_eq!(app.sandbox.assignee(3), None);
    daemon.stop().await;

    // A fresh daemon knows nothing in memory: the two assignments of the
    // hour come from the outcomes.
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [4]).await;
    expect_capped(&app, 4, "a chat after the restart waits too").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (app.sandbox.assignee(3), app.sandbox.assignee(4)),
        (None, None)
    );
    assert_eq!(app.count("outcomes WHERE result = 'assigned'").await, 2);
    daemon.stop().await;

    let chat = app.dir.path().join("chat.json");
    std::fs::write(&chat, r#"{"id": 5, "status": "new", "assignee": null}"#).unwrap();
    let out = app
        .command(&["explain", "--chat", chat.to_str().unwrap()])
        .output()
        .unwrap();
    let text = ok_stdout("explain", &out);
    assert_contains(
        &text,
        &["alice        at hourly cap (2/2 this hour)", CAPPED],
    );
}
