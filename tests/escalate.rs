//! Issue 14: escalation by waiting time. A chat that has waited `after` for
//! a candidate (from when it was enqueued) moves on to the step's target;
//! each step is an outcome row, at its time, shown by `status`.

mod common;

use std::time::Duration;

use common::{NO_FETCH, TestApp};

const RULES: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }
carol = { id = 6694 }

[pools.support]
agents = ["alice"]
escalate = [{ after = "1s", assign = "pool:overflow" }, { after = "4s", assign = "carol" }]

[pools.overflow]
agents = ["bob"]

[[rule]]
name = "all"
assign = "pool:support"
"#;

/// A chat's outcomes: (result, agent, reason, ms since the row was enqueued).
async fn outcomes(app: &TestApp, chat: i64) -> Vec<(String, Option<String>, String, i64)> {
    let sql = "SELECT o.result, o.agent, COALESCE(o.reason, ''), o.at - q.enqueued_at
                 FROM outcomes o JOIN queue q ON q.id = o.queue_id
                WHERE o.chat_id = ? ORDER BY o.id";
    app.chat_rows(sql, chat).await
}

async fn app() -> TestApp {
    TestApp::builder()
        .rules(RULES)
        .worker(NO_FETCH)
        .migrated()
        .await
}

async fn wait_assigned(app: &TestApp, chat: i64) {
    let from = format!("outcomes WHERE chat_id = {chat} AND result = 'assigned'");
    app.wait_count(&from, 1, Duration::from_secs(15), "the chat assigned")
        .await;
}

#[tokio::test]
async fn each_step_comes_at_its_time_with_an_outcome_and_a_status_line() {
    let app = app().await;
    app.run_ok(&["agent", "away", "alice"]);
    app.run_ok(&["agent", "away", "bob"]);
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [1]).await;
    let step_one = "outcomes WHERE chat_id = 1 AND reason LIKE '%step 1%'";
    app.wait_count(step_one, 1, Duration::from_secs(10), "step 1")
        .await;
    let status = app.cli_ok(&["status"]).await;
    common::assert_contains(
        &status,
        &["step 1 of 2", "pool `overflow`", "next: carol at 4s"],
    );
    // `explain` of the waiting chat reads its wait from the queue row.
    let explained = app.cli_ok(&["explain", "1"]).await;
    common::assert_contains(
        &explained,
        &["escalated after 1s (step 1 of 2)", "next: carol at 4s"],
    );
    wait_assigned(&app, 1).await;
    daemon.stop().await;

    let seen = outcomes(&app, 1).await;
    println!("{seen:#?}");
    assert_eq!(seen.len(), 3, "waiting, step 1, step 2: {seen:?}");
    let (result, _, reason, at) = &seen[0];
    assert_eq!(result, "no_agent");
    assert!(*at < 1000, "{reason} at {at} ms");
    let (result, _, reason, at) = &seen[1];
    assert_eq!(result, "no_agent");
    assert!(
        reason.contains("escalated after 1s (step 1 of 2) to pool `overflow`"),
        "{reason}"
    );
    assert!((1000..2500).contains(at), "step 1 at {at} ms");
    let (result, agent, reason, at) = &seen[2];
    assert_eq!(result, "assigned");
    assert_eq!(agent.as_deref(), Some("carol"));
    assert!(
        reason.contains("escalated after 4s (step 2 of 2) to carol"),
        "{reason}"
    );
    assert!((4000..5500).contains(at), "step 2 at {at} ms");
    assert_eq!(app.sandbox.assignee(1), Some(6694));
}

/// The first step's target takes the chat when it has a candidate; the
/// pool itself is still tried first at every retry.
#[tokio::test]
async fn a_step_with_a_candidate_takes_the_chat_and_the_pool_comes_first() {
    let app = app().await;
    app.run_ok(&["agent", "away", "alice"]);
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [2]).await;
    wait_assigned(&app, 2).await;
    let seen = outcomes(&app, 2).await;
    let (result, agent, reason, at) = seen.last().unwrap();
    assert_eq!(
        (result.as_str(), agent.as_deref()),
        ("assigned", Some("bob"))
    );
    assert!(reason.contains("step 1 of 2"), "{reason}");
    assert!(*at >= 1000, "escalated before its time: {at} ms");

    // Alice back: a new chat goes to the pool, no escalation.
    app.cli_ok(&["agent", "back", "alice"]).await;
    app.feed(&daemon, [3]).await;
    wait_assigned(&app, 3).await;
    let seen = outcomes(&app, 3).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1.as_deref(), Some("alice"));
    daemon.stop().await;
}
