//! Issue 23, item 1: on SQLite a producer's plain `INSERT INTO queue` from
//! another process is picked up at once, through the database file's
//! changes (`store/watch.rs`), not by the poll, which is set to ten minutes
//! here; and the daemon's own writes wake no claim round. The daemon is
//! the release-like `assignd run` in a process of its own; the test
//! process is the producer.

mod common;
#[path = "support/scrape.rs"]
mod scrape;

use std::time::{Duration, Instant};

use assignd::store::Store;
use common::*;
use serde_json::json;

const WEBHOOK_KEY: &str = "whk-pickup";

/// A daemon polling every ten minutes, with a listener for `/metrics` and
/// webhooks; returns it once it watches the database.
async fn slow_polling_daemon() -> (TestApp, Daemon, String) {
    let app = TestApp::builder().migrated().await;
    std::fs::write(app.dir.path().join("webhook-key"), WEBHOOK_KEY).unwrap();
    app.edit_config(|c| {
        c.replace("poll_interval = \"100ms\"", "poll_interval = \"10m\"")
            + "\n[http]\nlisten = \"127.0.0.1:0\"\nwebhook_key_file = \"webhook-key\"\n"
    });
    let daemon = app.spawn_guarded("pickup.log");
    let base = format!("http://{}", app.listener_addr("pickup.log").await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.log("pickup.log").contains("wake the claim loop") {
        assert!(
            Instant::now() < deadline,
            "no watch: {}",
            app.log("pickup.log")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (app, daemon, base)
}

/// The claim loop's reads of the queue so far (`assignd_queue_reads_total`).
async fn queue_reads(base: &str) -> f64 {
    scrape::metric_sum(base, "assignd_queue_reads_total{").await
}

/// Waits until nothing is pending or leased and the loop's reads stop
/// moving; returns them.
async fn settled_reads(app: &TestApp, base: &str) -> f64 {
    app.wait_drained(Duration::from_secs(20)).await;
    let mut last = queue_reads(base).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = queue_reads(base).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_insert_from_another_process_is_picked_up_without_the_poll() {
    let (app, mut daemon, _) = slow_polling_daemon().await;
    let producer = app.producer().await;
    let mut waited = Vec::new();
    for chat in 1..=30 {
        sqlx::query("INSERT INTO queue (chat_id) VALUES (?)")
            .bind(chat)
            .execute(&producer)
            .await
            .unwrap();
        let inserted = Instant::now();
        // Far below the ten-minute poll: only the watch can wake it.
        wait_for(
            &format!("chat {chat} assigned"),
            Duration::from_secs(30),
            || app.sandbox.assignee(chat).is_some(),
        )
        .await;
        let put = app
            .sandbox
            .put_history()
            .into_iter()
            .find(|p| p.chat == chat);
        waited.push(put.expect("its PUT").received - inserted);
    }
    waited.sort();
    println!(
        "INSERT -> PUT over 30 chats (debug build): p50 {:?}, max {:?}",
        waited[15], waited[29]
    );
    // A dead row put back by `assignd queue retry`, another process that
    // inserts nothing, wakes it too.
    sqlx::query("INSERT INTO queue (chat_id, state, last_error) VALUES (40, 'dead', 'test')")
        .execute(&producer)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.run_ok(&["queue", "retry", "--dead"]);
    wait_for("chat 40 assigned", Duration::from_secs(30), || {
        app.sandbox.assignee(40).is_some()
    })
    .await;
    daemon.assert_running("after the inserts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_own_writes_wake_no_claim_round() {
    let (app, mut daemon, base) = slow_polling_daemon().await;
    let http = reqwest::Client::new();
    let before = settled_reads(&app, &base).await;
    // Webhooks the daemon writes down without a queue row and without a
    // seat freed (which would wake it on purpose): a chat taken by an
    // agent, an answer, a close of a chat it never knew open. Its
    // heartbeat writes meanwhile too.
    for chat in 1..=20 {
        let events = [
            (
                "chat.assigned",
                json!({"id": chat, "assignee": {"id": 4188}}),
            ),
            (
                "message.chat.agent",
                json!({"chat": {"id": chat}, "agent": {"id": 4188}}),
            ),
            (
                "chat.closed",
                json!({"id": chat + 1000, "status": "closed"}),
            ),
        ];
        for (i, (event, data)) in events.into_iter().enumerate() {
            let body = webhook_event(&format!("own-{chat}-{i}"), event, data);
            assert_eq!(post_webhook(&http, &base, WEBHOOK_KEY, body).await, 200);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = queue_reads(&base).await;
    assert_eq!(after, before, "the daemon's own writes woke the claim loop");
    // And a producer's row does, at once.
    app.insert_raw([77]).await;
    wait_for("chat 77 assigned", Duration::from_secs(30), || {
        app.sandbox.assignee(77).is_some()
    })
    .await;
    assert!(queue_reads(&base).await > after);
    daemon.assert_running("after the webhooks");
}

/// The watch itself: rows the store inserted are its own and not
/// reported; a row a producer's connection inserted is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reports_rows_of_other_connections_only() {
    let app = TestApp::builder().migrated().await;
    let store = Store::open(&app.db_path, assignd::config::Synchronous::Normal)
        .await
        .unwrap();
    let mut watch = store
        .listen_queue()
        .await
        .unwrap()
        .expect("a file to watch");
    store
        .enqueue(&[store_item(1), store_item(2)])
        .await
        .unwrap();
    let own = tokio::time::timeout(
        Duration::from_millis(500),
        watch.next(Duration::from_secs(600)),
    )
    .await;
    assert!(own.is_err(), "the store's own rows were reported: {own:?}");
    app.insert_raw([3]).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.next(Duration::from_secs(600)),
    )
    .await
    .expect("a producer's row is reported")
    .unwrap();
}

fn store_item(chat: i64) -> assignd::store::NewQueueItem {
    assignd::store::NewQueueItem {
        chat_id: assignd::domain::ChatId(chat),
        ..Default::default()
    }
}
