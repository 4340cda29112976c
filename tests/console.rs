//! The web console (`/console/`) in a real browser: the real `assignd run`
//! with a console token, and headless Chromium driven by playwright-core
//! (tests/browser/console.mjs) signing in, marking an agent away and back,
//! retrying a dead letter, reading a chat's decisions and the audit, while
//! forged cross-site posts and a wrong token are refused and no page,
//! header, cookie, log line or database byte holds a secret.
//!
//! Needs node, Debian's chromium and `npm ci --prefix tests/browser`
//! (.ci/run installs them): missing, SKIPPED on stderr, or a failure under
//! CI=true. Screenshots of every page go to the test's temp dir; with
//! ASSIGND_UPDATE_SCREENSHOTS=1 the agents page's also goes to
//! docs/console.png.

#[path = "support/browser.rs"]
mod browser;
mod common;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use browser::Said;
use common::{ABC, Daemon, TestApp, file_contains, terminate};

/// Canary secrets: none may show up anywhere the console reaches.
const API_KEY: &str = "canary-api-3c9e51d0b7a84f26e1";
const CONSOLE_TOKEN: &str = "canary-console-7f3a9b2e4d6c18a5f0";
const WEBHOOK_KEY: &str = "canary-webhook-5d1f8a2c6e904b37d2";
const INTAKE_TOKEN: &str = "canary-intake-9b4e0c7a2f6d15e8a3";
const SECRETS: [&str; 4] = [API_KEY, CONSOLE_TOKEN, WEBHOOK_KEY, INTAKE_TOKEN];

/// Who signs in.
const NAME: &str = "dana";
/// The agent marked away and back, and the one forged posts try to mark away.
const AWAY: (&str, i64) = ("bob", 4761);
const VICTIM: &str = "alice";
/// The rule of [`common::THREE_AGENTS`].
const RULE: &str = "everything";
/// Chats assigned before the browser starts (the chart's bars, the chat
/// page's search), while an agent is away, and the dead letter's.
const FIRST: [i64; 3] = [101, 102, 103];
const WHILE_AWAY: [i64; 6] = [201, 202, 203, 204, 205, 206];
const DEAD_CHAT: i64 = 300;
const DEAD_REASON: &str = "HelpCrunch answered 503 ten times";
/// A chat that waits (its next try an hour away) on the queue page.
const WAITING_CHAT: i64 = 400;
const WAITING_REASON: &str = "HelpCrunch answered 429";

const LOG: &str = "daemon.log";

