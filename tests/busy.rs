//! Issue 14: the "all busy" reply. A chat that has waited a pool's
//! `busy_reply.after` with nobody free gets one message, with its place in
//! the queue, once; a chat assigned in time gets none.

mod common;

use std::time::Duration;

use common::{NO_FETCH, TestApp};
use serde_json::Value;

const RULES: &str = r#"
[agents]
alice = { id = 4188 }
dave  = { id = 2533 }

[pools.support]
agents = ["alice"]
busy_reply = { from = "dave", text = "All agents are busy: you are number {position} in line (chat {chat}, {pool}).", after = "1s" }

[[rule]]
name = "all"
assign = "pool:support"
"#;

fn replies_to(app: &TestApp, chat: i64) -> Vec<Value> {
    app.sandbox
        .messages()
        .into_iter()
        .filter(|m| m["chat"] == chat && m["type"] == "message")
        .collect()
}

#[tokio::test]
async fn a_waiting_chat_gets_one_busy_reply_with_its_place_in_line() {
    let app = TestApp::builder()
        .rules(RULES)
        .agents(common::agents(&[("alice", 4188), ("dave", 2533)]))
        .worker(NO_FETCH)
        .migrated()
        .await;
    app.run_ok(&["agent", "away", "alice"]);
    let daemon = app.start_in_process().await;
    app.feed(&daemon, [1]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.feed(&daemon, [2]).await;
    common::wait_for("both busy replies", Duration::from_secs(10), || {
        !replies_to(&app, 1).is_empty() && !replies_to(&app, 2).is_empty()
    })
    .await;
    // Waiting on: the retries that follow send nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (one, two) = (replies_to(&app, 1), replies_to(&app, 2));
    assert_eq!((one.len(), two.len()), (1, 1), "{one:?} {two:?}");
    assert_eq!(
        one[0]["text"],
        "All agents are busy: you are number 1 in line (chat 1, support)."
    );
    assert_eq!(
        two[0]["text"],
        "All agents are busy: you are number 2 in line (chat 2, support)."
    );
    assert_eq!(one[0]["agent"]["id"], 2533, "posted as dave");
    let waited = app
        .scalar(
            "SELECT MIN(b.at - q.enqueued_at) FROM busy_replies b JOIN queue q ON q.chat_id = b.chat_id",
        )
        .await;
    assert!(waited >= 1000, "a busy reply before `after`: {waited} ms");

    // Alice back: both are assigned, and a new chat, taken at once, gets no
    // busy reply.
    app.cli_ok(&["agent", "back", "alice"]).await;
    app.feed(&daemon, [3]).await;
    app.wait_drained(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(replies_to(&app, 3).is_empty());
    assert_eq!(app.sandbox.assign_calls().len(), 3);
    daemon.stop().await;
}

#[test]
fn busy_reply_keys_are_checked_at_load() {
    let load = |pool: &str, rule: &str| {
        let text = format!(
            "[agents]\na = {{ id = 1 }}\n[pools.p]\nagents = [\"a\"]\n{pool}\n[[rule]]\nname = \"r\"\nassign = \"pool:p\"\n{rule}"
        );
        assignd::rules::load_sources(&[("r.toml".into(), text)]).map_err(|e| e.to_string())
    };
    let err = load(
        "busy_reply = { from = \"a\", text = \"{agent} is busy\", after = \"1m\" }",
        "",
    )
    .unwrap_err();
    assert!(
        err.contains("`{agent}` cannot be used in busy_reply"),
        "{err}"
    );
    let err = load(
        "busy_reply = { from = \"zed\", text = \"busy\", after = \"1m\" }",
        "",
    )
    .unwrap_err();
    assert!(err.contains("unknown agent `zed`"), "{err}");
    let err = load(
        "",
        "reply = { from = \"a\", text = \"you are {position}\" }",
    )
    .unwrap_err();
    assert!(
        err.contains("`{position}` can only be used in a pool's busy_reply"),
        "{err}"
    );
    let err = load("busy_reply = { from = \"a\", text = \"busy\" }", "").unwrap_err();
    assert!(err.contains("missing field `after`"), "{err}");
}
