//! Issue 21, item 4: reconciliation cannot miss an open chat. An agent has
//! 250 chats in HelpCrunch (the sandbox), open and closed; after every
//! search call, before the next, chats close, arrive, change status, move
//! to another agent and back, as agents and customers do meanwhile. Over
//! many seeded interleavings, `Client::agent_chats` reports open every chat
//! that was open with the agent at every call, none that never was, and
//! closed every chat that stayed closed through the last reads.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assignd::domain::AgentId;
use assignd::helpcrunch::Client;
use assignd::helpcrunch::types::OPEN_STATUSES;
use assignd::limiter::Limiter;
use assignd::sandbox::{Sandbox, SandboxAgent, SandboxChat, SandboxChats, SandboxConfig};
use assignd::secrets::Secret;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

const AGENT: i64 = 7;
const OTHER: i64 = 8;
const CHATS: i64 = 250;
const SEEDS: u64 = 60;
/// Long before the test: what the setup's chats were last changed at.
const OLD: i64 = 1_700_000_000;

/// What the agent's chats were at one search call, as that call read them.
#[derive(Default, Clone)]
struct Seen {
    open: HashSet<i64>,
    closed_changed: HashSet<i64>,
}

fn seen(chats: &SandboxChats<'_>, changed_since: i64) -> Seen {
    let with = |c: &SandboxChat| c.assignee == Some(AGENT);
    Seen {
        open: chats
            .ids(|c| with(c) && c.status != "closed")
            .into_iter()
            .collect(),
        closed_changed: chats
            .ids(|c| with(c) && c.status == "closed" && c.updated_at >= changed_since)
            .into_iter()
            .collect(),
    }
}

/// One change HelpCrunch might see between two calls.
fn change(chats: &SandboxChats<'_>, rng: &mut StdRng, next_id: &mut i64) {
    let pick = |rng: &mut StdRng, ids: Vec<i64>| {
        (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())])
    };
    let open_with = |a: i64| chats.ids(move |c| c.assignee == Some(a) && c.status != "closed");
    let status = OPEN_STATUSES[rng.random_range(0..OPEN_STATUSES.len())];
    match rng.random_range(0..6) {
        0 => {
            if let Some(id) = pick(rng, open_with(AGENT)) {
                chats.update(id, |c| c.status = "closed".into());
            }
        }
        1 => {
            // A new chat, assigned to the agent at once.
            *next_id += 1;
            chats.update(*next_id, |c| {
                c.created_at = jiff::Timestamp::now().as_second();
                c.assignee = Some(AGENT);
            });
        }
        2 => {
            // From one open status to another (maybe one read already).
            if let Some(id) = pick(rng, open_with(AGENT)) {
                chats.update(id, |c| c.status = status.into());
            }
        }
        3 => {
            if let Some(id) = pick(rng, open_with(AGENT)) {
                chats.update(id, |c| c.assignee = Some(OTHER));
            }
        }
        4 => {
            if let Some(id) = pick(rng, open_with(OTHER)) {
                chats.update(id, |c| c.assignee = Some(AGENT));
            }
        }
        _ => {
            let closed = chats.ids(|c| c.assignee == Some(AGENT) && c.status == "closed");
            if let Some(id) = pick(rng, closed) {
                chats.update(id, |c| c.status = status.into());
            }
        }
    }
}

/// The agent's 250 chats and 50 of another agent's, in random statuses
/// (about half `opened`, a fifth closed). With `crowd`, all created in
/// one second, so that more than a page of one status shares a second.
fn populate(sandbox: &Sandbox, rng: &mut StdRng, crowd: bool) {
    for id in 1..=CHATS + 50 {
        let status = match rng.random_range(0..100) {
            0..50 => "opened",
            50..70 => "closed",
            n => OPEN_STATUSES[n as usize % OPEN_STATUSES.len()],
        };
        sandbox.update_chat(id, |c| {
            c.status = status.into();
            c.assignee = Some(if id <= CHATS { AGENT } else { OTHER });
            c.created_at = if crowd { OLD } else { OLD + id / 3 };
            c.updated_at = OLD;
        });
    }
}

