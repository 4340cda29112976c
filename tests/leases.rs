//! Leases: a claim that its owner stops working on is taken over when it
//! expires, the late owner cannot overwrite the new claim, and rows of a dead
//! process are taken back at start.

mod common;

use std::time::{Duration, Instant};

use assignd::store::{LeaseKey, NewOutcome, NewQueueItem, Next, OutcomeResult, Settlement};
use common::*;

fn items(ids: std::ops::RangeInclusive<i64>) -> Vec<NewQueueItem> {
    ids.map(|chat_id| NewQueueItem {
        chat_id: assignd::domain::ChatId(chat_id),
        ..Default::default()
    })
    .collect()
}

/// A worker that hangs (alive, but silent) holds five rows; the daemon takes
/// them over once the lease expires, within 2 × lease, and the hung worker's
/// late settlement changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_late_owner_is_fenced() {
    let lease = Duration::from_secs(3);
    let app = TestApp::builder()
        .worker("fetch_chat = \"never\"\nlease = \"3s\"")
        .build()
        .await;
    app.edit_config(|c| c.replace("timeout = \"5s\"", "timeout = \"1s\""));
    let daemon = app.start_in_process().await;
    let store = daemon.runtime.store.clone();
    store.enqueue(&items(1..=5)).await.unwrap();
    // This process is alive, so its claim is not an orphan: only expiry frees it.
    let hung = LeaseKey {
        owner: format!("{}-hung", std::process::id()),
        epoch: 1,
    };
    let claimed_at = Instant::now();
    let rows = store.claim(&hung, lease, 10).await.unwrap();
    assert_eq!(rows.len(), 5);
    daemon.runtime.worker.wake();

    // Nobody else touches them while the lease holds.
    tokio::time::sleep(lease / 2).await;
    assert_eq!(app.sandbox.assign_calls().len(), 0, "taken before expiry");

    app.wait_drained(lease * 4).await;
    let taken_over = claimed_at.elapsed();
    assert!(
        taken_over <= lease * 2,
        "taken over after {taken_over:?}, lease {lease:?}"
    );
    assert_eq!(app.sandbox.assign_calls().len(), 5);

    // The hung worker wakes up and tries to settle its old claim as dead.
    for row in &rows {
        let settled = store
            .settle(&Settlement {
                queue_id: row.id,
                chat_id: row.chat_id,
                doubt: assignd::store::Doubt::Resolved {
                    queue_id: Some(row.id),
                },
                lease: &hung,
                next: Next::Dead,
                last_error: Some("late".into()),
                waiting: None,
                priority: None,
                outcomes: vec![NewOutcome::new(row.chat_id, OutcomeResult::Failed)],
                assigned: None,
                busy_reply: None,
            })
            .await
            .unwrap();
        assert!(!settled, "a late owner overwrote row {}", row.id);
    }
    daemon.stop().await;
    let done = app.count("queue WHERE state = 'done' AND last_error IS NULL");
    assert_eq!(done.await, 5);
    // Two claims each: the hung worker's and the daemon's.
    assert_eq!(app.scalar("SELECT SUM(attempts) FROM queue").await, 10);
}

/// Rows leased by a process that no longer runs are taken back when the
/// daemon starts, without waiting for the lease; rows of a live process are
/// left to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_dead_process_are_taken_back_at_start() {
    let app = TestApp::builder().build().await;
    app.migrate().await;
    let store = assignd::store::Store::open(&app.db_path, assignd::config::Synchronous::Normal)
        .await
        .unwrap();
    store.enqueue(&items(1..=6)).await.unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead_owner = LeaseKey {
        owner: format!("{}-x", gone.id()),
        epoch: 1,
    };
    let live_owner = LeaseKey {
        owner: format!("{}-y", std::process::id()),
        epoch: 1,
    };
    let hour = Duration::from_secs(3600);
    assert_eq!(store.claim(&dead_owner, hour, 4).await.unwrap().len(), 4);
    assert_eq!(store.claim(&live_owner, hour, 2).await.unwrap().len(), 2);
    store.close().await;

    let daemon = app.start_in_process().await;
    daemon.runtime.worker.wake();
    let done = "queue WHERE state = 'done'";
    let orphans = "the orphans were not taken back";
    app.wait_count(done, 4, Duration::from_secs(30), orphans)
        .await;
    daemon.stop().await;
    let leased = app.count("queue WHERE state = 'leased'").await;
    assert_eq!(
        leased, 2,
        "a live process's rows are its own until their lease ends"
    );
}
