//! Issue 14: the queue order. An urgent chat goes with the very next call,
//! however long the backlog at the rate limit; chats that wait for a seat
//! are taken by their rule's priority, then oldest first.

mod common;

use std::collections::HashSet;
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

/// Waits until `puts_seen` PUTs went, then `off_ms` more, so that what comes
/// next lands off the limiter's slot boundary by a varying amount.
async fn drained_to(app: &TestApp, puts_seen: usize, off_ms: u64) {
    common::wait_for(
        "the backlog to drain at the limit",
        Duration::from_secs(30),
        || puts(&app.sandbox).len() >= puts_seen,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(off_ms)).await;
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
        drained_to(&app, 5 + n * 8, 17 * n as u64).await;
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

/// Issue 21: a rule's `priority` counts from the first claim. The VIP rule
/// reads only the producer's `attrs`; the chats themselves are read from
/// HelpCrunch (`fetch_chat = "auto"`, no snapshot), so every backlog chat
/// takes two calls.
fn vip_rules() -> String {
    let rules = format!(
        "[[rule]]\nname = \"vip\"\nmatch = {{ attr.tier = \"vip\" }}\npriority = 10\nassign = \"pool:support\"\n\n{}",
        common::TO_SUPPORT
    );
    support_rules(&common::ABC, "", &rules)
}

const BACKLOG: i64 = 60;
const INTAKE_TOKEN: &str = "intake-token";

/// The backlog chats pending (not yet claimed) as seen by `db`.
async fn pending_backlog<'c>(db: impl sqlx::SqliteExecutor<'c>) -> HashSet<i64> {
    sqlx::query_scalar("SELECT chat_id FROM queue WHERE state = 'pending' AND chat_id <= ?")
        .bind(BACKLOG)
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Inserts a VIP chat as a producer would, with plain SQL, and reads the
/// backlog chats still pending in the same transaction: SQLite has one
/// writer, so no claim can come between the read and the commit, and the
/// set is exactly the backlog still waiting when the VIP row appeared.
async fn insert_vip(app: &TestApp, chat: i64) -> HashSet<i64> {
    let pool = app.producer().await;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO queue (chat_id, attrs) VALUES (?, '{\"tier\": \"vip\"}')")
        .bind(chat)
        .execute(&mut *tx)
        .await
        .unwrap();
    let waiting = pending_backlog(&mut *tx).await;
    tx.commit().await.unwrap();
    pool.close().await;
    waiting
}

/// Enqueues a VIP chat with `POST /v1/enqueue`. The commit happens inside
/// the daemon, so the backlog pending at that instant is bracketed: a chat
/// pending before the request and still pending after its answer was
/// pending at the commit. Returns those, and how many chats were claimed
/// while the request ran (before or after the commit: not told apart, so
/// not counted either way).
async fn enqueue_vip(app: &TestApp, base: &str, chat: i64) -> (HashSet<i64>, usize) {
    let pool = app.producer().await;
    let before = pending_backlog(&pool).await;
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/enqueue"))
        .bearer_auth(INTAKE_TOKEN)
        .json(&serde_json::json!({"chat_id": chat, "attrs": {"tier": "vip"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let after = pending_backlog(&pool).await;
    pool.close().await;
    let during = before.difference(&after).count();
    (before.intersection(&after).copied().collect(), during)
}

/// Backlog chats assigned before `vip`: how many of those in `waiting`,
/// and how many others (claimed before its commit: in flight) whose PUT
/// came after `since`; `None` while `vip` has no PUT.
fn went_before(
    app: &TestApp,
    vip: i64,
    waiting: &HashSet<i64>,
    since: Instant,
) -> Option<(usize, usize)> {
    let all = puts(&app.sandbox);
    let own = all.iter().position(|p| p.chat == vip)?;
    let backlog = || all[..own].iter().filter(|p| p.chat <= BACKLOG);
    let pending = backlog().filter(|p| waiting.contains(&p.chat)).count();
    let in_flight = backlog()
        .filter(|p| !waiting.contains(&p.chat) && p.received > since)
        .count();
    Some((pending, in_flight))
}

/// One VIP chat's figures: backlog chats still pending at its commit that
/// were assigned before it (must be 0); chats already claimed (in flight)
/// whose calls still went first; chats claimed while its request ran.
type VipFigures = (usize, usize, usize);

/// Three VIP chats behind a backlog of 60 at 10 calls a second, each
/// while at least 30 backlog chats wait.
async fn vip_behind_backlog(by_api: bool) -> Vec<VipFigures> {
    let mut builder = TestApp::builder().rules(&vip_rules()).rate(RATE);
    if by_api {
        builder = builder.listen();
    }
    let app = builder.worker("concurrency = 8").migrated().await;
    let secrets = assignd::http::ListenerSecrets::new(
        None,
        Some(assignd::secrets::Secret::new(INTAKE_TOKEN)),
    );
    let daemon = app.start_serving(secrets).await;
    let base = daemon.http_addr.map(|a| format!("http://{a}"));
    app.feed(&daemon, 1..=BACKLOG).await;
    let mut figures = Vec::new();
    for (n, vip) in (90_001..=90_003).enumerate() {
        drained_to(&app, 4 + n * 8, 23 * n as u64).await;
        let since = Instant::now();
        let (waiting, during) = match &base {
            Some(base) => enqueue_vip(&app, base, vip).await,
            None => (insert_vip(&app, vip).await, 0),
        };
        let mut before = None;
        common::wait_for("the VIP chat's PUT", Duration::from_secs(10), || {
            before = went_before(&app, vip, &waiting, since);
            before.is_some()
        })
        .await;
        let (pending, in_flight) = before.unwrap();
        figures.push((pending, in_flight, during));
    }
    let backlog_left = puts(&app.sandbox)
        .iter()
        .filter(|p| p.chat <= BACKLOG)
        .count();
    let backlog_left = BACKLOG as usize - backlog_left;
    assert!(
        backlog_left >= 30,
        "the backlog ran out too early: {backlog_left} left"
    );
    let ranked = app
        .scalar("SELECT COUNT(*) FROM queue WHERE chat_id > 90000 AND priority = 10")
        .await;
    assert_eq!(ranked, 3, "each VIP row carries its rule's priority");
    app.wait_drained(Duration::from_secs(60)).await;
    daemon.stop().await;
    figures
}

/// A chat still pending when the VIP row was committed can be assigned
/// before it only if a claim made after that commit chose it over the VIP:
/// that must never happen. The chats claimed before the commit (in flight)
/// may still reach HelpCrunch first; they are not counted.
fn assert_next(how: &str, figures: &[VipFigures]) {
    let before: Vec<usize> = figures.iter().map(|f| f.0).collect();
    let in_flight: Vec<usize> = figures.iter().map(|f| f.1).collect();
    let during: Vec<usize> = figures.iter().map(|f| f.2).collect();
    println!(
        "VIP chats (rule priority 10, by {how}) behind a backlog of {BACKLOG} at 10/s: \
         backlog chats pending at the VIP's commit assigned before it {before:?}; \
         in flight, assigned before it {in_flight:?}; claimed while the request ran {during:?}"
    );
    assert!(
        before.iter().all(|&n| n == 0),
        "a VIP chat waited behind the backlog: {before:?}"
    );
}

#[tokio::test]
async fn a_vip_row_inserted_with_plain_sql_goes_with_the_next_claim() {
    assert_next("plain SQL", &vip_behind_backlog(false).await);
}

#[tokio::test]
async fn a_vip_chat_from_the_enqueue_api_goes_with_the_next_claim() {
    assert_next("POST /v1/enqueue", &vip_behind_backlog(true).await);
}
