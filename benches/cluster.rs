//! Several daemons on one PostgreSQL database (SPEC §11), measured against
//! a real PostgreSQL server started here and the sandbox:
//!
//! 1. pickup: a producer's plain `INSERT INTO queue` → the PUT, one
//!    daemon, free budget (LISTEN/NOTIFY wakes the daemon);
//! 2. the share of the account's limit that 1, 2 and 3 daemons use
//!    together while draining a backlog (the sandbox's own PUT times);
//! 3. failover: two `assignd run` processes, the leader SIGKILLed; the time
//!    until another daemon holds the lease, and the longest gap in PUTs.
//!
//! Run: `cargo bench --bench cluster`. Results are in docs/benchmarks.md.

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use assignd::app::Application;
use assignd::config::Config;
use assignd::duration::HumanDuration;
use assignd::http::ListenerSecrets;
use assignd::sandbox::{Sandbox, SandboxLimit, Window};
use assignd::secrets::Secret;
use tokio_util::sync::CancellationToken;

use support::RULES;

const PICKUPS: i64 = 300;

fn config(sandbox: &Sandbox, url: &str, per_minute: u32) -> Config {
    let mut config = Config::default();
    config.helpcrunch.base_url = sandbox.base_url();
    config.helpcrunch.rate_limit.requests = std::num::NonZeroU32::new(per_minute).unwrap();
    config.database.url = Some(toml::Spanned::new(0..0, url.to_string()));
    config.worker.poll_interval = HumanDuration::from_millis(500);
    config
}

/// Starts a daemon in this process; returns what stops it.
async fn daemon(config: &Config) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let rules = assignd::rules::load_sources(&[("rules.toml".into(), RULES.into())]).unwrap();
    let secrets = ListenerSecrets::new(None, None);
    let app = Application::build(config, Arc::new(rules), &Secret::new("k"), secrets)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until_stopped(async move { token.cancelled().await })
            .await;
    });
    (stop, task)
}

fn snapshot(chat: i64) -> String {
    serde_json::json!({"id": chat, "status": "new", "assignee": null, "customer": {"id": chat}})
        .to_string()
}

async fn insert(pool: &sqlx::PgPool, chat: i64) {
    sqlx::query("INSERT INTO queue (chat_id, snapshot) VALUES ($1, $2)")
        .bind(chat)
        .bind(snapshot(chat))
        .execute(pool)
        .await
        .unwrap();
}

async fn pickup(server: &postgres::PgServer) {
    let sandbox = support::sandbox().await;
    let url = server.database().await;
    let (stop, task) = daemon(&config(&sandbox, &url, 6000)).await;
    let producer = sqlx::PgPool::connect(&url).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let latencies = support::pickups(&sandbox, PICKUPS, |chat| insert(&producer, chat)).await;
    support::print_percentiles(
        &format!("PostgreSQL INSERT -> PUT, one daemon, {PICKUPS} chats"),
        latencies,
    );
    stop.cancel();
    let _ = task.await;
}

/// `daemons` draining `chats` at `per_minute`: PUTs per second over the
/// drain (first to last PUT) as a share of the limit, and the busiest
/// sliding minute.
async fn share(server: &postgres::PgServer, daemons: usize, chats: i64, per_minute: u32) {
    let sandbox = support::sandbox().await;
    sandbox.set_rate_limit(Some(SandboxLimit {
        requests: per_minute,
        per: Duration::from_secs(60),
        window: Window::Sliding,
        retry_after: true,
    }));
    let url = server.database().await;
    let config = config(&sandbox, &url, per_minute);
    let mut running = Vec::new();
    for _ in 0..daemons {
        running.push(daemon(&config).await);
    }
    let producer = sqlx::PgPool::connect(&url).await.unwrap();
    for chat in 1..=chats {
        insert(&producer, chat).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while sandbox.assign_calls().len() < chats as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let puts = support::put_times(&sandbox);
    let span = puts.last().unwrap().duration_since(puts[0]).as_secs_f64();
    let rate = (puts.len() - 1) as f64 / span;
    let limit = f64::from(per_minute) / 60.0;
    let busiest = assignd::limiter::busiest_window(&puts, Duration::from_secs(60));
    println!(
        "{daemons} daemon(s), {chats} chats at {per_minute}/min: {} PUTs, {} answered 429, {:.2}/s = {:.1}% of the limit, busiest minute {busiest}",
        puts.len(),
        sandbox.rejected_429(),
        rate,
        100.0 * rate / limit
    );
    for (stop, task) in running {
        stop.cancel();
        let _ = task.await;
    }
}

/// Two real daemons; the leader is killed mid-backlog.
async fn failover(server: &postgres::PgServer) {
    let sandbox = support::sandbox().await;
    let url = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.path().join("api-key"), "k").unwrap();
    let text = format!(
        "[helpcrunch]\nbase_url = \"{}\"\napi_key_file = \"api-key\"\n[helpcrunch.rate_limit]\nrequests = 600\nper = \"1m\"\n[database]\nurl = \"{url}\"\n[rules]\npath = \"rules.toml\"\n[worker]\npoll_interval = \"200ms\"\n",
        sandbox.base_url()
    );
    std::fs::write(dir.path().join("assignd.toml"), text).unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_assignd"))
            .args(["run", "--config"])
            .arg(dir.path().join("assignd.toml"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut daemons = [spawn(), spawn()];
    let producer = sqlx::PgPool::connect(&url).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for chat in 1..=200 {
        insert(&producer, chat).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leader: (String,) = sqlx::query_as("SELECT owner FROM leases WHERE name = 'leader'")
        .fetch_one(&producer)
        .await
        .unwrap();
    let pid: u32 = leader.0.split('-').next().unwrap().parse().unwrap();
    let killed_at = Instant::now();
    for d in &mut daemons {
        if d.id() == pid {
            d.kill().unwrap();
        }
    }
    let took_over = loop {
        let owner: Option<(String,)> = sqlx::query_as(
            "SELECT owner FROM leases WHERE name = 'leader' AND owner <> $1 AND expires_at > assignd_now_ms()",
        )
        .bind(&leader.0)
        .fetch_optional(&producer)
        .await
        .unwrap();
        if owner.is_some() {
            break killed_at.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sandbox.assign_calls().len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let puts = support::put_times(&sandbox);
    let gap = puts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let chats: std::collections::HashSet<i64> =
        sandbox.assign_calls().iter().map(|c| c.0).collect();
    println!(
        "failover: leader SIGKILLed, another daemon led after {took_over:?}; longest gap between PUTs {gap:?}; {} PUTs for {} chats",
        puts.len(),
        chats.len()
    );
    for d in &mut daemons {
        let _ = d.kill();
        let _ = d.wait();
    }
}

#[tokio::main]
async fn main() {
    let Some(server) = postgres::server() else {
        return;
    };
    pickup(server).await;
    for daemons in 1..=3 {
        share(server, daemons, 150, 300).await;
    }
    failover(server).await;
}
