//! `assignd demo` and `assignd sandbox`: the real daemon against the
//! built-in HelpCrunch sandbox, with no account and no network.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::config::{Config, FetchChat};
use crate::daemon;
use crate::duration::HumanDuration;
use crate::rules::{self, Rules};
use crate::sandbox::{Sandbox, SandboxAgent, SandboxConfig, SandboxLimit, Window};
use crate::secrets::Secret;
use crate::store::NewQueueItem;

/// The example rules shipped in `rules/`, built into the binary.
pub const EXAMPLE_RULES: &str = include_str!("../../rules/10-team.toml");
const EXAMPLE_RULES_NAME: &str = "rules/10-team.toml (built in)";

/// HelpCrunch's 120 requests a minute, ten times faster, so the demo is short.
const DEMO_REQUESTS: u32 = 120;
const DEMO_PER: Duration = Duration::from_secs(6);
const FIRST_CHAT: i64 = 1001;

fn load_rules(path: Option<PathBuf>) -> Result<(Rules, String), Failure> {
    match path {
        Some(p) => {
            let r = rules::load_path(&p).map_err(|e| Failure::Invalid(e.into()))?;
            Ok((r, p.display().to_string()))
        }
        None => {
            let r = rules::load_sources(&[(
                PathBuf::from("rules/10-team.toml"),
                EXAMPLE_RULES.to_string(),
            )])
            .map_err(|e| Failure::Invalid(e.into()))?;
            Ok((r, EXAMPLE_RULES_NAME.to_string()))
        }
    }
}

fn sandbox_agents(rules: &Rules) -> Vec<SandboxAgent> {
    rules
        .agents
        .iter()
        .map(|a| SandboxAgent {
            id: a.id,
            name: a.name.clone(),
        })
        .collect()
}

pub(super) async fn sandbox(
    listen: SocketAddr,
    api_key: String,
    per_minute: u32,
    rules: Option<PathBuf>,
) -> Result<(), Failure> {
    let (rules, _) = load_rules(rules)?;
    let config = SandboxConfig {
        api_key,
        agents: sandbox_agents(&rules),
        rate_limit: (per_minute > 0).then_some(SandboxLimit {
            requests: per_minute,
            per: Duration::from_secs(60),
            window: Window::Sliding,
            retry_after: true,
        }),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, listen)
        .await
        .context("cannot start the sandbox")?;
    println!(
        "HelpCrunch sandbox at {} (API key: {})",
        sandbox.base_url(),
        sandbox.api_key()
    );
    println!(
        "chats 1..=100000 exist; agents: {}",
        rules
            .agents
            .iter()
            .map(|a| format!("{} ({})", a.name, a.id))
            .collect::<Vec<_>>()
            .join(", ")
    );
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("signals")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    sandbox.stop().await;
    Ok(())
}

