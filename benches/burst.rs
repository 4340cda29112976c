//! Memory under a webhook burst (SPEC §13: ≤ 30 MiB RSS under load).
//!
//! Starts the real `assignd run` with a listener and the sandbox, fires
//! 2,000 signed `chat.new` webhooks at once, each on its own connection,
//! checks that every one was answered 200 and queued, and reports the
//! daemon's peak RSS (VmHWM from /proc/<pid>/status).
//!
//! Run: `cargo bench --bench burst`. `BURST_N` changes the count; the
//! daemon inherits the environment, so `MALLOC_ARENA_MAX=2 cargo bench
//! --bench burst` measures glibc's arena cap. Results are in
//! docs/benchmarks.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::RULES;

const KEY: &str = "whk-bench";

fn sign(body: &[u8]) -> String {
    assignd::http::webhook_signature(KEY.as_bytes(), body)
}

/// One raw HTTP/1.1 request on its own connection; the status code.
async fn post(addr: &str, chat: i64) -> std::io::Result<u16> {
    let body = serde_json::to_vec(&serde_json::json!({
        "event": "chat.new", "id": format!("burst-{chat}"),
        "eventData": {"id": chat, "status": "new", "assignee": null,
            "customer": {"id": chat, "email": "a@example.com"},
            "department": {"id": 1, "name": "Support"}}
    }))?;
    let head = format!(
        "POST /webhooks/helpcrunch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-HelpCrunch-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        sign(&body),
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn write_config(dir: &Path, base_url: &str) {
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.join("api-key"), "k\n").unwrap();
    std::fs::write(dir.join("webhook-key"), format!("{KEY}\n")).unwrap();
    let config = format!(
        "[helpcrunch]\nbase_url = \"{base_url}\"\napi_key_file = \"api-key\"\n\n[helpcrunch.rate_limit]\nrequests = 6000\nper = \"1m\"\n\n[database]\nurl = \"sqlite://assignd.db\"\n\n[rules]\npath = \"rules.toml\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nwebhook_key_file = \"webhook-key\"\n"
    );
    std::fs::write(dir.join("assignd.toml"), config).unwrap();
}

/// Starts `assignd run`, logging to run.log.
fn spawn(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(["run", "--config"])
        .arg(dir.join("assignd.toml"))
        .env("RUST_LOG", "warn,assignd=info")
        .env_remove("HELPCRUNCH_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The listener's address, from the log; stops the daemon if it never comes.
fn listener_addr(child: &mut Child, dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
        if let Some(rest) = text.split("HTTP listener ready bound=").nth(1) {
            return rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listener: {text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn queued(dir: &Path) -> (i64, i64) {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("assignd.db"))
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let rows = sqlx::query_scalar("SELECT COUNT(*) FROM queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    let events = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (rows, events)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("burst: run it with `cargo bench --bench burst`");
        return;
    }
    let n: i64 = std::env::var("BURST_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let sandbox = support::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &sandbox.base_url());
    let mut child = spawn(dir.path());
    let addr = listener_addr(&mut child, dir.path());
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = status_kib(pid, "VmRSS:");

    let started = Instant::now();
    let tasks: Vec<_> = (1..=n)
        .map(|chat| {
            let addr = addr.clone();
            tokio::spawn(async move { post(&addr, chat).await })
        })
        .collect();
    let mut ok = 0;
    let mut failed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(200) => ok += 1,
            other => failed.push(format!("{other:?}")),
        }
    }
    let elapsed = started.elapsed();
    let peak = status_kib(pid, "VmHWM:");
    let after = status_kib(pid, "VmRSS:");
    let anon = status_kib(pid, "RssAnon:");
    let file = status_kib(pid, "RssFile:");
    let threads = status_kib(pid, "Threads:");
    let (rows, events) = queued(dir.path()).await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "burst: {n} concurrent signed chat.new webhooks (MALLOC_ARENA_MAX={})",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into())
    );
    println!("  answered 200: {ok}, failed: {}", failed.len());
    println!("  queue rows: {rows}, webhook events: {events}, in {elapsed:.2?}");
    println!(
        "  daemon RSS: idle {:.1} MiB, peak (VmHWM) {:.1} MiB, after {:.1} MiB ({:.1} anonymous, {:.1} file-backed), {threads} threads",
        mib(idle),
        mib(peak),
        mib(after),
        mib(anon),
        mib(file)
    );
    assert!(
        failed.is_empty(),
        "failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(rows, n, "every webhook queued");
}