/// Polls `count(from)` until it reaches `at_least`; whether it did in `timeout`.
async fn reaches(app: &TestApp, from: &str, at_least: i64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if app.count(from).await >= at_least {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Open chats per agent, as the routing counts them.
async fn open_chats(app: &TestApp) -> BTreeMap<String, i64> {
    let mut open: BTreeMap<String, i64> = ABC.iter().map(|(a, _)| (a.to_string(), 0)).collect();
    let pool = app.producer().await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT agent, COUNT(*) FROM open_chats GROUP BY agent")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    open.extend(rows);
    open
}

/// The assigned outcomes of `chat`: (agent, agent id).
async fn assigned(app: &TestApp, chat: i64) -> Vec<(Option<String>, Option<i64>)> {
    app.chat_rows(
        "SELECT agent, agent_id FROM outcomes WHERE chat_id = ? AND result = 'assigned'",
        chat,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let Some(browser) = browser::browser() else {
        return;
    };
    let started = Instant::now();
    let (app, mut daemon, base) = start_daemon().await;
    let dead_row = seed(&app, &daemon).await;
    let dir = app.dir.path().to_path_buf();
    let shots = dir.join("screenshots");
    std::fs::create_dir(&shots).unwrap();
    let agent_names: Vec<&str> = ABC.iter().map(|(a, _)| *a).collect();
    let env = [
        ("CONSOLE_URL", base.clone()),
        ("CONSOLE_TOKEN", CONSOLE_TOKEN.to_string()),
        ("CONSOLE_NAME", NAME.to_string()),
        ("CANARIES", json!(SECRETS).to_string()),
        ("AGENTS", json!(agent_names).to_string()),
        ("AWAY_AGENT", AWAY.0.to_string()),
        ("VICTIM_AGENT", VICTIM.to_string()),
        ("SEARCH_CHAT", FIRST[0].to_string()),
        ("RULE", RULE.to_string()),
        ("DEAD_ROW", dead_row.to_string()),
        ("DEAD_CHAT", DEAD_CHAT.to_string()),
        ("DEAD_REASON", DEAD_REASON.to_string()),
        ("WAITING_CHAT", WAITING_CHAT.to_string()),
        ("WAITING_REASON", WAITING_REASON.to_string()),
        ("SHOT_DIR", shots.display().to_string()),
    ];
    let mut script = browser.start("console", &env);
    let result = loop {
        let (step, data) = match script.next(Duration::from_secs(60)).await {
            Said::Done(result) => break result,
            Said::Step(step, data) => (step, data),
        };
        let (mut reply, failures) = check_step(&app, &step, &data, dead_row).await;
        for f in &failures {
            println!("FAIL (rust, step {step}): {f}");
        }
        reply["failures"] = json!(failures);
        script.reply(&reply).await;
    };

    let shot_failures = screenshots(&shots);
    print_page_weight(&result);
    let outside = outside_the_browser(&mut daemon, &dir);
    verdict(&result, shot_failures, outside, started, &daemon);
}

/// The real `assignd run` with every secret a canary and the console on;
/// the app, the daemon and the listener's base URL.
async fn start_daemon() -> (TestApp, Daemon, String) {
    let app = TestApp::builder().key(API_KEY).listen().build().await;
    let dir = app.dir.path().to_path_buf();
    for (file, secret) in [
        ("console-token", CONSOLE_TOKEN),
        ("webhook-key", WEBHOOK_KEY),
        ("intake-token", INTAKE_TOKEN),
    ] {
        std::fs::write(dir.join(file), format!("{secret}\n")).unwrap();
    }
    // `.listen()` makes `[http]` the config's last table.
    app.edit_config(|c| {
        format!(
            "{c}webhook_key_file = \"webhook-key\"\nintake_token_file = \"intake-token\"\n\
             console_token_file = \"console-token\"\n"
        )
    });
    app.migrate().await;
    let daemon = Daemon {
        child: app.spawn_daemon(LOG),
        log: dir.join(LOG),
    };
    let addr = app.listener_addr(LOG).await;
    let base = format!("http://{addr}");
    (app, daemon, base)
}

/// History for the chart and the chat page, a dead letter and a waiting
/// row; the dead row's id.
async fn seed(app: &TestApp, daemon: &Daemon) -> i64 {
    // History for the chart and the chat page, and a dead letter.
    app.insert_raw(FIRST).await;
    assert!(
        reaches(
            app,
            "outcomes WHERE result = 'assigned' AND chat_id BETWEEN 101 AND 103",
            3,
            Duration::from_secs(10),
        )
        .await,
        "the first chats were not assigned; the log:\n{}",
        daemon.log_text()
    );
    app.execute(
        "INSERT INTO queue (chat_id, state, attempts, last_error)
         VALUES (300, 'dead', 10, 'HelpCrunch answered 503 ten times')",
    )
    .await;
    app.execute(
        "INSERT INTO queue (chat_id, attempts, last_error, next_attempt_at)
         VALUES (400, 1, 'HelpCrunch answered 429',
                 CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + 3600000)",
    )
    .await;
    app.scalar("SELECT id FROM queue WHERE chat_id = 300 AND state = 'dead'")
        .await
}

/// Scenario 8: every page's screenshot, and docs/console.png on request.
fn screenshots(shots: &Path) -> Vec<String> {
    let mut shot_failures = Vec::new();
    println!("screenshots (in the test's temp dir, removed at its end):");
    for page in ["signin", "agents", "queue", "chat", "audit"] {
        let file = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        println!("  {page}: {} ({size} bytes)", file.display());
        if size == 0 {
            shot_failures.push(format!("no screenshot of the {page} page"));
        }
    }
    if std::env::var("ASSIGND_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
        if let Err(e) = std::fs::copy(shots.join("agents.png"), &docs) {
            panic!("cannot copy agents.png to {}: {e}", docs.display());
        }
        println!("  copied agents.png to {}", docs.display());
    }
    shot_failures
}

/// The page weight: each page's HTML and stylesheet as received.
fn print_page_weight(result: &serde_json::Value) {
    println!("page weight (bytes as received; encoded body in parentheses):");
    for (page, w) in result["pages"].as_object().into_iter().flatten() {
        let html = w["html_bytes"].as_i64().unwrap_or(0);
        let css = w["css_bytes"].as_i64().unwrap_or(0);
        println!(
            "  {page:<15} html {html:>6} ({}) + css {css:>6} ({}) = {:>6}  {}",
            w["html_encoded"],
            w["css_encoded"],
            html + css,
            w["url"].as_str().unwrap_or_default()
        );
    }
}

/// Scenario 7, outside the browser: the log and the database files; and
/// a clean stop.
fn outside_the_browser(daemon: &mut Daemon, dir: &Path) -> Vec<String> {
    daemon.assert_running("after the browser run");
    let status = terminate(&mut daemon.child, Duration::from_secs(10));
    let mut outside = Vec::new();
    for secret in SECRETS {
        if file_contains(&daemon.log, secret.as_bytes()) {
            outside.push(format!("the daemon's log holds the secret {secret}"));
        }
    }
    for file in ["assignd.db", "assignd.db-wal", "assignd.db-shm"] {
        let path = dir.join(file);
        if file_contains(&path, CONSOLE_TOKEN.as_bytes()) {
            outside.push(format!("{file} holds the console token"));
        }
    }
    if !status.success() {
        outside.push(format!("assignd exited with {status} after SIGTERM"));
    }
    outside
}

/// Every scenario's verdict: printed, and the test fails if any failed.
fn verdict(
    result: &serde_json::Value,
    shot_failures: Vec<String>,
    outside: Vec<String>,
    started: Instant,
    daemon: &Daemon,
) {
    let mut scenarios: BTreeMap<String, Vec<String>> = result["scenarios"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, f)| {
            let list = f.as_array().into_iter().flatten();
            (
                name.clone(),
                list.map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect(),
            )
        })
        .collect();
    scenarios.insert("8 screenshots".into(), shot_failures);
    scenarios
        .entry("7 no secret anywhere".into())
        .or_default()
        .extend(outside);
    println!("scenarios ({:.1} s):", started.elapsed().as_secs_f64());
    let mut failed = 0;
    for (name, failures) in &scenarios {
        if failures.is_empty() {
            println!("  pass  {name}");
        } else {
            failed += 1;
            println!("  FAIL  {name}");
            for f in failures {
                println!("          - {f}");
            }
        }
    }
    assert!(
        scenarios.len() >= 8,
        "scenarios missing from the result: {scenarios:?}"
    );
    assert_eq!(
        failed,
        0,
        "{failed} console scenario(s) failed: {:#?}\nthe daemon's log ends:\n{}",
        scenarios
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .collect::<Vec<_>>(),
        tail(&daemon.log_text(), 40)
    );
}

/// What the Rust side checks at a step of the script: its reply (extra
/// data for the script) and what failed.
async fn check_step(
    app: &TestApp,
    step: &str,
    data: &serde_json::Value,
    dead_row: i64,
) -> (serde_json::Value, Vec<String>) {
    let mut reply = json!({});
    let failures = match step {
        "signed_in" => signed_in(app).await,
        "away" => {
            let (open, failures) = while_away(app).await;
            reply = json!({ "open": open });
            failures
        }
        "back" => back(app).await,
        "forged" => forged(app).await,
        "retried" => retried(app, dead_row).await,
        "chat" => chat_page(app, data).await,
        "backlog" => {
            reply = backlog(app).await;
            vec![]
        }
        other => vec![format!("unknown step {other}")],
    };
    (reply, failures)
}

/// Scenario 9: a backlog of a few hundred waiting rows (three
/// priorities, many of the same enqueue time) and dead rows, over several
/// pages; every active row's id in page order (priority, then oldest, then
/// id) and every dead row's (the newest first).
async fn backlog(app: &TestApp) -> serde_json::Value {
    app.execute(
        "INSERT INTO queue (chat_id, priority, last_error, next_attempt_at, enqueued_at)
         WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < 260)
         SELECT 10000 + g, g % 3 - 1, 'HelpCrunch answered 429',
                CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + 3600000,
                1700000000000 + g % 40 * 1000 FROM c",
    )
    .await;
    app.execute(
        "INSERT INTO queue (chat_id, state, last_error)
         WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < 230)
         SELECT 20000 + g, 'dead', 'HelpCrunch answered 404' FROM c",
    )
    .await;
    let pool = app.producer().await;
    let mut active: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT id, priority, enqueued_at FROM queue WHERE state IN ('pending', 'leased')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    active.sort_by_key(|&(id, priority, at)| (-priority, at, id));
    let mut dead: Vec<i64> = sqlx::query_scalar("SELECT id FROM queue WHERE state = 'dead'")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    dead.sort_by_key(|&id| -id);
    let waiting: Vec<i64> = active.iter().map(|r| r.0).collect();
    json!({ "waiting": waiting, "dead": dead })
}

