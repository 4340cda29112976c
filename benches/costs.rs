//! What reading the queue and the history costs as the backlog grows
//! (issue 23): `assignd status` (the release binary), the console's queue
//! page (first and a deep page, through the real listener), `assignd
//! report --since 30d` over a month of outcomes (the release binary: time
//! and peak RSS) and the decision's reads (the routing state, the last
//! hour's assignments, then the decision), beside 1k, 10k and 100k rows
//! that wait (half for a seat, half for a retry) and as many dead rows.
//!
//! Run: `cargo bench --bench costs` (`COSTS_SIZES=1000,10000,100000`,
//! `COSTS_OUTCOMES=1000000`, `COSTS_BACKEND=sqlite|postgres`). Results are
//! in docs/benchmarks.md.

use std::process::Command;
use std::time::{Duration, Instant};

use assignd::config::Synchronous;
use assignd::rules::decide::hour_before;
use assignd::store::Store;
use jiff::Timestamp;

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

use support::{Producer, insert_in_batches, series};

const DAY: i64 = 86_400_000;
const TOKEN: &str = "bench-console-token-0123456789";
/// The first chat id of the waiting rows, of the dead rows, of the done rows.
const WAITING: i64 = 1_000_000;
const DEAD: i64 = 5_000_000;
const DONE: i64 = 20_000_000;
/// The first chat id of the open chats the decision is measured beside.
const OPEN: i64 = 40_000_000;

