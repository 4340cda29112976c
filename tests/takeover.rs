//! SPEC §15.2 across a takeover: a standby that takes over a SQLite file
//! starts from the state the holder left, not from what it read when it
//! started. Two real daemons on one file, three agents with `max_open =
//! 2`; the standby starts first, then six chats fill every seat; the holder
//! is stopped (kill -9, or SIGTERM); three more chats come. The new holder
//! must assign none of them (every seat is full) and must say why they
//! wait.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const RULES: &str = r#"
[agents]
alice = { id = 4188, max_open = 2 }
bob   = { id = 4761, max_open = 2 }
carol = { id = 6694, max_open = 2 }

[pools.support]
agents = ["alice", "bob", "carol"]
strategy = "least-open"

[[rule]]
name = "all"
assign = "pool:support"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_takes_over_after_kill_9_keeps_every_cap() {
    takeover(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_takes_over_after_sigterm_keeps_every_cap() {
    takeover(Stop::Term).await;
}

enum Stop {
    Kill,
    Term,
}

/// Open chats per agent id in the sandbox.
fn open_per_agent(app: &TestApp, chats: impl Iterator<Item = i64>) -> HashMap<i64, usize> {
    let mut open = HashMap::new();
    for c in chats {
        if let Some(a) = app.sandbox.assignee(c) {
            *open.entry(a).or_default() += 1;
        }
    }
    open
}

async fn takeover(stop: Stop) {
    let app = TestApp::builder().rules(RULES).migrated().await;
    let mut first = app.spawn_guarded("first.log");
    wait_until(
        Duration::from_secs(10),
        || {
            format!(
                "the first daemon does not hold the file: {}",
                app.log("first.log")
            )
        },
        || app.log("first.log").contains("took the daemon lease"),
    )
    .await;
    let mut second = app.spawn_guarded("second.log");
    wait_until(
        Duration::from_secs(10),
        || format!("no standby: {}", app.log("second.log")),
        || app.log("second.log").contains("standby"),
    )
    .await;
    // Every seat fills while the standby waits with what it read at start.
    app.insert_raw(1..=6).await;
    wait_until(
        Duration::from_secs(15),
        || format!("six chats not assigned: {}", app.log("first.log")),
        || (1..=6).all(|c| app.sandbox.assignee(c).is_some()),
    )
    .await;
    app.wait_drained(Duration::from_secs(10)).await;
    match stop {
        Stop::Kill => first.kill9(),
        Stop::Term => {
            let status = terminate(&mut first.child, Duration::from_secs(15));
            assert!(status.success(), "the holder's exit: {status:?}");
        }
    }
    app.insert_raw(7..=9).await;
    wait_until(
        Duration::from_secs(10),
        || format!("the standby did not take over: {}", app.log("second.log")),
        || app.log("second.log").contains("took over"),
    )
    .await;
    // Long enough for several claims of the three rows (they are tried
    // again every few seconds at most, and at once when a seat frees).
    tokio::time::sleep(Duration::from_secs(4)).await;
    second.assert_running("the new holder");
    let open = open_per_agent(&app, 1..=9);
    let puts = app.sandbox.assign_calls().len();
    let waiting = app
        .rows("SELECT id, state, last_error FROM queue WHERE chat_id > 6 ORDER BY id")
        .await;
    println!("open per agent after the takeover: {open:?}; {puts} PUTs; rows 7-9: {waiting:?}");
    assert!(
        open.values().all(|n| *n <= 2),
        "an agent above max_open = 2 after the takeover: {open:?}\n{}",
        app.log("second.log")
    );
    assert_eq!(puts, 6, "the new holder assigned over full seats");
    for (_, state, reason) in &waiting {
        assert_eq!(state, "pending");
        assert!(
            reason.as_deref().is_some_and(|r| r.starts_with("waiting")),
            "a waiting row says why: {reason:?}"
        );
    }
    let status = terminate(&mut second.child, Duration::from_secs(15));
    assert!(status.success(), "the new holder's exit: {status:?}");
    assert_eq!(
        app.count("queue WHERE state = 'leased'").await,
        0,
        "a clean stop leaves no lease behind"
    );
}
