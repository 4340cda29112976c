//! Pickup latency from HTTP intake to the PUT (SPEC §11: p99 ≤ 10 ms while
//! budget is free). Signed `chat.new` webhooks carry the chat, so the PUT is
//! the only call; they are spaced so that the limiter always has budget.
//!
//! Run: `cargo bench --bench intake`. Results are in docs/benchmarks.md.

use std::sync::Arc;

use assignd::app::Application;
use assignd::config::Config;
use assignd::duration::HumanDuration;
use assignd::http::ListenerSecrets;
use assignd::secrets::Secret;
use tokio_util::sync::CancellationToken;

mod support;

use support::RULES;

const SAMPLES: i64 = 300;

#[tokio::main]
async fn main() {
    let sandbox = support::sandbox().await;
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

    let latencies = support::pickups(&sandbox, SAMPLES, |chat| {
        let body = serde_json::to_vec(&serde_json::json!({
            "event": "chat.new", "id": format!("ev-{chat}"),
            "eventData": {"id": chat, "status": "new", "assignee": null, "customer": {"id": chat, "email": "a@b.c"}}
        }))
        .unwrap();
        let request = client
            .post(&url)
            .header(
                "X-HelpCrunch-Signature",
                assignd::http::webhook_signature(b"whk", &body),
            )
            .body(body);
        async move {
            let r = request.send().await.unwrap();
            assert!(r.status().is_success());
        }
    })
    .await;
    support::print_percentiles(
        &format!("intake (signed webhook) -> PUT, {SAMPLES} chats"),
        latencies,
    );
    shutdown.cancel();
    let _ = worker.await;
}
