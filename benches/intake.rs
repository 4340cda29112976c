//! Pickup latency from HTTP intake to the PUT (SPEC §11: p99 ≤ 10 ms while
//! budget is free). Signed `chat.new` webhooks carry the chat, so the PUT is
//! the only call; they are spaced so that the limiter always has budget.
//!
//! Run: `cargo bench --bench intake`. Results are in docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use assignd::app::Application;
use assignd::config::Config;
use assignd::duration::HumanDuration;
use assignd::http::ListenerSecrets;
use assignd::sandbox::{Sandbox, SandboxAgent, SandboxConfig};
use assignd::secrets::Secret;
use tokio_util::sync::CancellationToken;

const SAMPLES: i64 = 300;
const RULES: &str = "[agents]\nalice = { id = 1 }\nbob = { id = 2 }\n[pools.p]\nagents = [\"alice\", \"bob\"]\n[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";

#[tokio::main]
async fn main() {
    let agents = vec![
        SandboxAgent {
            id: 1,
            name: "alice".into(),
        },
        SandboxAgent {
            id: 2,
            name: "bob".into(),
        },
    ];
    let sandbox = Sandbox::start(
        SandboxConfig {
            api_key: "k".into(),
            agents,
            chats: 1..=1_000_000,
            rate_limit: None,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.helpcrunch.base_url = sandbox.base_url();
    config.helpcrunch.rate_limit.requests = std::num::NonZeroU32::new(6000).unwrap();
    config.database.url = Some(toml::Spanned::new(
        0..0,
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    ));
    config.worker.poll_interval = HumanDuration::from_millis(500);
    let rules = assignd::rules::load_sources(&[("rules.toml".into(), RULES.into())]).unwrap();
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    let secrets = ListenerSecrets::new(Some(Secret::new("whk")), None);
    let app = Application::build(&config, Arc::new(rules), &Secret::new("k"), secrets)
        .await
        .unwrap();
    let addr = app.http_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let worker = tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/webhooks/helpcrunch");

    let mut latencies = Vec::new();
    for chat in 1..=SAMPLES {
        let body = serde_json::to_vec(&serde_json::json!({
            "event": "chat.new", "id": format!("ev-{chat}"),
            "eventData": {"id": chat, "status": "new", "assignee": null, "customer": {"id": chat, "email": "a@b.c"}}
        }))
        .unwrap();
        let sent = Instant::now();
        let r = client
            .post(&url)
            .header(
                "X-HelpCrunch-Signature",
                assignd::http::webhook_signature(b"whk", &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let put = loop {
            if let Some(r) = sandbox.requests().iter().rev().find(|r| {
                r.method == "PUT" && r.body.as_ref().and_then(|b| b["id"].as_i64()) == Some(chat)
            }) {
                break r.received;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(put.duration_since(sent));
        // Leave the limiter its budget: the target is for free budget.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "intake (signed webhook) -> PUT, {SAMPLES} chats: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies.last().unwrap()
    );
    shutdown.cancel();
    let _ = worker.await;
}
