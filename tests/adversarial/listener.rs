//! The HTTP listener against hostile or unlucky clients and storage:
//! clients that stall mid-request, a database another process holds
//! locked, a full disk, and a burst of webhooks far above the listener's
//! concurrency bound. Each case runs the real `assignd run` binary.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// The contract's bound on a clean stop (SPEC §6).
const STOP_BOUND: Duration = Duration::from_secs(10);

const WEBHOOK_KEY: &str = "whk-listener-test";
const INTAKE_TOKEN: &str = "intake-listener-test";

/// A migrated app whose daemon will listen on a free loopback port, with
/// a webhook key and an intake token.
async fn listening_app() -> TestApp {
    let app = TestApp::builder().worker(NO_FETCH).migrated().await;
    with_listener(&app);
    app
}

/// [`listening_app`] with `assignd run` started, logging to `log`: the app,
/// the daemon, and the listener's address.
async fn listening_daemon(log: &str) -> (TestApp, std::process::Child, String) {
    let app = listening_app().await;
    let daemon = app.spawn_daemon(log);
    let addr = app.listener_addr(log).await;
    (app, daemon, addr)
}

fn with_listener(app: &TestApp) {
    let dir = app.dir.path();
    std::fs::write(dir.join("webhook-key"), format!("{WEBHOOK_KEY}\n")).unwrap();
    std::fs::write(dir.join("intake-token"), format!("{INTAKE_TOKEN}\n")).unwrap();
    let config = std::fs::read_to_string(&app.config_path).unwrap()
        + "\n[http]\nlisten = \"127.0.0.1:0\"\nwebhook_key_file = \"webhook-key\"\nintake_token_file = \"intake-token\"\n";
    std::fs::write(&app.config_path, config).unwrap();
}

/// One request on its own connection (`Connection: close`): status and
/// body. Bounded, so a listener that hangs fails the test instead.
async fn request(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let head = format!(
            "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the listener answers within 30 s")
        .expect("a complete answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

async fn readyz(addr: &str) -> (u16, String) {
    request(addr, "GET /readyz HTTP/1.1", b"").await
}

/// Polls `/readyz` until it answers `status`; the last body.
async fn readyz_until(addr: &str, status: u16, within: Duration, why: &str) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = readyz(addr).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {got} ({body}) after {within:?}: {why}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn enqueue_head() -> String {
    format!(
        "POST /v1/enqueue HTTP/1.1\r\nAuthorization: Bearer {INTAKE_TOKEN}\r\nContent-Type: application/json"
    )
}

fn sign(body: &[u8]) -> String {
    assignd::http::webhook_signature(WEBHOOK_KEY.as_bytes(), body)
}

/// A signed `chat.new` webhook for `chat`.
async fn chat_new(addr: &str, chat: i64) -> u16 {
    let body = serde_json::to_vec(&serde_json::json!({
        "event": "chat.new", "id": format!("listener-{chat}"),
        "eventData": {"id": chat, "status": "new", "assignee": null,
            "customer": {"id": chat, "email": "a@example.com"}}
    }))
    .unwrap();
    let head = format!(
        "POST /webhooks/helpcrunch HTTP/1.1\r\nContent-Type: application/json\r\nX-HelpCrunch-Signature: {}",
        sign(&body)
    );
    request(addr, &head, &body).await.0
}

/// Ten clients that stop mid-request: five in the middle of their headers,
/// five after the headers and part of a declared body.
async fn stall_ten(addr: &str) -> Vec<TcpStream> {
    let mut stalled = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let partial = if i % 2 == 0 {
            format!("POST /v1/enqueue HTTP/1.1\r\nHost: {addr}\r\nAuthoriz")
        } else {
            format!(
                "{}\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{\"chat_id\":",
                enqueue_head()
            )
        };
        s.write_all(partial.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    stalled
}

/// Ten stalled clients neither starve the listener nor hold the daemon up:
/// a normal request is served beside them, and SIGTERM ends the daemon
/// with 0 within the contract's 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_neither_starve_the_listener_nor_block_shutdown() {
    let (app, mut daemon, addr) = listening_daemon("stalled.log").await;
    let stalled = stall_ten(&addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, body) = request(&addr, &enqueue_head(), br#"{"chat_id": 501}"#).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(request(&addr, "GET /healthz HTTP/1.1", b"").await.0, 200);
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assignee(501), Some(4188));

    let signalled = Instant::now();
    let status = terminate(&mut daemon, STOP_BOUND + Duration::from_secs(10));
    let took = signalled.elapsed();
    println!("exit after SIGTERM with ten stalled clients: {took:?}");
    assert!(status.success(), "{status:?}: {}", app.log("stalled.log"));
    assert!(took <= STOP_BOUND, "took {took:?} to stop");
    drop(stalled);
}

/// A client that stalls is cut off by the read timeouts on its own, with
/// no shutdown: mid-headers by the header timeout, mid-body by the body
/// timeout (answered 408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off_by_the_read_timeouts() {
    let (app, mut daemon, addr) = listening_daemon("timeouts.log").await;
    let stalled = stall_ten(&addr).await;
    let started = Instant::now();
    let bound = assignd::http::HEADER_READ_TIMEOUT.max(assignd::http::BODY_READ_TIMEOUT)
        + Duration::from_secs(10);
    let mut answers = Vec::new();
    for mut s in stalled {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(bound, s.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "a stalled client still connected after {:?}",
            started.elapsed()
        );
        answers.push(String::from_utf8_lossy(&answer).into_owned());
    }
    let timed_out = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(
        timed_out, 5,
        "the five mid-body clients get 408: {answers:?}"
    );
    assert_eq!(app.count("queue").await, 0);
    assert!(terminate(&mut daemon, STOP_BOUND).success());
}

/// Another process holds the write lock: `/readyz` says 503 "locked" (fast,
/// not after the busy timeout), and 200 again once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_another_process_holds_the_write_lock() {
    let (app, mut daemon, addr) = listening_daemon("locked.log").await;
    readyz_until(&addr, 200, Duration::from_secs(10), "a fresh daemon").await;

    let lock = app.lock_database("BEGIN IMMEDIATE").await;
    let asked = Instant::now();
    let why = readyz_until(&addr, 503, Duration::from_secs(10), "the lock is held").await;
    println!("/readyz while locked ({:?}): {why}", asked.elapsed());
    assert!(why.contains("locked"), "{why}");
    // Still 503 while the lock holds, each answer well before the busy timeout.
    for _ in 0..3 {
        let asked = Instant::now();
        let (status, _) = readyz(&addr).await;
        assert_eq!(status, 503);
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "{:?}",
            asked.elapsed()
        );
    }
    lock.release().await;
    readyz_until(&addr, 200, Duration::from_secs(15), "the lock is gone").await;
    assert!(terminate(&mut daemon, STOP_BOUND).success());
}