pub(super) async fn run(rules_path: Option<PathBuf>, chats: u32) -> Result<(), Failure> {
    let (rules, rules_name) = load_rules(rules_path)?;
    let chats = chats.max(3) as i64;
    let last_chat = FIRST_CHAT + chats - 1;
    // The last two sample chats do not exist in the sandbox: they show dead-lettering.
    let sandbox = Sandbox::start(
        SandboxConfig {
            api_key: "demo-key".into(),
            agents: sandbox_agents(&rules),
            chats: FIRST_CHAT..=last_chat - 2,
            rate_limit: Some(SandboxLimit {
                requests: DEMO_REQUESTS,
                per: DEMO_PER,
                window: Window::Sliding,
                retry_after: true,
            }),
        },
        "127.0.0.1:0".parse().expect("loopback address"),
    )
    .await
    .context("cannot start the sandbox")?;
    let first_agent = rules.agents.first().map(|a| a.id);
    for id in FIRST_CHAT..=last_chat - 2 {
        if id % 25 == 0 {
            sandbox.update_chat(id, |c| c.status = "closed".into());
        } else if id % 40 == 13 {
            sandbox.update_chat(id, |c| c.assignee = first_agent);
        }
    }

    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut config = Config::default();
    config.helpcrunch.base_url = sandbox.base_url();
    config.helpcrunch.rate_limit.requests = NonZeroU32::new(DEMO_REQUESTS).expect("nonzero");
    config.helpcrunch.rate_limit.per = HumanDuration(DEMO_PER);
    config.database.url = Some(toml::Spanned::new(
        0..0,
        format!("sqlite://{}", dir.path().join("demo.db").display()),
    ));
    config.worker.poll_interval = HumanDuration::from_millis(100);
    config.worker.fetch_chat = FetchChat::Auto;
    let runtime = daemon::assemble(&config, Arc::new(rules), &Secret::new("demo-key")).await?;
    let rules = runtime.worker.rules();

    println!("assignd demo");
    println!("  rules:   {rules_name}");
    println!(
        "  sandbox: {} (a HelpCrunch look-alike on loopback)",
        sandbox.base_url()
    );
    println!(
        "  limit:   {DEMO_REQUESTS} requests per {}s, sliding window: HelpCrunch's {DEMO_REQUESTS}/min run ten times faster so the demo is short",
        DEMO_PER.as_secs()
    );

    // Half the chats arrive with a snapshot (as from a webhook), half as bare
    // ids that the worker must GET first.
    let items: Vec<NewQueueItem> = (FIRST_CHAT..=last_chat)
        .map(|id| NewQueueItem {
            chat_id: id,
            attrs: None,
            snapshot: if id % 2 == 0 {
                sandbox.chat_json(id)
            } else {
                None
            },
            priority: 0,
        })
        .collect();
    let started = Instant::now();
    runtime
        .store
        .enqueue(&items)
        .await
        .context("cannot enqueue")?;
    println!("  enqueued {chats} sample chats; processing...\n");

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(runtime.worker.clone().run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let active = runtime
            .store
            .active_count()
            .await
            .context("cannot read the queue")?;
        let unsent = runtime
            .store
            .outbox_pending()
            .await
            .context("cannot read the outbox")?;
        if (active == 0 && unsent == 0) || Instant::now() > deadline {
            break;
        }
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = worker.await;

    let verdict = report(&runtime.store, &sandbox, &rules, chats, elapsed).await;
    runtime.store.close().await;
    sandbox.stop().await;
    verdict
}

async fn report(
    store: &crate::store::Store,
    sandbox: &Sandbox,
    rules: &Rules,
    chats: i64,
    elapsed: Duration,
) -> Result<(), Failure> {
    let depth = store.queue_depth().await.context("cannot read the queue")?;
    let count = |s: &str| depth.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let (done, dead) = (count("done"), count("dead"));
    let unfinished = count("pending") + count("leased");
    let outcomes = store
        .outcome_counts()
        .await
        .context("cannot read outcomes")?;

    println!("finished in {:.1} s", elapsed.as_secs_f64());
    println!(
        "chats: {chats} enqueued -> {done} done, {dead} dead, {unfinished} unfinished{}",
        if done + dead == chats && unfinished == 0 {
            " (every chat accounted for)"
        } else {
            ""
        }
    );

    let mut by_result: std::collections::BTreeMap<&str, i64> = Default::default();
    let mut by_rule: std::collections::BTreeMap<&str, i64> = Default::default();
    let mut by_agent: std::collections::BTreeMap<&str, i64> = Default::default();
    for o in &outcomes {
        *by_result.entry(&o.result).or_default() += o.count;
        if o.result == "assigned" {
            *by_rule.entry(&o.rule).or_default() += o.count;
            *by_agent.entry(&o.agent).or_default() += o.count;
        }
    }
    let line = |m: &std::collections::BTreeMap<&str, i64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("outcomes: {}", line(&by_result));
    println!("assigned per rule:");
    for r in &rules.rules {
        println!(
            "  {:<20} {}",
            r.name,
            by_rule.get(r.name.as_str()).copied().unwrap_or(0)
        );
    }
    println!("assigned per agent:");
    for a in &rules.agents {
        println!(
            "  {:<20} {}",
            a.name,
            by_agent.get(a.name.as_str()).copied().unwrap_or(0)
        );
    }
    let dead_rows = store
        .list_queue(Some("dead"), 10)
        .await
        .context("cannot read the queue")?;
    if !dead_rows.is_empty() {
        println!("dead letters (assignd queue list --state dead):");
        for r in dead_rows {
            println!(
                "  chat {}: {}",
                r.chat_id,
                r.last_error.as_deref().unwrap_or("?")
            );
        }
    }

    let requests = sandbox.requests();
    let gets = requests.iter().filter(|r| r.method == "GET").count();
    let puts = requests.iter().filter(|r| r.method == "PUT").count();
    let posts = requests.iter().filter(|r| r.method == "POST").count();
    let rejected = sandbox.rejected_429();
    let messages = sandbox.messages();
    let notes = messages.iter().filter(|m| m["type"] == "private").count();
    println!(
        "messages: {notes} private notes, {} replies to customers (each after its assignment)",
        messages.len() - notes
    );
    if let Some(reply) = messages.iter().find(|m| m["type"] == "message") {
        println!(
            "  e.g. to chat {}: {}",
            reply["chat"],
            reply["text"].as_str().unwrap_or("")
        );
    }
    println!(
        "API: {} calls ({gets} GET /chats/{{id}}, {puts} PUT /chats/assignee, {posts} POST /messages), {rejected} answered 429",
        requests.len()
    );
    let times: Vec<Duration> = requests.iter().map(|r| r.at).collect();
    let busiest = busiest_window(&times, DEMO_PER);
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let span = (*last - *first).as_secs_f64();
        let limit_rate = DEMO_REQUESTS as f64 / DEMO_PER.as_secs_f64();
        if span > 0.0 && times.len() > 1 {
            let rate = (times.len() - 1) as f64 / span;
            println!(
                "rate: {rate:.2} calls/s while draining = {:.1}% of the limit ({limit_rate:.0}/s); busiest {}s window: {busiest} of {DEMO_REQUESTS}",
                100.0 * rate / limit_rate,
                DEMO_PER.as_secs()
            );
        }
    }
    if unfinished > 0 || done + dead != chats {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{unfinished} chat(s) were not finished"
        )));
    }
    if rejected > 0 {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the sandbox answered 429 {rejected} time(s)"
        )));
    }
    Ok(())
}

/// The most calls in any window of length `per`.
fn busiest_window(times: &[Duration], per: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= per {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
