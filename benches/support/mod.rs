//! What the benchmarks share: two agents, their rules, and the sandbox
//! that plays their HelpCrunch account.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assignd::sandbox::{Sandbox, SandboxAgent, SandboxConfig};

/// alice (id 1) and bob (id 2) in one pool that takes every chat.
pub const RULES: &str = "[agents]\nalice = { id = 1 }\nbob = { id = 2 }\n[pools.p]\nagents = [\"alice\", \"bob\"]\n[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";

/// The sandbox on a free loopback port: API key `k`, the agents of
/// [`RULES`], a million chats, no rate limit.
pub async fn sandbox() -> Sandbox {
    let agents = [(1, "alice"), (2, "bob")]
        .map(|(id, name)| SandboxAgent {
            id,
            name: name.into(),
        })
        .to_vec();
    Sandbox::start(
        SandboxConfig {
            api_key: "k".into(),
            agents,
            chats: 1..=1_000_000,
            rate_limit: None,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// When the sandbox received the PUT for `chat`, waiting for it.
#[allow(dead_code)]
pub async fn put_received(sandbox: &Sandbox, chat: i64) -> Instant {
    loop {
        if let Some(r) = sandbox.requests().iter().rev().find(|r| {
            r.method == "PUT" && r.body.as_ref().and_then(|b| b["id"].as_i64()) == Some(chat)
        }) {
            return r.received;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// When each PUT arrived, in order.
#[allow(dead_code)]
pub fn put_times(sandbox: &Sandbox) -> Vec<Instant> {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.received)
        .collect()
}

/// For chats `1..=n`, one at a time: the time from just before `send`
/// hands the chat to assignd to its PUT at the sandbox, with a pause after
/// each so that the limiter always has budget.
#[allow(dead_code)]
pub async fn pickups<F, Fut>(sandbox: &Sandbox, n: i64, mut send: F) -> Vec<Duration>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::new();
    for chat in 1..=n {
        let sent = Instant::now();
        send(chat).await;
        let put = put_received(sandbox, chat).await;
        latencies.push(put.duration_since(sent));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    latencies
}

/// Prints p50, p90, p99 and max of `latencies` after `what`.
#[allow(dead_code)]
pub fn print_percentiles(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "{what}: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies.last().unwrap()
    );
}

/// `assignd run` (the release binary) in a process of its own, in `dir`,
/// against `sandbox` and the database `url`, with a listener; `worker` is
/// the `[worker]` section's lines, `per_minute` the rate limit. Returns
/// the process and its listener's address, once new rows of other
/// processes wake it.
#[allow(dead_code)]
pub async fn spawn_run(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    (url, worker): (&str, &str),
    per_minute: u32,
) -> (Child, String) {
    write_config(dir, sandbox, (url, worker), per_minute, "");
    start_run(dir).await
}

/// Writes `assignd.toml` (and its rules and key files) into `dir`, as
/// [`spawn_run`] describes; `http` is more lines of the `[http]` section.
#[allow(dead_code)]
pub fn write_config(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    (url, worker): (&str, &str),
    per_minute: u32,
    http: &str,
) {
    let sections = format!(
        "[database]\nurl = \"{url}\"\n\n[worker]\n{worker}\n\n[http]\nlisten = \"127.0.0.1:0\"\n{http}"
    );
    write_configured(dir, sandbox, (RULES, &sections), per_minute);
}

/// [`spawn_run`] with rules and configuration sections of the caller's
/// own: `sections` follow `[helpcrunch]` and `[rules]`, and must include
/// `[database]` and an `[http]` listener.
#[allow(dead_code)]
pub async fn spawn_configured(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    (rules, sections): (&str, &str),
    per_minute: u32,
) -> (Child, String) {
    write_configured(dir, sandbox, (rules, sections), per_minute);
    start_run(dir).await
}

/// Writes the rules, the key and `assignd.toml` with `sections`.
#[allow(dead_code)]
fn write_configured(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    (rules, sections): (&str, &str),
    per_minute: u32,
) {
    std::fs::write(dir.join("rules.toml"), rules).unwrap();
    std::fs::write(dir.join("api-key"), "k").unwrap();
    let config = format!(
        "[helpcrunch]\nbase_url = \"{}\"\napi_key_file = \"api-key\"\n\n\
         [helpcrunch.rate_limit]\nrequests = {per_minute}\nper = \"1m\"\n\n\
         [rules]\npath = \"rules.toml\"\n\n{sections}",
        sandbox.base_url()
    );
    std::fs::write(dir.join("assignd.toml"), config).unwrap();
}

/// `assignd run` on the `assignd.toml` [`write_config`] wrote in `dir`:
/// the process and its listener's address, once new rows wake it.
#[allow(dead_code)]
pub async fn start_run(dir: &std::path::Path) -> (Child, String) {
    let log = dir.join("daemon.log");
    let daemon = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(["--config", "assignd.toml", "run"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = wait_for_log(&log, "HTTP listener ready bound=").await;
    wait_for_log(&log, "wake the claim loop").await;
    (daemon, addr)
}

/// Waits for `marker` in the log; returns the word after it.
pub async fn wait_for_log(log: &std::path::Path, marker: &str) -> String {
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
#[allow(dead_code)]
pub enum Producer {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

#[allow(dead_code)]
impl Producer {
    pub async fn open(url: &str) -> Self {
        if url.starts_with("postgres") {
            Producer::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        } else {
            Producer::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap())
        }
    }

    /// Runs one statement of the producer's own.
    #[allow(dead_code)]
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Producer::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
            Producer::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
        }
    }

    /// The first row of a query of three numbers.
    #[allow(dead_code)]
    pub async fn row3(&self, sql: &str) -> (i64, i64, i64) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Producer::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
            Producer::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
        }
    }

    #[allow(dead_code)]
    pub async fn insert(&self, chat: i64) {
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

/// Rows `first` to `first + count - 1` as `c(g)`, a BIGINT on both
/// backends, for an `INSERT ... SELECT` to build rows from.
#[allow(dead_code)]
pub fn series(first: i64, count: i64) -> String {
    format!(
        "WITH RECURSIVE c(g) AS (SELECT CAST({first} AS BIGINT) UNION ALL
                                SELECT g + 1 FROM c WHERE g < {last})",
        last = first + count - 1
    )
}

/// Runs `insert(first, count)` for rows `from..to` in statements of
/// 5,000 rows: on PostgreSQL the queue's dedupe trigger takes an advisory
/// lock per row, and one statement of 100,000 would outgrow
/// `max_locks_per_transaction`.
#[allow(dead_code)]
pub async fn insert_in_batches(
    producer: &Producer,
    (from, to): (i64, i64),
    insert: impl Fn(i64, i64) -> String,
) {
    for first in (from..to).step_by(5000) {
        producer
            .execute(&insert(first, (to - first).min(5000)))
            .await;
    }
}
