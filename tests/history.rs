//! `assignd simulate --history`: the real daemon's chats replayed over time
//! reproduce what it did; other rules show the difference; a seeded week of
//! known history gives known figures; bad usage and an empty history say
//! so; and the store records, closes and reads `chat_history` on both
//! backends.

mod common;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::time::{Duration, Instant};

use assignd::domain::ChatId;
use assignd::secrets::Secret;
use assignd::store::{WebhookEffect, now_ms};
use common::*;
use serde_json::{Value, json};
use store_fixture::*;

const WEBHOOK_KEY: &str = "whk-history-key";

const RULES: &str = r#"
[agents]
alice = { id = 4188, max_open = 2 }
bob   = { id = 4761, max_open = 2 }
carol = { id = 6694, max_open = 2 }

[pools.support]
agents = ["alice", "bob", "carol"]
strategy = "round-robin"

[[rule]]
name = "all"
assign = "pool:support"
"#;

/// The same agents; carol is no longer in the pool.
const WITHOUT_CAROL: &str = r#"
[agents]
alice = { id = 4188, max_open = 2 }
bob   = { id = 4761, max_open = 2 }
carol = { id = 6694, max_open = 2 }

[pools.support]
agents = ["alice", "bob"]
strategy = "round-robin"

[[rule]]
name = "two"
assign = "pool:support"
"#;

fn new_chat(id: i64) -> Vec<u8> {
    let data = json!({"id": id, "status": "new", "createdAt": "1607540767.414",
        "customer": {"id": id + 500_000}, "assignee": null, "communicatedAgents": []});
    webhook_event(&format!("new-{id}"), "chat.new", data)
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// (a) and (b): the daemon runs over 40 chats that stream in while chats
/// close by webhook (caps full at times, so chats wait for seats); the
/// replay of that hour with the same rules gives the same agents, and
/// rules without carol move her chats to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replay_reproduces_the_daemon_and_other_rules_show_the_difference() {
    let app = TestApp::builder()
        .rules(RULES)
        .worker(NO_FETCH)
        // One decision at a time: with more, two chats woken by one close
        // race for the seat, and their order is the scheduler's.
        .worker("concurrency = 1")
        .listen()
        .build()
        .await;
    let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let base = format!("http://{}", daemon.http_addr.unwrap());
    let http = reqwest::Client::new();
    let post = async |body: Vec<u8>| {
        assert_eq!(post_webhook(&http, &base, WEBHOOK_KEY, body).await, 200);
        // What happens next comes after the decisions this event caused.
        idle(&app).await;
    };
    let mut closed = Vec::new();
    for i in 0..40i64 {
        post(new_chat(3000 + i)).await;
        // From the 8th chat on, close the oldest open chat every other step:
        // seats stay mostly full, so chats wait for them.
        if i >= 7 && i % 2 == 1 {
            close_oldest(&app, &post, &mut closed, 3000..3000 + i + 1).await;
        }
    }
    // Close the rest, one by one, until no chat waits.
    for _ in 0..40 {
        if app
            .scalar("SELECT COUNT(*) FROM queue WHERE state != 'done'")
            .await
            == 0
        {
            break;
        }
        close_oldest(&app, &post, &mut closed, 3000..3040).await;
    }
    app.wait_drained(Duration::from_secs(10)).await;
    daemon.stop().await;

    let out = json_of(&app.run_ok(&["simulate", "--history", "1h", "--json"]));
    let result = &out["result"];
    assert_eq!(result["chats"], 40, "{out:#}");
    let agreement = result["agreement"].as_f64().unwrap();
    println!(
        "agreement with the daemon: {:.1}% ({} of 40 chats; {} closes), replayed in {} ms",
        agreement * 100.0,
        result["agreed"],
        closed.len(),
        out["replay_ms"]
    );
    assert!(agreement >= 0.95, "agreement {agreement}: {out:#}");
    assert!(
        result["queue_wait"]["p95_ms"].as_i64().unwrap() > 0,
        "some chats waited for a seat: {out:#}"
    );

    // (b) Without carol in the pool, her chats go to alice and bob.
    std::fs::write(app.dir.path().join("two.toml"), WITHOUT_CAROL).unwrap();
    let two = app.dir.path().join("two.toml");
    let args = [
        "simulate",
        "--history",
        "1h",
        "--against",
        two.to_str().unwrap(),
    ];
    let out = json_of(&app.run_ok(&[&args[..], &["--json", "--diff", "5"]].concat()));
    let (a, b) = (&out["result"], &out["against"]["result"]);
    assert!(a["per_agent"]["carol"].as_u64().unwrap() > 0, "{out:#}");
    assert_eq!(b["per_agent"]["carol"], 0, "{out:#}");
    let moved =
        |who: &str| b["per_agent"][who].as_u64().unwrap() > a["per_agent"][who].as_u64().unwrap();
    assert!(moved("alice") && moved("bob"), "{out:#}");
    assert!(out["differences"]["count"].as_u64().unwrap() > 0);
    let first = out["differences"]["first"].as_array().unwrap();
    assert_eq!(first.len(), 5, "{out:#}");
    for d in first {
        assert_ne!(d["a"]["agent"], d["b"]["agent"]);
        assert!(
            d["a"]["reason"].as_str().unwrap().contains("rule `all`"),
            "{d}"
        );
        assert!(
            d["b"]["reason"].as_str().unwrap().contains("rule `two`"),
            "{d}"
        );
    }
    let text = app.run_ok(&args);
    println!("{text}");
    assert_contains(
        &text,
        &[
            "per agent:",
            "agreement with real",
            "chats decided differently by A and B:",
            "rule `two`",
        ],
    );
}

