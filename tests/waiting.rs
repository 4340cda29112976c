//! Chats that wait for a seat cost a read per seat that frees up, not a
//! read per waiting chat per wake-up: every close wakes every waiting chat,
//! and a backlog read again at each wake spent the whole API budget on
//! reads (the nemesis's long runs: 7,445 reads for 81 assignments).

mod common;

use std::time::Duration;

use assignd::secrets::Secret;
use common::*;
use serde_json::json;

const WEBHOOK_KEY: &str = "whk-waiting-key";
const WAITING: i64 = 9;
const CLOSES: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_chat_is_read_again_only_when_a_seat_is_there_for_it() {
    let rules = "[agents]\nalice = { id = 4188, max_open = 1 }\n\n\
                 [pools.support]\nagents = [\"alice\"]\n\n\
                 [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n";
    // One row at a time: each freed seat is peeked at by one row, so the
    // count of reads is exact.
    let app = TestApp::builder()
        .rules(rules)
        .worker("concurrency = 1")
        .listen()
        .build()
        .await;
    app.edit_config(|c| c + "\n[load]\nrefresh = \"1h\"\n");
    let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let base = format!("http://{}", daemon.http_addr.expect("the listener runs"));
    let http = reqwest::Client::new();
    let chats: Vec<i64> = (1..=WAITING + 1).collect();
    for &c in &chats {
        app.sandbox.create_chat(c, |_| {});
    }
    // Plain INSERTs: no snapshot, so every decision needs a read.
    app.insert_raw(chats.clone()).await;
    let reads = || {
        app.sandbox
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/v1/chats/"))
            .count() as i64
    };
    let assigned = || {
        chats
            .iter()
            .filter(|&&c| app.sandbox.assignee(c).is_some())
            .count() as i64
    };
    let waiting = "queue WHERE state = 'pending' AND waiting = 'candidate'";
    app.wait_count(waiting, WAITING, Duration::from_secs(20), "chats waiting")
        .await;
    assert_eq!(assigned(), 1);
    assert_eq!(reads(), WAITING + 1, "each chat read once to decide it");
    for n in 1..=CLOSES {
        // Close alice's chat: every waiting chat wakes up.
        let open = *chats
            .iter()
            .find(|&&c| {
                app.sandbox.assignee(c).is_some()
                    && app.sandbox.chat_json(c).unwrap()["status"] != "closed"
            })
            .unwrap();
        app.sandbox
            .update_chat(open, |c| c.status = "closed".into());
        let close = webhook_event(
            &format!("close-{open}"),
            "chat.closed",
            json!({"id": open, "status": "closed"}),
        );
        assert_eq!(post_webhook(&http, &base, WEBHOOK_KEY, close).await, 200);
        wait_for("the freed seat taken", Duration::from_secs(20), || {
            assigned() == 1 + n
        })
        .await;
        // Let the other waiting chats wake and go back to waiting.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        reads(),
        WAITING + 1 + CLOSES,
        "one read per freed seat, whatever wakes the waiting chats"
    );
    daemon.stop().await;
}