#[tokio::main]
async fn main() {
    let sizes: Vec<i64> = std::env::var("COSTS_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("COSTS_SIZES: numbers"))
        .collect();
    let outcomes: i64 = std::env::var("COSTS_OUTCOMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let postgres = std::env::var("COSTS_BACKEND").as_deref() == Ok("postgres");
    let sandbox = support::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let (backend, url) = if postgres {
        let Some(server) = postgres::server() else {
            return println!("PostgreSQL: skipped, no server binaries");
        };
        ("PostgreSQL", server.database().await)
    } else {
        let file = dir.path().join("bench.db");
        ("SQLite", format!("sqlite://{}", file.display()))
    };
    let http = "console_token_file = \"console-token\"\n";
    std::fs::write(dir.path().join("console-token"), TOKEN).unwrap();
    support::write_config(dir.path(), &sandbox, (&url, "concurrency = 4"), 6000, http);
    assignd(dir.path(), &["migrate"]);
    let producer = Producer::open(&url).await;
    let filled = Instant::now();
    fill_history(&producer, outcomes).await;
    println!(
        "{backend}: {outcomes} outcomes over 30 days in {:.0} s",
        filled.elapsed().as_secs_f64()
    );
    let (mut daemon, addr) = support::start_run(dir.path()).await;
    let cookie = sign_in(&addr).await;
    let mut had = 0;
    for &n in &sizes {
        fill_backlog(&producer, had, n).await;
        had = n;
        let console = console(&producer, &addr, &cookie, n).await;
        let status = median(5, || timed(|| assignd(dir.path(), &["status", "--json"])));
        let (report, rss) = report(dir.path());
        let (decision, counted) = decision(&url, &producer, n).await;
        println!(
            "{backend}: {n} waiting + {n} dead rows, {outcomes} outcomes: status {} | \
             console first page {} deep page {} | report 30d {:.2} s, peak RSS {} MiB | \
             decision's reads + decide beside {n} open chats {} (counting them as before: {})",
            ms(status),
            ms(console.0),
            ms(console.1),
            report.as_secs_f64(),
            rss / 1024,
            ms(decision),
            ms(counted)
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the release binary in `dir` on its `assignd.toml`; its stdout.
fn assignd(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(["--config", "assignd.toml"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "assignd {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn timed<T>(f: impl FnOnce() -> T) -> Duration {
    let started = Instant::now();
    std::hint::black_box(f());
    started.elapsed()
}

fn median(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..n).map(|_| f()).collect();
    times.sort();
    times[n / 2]
}

/// `n` done queue rows, one an outcome each, spread over the last 30 days
/// (a wait of up to 10 minutes each); one in 50 a hand-back, one in 20
/// escalated. The rows are the first of a new database: row `g` is `g`.
async fn fill_history(producer: &Producer, n: i64) {
    let now = assignd::store::now_ms();
    let t0 = now - 30 * DAY + 3_600_000;
    let step = ((30 * DAY - 2 * 3_600_000) / n.max(1)).max(1);
    insert_in_batches(producer, (1, n + 1), |first, count| {
        format!(
            "INSERT INTO queue (chat_id, state, ranked, enqueued_at, updated_at)
             {} SELECT {DONE} + g, 'done', 1, {t0} + g * {step} - g * 7919 % 600000,
                       {t0} + g * {step} FROM c",
            series(first, count)
        )
    })
    .await;
    insert_in_batches(producer, (1, n + 1), |first, count| {
        format!(
            "INSERT INTO outcomes (chat_id, queue_id, at, rule, pool, strategy, agent, agent_id,
                                   result, reason, route)
             {} SELECT {DONE} + g, g, {t0} + g * {step}, 'all', 'p', 'round_robin',
                       CASE WHEN g % 2 = 0 THEN 'alice' ELSE 'bob' END, 1 + g % 2,
                       CASE WHEN g % 50 = 0 THEN 'skipped' ELSE 'assigned' END,
                       'matched rule all',
                       CASE WHEN g % 50 = 0 THEN 'handed_back'
                            WHEN g % 20 = 0 THEN 'escalated' END FROM c",
            series(first, count)
        )
    })
    .await;
}

/// Rows `from..to` of the backlog: waiting rows (even: for a seat; odd: a
/// retry after a 503), all due in an hour or more, and as many dead rows.
async fn fill_backlog(producer: &Producer, from: i64, to: i64) {
    let now = assignd::store::now_ms();
    insert_in_batches(producer, (from, to), |first, count| {
        format!(
            "INSERT INTO queue (chat_id, state, ranked, priority, next_attempt_at, last_error,
                               waiting, waiting_pool, enqueued_at, updated_at)
             {} SELECT {WAITING} + g, 'pending', 1, g % 3, {now} + 3600000 + g,
                       CASE WHEN g % 2 = 0 THEN 'no agent of pool p has a free seat'
                            ELSE 'HelpCrunch answered 503' END,
                       CASE WHEN g % 2 = 0 THEN 'candidate' END,
                       CASE WHEN g % 2 = 0 THEN 'p' END,
                       {now} - g * 10, {now} FROM c",
            series(first, count)
        )
    })
    .await;
    insert_in_batches(producer, (from, to), |first, count| {
        format!(
            "INSERT INTO queue (chat_id, state, ranked, last_error, enqueued_at, updated_at)
             {} SELECT {DEAD} + g, 'dead', 1, 'HelpCrunch answered 404', {now} - g * 10,
                       {now} - g FROM c",
            series(first, count)
        )
    })
    .await;
    producer
        .execute(if matches!(producer, Producer::Postgres(_)) {
            "VACUUM ANALYZE"
        } else {
            "ANALYZE"
        })
        .await;
}

/// Signs in to the console with its token; the session cookie.
async fn sign_in(addr: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .post(format!("http://{addr}/console/signin"))
        .form(&[("name", "bench"), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = answer
        .headers()
        .get("set-cookie")
        .unwrap_or_else(|| panic!("no session: {}", answer.status()));
    let cookie = cookie.to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

/// The queue page's first page, and the page that starts at the middle
/// of the waiting rows and of the dead rows (median of 5 each).
async fn console(producer: &Producer, addr: &str, cookie: &str, n: i64) -> (Duration, Duration) {
    let client = reqwest::Client::new();
    let get = |query: String| {
        let request = client
            .get(format!("http://{addr}/console/queue{query}"))
            .header("cookie", cookie);
        async move {
            let started = Instant::now();
            let answer = request.send().await.unwrap();
            assert!(answer.status().is_success(), "{}", answer.status());
            let page = answer.text().await.unwrap();
            assert!(page.contains("data-chat"), "{page}");
            started.elapsed()
        }
    };
    let mut first = Vec::new();
    let mut deep = Vec::new();
    let query = deep_query(producer, n).await;
    for _ in 0..5 {
        first.push(get(String::new()).await);
        deep.push(get(query.clone()).await);
    }
    first.sort();
    deep.sort();
    (first[2], deep[2])
}

/// The query of the page after the middle waiting row (in the page's
/// order: priority, then oldest) and after the middle dead row.
async fn deep_query(producer: &Producer, n: i64) -> String {
    let sql = format!(
        "SELECT priority, enqueued_at, id FROM queue WHERE state IN ('pending', 'leased')
          ORDER BY priority DESC, enqueued_at, id LIMIT 1 OFFSET {}",
        n / 2
    );
    let (p, e, id) = producer.row3(&sql).await;
    let dead = format!(
        "SELECT id, id, id FROM queue WHERE state = 'dead' ORDER BY id DESC LIMIT 1 OFFSET {}",
        n / 2
    );
    let (dead, _, _) = producer.row3(&dead).await;
    format!("?after={p}.{e}.{id}&dead_before={dead}")
}

/// `assignd report --since 30d --json`: its time and peak RSS (KiB),
/// from `/usr/bin/time`.
fn report(dir: &std::path::Path) -> (Duration, u64) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o", "time.txt"])
        .arg(env!("CARGO_BIN_EXE_assignd"))
        .args([
            "--config",
            "assignd.toml",
            "report",
            "--since",
            "30d",
            "--json",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["totals"]["assignments"].as_u64().unwrap() > 0);
    let rss = std::fs::read_to_string(dir.join("time.txt")).unwrap();
    (took, rss.trim().lines().last().unwrap().parse().unwrap())
}

/// What a decision reads (the routing state, the last hour's
/// assignments; PostgreSQL reads them under the routing lock for every
/// decision; read here as a decision does, under the routing lock, with
/// its fold), then the decision itself, beside `open` open chats (alice's
/// and bob's): median of 50. Second, the median of 20 counts of those
/// chats per agent as the decision read them before `store/seats.rs`.
async fn decision(url: &str, producer: &Producer, open: i64) -> (Duration, Duration) {
    let now_ms = assignd::store::now_ms();
    insert_in_batches(producer, (0, open), |first, count| {
        format!(
            "INSERT INTO open_chats (chat_id, agent, assigned_at)
             {} SELECT {OPEN} + g, CASE WHEN g % 2 = 0 THEN 'alice' ELSE 'bob' END, {now_ms}
                  FROM c",
            series(first, count)
        )
    })
    .await;
    let store = match url.strip_prefix("sqlite://") {
        Some(path) => Store::open(path.as_ref(), Synchronous::Normal).await,
        None => Store::connect_postgres(url).await,
    }
    .unwrap();
    let rules = assignd::rules::load_sources(&[("r.toml".into(), support::RULES.into())]).unwrap();
    let chat: assignd::helpcrunch::types::Chat =
        serde_json::from_str(r#"{"id": 42, "status": "new"}"#).unwrap();
    let context = chat.rules_context(&serde_json::Map::new());
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let now = Timestamp::now();
        let (held, stored) = store.lock_routing().await.unwrap();
        held.release().await.unwrap();
        let recent = store.recent_assignments(hour_before(now)).await.unwrap();
        let state = assignd::rules::RoutingState {
            recent,
            ..stored.into_state()
        };
        std::hint::black_box(assignd::rules::decide(&rules, &context, &state, now));
        times.push(started.elapsed());
    }
    store.close().await;
    times.sort();
    let mut counts = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        producer.execute(COUNTED).await;
        counts.push(started.elapsed());
    }
    counts.sort();
    let sql = format!("DELETE FROM open_chats WHERE chat_id >= {OPEN}");
    producer.execute(&sql).await;
    (times[25], counts[10])
}

/// How the decision counted each agent's seats before `store/seats.rs`.
const COUNTED: &str = "SELECT agent, COUNT(*) FROM (SELECT agent FROM open_chats UNION ALL
        SELECT previous_agent FROM open_chats WHERE previous_agent IS NOT NULL) AS seats
     GROUP BY agent";
