//! SPEC §15.1 through a database outage: two daemons on PostgreSQL, the
//! server stopped for 10 s while calls are in flight; and a daemon told to
//! stop while the database is down. Alone in their test binary, since they
//! stop the server every test of a binary shares, one at a time.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use assignd::domain::ChatId;
use assignd::sandbox::Faults;
use assignd::store::NewQueueItem;
use common::*;
use serde_json::json;

const OPEN_RULES: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }
carol = { id = 6694 }

[pools.support]
agents = ["alice", "bob", "carol"]

[[rule]]
name = "all"
assign = "pool:support"
"#;

/// The tests take turns with the server they stop.
static SERVER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn item(chat: i64) -> NewQueueItem {
    NewQueueItem {
        chat_id: ChatId(chat),
        attrs: None,
        snapshot: Some(json!({"id": chat, "status": "new", "assignee": null})),
        priority: 0,
        ranked: false,
    }
}

/// A test app on `url` with answers `delay` late, and `worker` settings.
async fn app_on(url: &str, worker: &str, delay: Duration) -> TestApp {
    let app = TestApp::builder()
        .rules(OPEN_RULES)
        .worker(worker)
        .build()
        .await;
    app.use_database(url);
    // A lease of 4 s leaves a call 2 s (`[worker] lease` exceeds the
    // timeout by at least 1 s).
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"2s\""));
    app.sandbox.set_faults(Faults {
        delay,
        ..Faults::default()
    });
    app
}

/// The issue's outage: two daemons on PostgreSQL, 80 rows carrying
/// snapshots, answers 400 ms late, and the database stopped for 10 s in the
/// middle of the backlog, so that calls HelpCrunch applied cannot be
/// recorded (a lease short enough that the daemon gives up recording). No
/// chat may be assigned twice, and each gets exactly one `assigned` outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_assigns_no_chat_twice() {
    const CHATS: i64 = 80;
    let Some(server) = postgres::server() else {
        return;
    };
    let _turn = SERVER_TURN.lock().await;
    let url = server.database().await;
    let worker = "concurrency = 4\nfetch_chat = \"never\"\nlease = \"4s\"";
    let app = app_on(&url, worker, Duration::from_millis(400)).await;
    let running = vec![app.start_in_process().await, app.start_in_process().await];
    let store = running[0].runtime.store.clone();
    let items: Vec<NewQueueItem> = (1..=CHATS).map(|c| item(1000 + c)).collect();
    store.enqueue(&items).await.unwrap();
    for d in &running {
        d.runtime.worker.wake();
    }
    wait_for("a third of the backlog", Duration::from_secs(30), || {
        app.sandbox.assign_calls().len() >= 25
    })
    .await;
    let stopped_at = app.sandbox.requests().last().map(|r| r.at);
    server.stop("immediate");
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.start();
    let started_at = app.sandbox.requests().last().map(|r| r.at);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match store.active_count().await {
            Ok(0) => break,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("the queue did not drain after the outage: {other:?}"),
        }
    }
    let mut assigned_outcomes = 0;
    for c in 1001..=1000 + CHATS {
        let outcomes = store.chat_outcomes(ChatId(c), 50).await.unwrap();
        let n = outcomes.iter().filter(|o| o.result == "assigned").count();
        assert_eq!(n, 1, "chat {c}: {n} assigned outcomes: {outcomes:#?}");
        assigned_outcomes += n;
    }
    let intents = store.intents().await.unwrap();
    for d in running {
        d.stop().await;
    }
    let calls = app.sandbox.assign_calls();
    let mut twice = Vec::new();
    for c in 1001..=1000 + CHATS {
        let applied: Vec<i64> = calls
            .iter()
            .filter(|(chat, _, status)| *chat == c && *status == 200)
            .map(|(_, agent, _)| *agent)
            .collect();
        if applied.len() != 1 {
            twice.push((c, applied));
        }
    }
    println!(
        "{} PUTs for {CHATS} chats across a 10-s outage; {assigned_outcomes} assigned outcomes",
        calls.len()
    );
    for (c, _) in &twice {
        for r in app.sandbox.requests().iter().filter(|r| {
            r.body
                .as_ref()
                .and_then(|b| b.get("id"))
                .and_then(|v| v.as_i64())
                == Some(*c)
                || r.path.ends_with(&format!("/{c}"))
        }) {
            println!(
                "chat {c}: {} {} {} at {:?}",
                r.method, r.path, r.status, r.at
            );
        }
    }
    println!("outage from {stopped_at:?} to {started_at:?}");
    assert!(
        twice.is_empty(),
        "chats not assigned exactly once: {twice:?}"
    );
    assert!(intents.is_empty(), "intents left: {intents:?}");
}

/// SIGTERM while the database is down and calls are on the wire: the
/// daemon still exits within the 10 s the README promises (it cannot put
/// its rows back; their leases expire), and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_database_outage_exits_in_time() {
    let Some(server) = postgres::server() else {
        return;
    };
    let _turn = SERVER_TURN.lock().await;
    let url = server.database().await;
    // Calls stay on the wire for 3 s each.
    let worker = "concurrency = 4\nfetch_chat = \"never\"";
    let app = app_on(&url, worker, Duration::from_secs(3)).await;
    let mut daemon = app.spawn_daemon("daemon.log");
    let producer = assignd::store::Store::connect_postgres(&url).await.unwrap();
    let items: Vec<NewQueueItem> = (1..=20).map(|c| item(2000 + c)).collect();
    wait_for("the daemon's migrations", Duration::from_secs(30), || {
        app.log("daemon.log").contains("took the leader lease")
    })
    .await;
    producer.enqueue(&items).await.unwrap();
    producer.close().await;
    wait_for("calls on the wire", Duration::from_secs(30), || {
        app.sandbox.assign_calls().len() >= 2
    })
    .await;
    server.stop("immediate");
    let signalled = std::time::Instant::now();
    let status = terminate(&mut daemon, Duration::from_secs(20));
    let took = signalled.elapsed();
    server.start();
    assert!(
        status.success(),
        "exit status {status}: {}",
        app.log("daemon.log")
    );
    assert!(
        took < Duration::from_secs(10),
        "the daemon took {took:?} to stop with the database down: {}",
        app.log("daemon.log")
    );
}