/// The disk fills up under an idle daemon: `/readyz` says 503 "full" until
/// space is freed, then 200. Needs a tmpfs, so it is skipped where mounting
/// is not allowed, except in CI (`CI=true`), which runs as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_disk_is_full() {
    let mut app = TestApp::builder().worker(NO_FETCH).build().await;
    let Some(disk) = app.database_on_tmpfs("16m") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must be able to mount a tmpfs"
        );
        return;
    };
    app.migrate().await;
    with_listener(&app);
    let mut daemon = app.spawn_daemon("full.log");
    let addr = app.listener_addr("full.log").await;
    readyz_until(&addr, 200, Duration::from_secs(10), "a fresh daemon").await;

    let filler = disk.0.join("filler");
    fill(&filler);
    let why = readyz_until(&addr, 503, Duration::from_secs(10), "the disk is full").await;
    println!("/readyz while the disk is full: {why}");
    assert!(why.contains("full"), "{why}");
    std::fs::remove_file(&filler).unwrap();
    readyz_until(&addr, 200, Duration::from_secs(15), "space was freed").await;
    assert!(terminate(&mut daemon, STOP_BOUND).success());
}

/// Writes to `path` until the file system has no byte left.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

/// Far more webhooks at once than the listener serves at once: the excess
/// waits, and every one is answered 200 and queued exactly once. (How much
/// memory that takes is measured by `cargo bench --bench burst`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_webhooks_waits_and_is_all_queued() {
    let (app, mut daemon, addr) = listening_daemon("burst.log").await;
    let n = (assignd::http::MAX_CONNECTIONS * 5) as i64;
    let tasks: Vec<_> = (1..=n)
        .map(|chat| {
            let addr = addr.clone();
            tokio::spawn(async move { chat_new(&addr, chat).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.count("webhook_events").await, n);
    let chats = app.scalar("SELECT COUNT(DISTINCT chat_id) FROM queue");
    assert_eq!(chats.await, n);
    assert_eq!(app.count("queue").await, n);
    assert!(terminate(&mut daemon, STOP_BOUND).success());
}
