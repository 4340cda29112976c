//! `assignd demo` and `assignd sandbox`: the real daemon against the
//! built-in HelpCrunch sandbox, with no account and no network.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::app::Application;
use crate::config::{Config, FetchChat};
use crate::domain::ChatId;
use crate::duration::HumanDuration;
use crate::http::ListenerSecrets;
use crate::rules::{self, Rules};
use crate::sandbox::{Recorded, Sandbox, SandboxAgent, SandboxConfig, SandboxLimit, Window};
use crate::secrets::Secret;
use crate::store::{NewQueueItem, OutcomeCount, Store};

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

/// HelpCrunch's own kind of limit: a sliding window, 429s with `Retry-After`.
fn sliding_limit(requests: u32, per: Duration) -> SandboxLimit {
    SandboxLimit {
        requests,
        per,
        window: Window::Sliding,
        retry_after: true,
    }
}

pub(super) fn sandbox_agents(rules: &Rules) -> Vec<SandboxAgent> {
    rules
        .agents
        .iter()
        .map(|a| SandboxAgent {
            id: a.id.0,
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
        rate_limit: (per_minute > 0).then(|| sliding_limit(per_minute, Duration::from_secs(60))),
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
    let sandbox = start_demo_sandbox(&rules, last_chat).await?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let config = demo_config(&sandbox, dir.path());
    let secrets = ListenerSecrets::new(None, None);
    let app =
        Application::build(&config, Arc::new(rules), &Secret::new("demo-key"), secrets).await?;
    let runtime = app.runtime.clone();
    let rules = runtime.worker.rules();
    print_header(&rules_name, &sandbox);

    let started = Instant::now();
    enqueue_samples(&runtime.store, &sandbox, last_chat).await?;
    println!("  enqueued {chats} sample chats; processing...");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let worker = tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    drain(&runtime.store, &sandbox, chats).await?;
    let elapsed = started.elapsed();
    println!();
    shutdown.cancel();
    let _ = worker.await;

    let verdict = report(&runtime.store, &sandbox, &rules, chats, elapsed).await;
    super::day::print(
        &rules,
        &crate::timeline::run(&rules, &super::day::scenario(&rules)),
    );
    runtime.store.close().await;
    sandbox.stop().await;
    verdict?;
    super::demo_shadow::run(&rules).await
}

/// The sandbox with the sample chats `FIRST_CHAT..=last_chat` set up: the
/// last two do not exist (they show dead-lettering), some are closed and
/// some already assigned (they show skipping).
async fn start_demo_sandbox(rules: &Rules, last_chat: i64) -> Result<Sandbox, Failure> {
    let sandbox = Sandbox::start(
        SandboxConfig {
            api_key: "demo-key".into(),
            agents: sandbox_agents(rules),
            chats: FIRST_CHAT..=last_chat - 2,
            rate_limit: Some(sliding_limit(DEMO_REQUESTS, DEMO_PER)),
            ..SandboxConfig::default()
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
            sandbox.update_chat(id, |c| c.assignee = first_agent.map(|a| a.0));
        }
    }
    Ok(sandbox)
}

/// The daemon's configuration for the demo: the sandbox, its limit, and a
/// database in `dir`; a short poll so that the demo does not idle.
pub(super) fn demo_config(sandbox: &Sandbox, dir: &Path) -> Config {
    let mut config = Config::default();
    config.helpcrunch.base_url = sandbox.base_url();
    config.helpcrunch.rate_limit.requests = NonZeroU32::new(DEMO_REQUESTS).expect("nonzero");
    config.helpcrunch.rate_limit.per = HumanDuration(DEMO_PER);
    config.database.url = Some(toml::Spanned::new(
        0..0,
        format!("sqlite://{}", dir.join("demo.db").display()),
    ));
    config.worker.poll_interval = HumanDuration::from_millis(100);
    config.worker.fetch_chat = FetchChat::Auto;
    config
}

fn print_header(rules_name: &str, sandbox: &Sandbox) {
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
}

/// Half the chats arrive with a snapshot (as from a webhook), half as bare
/// ids that the worker must GET first.
async fn enqueue_samples(store: &Store, sandbox: &Sandbox, last_chat: i64) -> Result<(), Failure> {
    let items: Vec<NewQueueItem> = (FIRST_CHAT..=last_chat)
        .map(|id| NewQueueItem {
            chat_id: ChatId(id),
            attrs: None,
            snapshot: if id % 2 == 0 {
                sandbox.chat_json(id)
            } else {
                None
            },
            priority: 0,
            ranked: false,
        })
        .collect();
    store.enqueue(&items).await.context("cannot enqueue")?;
    Ok(())
}

/// Waits until the queue and the outbox are empty, or two minutes at most,
/// showing the progress meanwhile.
async fn drain(store: &Store, sandbox: &Sandbox, chats: i64) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progress = Progress::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let active = store
            .active_count()
            .await
            .context("cannot read the queue")?;
        let unsent = store
            .outbox_pending()
            .await
            .context("cannot read the outbox")?;
        let over = (active == 0 && unsent == 0) || Instant::now() > deadline;
        if over || progress.due() {
            let rate = recent_rate(&sandbox.requests(), Instant::now(), DEMO_PER);
            progress.show(&progress_line(chats - active, chats, rate));
        }
        if over {
            progress.end();
            return Ok(());
        }
    }
}