/// Scenario 1: the sign-in is in the audit, by its name.
async fn signed_in(app: &TestApp) -> Vec<String> {
    let n = app
        .count("audit WHERE action = 'sign_in' AND actor = 'console:dana'")
        .await;
    if n == 1 {
        vec![]
    } else {
        vec![format!("{n} `sign_in` audit rows for {NAME}, want 1")]
    }
}

/// Scenario 2: away in the database; every chat enqueued now goes to
/// someone else. Also the open chats per agent, for the page's check.
async fn while_away(app: &TestApp) -> (BTreeMap<String, i64>, Vec<String>) {
    let mut failures = Vec::new();
    if app.count("agent_away WHERE agent = 'bob'").await != 1 {
        failures.push(format!(
            "agent_away has no row for {} after Mark away",
            AWAY.0
        ));
    }
    app.insert_raw(WHILE_AWAY).await;
    let done = reaches(
        app,
        "outcomes WHERE result = 'assigned' AND chat_id BETWEEN 201 AND 206",
        WHILE_AWAY.len() as i64,
        Duration::from_secs(15),
    )
    .await;
    if !done {
        failures.push(format!(
            "the chats {WHILE_AWAY:?} enqueued while {} was away were not all assigned in 15 s",
            AWAY.0
        ));
    }
    let mut to = BTreeMap::<String, usize>::new();
    for chat in WHILE_AWAY {
        for (agent, id) in assigned(app, chat).await {
            let agent = agent.unwrap_or_default();
            if agent == AWAY.0 || id == Some(AWAY.1) {
                failures.push(format!("chat {chat} went to {} while away", AWAY.0));
            }
            *to.entry(agent).or_default() += 1;
        }
        if app.sandbox.assignee(chat) == Some(AWAY.1) {
            failures.push(format!(
                "the sandbox has chat {chat} assigned to {}",
                AWAY.0
            ));
        }
    }
    println!("while {} was away: {to:?}", AWAY.0);
    if to.len() != 2 {
        failures.push(format!(
            "while {} was away the chats went to {to:?}, want alice and carol both",
            AWAY.0
        ));
    }
    (open_chats(app).await, failures)
}