/// Waits until the worker has no row in hand and none due (rows waiting
/// for a seat are due later).
async fn idle(app: &TestApp) {
    const BUSY: &str = "SELECT COUNT(*) FROM queue WHERE state = 'leased'
        OR (state = 'pending' AND next_attempt_at <= CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))";
    let deadline = Instant::now() + Duration::from_secs(20);
    tokio::time::sleep(Duration::from_millis(20)).await;
    while app.scalar(BUSY).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the worker is still busy after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closes the oldest chat of `chats` open in the sandbox: in HelpCrunch,
/// then by the signed webhook.
async fn close_oldest(
    app: &TestApp,
    post: &impl AsyncFn(Vec<u8>),
    closed: &mut Vec<i64>,
    chats: std::ops::Range<i64>,
) {
    let open = chats.into_iter().find(|&c| {
        app.sandbox.assignee(c).is_some() && app.sandbox.chat_json(c).unwrap()["status"] != "closed"
    });
    let Some(chat) = open else { return };
    app.sandbox
        .update_chat(chat, |c| c.status = "closed".into());
    closed.push(chat);
    let data = json!({"id": chat, "status": "closed"});
    post(webhook_event(&format!("close-{chat}"), "chat.closed", data)).await;
}

const WEEK_RULES: &str = r#"
[agents]
ann = { id = 1, max_open = 1 }
bob = { id = 2, max_open = 1 }

[pools.support]
agents = ["ann", "bob"]
strategy = "round-robin"

[[rule]]
name = "all"
assign = "pool:support"
"#;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// SQL that writes known history.
#[derive(Default)]
struct Seed(Vec<String>);

impl Seed {
    /// A chat that arrived at `at`, closed at `closed`, and really went to
    /// `real`.
    fn chat(&mut self, id: i64, at: i64, closed: Option<i64>, real: &str) {
        let closed = closed.map_or("NULL".into(), |c| c.to_string());
        self.0.push(format!(
            "INSERT INTO chat_history (chat_id, arrived_at, snapshot, attrs, priority, closed_at)
             VALUES ({id}, {at}, '{{\"id\": {id}, \"status\": \"new\"}}', NULL, 0, {closed})"
        ));
        self.0.push(format!(
            "INSERT INTO outcomes (chat_id, at, rule, pool, agent, result, reason)
             VALUES ({id}, {at}, 'all', 'support', '{real}', 'assigned', 'really {real}')"
        ));
    }

    fn mark(&mut self, at: i64, action: &str, agent: &str, until: Option<i64>) {
        let until = until.map_or("NULL".into(), |u| u.to_string());
        self.0.push(format!(
            "INSERT INTO audit (at, actor, action, subject, until, detail)
             VALUES ({at}, 'cli:test', '{action}', '{agent}', {until}, '')"
        ));
    }
}

