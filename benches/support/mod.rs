//! What the benchmarks share: two agents, their rules, and the sandbox
//! that plays their HelpCrunch account.

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
