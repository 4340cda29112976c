//! Draining a backlog inserted by plain SQL (issue 23): the release
//! `assignd run` in a process of its own, concurrency 4, no API limit to
//! speak of, the rows without a snapshot (a GET and a PUT each). Before
//! the claim was indexed, each claim sorted every due row, so the drain
//! slowed as the backlog grew; now it should not, nor with 100,000 rows
//! that wait (a due time an hour away) beside the backlog.
//!
//! Run: `cargo bench --bench backlog` (`BACKLOG_SIZES=2000,10000,20000`,
//! `BACKLOG_WAITING=100000`, `BACKLOG_BACKEND=sqlite|postgres`).
//! Results are in docs/benchmarks.md.

use std::time::{Duration, Instant};

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

#[tokio::main]
async fn main() {
    let sizes: Vec<i64> = std::env::var("BACKLOG_SIZES")
        .unwrap_or_else(|_| "2000,10000,20000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("BACKLOG_SIZES: numbers"))
        .collect();
    let waiting: i64 = std::env::var("BACKLOG_WAITING")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let postgres = std::env::var("BACKLOG_BACKEND").as_deref() == Ok("postgres");
    for &n in &sizes {
        for waiting in [0, waiting] {
            let url = match postgres {
                true => match postgres::server() {
                    Some(server) => Some(server.database().await),
                    None => return println!("PostgreSQL: skipped, no server binaries"),
                },
                false => None,
            };
            drain(url, n, waiting).await;
        }
    }
}

/// Inserts `waiting` rows due in an hour, then starts the daemon, then
/// inserts `n` rows in one transaction and times them to their last PUT.
async fn drain(postgres: Option<String>, n: i64, waiting: i64) {
    let sandbox = support::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = if postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let url =
        postgres.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    // The daemon creates the schema; the waiting rows go in before its
    // first claim would matter, so it starts first and idles.
    let (mut daemon, _) =
        support::spawn_run(dir.path(), &sandbox, (&url, "concurrency = 4"), 6_000_000).await;
    let producer = support::Producer::open(&url).await;
    let hour = assignd::store::now_ms() + 3_600_000;
    // In statements of 5,000 rows: on PostgreSQL the queue's dedupe
    // trigger takes an advisory lock per row, and one statement of 100,000
    // would outgrow `max_locks_per_transaction`.
    for first in (0..waiting).step_by(5000) {
        let sql = rows(
            1_000_000 + first,
            (waiting - first).min(5000),
            &format!("{hour}"),
        );
        producer.execute(&sql).await;
    }
    let pgss = std::env::var("BACKLOG_PGSS").is_ok();
    if pgss {
        producer
            .execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await;
        producer.execute("SELECT pg_stat_statements_reset()").await;
    }
    let started = Instant::now();
    producer.execute(&rows(1, n, "0")).await;
    loop {
        if sandbox.assign_calls().len() as i64 >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the drain stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{backend}: {n} chats beside {waiting} waiting rows: {secs:.1} s, {:.0} chats/s",
        n as f64 / secs
    );
    if pgss {
        print_top_statements(&producer).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// With `BACKLOG_PGSS=1` on PostgreSQL (a server started with
/// `PG_EXTRA_ARGS="-c shared_preload_libraries=pg_stat_statements"`): the
/// statements that took the most time during the drain, to find what grows.
async fn print_top_statements(producer: &support::Producer) {
    let support::Producer::Postgres(pool) = producer else {
        return;
    };
    let sql = "SELECT total_exec_time, calls, mean_exec_time,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 160)
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25";
    let top: Vec<(f64, i64, f64, String)> = sqlx::query_as(sql).fetch_all(pool).await.unwrap();
    for (total, calls, mean, query) in top {
        println!("{total:10.0} ms {calls:8} calls {mean:8.3} ms  {query}");
    }
}

/// One plain INSERT of `count` rows from chat `first` on, due at `due`.
fn rows(first: i64, count: i64, due: &str) -> String {
    format!(
        "INSERT INTO queue (chat_id, next_attempt_at)
         WITH RECURSIVE c(g) AS (SELECT {first} UNION ALL SELECT g + 1 FROM c WHERE g < {last})
         SELECT g, {due} FROM c",
        last = first + count - 1
    )
}
