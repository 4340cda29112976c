//! SPEC §15.2 across a takeover: a standby that takes over a SQLite file
//! starts from the state the holder left, not from what it read when it
//! started. Two real daemons on one file, three agents with `max_open =
//! 2`; the standby starts first, then six chats fill every seat; the holder
//! is stopped (kill -9, or SIGTERM); three more chats come. The new holder
//! must assign none of them (every seat is full) and must say why they
//! wait. And what holding means beside it: a holder whose rows wait where
//! only the holder may go on stops when the file is taken; on PostgreSQL a
//! daemon that does not lead forgets the chats closed through another.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashMap;
use std::time::Duration;

use assignd::domain::ChatId;
use assignd::sandbox::Faults;
use assignd::store::{NewQueueItem, WebhookEffect};

use common::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_takes_over_after_kill_9_keeps_every_cap() {
    takeover(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_takes_over_after_sigterm_keeps_every_cap() {
    takeover(Stop::Term).await;
}

enum Stop {
    Kill,
    Term,
}

/// Open chats per agent id in the sandbox.
fn open_per_agent(app: &TestApp, chats: impl Iterator<Item = i64>) -> HashMap<i64, usize> {
    let mut open = HashMap::new();
    for c in chats {
        if let Some(a) = app.sandbox.assignee(c) {
            *open.entry(a).or_default() += 1;
        }
    }
    open
}

async fn takeover(stop: Stop) {
    let app = TestApp::builder().rules(RULES).migrated().await;
    let mut first = app.spawn_guarded("first.log");
    wait_until(
        Duration::from_secs(10),
        || {
            format!(
                "the first daemon does not hold the file: {}",
                app.log("first.log")
            )
        },
        || app.log("first.log").contains("took the daemon lease"),
    )
    .await;
    let mut second = app.spawn_guarded("second.log");
    wait_until(
        Duration::from_secs(10),
        || format!("no standby: {}", app.log("second.log")),
        || app.log("second.log").contains("standby"),
    )
    .await;
    // Every seat fills while the standby waits with what it read at start.
    app.insert_raw(1..=6).await;
    wait_until(
        Duration::from_secs(15),
        || format!("six chats not assigned: {}", app.log("first.log")),
        || (1..=6).all(|c| app.sandbox.assignee(c).is_some()),
    )
    .await;
    app.wait_drained(Duration::from_secs(10)).await;
    match stop {
        Stop::Kill => first.kill9(),
        Stop::Term => {
            let status = terminate(&mut first.child, Duration::from_secs(15));
            assert!(status.success(), "the holder's exit: {status:?}");
        }
    }
    app.insert_raw(7..=9).await;
    wait_until(
        Duration::from_secs(10),
        || format!("the standby did not take over: {}", app.log("second.log")),
        || app.log("second.log").contains("took over"),
    )
    .await;
    // Long enough for several claims of the three rows (they are tried
    // again every few seconds at most, and at once when a seat frees).
    tokio::time::sleep(Duration::from_secs(4)).await;
    second.assert_running("the new holder");
    let open = open_per_agent(&app, 1..=9);
    let puts = app.sandbox.assign_calls().len();
    let waiting = app
        .rows("SELECT id, state, last_error FROM queue WHERE chat_id > 6 ORDER BY id")
        .await;
    println!("open per agent after the takeover: {open:?}; {puts} PUTs; rows 7-9: {waiting:?}");
    assert!(
        open.values().all(|n| *n <= 2),
        "an agent above max_open = 2 after the takeover: {open:?}\n{}",
        app.log("second.log")
    );
    assert_eq!(puts, 6, "the new holder assigned over full seats");
    for (_, state, reason) in &waiting {
        assert_eq!(state, "pending");
        assert!(
            reason.as_deref().is_some_and(|r| r.starts_with("waiting")),
            "a waiting row says why: {reason:?}"
        );
    }
    let status = terminate(&mut second.child, Duration::from_secs(15));
    assert!(status.success(), "the new holder's exit: {status:?}");
    assert_eq!(
        app.count("queue WHERE state = 'leased'").await,
        0,
        "a clean stop leaves no lease behind"
    );
}

const OPEN: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }

[pools.support]
agents = ["alice", "bob"]

[[rule]]
name = "all"
assign = "pool:support"
"#;

/// Issue 23: the holder's two permits are held by rows whose chat reads
/// are on the wire (the sandbox answers after 2 s); it is paused past its
/// lease, a standby takes the file, and it resumes: each row's next call
/// then waits at the limiter, which only the file's holder may pass. It
/// must stop, not sit in its wait for a free permit renewing the rows'
/// leases, and the new holder assigns every chat once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_rows_wait_at_the_limiter_stops_when_the_file_is_taken() {
    let app = TestApp::builder()
        .rules(OPEN)
        .worker("concurrency = 2\nfetch_chat = \"always\"")
        .migrated()
        .await;
    app.sandbox.set_faults(Faults {
        delay: Duration::from_secs(2),
        ..Faults::default()
    });
    let mut first = app.spawn_guarded("first.log");
    let took = |log: &str| app.log(log).contains("took the daemon lease");
    wait_until(
        Duration::from_secs(10),
        || app.log("first.log"),
        || took("first.log"),
    )
    .await;
    let mut second = app.spawn_guarded("second.log");
    let standby = || app.log("second.log").contains("standby");
    wait_until(Duration::from_secs(10), || app.log("second.log"), standby).await;
    app.insert_raw(1..=4).await;
    let reads = || {
        let calls = app.sandbox.requests();
        let gets = calls.iter().filter(|r| r.method == "GET").count();
        (gets, calls.len() - gets)
    };
    let since = std::time::Instant::now();
    while !(reads() == (2, 0) && app.count("queue WHERE state = 'leased'").await == 2) {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{}",
            app.log("first.log")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(first.pid(), "-STOP");
    let over = || app.log("second.log").contains("took over");
    let waited = wait_until(Duration::from_secs(15), || app.log("second.log"), over);
    waited.await;
    signal(first.pid(), "-CONT");
    let since = std::time::Instant::now();
    while first.child.try_wait().unwrap().is_none() {
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "the holder that lost the file works on: {}",
            app.log("first.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_contains(
        &app.log("first.log"),
        &["another daemon took this database over"],
    );
    // The new holder's first request waits a window; the rows the first
    // holder had are its own by then or at their leases' end.
    let all = || (1..=4).all(|c| app.sandbox.assignee(c).is_some());
    wait_until(Duration::from_secs(120), || app.log("second.log"), all).await;
    let mut chats: Vec<i64> = app.sandbox.assign_calls().iter().map(|c| c.0).collect();
    chats.sort();
    assert_eq!(chats, vec![1, 2, 3, 4], "each chat assigned once");
    second.assert_running("the new holder");
}

/// Issue 23: on PostgreSQL a daemon that does not lead runs no
/// reconciliation; chats closed through another daemon's webhooks must
/// still leave its memory (each `[load] refresh` it reads the open chats
/// the database holds), or its open counts grow with every chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_that_does_not_lead_forgets_chats_closed_through_another() {
    let Some(server) = postgres::server() else {
        return;
    };
    let url = server.database().await;
    let app = TestApp::builder()
        .rules(OPEN)
        .worker("fetch_chat = \"never\"")
        .build()
        .await;
    app.edit_config(|c| c + "\n[load]\nrefresh = \"1s\"\n");
    app.use_database(&url);
    let daemon = app.start_in_process().await;
    let (store, worker) = (&daemon.runtime.store, &daemon.runtime.worker);
    let cluster = daemon.runtime.cluster.clone();
    wait_for("leads", Duration::from_secs(10), || cluster.holds()).await;
    // Another daemon leads from now on (as far as this one can tell).
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let taken = "UPDATE leases SET owner = 'elsewhere', expires_at = expires_at + 3600000
        WHERE name = 'leader'";
    sqlx::query(taken).execute(&db).await.unwrap();
    wait_for("stops leading", Duration::from_secs(10), || {
        !cluster.holds()
    })
    .await;
    let items: Vec<NewQueueItem> = (1..=6)
        .map(|c| NewQueueItem {
            chat_id: ChatId(c),
            ..Default::default()
        })
        .collect();
    store.enqueue(&items).await.unwrap();
    worker.wake();
    let open = || worker.open_counts().iter().map(|(_, n)| *n).sum::<u32>();
    wait_for("six chats open here", Duration::from_secs(10), || {
        open() == 6
    })
    .await;
    // Four close; the webhooks reach another daemon, which records them.
    for c in 1..=4 {
        let closed = WebhookEffect::Closed { chat_id: ChatId(c) };
        let id = format!("closed-{c}");
        assert!(
            store
                .apply_webhook(&id, "chat.closed", &closed)
                .await
                .unwrap()
        );
    }
    wait_for("two chats open here", Duration::from_secs(10), || {
        open() == 2
    })
    .await;
    daemon.stop().await;
}