/// Six days of history before today (UTC): four chats a day at 10-13h,
/// each open 30 minutes, alternating between ann and bob; ann away all of
/// day 3 (away, then back), bob away 10:30-11:30 on day 5 (an away with an
/// end); on day 1 four chats at 15:00:00-03 for two seats, the last two
/// waiting 598 s each for a close, and one chat that never closes.
fn week(today: i64) -> (Seed, Vec<(i64, &'static str)>) {
    let mut s = Seed::default();
    let mut expected = Vec::new();
    let replayed = [
        (6, ["ann", "bob", "ann", "bob"]),
        (5, ["ann", "ann", "bob", "ann"]),
        (4, ["bob", "ann", "bob", "ann"]),
        (3, ["bob", "bob", "bob", "bob"]),
        (2, ["ann", "bob", "ann", "bob"]),
        (1, ["ann", "bob", "ann", "bob"]),
    ];
    for (d, agents) in replayed {
        for (h, agent) in (10..).zip(agents) {
            let (id, at) = (d * 100 + h, today - d * DAY + h * HOUR);
            // One chat really went elsewhere.
            let real = if id == 610 { "bob" } else { agent };
            s.chat(id, at, Some(at + 30 * MIN), real);
            expected.push((id, agent));
        }
    }
    let day1 = today - DAY + 15 * HOUR;
    for (i, agent) in ["ann", "bob", "ann", "bob"].into_iter().enumerate() {
        let at = day1 + i as i64 * 1000;
        let real = if i == 3 { "ann" } else { agent };
        s.chat(91 + i as i64, at, Some(at + 10 * MIN), real);
        expected.push((91 + i as i64, agent));
    }
    s.chat(95, today - DAY + 20 * HOUR, None, "ann");
    expected.push((95, "ann"));
    s.mark(today - 3 * DAY, "away", "ann", None);
    s.mark(today - 3 * DAY + 23 * HOUR, "back", "ann", None);
    let bob_away = today - 5 * DAY + 10 * HOUR + 30 * MIN;
    s.mark(bob_away, "away", "bob", Some(bob_away + HOUR));
    (s, expected)
}

/// (c) A seeded week gives known figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_week_gives_known_figures() {
    let app = TestApp::builder().rules(WEEK_RULES).migrated().await;
    let today = now_ms() / DAY * DAY;
    let (seed, expected) = week(today);
    let pool = app.producer().await;
    for sql in &seed.0 {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let out = json_of(&app.run_ok(&["simulate", "--history", "7d", "--json"]));
    let r = &out["result"];
    assert_eq!(r["chats"], 29, "{out:#}");
    assert_eq!(r["per_agent"], json!({"ann": 14, "bob": 15}), "{out:#}");
    assert_eq!(r["per_result"], json!({"assigned": 29}));
    let got: Vec<(i64, String)> = r["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["chat_id"].as_i64().unwrap(),
                o["agent"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(i64, String)> = expected
        .iter()
        .map(|(id, a)| (*id, a.to_string()))
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want, "{out:#}");
    // Ann, away on day 3, got none of its chats.
    assert!(
        got.iter()
            .filter(|(id, _)| id / 100 == 3)
            .all(|(_, a)| a == "bob")
    );
    assert_eq!(
        r["queue_wait"],
        json!({"count": 29, "p50_ms": 0, "p95_ms": 598_000})
    );
    assert_eq!(
        (r["escalations"].as_u64(), r["handbacks"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(r["agreed"], 27);
    assert_eq!(out["differences"]["count"], 2);
    let first = &out["differences"]["first"];
    assert_eq!(first[0]["chat_id"], 610, "{out:#}");
    assert_eq!(first[0]["b"]["reason"], "really bob");
    assert_eq!(first[1]["chat_id"], 94);
    assert_eq!(out["real"]["per_agent"], json!({"ann": 14, "bob": 15}));

    let text = app.run_ok(&["simulate", "--history", "7d"]);
    println!("{text}");
    assert_contains(
        &text,
        &[
            "29 chats arrived from",
            "time in queue p95",
            "9m 58s",
            "93.1%",
            "chat 610: A ann, real bob",
        ],
    );
}

/// A busy week (5000 chats) replays whole; its speed is in docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_week_replays_whole() {
    let app = TestApp::builder().rules(RULES).migrated().await;
    let start = now_ms() - 7 * DAY + HOUR;
    let pool = app.producer().await;
    let mut tx = pool.begin().await.unwrap();
    for i in 0..5000i64 {
        let at = start + i * 2 * MIN;
        let sql = format!(
            "INSERT INTO chat_history (chat_id, arrived_at, snapshot, priority, closed_at)
             VALUES ({}, {at}, '{{\"id\": {}, \"status\": \"new\"}}', 0, {})",
            10_000 + i,
            10_000 + i,
            at + (5 + i % 40) * MIN
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
    let started = Instant::now();
    let out = json_of(&app.run_ok(&["simulate", "--history", "7d", "--json"]));
    println!(
        "5000 chats over a week: replayed in {} ms ({:?} for the whole command)",
        out["replay_ms"],
        started.elapsed()
    );
    // How fast is measured in docs/benchmarks.md, not asserted here.
    assert_eq!(out["result"]["chats"], 5000);
}

/// (d) Bad usage is exit 2 with a sentence; an empty history says so.
#[tokio::test]
async fn bad_durations_and_an_empty_history_say_so() {
    let app = TestApp::builder().migrated().await;
    for bad in ["7x", "0s", "soon"] {
        let (code, _, err) = app.exec(&["simulate", "--history", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--history"), "{bad}: {err}");
    }
    let (code, _, err) = app.exec(&["simulate", "--history", "1h", "--chats", "x.jsonl"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = app.exec(&["simulate", "--history", "1h", "--against", "missing/"]);
    assert_eq!(code, 2, "{err}");
    let out = app.run_ok(&["simulate", "--history", "1h"]);
    assert!(out.starts_with("no chats recorded from "), "{out}");
    let out = json_of(&app.run_ok(&["simulate", "--history", "1h", "--json"]));
    assert_eq!(out["chats"], 0);
}

both!(
    chat_history_is_recorded_closed_and_read,
    a_producers_bad_values_are_recorded_as_the_worker_read_them,
);

/// The first settle of a chat records it; a later row of the same chat
/// does not move it; the close webhook and reconciliation's closes set
/// `closed_at` once; retention prunes it.
async fn chat_history_is_recorded_closed_and_read(f: Fixture) {
    let mut first = item(7);
    first.snapshot = Some(json!({"id": 7, "status": "new"}));
    first.priority = 3;
    f.store.enqueue(&[first, item(8)]).await.unwrap();
    let claim = key("a", 1);
    let rows = f.store.claim(&claim, LEASE, 2).await.unwrap();
    for row in &rows {
        assert!(
            f.store
                .settle(&settlement(row.id, &claim, assignd::store::Next::Done))
                .await
                .unwrap()
        );
    }
    let arrived: Vec<i64> = rows.iter().map(|r| r.enqueued_at_ms).collect();
    f.store.enqueue(&[item(7)]).await.unwrap();
    let (row, claim) = claim_one(&f).await;
    assert!(
        f.store
            .settle(&settlement(row.id, &claim, assignd::store::Next::Done))
            .await
            .unwrap()
    );

    let closed = WebhookEffect::Closed { chat_id: ChatId(7) };
    f.store
        .apply_webhook("c-7", "chat.closed", &closed)
        .await
        .unwrap();
    f.store
        .record_closes(&[(ChatId(7), 1), (ChatId(8), 42)])
        .await
        .unwrap();
    let h = f.store.history_since(0).await.unwrap();
    assert_eq!(h.chats.len(), 2);
    let (c7, c8) = (&h.chats[0], &h.chats[1]);
    assert_eq!((c7.chat_id, c7.priority), (ChatId(7), 3));
    assert!(arrived.contains(&c7.arrived_at_ms));
    assert_eq!(
        c7.snapshot.as_deref().map(json_of),
        Some(json!({"id": 7, "status": "new"}))
    );
    assert!(c7.closed_at_ms.unwrap() > 1, "the webhook's close stays");
    assert_eq!(
        (c8.chat_id, c8.snapshot.as_deref(), c8.closed_at_ms),
        (ChatId(8), None, Some(42))
    );
    assert_eq!(h.outcomes.len(), 3);

    f.store.prune(now_ms() + 1).await.unwrap();
    assert!(f.store.history_since(0).await.unwrap().chats.is_empty());
}

/// A snapshot, `enqueued_at` or priority a producer wrote with the wrong
/// type (SQLite stores what it is given) or out of bounds is recorded as
/// the worker read it: the history still reads back, and is pruned.
async fn a_producers_bad_values_are_recorded_as_the_worker_read_them(f: Fixture) {
    let sqlite = "INSERT INTO queue (chat_id, snapshot, enqueued_at, priority)
                  VALUES (11, X'7B7D', 'soon', 9223372036854775807)";
    let postgres = "INSERT INTO queue (chat_id, priority) VALUES (11, 9223372036854775807)";
    let sql = match f.raw {
        Raw::Sqlite(_) => sqlite,
        Raw::Postgres(_) => postgres,
    };
    f.producer(sql).await.unwrap();
    let (row, claim) = claim_one(&f).await;
    let next = assignd::store::Next::Done;
    assert!(
        f.store
            .settle(&settlement(row.id, &claim, next))
            .await
            .unwrap()
    );
    let h = f.store.history_since(0).await.unwrap();
    assert_eq!(h.chats.len(), 1);
    let c = &h.chats[0];
    assert_eq!((c.chat_id, c.snapshot.as_deref()), (ChatId(11), None));
    assert_eq!(c.priority, 1_000_000, "bounded as the claim bounds it");
    assert!(c.arrived_at_ms > 0 && c.arrived_at_ms <= now_ms());
    f.store.prune(now_ms() + 1).await.unwrap();
    assert!(f.store.history_since(0).await.unwrap().chats.is_empty());
}