/// One interleaving: how many search calls it took, and what went wrong.
async fn interleaving(seed: u64) -> (usize, Vec<String>) {
    let agents = [AGENT, OTHER].map(|id| SandboxAgent {
        id,
        name: format!("agent{id}"),
    });
    let config = SandboxConfig {
        agents: agents.to_vec(),
        chats: 1..=10_000,
        rate_limit: None,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    populate(&sandbox, &mut rng, seed.is_multiple_of(3));
    let changed_since = jiff::Timestamp::now().as_second() - 60;
    // What each call read, then up to three changes before the next.
    let calls: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = calls.clone();
    let mut next_id = 5_000;
    sandbox.between_searches(Some(Box::new(move |chats: &SandboxChats<'_>| {
        record.lock().unwrap().push(seen(chats, changed_since));
        for _ in 0..rng.random_range(0..=3) {
            change(chats, &mut rng, &mut next_id);
        }
    })));
    let limiter = Arc::new(Limiter::new(
        NonZeroU32::new(6000).unwrap(),
        Duration::from_secs(60),
        NonZeroU32::MIN,
    ));
    let key = Secret::new(sandbox.api_key());
    let client = Client::new(&sandbox.base_url(), &key, Duration::from_secs(5), limiter).unwrap();
    let found = client
        .agent_chats(AgentId(AGENT), changed_since, &CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let calls = calls.lock().unwrap().clone();
    (calls.len(), check(seed, &calls, &found, &sandbox))
}

/// The answer against what every call read.
fn check(
    seed: u64,
    calls: &[Seen],
    found: &assignd::helpcrunch::AgentChats,
    sandbox: &Sandbox,
) -> Vec<String> {
    let ids = |list: &[assignd::helpcrunch::SeenChat]| -> HashSet<i64> {
        list.iter().map(|c| c.id.0).collect()
    };
    let (open, closed) = (ids(&found.open), ids(&found.closed));
    let always = in_every(calls, |c| &c.open);
    let ever: HashSet<i64> = calls.iter().flat_map(|c| c.open.iter().copied()).collect();
    let mut wrong = Vec::new();
    let mut expect = |what: &str, ids: Vec<&i64>| {
        if !ids.is_empty() {
            wrong.push(format!("seed {seed}: {what}: {ids:?}"));
        }
    };
    expect(
        "open at every call, not reported open",
        always.difference(&open).collect(),
    );
    expect(
        "reported open, never open with the agent",
        open.difference(&ever).collect(),
    );
    // The changed chats are read last: the closes through those calls.
    let changed_calls = sandbox
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chats/search")
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b.to_string().contains("chats.updatedAt"))
        })
        .count();
    let last = &calls[calls.len() - changed_calls..];
    let stayed_closed = in_every(last, |c| &c.closed_changed);
    expect(
        "closed meanwhile, not reported closed",
        stayed_closed.difference(&closed).collect(),
    );
    expect(
        "reported open and closed",
        open.intersection(&closed).collect(),
    );
    wrong
}

/// The chats in `set` of every call.
fn in_every(calls: &[Seen], set: impl Fn(&Seen) -> &HashSet<i64>) -> HashSet<i64> {
    let mut all = set(&calls[0]).clone();
    for call in &calls[1..] {
        all.retain(|c| set(call).contains(c));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_open_chat_is_missed_while_chats_change_between_pages() {
    let (mut calls, mut wrong) = (0, Vec::new());
    for seed in 0..SEEDS {
        let (n, w) = interleaving(seed).await;
        calls += n;
        wrong.extend(w);
    }
    println!(
        "{SEEDS} interleavings, {calls} search calls, {} wrong",
        wrong.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
