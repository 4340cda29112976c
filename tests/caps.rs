//! Issue 14: `max_open` holds under churn. Chats stream in, chats close
//! every 5–40 ms (in HelpCrunch, then with a `chat.closed` webhook), and
//! `[load] refresh` reconciles every 250 ms; from the sandbox's record of
//! every accepted assignment and the test's record of every close, the
//! open chats per agent never exceed the cap at any moment. On SQLite with
//! one daemon, and on PostgreSQL with two and with three sharing the
//! routing state.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use assignd::domain::ChatId;
use assignd::sandbox::Faults;
use assignd::secrets::Secret;
use common::*;
use rand::RngExt;
use serde_json::json;

const WEBHOOK_KEY: &str = "whk-caps-key";
const CAP: i64 = 2;

const RULES: &str = r#"
[agents]
alice = { id = 4188, max_open = 2 }
bob   = { id = 4761, max_open = 2 }
carol = { id = 6694, max_open = 2 }

[pools.support]
agents = ["alice", "bob", "carol"]
strategy = "least-open"

[[rule]]
name = "all"
assign = "pool:support"
"#;

/// One moment of the sandbox's life: an accepted assignment or a close.
enum Event {
    Assigned { chat: i64, agent: i64 },
    Closed { chat: i64 },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_while_chats_close_and_reconciliation_runs() {
    churn(None, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_across_two_daemons_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    churn(Some(server.database().await), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_across_three_daemons_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    churn(Some(server.database().await), 3).await;
}

/// Runs `daemons` daemons on `database` (the SQLite file if `None`) for
/// 20 s of churn, then checks the caps from the sandbox's record.
async fn churn(database: Option<String>, daemons: usize) {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("concurrency = 8")
        .worker(NO_FETCH)
        .listen()
        .build()
        .await;
    app.edit_config(|c| c + "\n[load]\nrefresh = \"250ms\"\n");
    if let Some(url) = &database {
        app.use_database(url);
    }
    // A late answer widens the window between HelpCrunch applying an
    // assignment and the daemon settling it.
    app.sandbox.set_faults(Faults {
        delay: Duration::from_millis(15),
        ..Faults::default()
    });
    let mut running = Vec::new();
    for _ in 0..daemons {
        let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
        running.push(app.start_serving(secrets).await);
    }
    let bases: Vec<String> = running
        .iter()
        .map(|d| format!("http://{}", d.http_addr.expect("the listener runs")))
        .collect();
    let http = reqwest::Client::new();
    // Every event goes to one of the daemons, in turn.
    let mut sent = 0usize;
    let mut post = async |body: Vec<u8>| {
        sent += 1;
        let base = &bases[sent % bases.len()];
        assert_eq!(
            common::post_webhook(&http, base, WEBHOOK_KEY, body).await,
            200
        );
    };
    let new_chat = |id: i64| {
        let data = json!({"id": id, "status": "new", "createdAt": "1607540767.414", "customer": {"id": id + 500_000, "email": "x@example.com"}, "assignee": null, "department": {"id": 1, "name": "Support"}, "communicatedAgents": []});
        webhook_event(&format!("new-{id}"), "chat.new", data)
    };

    let run_for = Duration::from_secs(20);
    let started = Instant::now();
    let mut closes: Vec<(Instant, i64)> = Vec::new();
    let mut next_chat = 1_000;
    let mut rng = rand::rng();
    // A backlog from the start (chat.new webhooks), so that every freed
    // seat is taken at once; a new chat for every close keeps it.
    for _ in 0..20 {
        post(new_chat(next_chat)).await;
        next_chat += 1;
    }
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        post(new_chat(next_chat)).await;
        next_chat += 1;
        // Close one open chat, in HelpCrunch first, then by webhook.
        let open: Vec<i64> = (1_000..next_chat)
            .filter(|&c| {
                app.sandbox.assignee(c).is_some()
                    && app.sandbox.chat_json(c).unwrap()["status"] != "closed"
            })
            .collect();
        if open.is_empty() {
            continue;
        }
        let chat = open[rng.random_range(0..open.len())];
        let mut at = None;
        app.sandbox.update_chat(chat, |c| {
            c.status = "closed".into();
            at = Some(Instant::now());
        });
        closes.push((at.unwrap(), chat));
        let data = json!({"id": chat, "status": "closed"});
        post(webhook_event(&format!("close-{chat}"), "chat.closed", data)).await;
    }
    // Nothing closes any more: every seat fills, and what is in flight
    // settles.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut recorded: Vec<(i64, String)> = running[0]
        .runtime
        .store
        .open_chats()
        .await
        .unwrap()
        .into_iter()
        .map(|(chat, agent)| (chat.0, agent))
        .collect();
    recorded.sort();
    for d in running {
        d.stop().await;
    }

    // Every accepted assignment and every close, in the order they happened.
    let mut events: Vec<(Instant, Event)> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == "/v1/chats/assignee" && r.status == 200)
        .filter_map(|r| {
            let b = r.body?;
            let chat = b.get("id")?.as_i64()?;
            let agent = b.get("assignee")?.as_i64()?;
            Some((r.received, Event::Assigned { chat, agent }))
        })
        .collect();
    events.extend(
        closes
            .iter()
            .map(|&(at, chat)| (at, Event::Closed { chat })),
    );
    events.sort_by_key(|(at, _)| *at);

    let searches = app
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chats/search")
        .count();
    let mut with: HashMap<i64, i64> = HashMap::new();
    let mut open: HashMap<i64, i64> = HashMap::new();
    let (mut over, mut peak, mut assigned) = (0, 0, 0);
    for (_, e) in &events {
        match *e {
            Event::Assigned { chat, agent } => {
                assigned += 1;
                if let Some(before) = with.insert(chat, agent) {
                    *open.entry(before).or_default() -= 1;
                }
                let n = open.entry(agent).or_default();
                *n += 1;
                peak = peak.max(*n);
                if *n > CAP {
                    over += 1;
                }
            }
            Event::Closed { chat } => {
                if let Some(agent) = with.remove(&chat) {
                    *open.entry(agent).or_default() -= 1;
                }
            }
        }
    }
    println!(
        "{} events ({assigned} assignments, {} closes, {searches} searches) in {:?}: \
         {over} over-cap assignments, peak {peak} open per agent",
        events.len(),
        closes.len(),
        started.elapsed()
    );
    assert!(events.len() >= 200, "too few events: {}", events.len());
    assert!(searches >= 20, "reconciliation ran {searches} searches");
    assert_eq!(
        over, 0,
        "over-cap assignments (peak {peak} open, cap {CAP})"
    );

    // No seat leaked or lost: what the database counts open is what the
    // sandbox has open.
    let names: HashMap<i64, &str> = ABC.iter().map(|(n, id)| (*id, *n)).collect();
    let mut expected: Vec<(i64, String)> = with
        .iter()
        .map(|(chat, agent)| (*chat, names[agent].to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        recorded, expected,
        "open chats recorded vs open in the sandbox"
    );
}

/// A `chat.closed` that arrives while the chat's assignment call is on its
/// way (HelpCrunch applied it, its answer is late) frees the seat for
/// good: the settle that comes after the close must not count the chat
/// open again, or the seat stays taken until a reconciliation (none runs
/// here). On SQLite, and on PostgreSQL where the state is the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_close_during_the_call_frees_the_seat_on_sqlite() {
    close_during_the_call(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_close_during_the_call_frees_the_seat_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    close_during_the_call(Some(server.database().await)).await;
}

async fn close_during_the_call(database: Option<String>) {
    let rules = "[agents]\nalice = { id = 4188, max_open = 1 }\n\n\
                 [pools.support]\nagents = [\"alice\"]\n\n\
                 [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n";
    let app = TestApp::builder()
        .rules(rules)
        .worker(NO_FETCH)
        .listen()
        .build()
        .await;
    // No reconciliation could give a leaked seat back during the test.
    app.edit_config(|c| c + "\n[load]\nrefresh = \"1h\"\n");
    if let Some(url) = &database {
        app.use_database(url);
    }
    let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let base = format!("http://{}", daemon.http_addr.expect("the listener runs"));
    let http = reqwest::Client::new();
    let new_chat = |id: i64| {
        let data = json!({"id": id, "status": "new", "createdAt": "1607540767.414", "customer": {"id": id + 500_000}, "assignee": null, "communicatedAgents": []});
        webhook_event(&format!("new-{id}"), "chat.new", data)
    };
    // Each assignment is applied at once and answered 3 s later.
    app.sandbox.set_faults(Faults {
        delay: Duration::from_secs(3),
        ..Faults::default()
    });
    assert_eq!(
        post_webhook(&http, &base, WEBHOOK_KEY, new_chat(1)).await,
        200
    );
    wait_for(
        "chat 1 assigned in HelpCrunch",
        Duration::from_secs(10),
        || app.sandbox.assignee(1).is_some(),
    )
    .await;
    // Closed while its call has no answer yet.
    app.sandbox.update_chat(1, |c| c.status = "closed".into());
    let close = webhook_event(
        "close-1",
        "chat.closed",
        json!({"id": 1, "status": "closed"}),
    );
    assert_eq!(post_webhook(&http, &base, WEBHOOK_KEY, close).await, 200);
    let store = &daemon.runtime.store;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let outcomes = store.chat_outcomes(ChatId(1), 10).await.unwrap();
        if outcomes.iter().any(|o| o.result == "assigned") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chat 1's assignment never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.sandbox.set_faults(Faults::default());
    // The seat is free: the next chat goes to alice at once.
    assert_eq!(
        post_webhook(&http, &base, WEBHOOK_KEY, new_chat(2)).await,
        200
    );
    wait_for(
        "chat 2 assigned to the freed seat",
        Duration::from_secs(10),
        || app.sandbox.assignee(2).is_some(),
    )
    .await;
    let open = store.open_chats().await.unwrap();
    assert!(!open.contains_key(&ChatId(1)), "{open:?}");
    daemon.stop().await;
}
