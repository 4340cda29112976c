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

use std::process::Child;
use std::time::{Duration, Instant};

#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/scrape.rs"]
mod scrape;
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
    let (mut daemon, addr) = support::spawn_run(dir.path(), &sandbox, (&url, ""), 60_000).await;
    let producer = support::Producer::open(&url).await;
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
    scrape::metric_sum(&format!("http://{addr}"), "assignd_queue_reads_total{").await
}
