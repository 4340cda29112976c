//! The demo's last part (issue 24): a short shadow run. The sandbox plays
//! a live account whose own routing assigns every chat after a while and
//! whose people answer; the daemon, in shadow mode, decides each chat the
//! moment it arrives and writes nothing; then `report --compare` sets what
//! assignd would have done against what happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::demo::{demo_config, sandbox_agents};
use crate::app::Application;
use crate::config::Mode;
use crate::http::ListenerSecrets;
use crate::report::{after_hours_rules, arms, compare};
use crate::rules::Rules;
use crate::sandbox::{People, Sandbox, SandboxConfig};
use crate::secrets::Secret;

const CHATS: i64 = 60;
const WEBHOOK_KEY: &str = "demo-webhook-key";
/// The account's own routing, as the sandbox plays it: every chat, after
/// two seconds; its people answer within about a second of getting one.
fn people() -> People {
    People {
        seed: 24,
        assign_share: 1.0,
        assign_after: Duration::from_secs(2),
        reply_after: Some(Duration::from_secs(1)),
        ..People::default()
    }
}

pub(super) async fn run(rules: &Rules) -> Result<(), Failure> {
    println!("\nShadow mode: what assignd would have done on a live account");
    let sandbox = Sandbox::start(
        SandboxConfig {
            api_key: "demo-key".into(),
            agents: sandbox_agents(rules),
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().expect("loopback address"),
    )
    .await
    .context("cannot start the sandbox")?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut config = demo_config(&sandbox, dir.path());
    config.worker.mode = Mode::Shadow;
    config.http.listen = Some("127.0.0.1:0".parse().expect("loopback address"));
    let secrets = ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
    let rules = Arc::new(rules.clone());
    let app = Application::build(&config, rules.clone(), &Secret::new("demo-key"), secrets).await?;
    let addr = app.http_addr().context("the listener did not start")?;
    let runtime = app.runtime.clone();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let worker = tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    sandbox.send_webhooks_to(format!("http://{addr}/webhooks/helpcrunch"), WEBHOOK_KEY);
    sandbox
        .set_people(Some(people()))
        .context("the sandbox's people")?;
    println!(
        "  {CHATS} new chats over 6 s; the sandbox's own routing takes each after 2 s, its people answer"
    );
    // Arriving as traffic does, not all at once: a shadow takes its slots at
    // the live pace, so a burst of 60 would measure the rate limit.
    for id in 1..=CHATS {
        sandbox.create_chat(id, |c| {
            c.assignee = None;
            c.status = "new".into();
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_replies(&sandbox).await;
    shutdown.cancel();
    let _ = worker.await;
    let writes = sandbox.writes().len();
    let mut chats = Vec::new();
    let read = runtime
        .store
        .compare_chats(0, i64::MAX, |c| chats.push(c))
        .await;
    runtime.store.close().await;
    sandbox.stop().await;
    read.context("cannot read the chats")?;
    println!("  writes that reached HelpCrunch from the shadow: {writes}");
    let (a, b) = arms::arms(&chats, &after_hours_rules(&rules)).map_err(anyhow::Error::from)?;
    let compared =
        compare::compare(&a, &b, &compare::Options::default()).map_err(anyhow::Error::from)?;
    println!("\nassignd report --compare:\n{}", compare::text(&compared));
    Ok(())
}

/// Until the sandbox's people have answered every chat, or 20 s.
async fn wait_for_replies(sandbox: &Sandbox) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandbox.first_replies().len() < CHATS as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last webhooks on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
}
