//! Issues 14 and 21: the "all busy" reply. A chat that has waited a pool's
//! `busy_reply.after` with nobody free gets one message, with its place in
//! the queue, once; a chat assigned in time gets none. The places told are
//! unique and in claim order, whatever `concurrency` is and however many
//! daemons share the database.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
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

/// One seat (alice, away), a busy reply after `{after}`, and a gold rule
/// whose priority the rows take at intake.
fn line_rules(after: &str) -> String {
    format!(
        r#"
[agents]
alice = {{ id = 4188 }}
dave  = {{ id = 2533 }}

[pools.support]
agents = ["alice"]
busy_reply = {{ from = "dave", text = "You are number {{position}} in line.", after = "{after}" }}

[[rule]]
name = "gold"
match = {{ attr.tier = "gold" }}
priority = 5
assign = "pool:support"

[[rule]]
name = "all"
assign = "pool:support"
"#
    )
}

/// [`line_rules`] with eight rows in flight and no `GET /chats/{id}`.
fn line_app(after: &str) -> common::TestAppBuilder {
    TestApp::builder()
        .rules(&line_rules(after))
        .agents(common::agents(&[("alice", 4188), ("dave", 2533)]))
        .worker(NO_FETCH)
        .worker("concurrency = 8")
}

const LINE: i64 = 16;

/// Chat `n` of the line: its producer priority, and whether it is gold.
fn line_chat(n: i64) -> (i64, bool) {
    (n % 3, n == 5 || n == 11)
}

/// The chats in claim order: priority (the rule's 5 for gold, else the
/// producer's), then the order they were inserted.
fn claim_order() -> Vec<i64> {
    let mut chats: Vec<i64> = (1..=LINE).collect();
    let rank = |n: &i64| match line_chat(*n) {
        (_, true) => 5,
        (p, false) => p,
    };
    chats.sort_by_key(|n| (-rank(n), *n));
    chats
}

/// The producer's one statement for the whole line, so that every chat is
/// there before the first claim.
fn line_insert() -> String {
    let rows: Vec<String> = (1..=LINE)
        .map(|n| {
            let (priority, gold) = line_chat(n);
            let attrs = if gold {
                r#"'{"tier": "gold"}'"#
            } else {
                "NULL"
            };
            format!("({n}, {priority}, {attrs})")
        })
        .collect();
    format!(
        "INSERT INTO queue (chat_id, priority, attrs) VALUES {}",
        rows.join(", ")
    )
}

/// The outcomes a daemon logged (a chat that starts waiting logs one).
fn outcomes_logged(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" outcome")).count()
}

/// Waits for every chat's busy reply, then a while more (none may come
/// twice); returns the place each chat was told.
async fn places_told(app: &TestApp) -> BTreeMap<i64, i64> {
    common::wait_for("every busy reply", Duration::from_secs(30), || {
        (1..=LINE).all(|c| !replies_to(app, c).is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut told = BTreeMap::new();
    for chat in 1..=LINE {
        let replies = replies_to(app, chat);
        assert_eq!(replies.len(), 1, "chat {chat}: {replies:?}");
        let text = replies[0]["text"].as_str().unwrap();
        let n = text
            .strip_prefix("You are number ")
            .and_then(|t| t.strip_suffix(" in line."))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        told.insert(chat, n);
    }
    told
}

/// The places must be 1, 2, 3, ... along the claim order: nobody left the
/// line and nobody joined it while they were told.
fn assert_in_claim_order(what: &str, told: &BTreeMap<i64, i64>) {
    let along: Vec<i64> = claim_order().iter().map(|c| told[c]).collect();
    println!("{what}: places told along the claim order {along:?}");
    let expected: Vec<i64> = (1..=LINE).collect();
    assert_eq!(along, expected, "{what}: places told along the claim order");
}

/// Eight rows in flight on SQLite: the chats are decided side by side,
/// and their settlements land in any order. With `after = "1s"` they are
/// told on a later turn, when all of them already wait; with `"1ms"` on
/// their first, while those ahead may still be being decided.
#[tokio::test]
async fn places_are_unique_and_in_claim_order_with_eight_rows_in_flight() {
    for after in ["1s", "1ms"] {
        let app = line_app(after).migrated().await;
        app.run_ok(&["agent", "away", "alice"]);
        let producer = app.producer().await;
        sqlx::query(sqlx::AssertSqlSafe(line_insert()))
            .execute(&producer)
            .await
            .unwrap();
        producer.close().await;
        let daemon = app.start_in_process().await;
        let told = places_told(&app).await;
        assert_in_claim_order(&format!("concurrency 8, after {after}"), &told);
        daemon.stop().await;
    }
}

/// Two daemons on one PostgreSQL database, eight rows in flight each:
/// their settlements interleave, and the places are still unique and in
/// claim order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_are_unique_and_in_claim_order_with_two_daemons_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    for after in ["1s", "1ms"] {
        let url = server.database().await;
        let app = line_app(after).build().await;
        app.use_database(&url);
        app.migrate().await;
        let db = sqlx::PgPool::connect(&url).await.unwrap();
        app.run_ok(&["agent", "away", "alice"]);
        let daemons = [app.spawn_guarded("d1.log"), app.spawn_guarded("d2.log")];
        let live = "SELECT COUNT(*) FROM daemons WHERE heartbeat_at > assignd_now_ms() - 2000";
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sqlx::query_scalar::<_, i64>(live)
            .fetch_one(&db)
            .await
            .unwrap_or(0)
            < 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "two daemons should register"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sqlx::query(sqlx::AssertSqlSafe(line_insert()))
            .execute(&db)
            .await
            .unwrap();
        let told = places_told(&app).await;
        let worked: Vec<usize> = daemons
            .iter()
            .map(|d| outcomes_logged(&d.log_text()))
            .collect();
        println!("outcomes logged per daemon, after {after}: {worked:?}");
        assert_in_claim_order(&format!("two daemons on PostgreSQL, after {after}"), &told);
        drop(daemons);
        db.close().await;
    }
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