/// The drain's progress while the daemon works: one line rewritten in
/// place at a terminal; into a pipe or a file (a CI log) a line every few
/// seconds instead, since `\r` would pile every update into one line.
struct Progress {
    tty: bool,
    shown: Instant,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stdout().is_terminal(),
            shown: Instant::now(),
        }
    }

    fn due(&self) -> bool {
        let every = if self.tty { 1 } else { 5 };
        self.shown.elapsed() >= Duration::from_secs(every)
    }

    fn show(&mut self, line: &str) {
        use std::io::Write;
        if self.tty {
            // Back to the line's start, then clear what a longer line left.
            print!("\r{line}\x1b[K");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
        self.shown = Instant::now();
    }

    /// Ends the line rewritten in place.
    fn end(&self) {
        if self.tty {
            println!();
        }
    }
}

/// E.g. `  142/200 chats  · 19.80/s of 20.00/s (99%)`: the chats finished
/// (done or dead), and the call rate against the limit.
fn progress_line(finished: i64, total: i64, rate: f64) -> String {
    let limit = DEMO_REQUESTS as f64 / DEMO_PER.as_secs_f64();
    let width = total.to_string().len();
    format!(
        "  {finished:>width$}/{total} chats  · {rate:.2}/s of {limit:.2}/s ({:.0}%)",
        100.0 * rate / limit
    )
}

/// Calls per second over the last `window` before `now`, the limit's own
/// measure. Before a whole window has passed, over the time since the first
/// call, counting the gaps between calls (as the report does): the first
/// call alone is no rate.
fn recent_rate(requests: &[Recorded], now: Instant, window: Duration) -> f64 {
    let Some(first) = requests.first() else {
        return 0.0;
    };
    let since_first = now.saturating_duration_since(first.received);
    let span = since_first.min(window);
    if span.is_zero() {
        return 0.0;
    }
    let from = now - span;
    let calls = requests
        .iter()
        .rev()
        .take_while(|r| r.received >= from)
        .count();
    let gaps = if since_first < window {
        calls.saturating_sub(1)
    } else {
        calls
    };
    gaps as f64 / span.as_secs_f64()
}

/// Where the enqueued chats ended up.
struct Tally {
    chats: i64,
    done: i64,
    dead: i64,
    unfinished: i64,
}

impl Tally {
    async fn read(store: &Store, chats: i64) -> Result<Self, Failure> {
        let depth = store.queue_depth().await.context("cannot read the queue")?;
        let count = |s: &str| depth.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        Ok(Self {
            chats,
            done: count("done"),
            dead: count("dead"),
            unfinished: count("pending") + count("leased"),
        })
    }

    fn accounted_for(&self) -> bool {
        self.done + self.dead == self.chats && self.unfinished == 0
    }

    fn print(&self) {
        let Self {
            chats,
            done,
            dead,
            unfinished,
        } = self;
        println!(
            "chats: {chats} enqueued -> {done} done, {dead} dead, {unfinished} unfinished{}",
            if self.accounted_for() {
                " (every chat accounted for)"
            } else {
                ""
            }
        );
    }
}

