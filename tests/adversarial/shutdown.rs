//! SIGTERM whatever is stalled: during a 429 pause, with PUTs or notes that
//! never answer. The daemon exits 0 within the 10 s of the contract, and
//! leaves no queue row leased and no outbox message claimed; a restart then
//! finishes everything, so nothing is lost.

use std::time::{Duration, Instant};

use assignd::sandbox::{Faults, SandboxLimit, Window};

use crate::common::*;

/// The contract's bound on a clean stop (SPEC §6).
const STOP_BOUND: Duration = Duration::from_secs(10);

/// Long enough that nothing stalled can finish inside [`STOP_BOUND`].
const HANG: Duration = Duration::from_secs(40);

/// [`THREE_AGENTS`] with a note on every assignment, so the outbox has
/// work too.
fn with_notes() -> String {
    format!("{THREE_AGENTS}note = \"routed to {{agent}}\"\n")
}

/// A 429 whose `Retry-After` is about a minute: 3 calls a minute.
fn tight_limit() -> Option<SandboxLimit> {
    Some(SandboxLimit {
        requests: 3,
        per: Duration::from_secs(60),
        window: Window::Sliding,
        retry_after: true,
    })
}

/// Calls that do their work and then answer only after [`HANG`].
fn hanging() -> Faults {
    Faults {
        slow: 1.0,
        slow_for: HANG,
        ..Default::default()
    }
}

async fn app_with(rules: &str, limit: Option<SandboxLimit>) -> TestApp {
    let app = TestApp::builder()
        .rules(rules)
        .limit(limit)
        .worker(NO_FETCH)
        .worker("lease = \"14s\"")
        .build()
        .await;
    // A client timeout past the drain deadline (8 s): the stop must cut
    // calls off (the lease outlasts it, as the configuration requires; a
    // restart reads a cut-off call's chat once that lease has passed).
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"12s\""));
    app.migrate().await;
    app
}

/// SIGTERM, then the contract: exit 0 within 10 s, nothing left held.
async fn stop_and_check(app: &TestApp, daemon: &mut std::process::Child, log: &str) {
    let sent = Instant::now();
    let status = terminate(daemon, STOP_BOUND + Duration::from_secs(20));
    let took = sent.elapsed();
    println!("{log}: exit {status:?} after {took:?}");
    assert!(status.success(), "exit {status:?}\n{}", app.log(log));
    assert!(
        took <= STOP_BOUND,
        "took {took:?} to stop\n{}",
        app.log(log)
    );
    let leased = app.count("queue WHERE state = 'leased'").await;
    assert_eq!(leased, 0, "rows left leased");
    let claimed = app.count("outbox WHERE lease_owner IS NOT NULL").await;
    assert_eq!(claimed, 0, "messages left claimed");
    assert!(!app.log(log).contains("panicked"), "{}", app.log(log));
}

/// After the stop, a plain restart finishes every row and message.
async fn restart_finishes(app: &TestApp, rows: i64, messages: i64) {
    app.sandbox.set_faults(Faults::default());
    app.sandbox.set_rate_limit(None);
    let mut daemon = app.spawn_daemon("restart.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = app.count("queue WHERE state = 'done'").await;
        let sent = app.count("outbox WHERE state = 'done'").await;
        if done == rows && sent >= messages {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after a restart: {done}/{rows} rows done, {sent}/{messages} messages sent\n{}",
            app.log("restart.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(terminate(&mut daemon, STOP_BOUND).success());
    assert_eq!(app.count("queue WHERE state = 'dead'").await, 0);
    assert_eq!(app.count("outbox WHERE state = 'dead'").await, 0);
}

/// A 429 with a minute's `Retry-After` pauses every call, with rows and
/// notes claimed and waiting: SIGTERM ends the pause for them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_429_pause() {
    let app = app_with(&with_notes(), tight_limit()).await;
    app.queue_notes(901..=912).await;
    app.insert_raw(1..=20).await;
    let mut daemon = app.spawn_daemon("pause.log");
    wait_for("a 429", Duration::from_secs(30), || {
        app.sandbox.rejected_429() > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_and_check(&app, &mut daemon, "pause.log").await;
    // A 429 gives the attempt back, and so does the release.
    let spent = app.count("queue WHERE state = 'pending' AND attempts > 0");
    assert_eq!(spent.await, 0);
    restart_finishes(&app, 20, 12).await;
}

/// Starts the daemon with every call hanging, waits until `stalled` holds,
/// then stops it and checks the contract.
async fn stop_while_hung(app: &TestApp, log: &str, stalled: impl Fn(&TestApp) -> bool) {
    app.sandbox.set_faults(hanging());
    let mut daemon = app.spawn_daemon(log);
    wait_for("calls in flight", Duration::from_secs(30), || stalled(app)).await;
    stop_and_check(app, &mut daemon, log).await;
}

/// PUTs that never answer: the stop cuts them off at its deadline and
/// puts their rows back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hung_puts() {
    let app = app_with(THREE_AGENTS, None).await;
    app.insert_raw(1..=10).await;
    stop_while_hung(&app, "hung-put.log", |app| {
        app.sandbox.assign_calls().len() >= 4
    })
    .await;
    let pending = app.count("queue WHERE state = 'pending'").await;
    assert_eq!(pending, 10, "every row goes back");
    restart_finishes(&app, 10, 0).await;
}

/// Notes whose `POST /messages` never answers: cut off and given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hung_notes() {
    let app = app_with(THREE_AGENTS, None).await;
    app.queue_notes(901..=912).await;
    stop_while_hung(&app, "hung-note.log", |app| {
        app.sandbox
            .requests()
            .iter()
            .any(|r| r.path == "/v1/messages")
    })
    .await;
    let pending = app.count("outbox WHERE state = 'pending' AND attempts = 0");
    assert_eq!(
        pending.await,
        12,
        "every note goes back, its attempt given back"
    );
    restart_finishes(&app, 0, 12).await;
}
