//! A panic is never silent. A row whose task panics is dead-lettered with
//! the reason and the rest go on; a peer job that panics stops the daemon
//! with a non-zero exit (systemd restarts it), its rows put back.
//! The panics are injected with `ASSIGND_DEBUG_PANIC`, which only debug
//! builds (the tests' binary) read.

use std::time::{Duration, Instant};

use crate::common::*;

/// `assignd run` with a panic injected into `target`, logging to `log`.
fn spawn_panicking(app: &TestApp, target: &str, log: &str) -> std::process::Child {
    app.command(&["run"])
        .env("ASSIGND_DEBUG_PANIC", target)
        .stderr(std::fs::File::create(app.dir.path().join(log)).unwrap())
        .spawn()
        .unwrap()
}

async fn app_with_rows(n: i64) -> TestApp {
    let app = TestApp::builder().worker(NO_FETCH).build().await;
    app.migrate().await;
    app.insert_raw(1..=n).await;
    app
}

/// Chat 7's task panics: chat 7 ends dead naming the panic, every other
/// chat is assigned, the daemon stays up and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_row_is_dead_lettered_and_the_rest_go_on() {
    let app = app_with_rows(20).await;
    let mut daemon = spawn_panicking(&app, "row:7", "row.log");
    app.wait_drained(Duration::from_secs(30)).await;
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    let dead = app
        .rows("SELECT chat_id, state, last_error FROM queue WHERE state = 'dead'")
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, 7);
    let why = dead[0].2.clone().unwrap_or_default();
    assert!(
        why.contains("internal error") && why.contains("injected panic"),
        "{why}"
    );
    assert_eq!(app.count("queue WHERE state = 'done'").await, 19);
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());
}

/// The outbox job panics: the daemon says which job failed and why, puts
/// its rows back, and exits 1 instead of running on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_stops_the_daemon_with_exit_1() {
    let app = app_with_rows(5).await;
    let mut daemon = spawn_panicking(&app, "outbox", "job.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon runs on without its outbox"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = app.log("job.log");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("the outbox job stopped unexpectedly") && log.contains("injected panic"),
        "{log}"
    );
    assert_eq!(app.count("queue WHERE state = 'leased'").await, 0);
}