async fn report(
    store: &Store,
    sandbox: &Sandbox,
    rules: &Rules,
    chats: i64,
    elapsed: Duration,
) -> Result<(), Failure> {
    let tally = Tally::read(store, chats).await?;
    let outcomes = store
        .outcome_counts()
        .await
        .context("cannot read outcomes")?;
    println!("finished in {:.1} s", elapsed.as_secs_f64());
    tally.print();
    print_outcomes(&outcomes, rules);
    print_dead_letters(store).await?;
    let rejected = sandbox.rejected_429();
    print_messages(&sandbox.messages());
    print_calls(&sandbox.requests(), rejected);
    verdict(&tally, rejected)
}

/// Outcomes by result, and assignments per rule and per agent (every rule
/// and agent, in the order of the rules file, zeros included).
fn print_outcomes(outcomes: &[OutcomeCount], rules: &Rules) {
    let mut by_result: BTreeMap<&str, i64> = BTreeMap::new();
    let mut by_rule: BTreeMap<&str, i64> = BTreeMap::new();
    let mut by_agent: BTreeMap<&str, i64> = BTreeMap::new();
    for o in outcomes {
        *by_result.entry(&o.result).or_default() += o.count;
        if o.result == "assigned" {
            *by_rule.entry(&o.rule).or_default() += o.count;
            *by_agent.entry(&o.agent).or_default() += o.count;
        }
    }
    let line = by_result
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("outcomes: {line}");
    let rule_names = rules.rules.iter().map(|r| r.name.as_str());
    print_per("assigned per rule:", rule_names, &by_rule);
    let agent_names = rules.agents.iter().map(|a| a.name.as_str());
    print_per("assigned per agent:", agent_names, &by_agent);
}

fn print_per<'a>(title: &str, names: impl Iterator<Item = &'a str>, counts: &BTreeMap<&str, i64>) {
    println!("{title}");
    for name in names {
        println!("  {:<20} {}", name, counts.get(name).copied().unwrap_or(0));
    }
}

async fn print_dead_letters(store: &Store) -> Result<(), Failure> {
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
    Ok(())
}

fn print_messages(messages: &[serde_json::Value]) {
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
}

/// The calls by endpoint, then how close the daemon ran to the limit.
fn print_calls(requests: &[Recorded], rejected: usize) {
    let count = |method: &str| requests.iter().filter(|r| r.method == method).count();
    let (gets, puts, posts) = (count("GET"), count("PUT"), count("POST"));
    println!(
        "API: {} calls ({gets} GET /chats/{{id}}, {puts} PUT /chats/assignee, {posts} POST /messages), {rejected} answered 429",
        requests.len()
    );
    let times: Vec<Duration> = requests.iter().map(|r| r.at).collect();
    let busiest = crate::limiter::busiest_window(&times, DEMO_PER);
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return;
    };
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

/// The demo fails when a chat was lost or the limit was overrun.
fn verdict(tally: &Tally, rejected: usize) -> Result<(), Failure> {
    if !tally.accounted_for() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{} chat(s) were not finished",
            tally.unfinished
        )));
    }
    if rejected > 0 {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "the sandbox answered 429 {rejected} time(s)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls_at(start: Instant, millis: &[u64]) -> Vec<Recorded> {
        millis
            .iter()
            .map(|ms| Recorded {
                method: "PUT".into(),
                path: "/chats/assignee".into(),
                body: None,
                status: 200,
                at: Duration::from_millis(*ms),
                received: start + Duration::from_millis(*ms),
                time: jiff::Timestamp::UNIX_EPOCH,
                injected: None,
            })
            .collect()
    }

    #[test]
    fn rate_over_the_last_window() {
        let start = Instant::now();
        assert_eq!(recent_rate(&[], start, DEMO_PER), 0.0);
        // Ten calls 100 ms apart: nine gaps in 0.9 s.
        let tenth = calls_at(start, &(0..10).map(|i| i * 100).collect::<Vec<_>>());
        let rate = recent_rate(&tenth, start + Duration::from_millis(900), DEMO_PER);
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        // One call every 50 ms for 10 s: the last 6 s hold 120 calls.
        let steady = calls_at(start, &(0..200).map(|i| i * 50).collect::<Vec<_>>());
        let rate = recent_rate(&steady, start + Duration::from_millis(9_975), DEMO_PER);
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn progress_line_shows_chats_and_rate_against_the_limit() {
        assert_eq!(
            progress_line(42, 200, 19.8),
            "   42/200 chats  · 19.80/s of 20.00/s (99%)"
        );
    }
}
