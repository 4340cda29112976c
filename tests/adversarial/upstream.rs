//! Upstream answers that try to fool the daemon (issue 10): a redirect to
//! another host, an absurd or date-valued `Retry-After`, an error page that
//! echoes the API key. The real binary against the sandbox's tricks; what
//! counts is what reaches HelpCrunch, the database, the log, `status`,
//! `queue list` and `/metrics`.

use std::process::Child;
use std::time::{Duration, Instant};

use assignd::sandbox::{DateForm, Sandbox, SandboxConfig, Trick};
use reqwest::header::HeaderValue;

use crate::common::*;

/// The API key of the echo case: it must show up nowhere.
const CANARY: &str = "canary-SECRET-7f3a9c";

/// `Retry-After`'s cap, in milliseconds.
const CAP_MS: u64 = assignd::helpcrunch::retry_after::MAX_RETRY_AFTER.as_millis() as u64;

async fn app_with(worker: &str, key: &str) -> TestApp {
    let worker = format!("fetch_chat = \"never\"\n{worker}");
    let app = TestApp::builder().worker(&worker).key(key).build().await;
    app.migrate().await;
    app
}

/// The daemon is still up, and never panicked.
fn still_running(app: &TestApp, daemon: &mut Child, log: &str) {
    let text = app.log(log);
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon died: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

fn cli(app: &TestApp, args: &[&str]) -> String {
    let out = app.command(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "assignd {args:?}: {text}");
    text
}

/// Every redirect status, to another loopback server that would answer
/// 200 to anything: nothing is followed, nothing is recorded `assigned`,
/// each row ends dead with the reason; once the base URL answers again, a
/// retry of the dead rows assigns every chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_never_followed_nor_taken_for_an_assignment() {
    let app = app_with("max_attempts = 2", "test-key").await;
    let elsewhere = Sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    elsewhere.set_trick(Some(Trick::AcceptAll));
    let mut daemon = app.spawn_daemon("redirect.log");
    let statuses = [301, 302, 307, 308];
    for (chat, status) in (1..).zip(statuses) {
        app.sandbox.set_trick(Some(Trick::Redirect {
            status,
            to: format!("http://{}", elsewhere.addr()),
        }));
        app.insert_raw([chat]).await;
        app.wait_drained(Duration::from_secs(30)).await;
    }
    still_running(&app, &mut daemon, "redirect.log");
    assert!(elsewhere.requests().is_empty(), "a redirect was followed");
    assert_eq!(app.count("outcomes WHERE result = 'assigned'").await, 0);
    let dead = app
        .rows("SELECT chat_id, state, last_error FROM queue ORDER BY chat_id")
        .await;
    assert_eq!(dead.len(), statuses.len());
    for ((chat, state, why), status) in dead.iter().zip(statuses) {
        let why = why.clone().unwrap_or_default();
        assert_eq!(state, "dead", "chat {chat}: {why}");
        let said = format!(
            "HTTP {status} redirect to http://{}/v1/chats/assignee refused",
            elsewhere.addr()
        );
        assert!(
            why.contains(&said) && why.contains("follows no redirects"),
            "{why}"
        );
    }
    let codes = app
        .count("outcomes WHERE error_code = 'redirect_refused' AND http_status BETWEEN 300 AND 399")
        .await;
    assert!(codes >= statuses.len() as i64, "{codes} refusals recorded");

    // The operator fixes the base URL (here: the redirect stops).
    app.sandbox.set_trick(None);
    cli(&app, &["queue", "retry", "--dead"]);
    app.wait_drained(Duration::from_secs(30)).await;
    for chat in 1..=statuses.len() as i64 {
        assert!(app.sandbox.assignee(chat).is_some(), "chat {chat}");
    }
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());
}