/// Scenario 2, back: the flag is gone; the audit has both changes by name.
async fn back(app: &TestApp) -> Vec<String> {
    let mut failures = Vec::new();
    if app.count("agent_away").await != 0 {
        failures.push(format!(
            "agent_away still has a row after {} was marked back",
            AWAY.0
        ));
    }
    let both =
        "audit WHERE actor = 'console:dana' AND subject = 'bob' AND action IN ('away', 'back')";
    if app.count(both).await != 2 {
        failures.push(format!(
            "the audit table has not one away and one back by {NAME} for {}",
            AWAY.0
        ));
    }
    failures
}

/// Scenario 6: the forged posts changed nothing.
async fn forged(app: &TestApp) -> Vec<String> {
    let mut failures = Vec::new();
    if app.count("agent_away").await != 0 {
        failures.push(format!(
            "a forged POST marked {VICTIM} away (agent_away has a row)"
        ));
    }
    if app.count("audit WHERE subject = 'alice'").await != 0 {
        failures.push(format!(
            "the audit has a change for {VICTIM} after the forged POSTs"
        ));
    }
    failures
}

/// Scenario 3: the revived row is assigned, and the retry audited.
async fn retried(app: &TestApp, dead_row: i64) -> Vec<String> {
    let mut failures = Vec::new();
    let assigned = "outcomes WHERE chat_id = 300 AND result = 'assigned'";
    if !reaches(app, assigned, 1, Duration::from_secs(10)).await {
        failures.push(format!(
            "the retried row {dead_row} (chat {DEAD_CHAT}) was not assigned in 10 s"
        ));
    }
    if app
        .count("queue WHERE chat_id = 300 AND state = 'dead'")
        .await
        != 0
    {
        failures.push(format!("chat {DEAD_CHAT} still has a dead row after Retry"));
    }
    if app.sandbox.assignee(DEAD_CHAT).is_none() {
        failures.push(format!(
            "the sandbox has no assignee for chat {DEAD_CHAT} after Retry"
        ));
    }
    let audited = "audit WHERE action = 'retry' AND actor = 'console:dana'";
    if app.count(audited).await != 1 {
        failures.push(format!("the audit table has no retry by {NAME}"));
    }
    failures
}

/// Scenario 4: the decisions shown are the database's.
async fn chat_page(app: &TestApp, data: &serde_json::Value) -> Vec<String> {
    let rows = assigned(app, FIRST[0]).await;
    let agent = rows
        .first()
        .and_then(|(a, _)| a.clone())
        .unwrap_or_default();
    let shown = data["decisions"].to_string();
    if agent.is_empty() || !shown.contains(&agent) {
        return vec![format!(
            "table#decisions does not name the agent the outcome has ({agent:?}): {shown}"
        )];
    }
    Vec::new()
}

/// The last `n` lines of `text` above debug level.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
