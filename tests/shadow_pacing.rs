//! Shadow mode keeps the live pace (SPEC §14): the assignments it only
//! records take their rate slots as a live daemon's calls would, so a
//! backlog drains as fast as it would live and no faster; and what it
//! really sends (reads) keeps to `shadow_api_share` of the account's limit
//! in every window, whatever the pace.

mod common;

use std::time::Duration;

use assignd::limiter::busiest_window;
use common::*;

const PER: Duration = Duration::from_secs(2);

/// A shadow daemon of the account's limit `requests` a `PER`, with
/// `worker` lines, over `chats` queued rows; returns when each shadow
/// decision was recorded (ms), in order.
async fn shadow_run(requests: u32, worker: &str, chats: i64) -> (TestApp, Vec<Duration>) {
    let app = TestApp::builder()
        .rate(&format!("requests = {requests}\nper = \"2s\""))
        .worker(worker)
        .worker("mode = \"shadow\"\nconcurrency = 4")
        .migrated()
        .await;
    app.insert_raw(1..=chats).await;
    let daemon = app.start_in_process().await;
    app.wait_count(
        "outcomes WHERE result = 'shadow'",
        chats,
        Duration::from_secs(60),
        "shadow decisions",
    )
    .await;
    daemon.stop().await;
    let pool = app.producer().await;
    let at: Vec<i64> =
        sqlx::query_scalar("SELECT at FROM outcomes WHERE result = 'shadow' ORDER BY at")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    let times = at
        .iter()
        .map(|ms| Duration::from_millis(*ms as u64))
        .collect();
    (app, times)
}

/// 25 chats at 10 calls a 2 s, no reads: the decisions come one rate slot
/// apart, as the PUTs would live (unpaced, all 25 come within a moment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_decides_at_the_live_pace() {
    let (app, times) = shadow_run(10, "fetch_chat = \"never\"", 25).await;
    let busiest = busiest_window(&times, PER);
    let span = *times.last().unwrap() - times[0];
    println!("25 shadow decisions over {span:?}; busiest 2-s window {busiest}");
    // One more than the limit: a decision is recorded a moment after its
    // slot, so two records may sit closer than their slots.
    assert!(
        busiest <= 11,
        "{busiest} decisions in one window of 10 slots: {times:?}"
    );
    assert!(app.sandbox.writes().is_empty());
}

/// Every decision reads its chat (`fetch_chat = "always"`) at an account
/// limit of 20 a 2 s, with a share of a quarter: at most 5 reads reach
/// HelpCrunch in any 2 s (at the full pace, 15 would come within 1.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadows_reads_keep_to_their_share_of_the_limit() {
    let worker = "fetch_chat = \"always\"\nshadow_api_share = 0.25";
    let (app, _) = shadow_run(20, worker, 15).await;
    let requests = app.sandbox.requests();
    let chat_reads = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/chats/"))
        .count();
    assert_eq!(chat_reads, 15, "one read a chat");
    let reads: Vec<Duration> = requests.iter().map(|r| r.at).collect();
    let busiest = busiest_window(&reads, PER);
    println!("15 reads; busiest 2-s window {busiest} (the share: 5)");
    assert!(
        busiest <= 5,
        "{busiest} reads in one window, share 5: {reads:?}"
    );
    assert!(app.sandbox.writes().is_empty());
}