/// The pause a 429 imposed, as the log reports it (`pause_ms=`).
fn logged_pauses(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("all calls pause"))
        .filter_map(|l| l.split("pause_ms=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Garbage, then `Retry-After: 99999999999999999999`: no panic, the pause
/// is the cap (in the log and in `status`), and once the fault is cleared
/// the work is done (after a restart: the pause itself lasts the cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_is_capped_and_never_panics() {
    let app = app_with("", "test-key").await;
    let garbage = HeaderValue::from_bytes(b"\xff\xfe -1 NaN").unwrap();
    app.sandbox.set_trick(Some(Trick::RetryAfter(garbage)));
    let mut daemon = app.spawn_daemon("absurd.log");
    app.insert_raw(1..=3).await;
    // Unreadable: the limiter's own backoff (1 s, then 2 s) applies.
    wait_for("a second 429", Duration::from_secs(20), || {
        app.sandbox.rejected_429() >= 2
    })
    .await;
    let absurd = HeaderValue::from_static("99999999999999999999");
    app.sandbox.set_trick(Some(Trick::RetryAfter(absurd)));
    let asked = jiff::Timestamp::now();
    wait_for("the capped pause", Duration::from_secs(20), || {
        let log = app.log("absurd.log");
        log.contains("panicked") || logged_pauses(&log).contains(&CAP_MS)
    })
    .await;
    still_running(&app, &mut daemon, "absurd.log");
    let pauses = logged_pauses(&app.log("absurd.log"));
    assert!(pauses.iter().all(|p| *p <= CAP_MS), "{pauses:?}");
    assert!(
        pauses.iter().any(|p| *p < CAP_MS),
        "the garbage got a backoff: {pauses:?}"
    );

    // `status` shows the long pause once the worker's loop has seen it.
    let paused_until = |status: &str| -> Option<jiff::Timestamp> {
        let rest = status.split("paused until ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    let minute = jiff::SignedDuration::from_secs(60);
    let mut status = String::new();
    wait_for("status to show the pause", Duration::from_secs(20), || {
        status = cli(&app, &["status"]);
        paused_until(&status).is_some_and(|u| u > asked + minute)
    })
    .await;
    let until = paused_until(&status).unwrap();
    let cap = jiff::SignedDuration::from_millis(CAP_MS as i64 + 5_000);
    assert!(until <= asked + cap, "paused until {until}: {status}");
    assert_eq!(app.count("queue WHERE state = 'dead'").await, 0);

    app.sandbox.set_trick(None);
    assert!(terminate(&mut daemon, Duration::from_secs(20)).success());
    let mut daemon = app.spawn_daemon("after.log");
    app.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(app.count("queue WHERE state = 'done'").await, 3);
    assert!(!app.log("after.log").contains("panicked"));
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());
}

/// `Retry-After` as an HTTP date about 3 s ahead: after the 429 that
/// carried it, no PUT reaches HelpCrunch before that date (a client that
/// ignored it would retry after 1 s), and then every chat is assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_is_honoured() {
    let app = app_with("concurrency = 1", "test-key").await;
    app.sandbox.set_trick(Some(Trick::RetryAt {
        lead: Duration::from_secs(3),
        form: DateForm::ImfFixdate,
    }));
    let mut daemon = app.spawn_daemon("date.log");
    app.insert_raw(1..=3).await;
    app.wait_drained(Duration::from_secs(30)).await;
    still_running(&app, &mut daemon, "date.log");
    let date = app.sandbox.retry_date().expect("the date was given");
    let puts: Vec<_> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    let early: Vec<_> = puts.iter().filter(|r| r.time < date).collect();
    assert!(early.iter().all(|r| r.status == 429), "{early:?}");
    assert!(
        early.len() <= 1,
        "{} PUTs before {date}, the date a 429 gave: {early:?}",
        early.len()
    );
    assert_eq!(puts.iter().filter(|r| r.status == 200).count(), 3);
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());
}

/// One echo page for a while: `chats` queued and `notes` in the outbox,
/// until every queued row is finished.
async fn echo_phase(app: &TestApp, status: u16, json: bool, chats: [i64; 2]) {
    app.sandbox
        .set_trick(Some(Trick::EchoHeaders { status, json }));
    app.insert_raw(chats[0]..=chats[1]).await;
    app.queue_notes(100 + chats[0]..=100 + chats[1]).await;
    app.wait_drained(Duration::from_secs(30)).await;
}

/// Neither the key nor its first 8 characters in any of `texts` or the
/// database files.
fn assert_nowhere(app: &TestApp, texts: &[(&str, String)]) {
    let prefix = &CANARY[..8];
    for (what, text) in texts {
        assert!(!text.contains(prefix), "the key in {what}: {text}");
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = app.dir.path().join(format!("assignd.db{suffix}"));
        assert!(
            !file_contains(&path, prefix.as_bytes()),
            "the key in {path:?}"
        );
    }
}

/// Error pages that echo the request headers (HTML 502, then a JSON 400),
/// for assignments and notes: the canary key reaches none of the log, the
/// database files, `status`, `queue list` or `/metrics`, though the errors
/// themselves are shown, redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_api_key_is_redacted_everywhere() {
    // A 502 may have been applied: the retry reads the chat a lease later.
    let app = app_with("max_attempts = 2\nlease = \"6s\"", CANARY).await;
    let config =
        std::fs::read_to_string(&app.config_path).unwrap() + "\n[http]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&app.config_path, config).unwrap();
    let mut daemon = app.spawn_daemon("echo.log");
    let addr = app.listener_addr("echo.log").await;
    echo_phase(&app, 502, false, [1, 3]).await;
    echo_phase(&app, 400, true, [4, 6]).await;
    // Every note has been tried and has failed at least once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.count("outbox WHERE last_error IS NULL").await > 0 {
        assert!(Instant::now() < deadline, "notes were never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_running(&app, &mut daemon, "echo.log");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status = cli(&app, &["status"]);
    let listed = cli(&app, &["queue", "list"]);
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());

    // The echoes reached the daemon, and what it shows of them is redacted.
    let rows = app
        .rows("SELECT chat_id, state, last_error FROM queue ORDER BY chat_id")
        .await;
    assert_eq!(rows.len(), 6);
    let notes = app
        .rows("SELECT chat_id, state, last_error FROM outbox WHERE last_error IS NOT NULL")
        .await;
    assert!(!notes.is_empty(), "no note failed");
    for (chat, state, why) in rows.iter().chain(&notes) {
        let why = why.clone().unwrap_or_default();
        assert!(why.contains("***"), "chat {chat} ({state}): {why}");
    }
    assert!(rows.iter().all(|r| r.1 == "dead"), "{rows:?}");
    assert!(listed.contains("***"), "{listed}");
    let log = app.log("echo.log");
    let texts = [
        ("the log", log),
        ("status", status),
        ("queue list", listed),
        ("/metrics", metrics),
    ];
    assert_nowhere(&app, &texts);
}
