//! Pickup of a producer's plain `INSERT INTO queue (chat_id)` from another
//! process (issue 23): the release `assignd run` in a process of its own,
//! this process the producer, budget free. On SQLite the daemon learns of
//! the row from the database file's changes (`store/watch.rs`), on
//! PostgreSQL from LISTEN/NOTIFY; `poll_interval` is its default (5 s), so
//! a row found by polling would show as seconds. Then the idle daemon:
//! its CPU time and its reads of the queue over a minute.
//!
//! Run: `cargo bench --bench pickup` (`PICKUP_BACKEND=sqlite` or
//! `postgres` for one; `PICKUP_IDLE_SECS` for the idle span, 60).
//! Results are in docs/benchmarks.md.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

const SAMPLES: i64 = 300;

#[tokio::main]
async fn main() {
    let only = std::env::var("PICKUP_BACKEND").ok();
    if only.as_deref() != Some("postgres") {
        run("SQLite", None).await;
    }
    if only.as_deref() != Some("sqlite") {
        match postgres::server() {
            Some(server) => run("PostgreSQL", Some(server.database().await)).await,
            None => println!("PostgreSQL: skipped, no server binaries"),
        }
    }
}

async fn run(backend: &str, postgres: Option<String>) {
    let sandbox = support::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let url = postgres
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    std::fs::write(dir.path().join("rules.toml"), support::RULES).unwrap();
    std::fs::write(dir.path().join("api-key"), "k").unwrap();
    let config = format!(
        "[helpcrunch]\nbase_url = \"{}\"\napi_key_file = \"api-key\"\n\n\
         [helpcrunch.rate_limit]\nrequests = 60000\nper = \"1m\"\n\n\
         [database]\nurl = \"{url}\"\n\n[rules]\npath = \"rules.toml\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        sandbox.base_url()
    );
    std::fs::write(dir.path().join("assignd.toml"), config).unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(["--config", "assignd.toml", "run"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = wait_for_log(&log, "HTTP listener ready bound=").await;
    wait_for_log(&log, "wake the claim loop").await;
    let producer = Producer::open(&url).await;
    let mut from_start = Vec::new();
    let mut from_commit = Vec::new();
    for chat in 1..=SAMPLES {
        let started = Instant::now();
        producer.insert(chat).await;
        let committed = Instant::now();
        let put = support::put_received(&sandbox, chat).await;
        from_start.push(put.duration_since(started));
        from_commit.push(put.duration_since(committed));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let what = format!("{backend}: plain INSERT -> PUT, {SAMPLES} chats");
    support::print_percentiles(&format!("{what}, from the INSERT"), from_start);
    support::print_percentiles(&format!("{what}, from its commit"), from_commit);
    idle(backend, &mut daemon, &addr).await;
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// The idle daemon's CPU share and reads of the queue over the idle span.
async fn idle(backend: &str, daemon: &mut Child, addr: &str) {
    let secs: u64 = std::env::var("PICKUP_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, reads0) = (cpu_ticks(daemon.id()), queue_reads(addr).await);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, reads1) = (cpu_ticks(daemon.id()), queue_reads(addr).await);
    let ticks = cpu1 - cpu0;
    // USER_HZ is 100 on Linux.
    let share = ticks as f64 / (secs as f64 * 100.0) * 100.0;
    println!(
        "{backend}: idle {secs} s: CPU {share:.2}% ({ticks} ticks), queue reads {} ({:.1}/min)",
        reads1 - reads0,
        (reads1 - reads0) * 60.0 / secs as f64
    );
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn queue_reads(addr: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("assignd_queue_reads_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits for `marker` in the log; returns the word after it.
async fn wait_for_log(log: &std::path::Path, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split(marker).nth(1) {
            return rest.split_whitespace().next().unwrap_or("").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not in the log: {marker}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A producer's own connection, as a script would open it (SQLite's
/// defaults: `synchronous = FULL`).
enum Producer {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Producer {
    async fn open(url: &str) -> Self {
        if url.starts_with("postgres") {
            Producer::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        } else {
            Producer::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap())
        }
    }

    async fn insert(&self, chat: i64) {
        let sql = "INSERT INTO queue (chat_id) VALUES ($1)";
        match self {
            Producer::Sqlite(pool) => {
                sqlx::query(sql).bind(chat).execute(pool).await.unwrap();
            }
            Producer::Postgres(pool) => {
                sqlx::query(sql).bind(chat).execute(pool).await.unwrap();
            }
        }
    }
}
