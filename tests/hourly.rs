//! `max_per_hour` end to end: a real daemon, the sandbox and SQLite. An
//! agent at the cap gets no more chats, the waiting chat's reason says why,
//! and a daemon started afresh on the same database counts the earlier
//! assignments from the outcomes; `explain` shows the count too. A shadow
//! run's decisions count for the shadow alone.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use assignd::domain::ChatId;
use assignd::store::NewQueueItem;
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

/// Runs a daemon on `app` (its config as it is) until each of `chats` has
/// a decision; returns each chat's latest outcome: (result, agent).
async fn decide(app: &TestApp, chats: std::ops::RangeInclusive<i64>) -> Vec<(String, String)> {
    let daemon = app.start_in_process().await;
    let store = daemon.runtime.store.clone();
    let items: Vec<NewQueueItem> = chats
        .clone()
        .map(|c| NewQueueItem {
            chat_id: ChatId(c),
            ..Default::default()
        })
        .collect();
    store.enqueue(&items).await.unwrap();
    daemon.runtime.worker.wake();
    let deadline = Instant::now() + Duration::from_secs(20);
    let latest = loop {
        // Newest first: the first row seen of a chat is its latest.
        let rows = store.recent_outcomes(1000).await.unwrap();
        let latest: Vec<(String, String)> = chats
            .clone()
            .filter_map(|c| {
                let o = rows.iter().find(|o| o.chat_id.0 == c)?;
                Some((o.result.clone(), o.agent.clone().unwrap_or_default()))
            })
            .collect();
        if latest.len() == items.len() {
            break latest;
        }
        assert!(Instant::now() < deadline, "undecided: {latest:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemon.stop().await;
    latest
}

/// A shadow run gives alice two chats in its records (its cap holds for
/// the third); the same database goes live within the hour: nothing was
/// assigned yet, so alice gets two chats. SQLite, and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_runs_decisions_leave_the_live_hourly_cap_alone() {
    shadow_then_live(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_runs_decisions_leave_the_live_hourly_cap_alone_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    shadow_then_live(Some(&server.database().await)).await;
}

async fn shadow_then_live(database: Option<&str>) {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("concurrency = 1")
        .worker(NO_FETCH)
        .build()
        .await;
    if let Some(url) = database {
        app.use_database(url);
    }
    app.edit_config(|c| c.replace("[worker]\n", "[worker]\nmode = \"shadow\"\n"));
    let shadow = decide(&app, 1..=3).await;
    let to_alice = ("shadow".to_string(), "alice".to_string());
    assert_eq!(
        shadow.iter().filter(|d| **d == to_alice).count(),
        2,
        "{shadow:?}"
    );
    let capped = shadow.iter().filter(|d| d.0 == "no_agent").count();
    assert_eq!(capped, 1, "the shadow's own cap holds: {shadow:?}");

    app.edit_config(|c| c.replace("mode = \"shadow\"\n", ""));
    let live = decide(&app, 4..=6).await;
    let assigned = app.sandbox.assign_calls();
    assert_eq!(
        assigned
            .iter()
            .filter(|c| c.1 == 4188 && c.2 == 200)
            .count(),
        2,
        "alice gets two chats live: {live:?}"
    );
}
