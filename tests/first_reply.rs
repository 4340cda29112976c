//! Issue 24, item 4, through the real listener: a signed `chat.new`,
//! assignd's assignment, then a signed `message.chat.agent` give one
//! observation of `assignd_first_reply_seconds` on `/metrics`, and
//! `report` shows the chat's reply and assignment times. One test in its
//! own binary: the metrics registry is the process's.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WEBHOOK_KEY: &str = "whk-reply-key";

/// The value of the sample `name` (no labels) in a text-format scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reply_is_measured_on_metrics_and_in_the_report() {
    let app = TestApp::builder()
        .rules(THREE_AGENTS)
        .worker("concurrency = 1")
        .listen()
        .build()
        .await;
    let (daemon, base) = app.serve_webhooks(WEBHOOK_KEY).await;
    let http = reqwest::Client::new();
    let post = |id: &str, event: &str, data: Value| {
        post_webhook(&http, &base, WEBHOOK_KEY, webhook_event(id, event, data))
    };

    let chat = json!({"id": 81, "status": "new", "createdAt": "1607540767.414",
        "customer": {"id": 9, "email": "x@example.com"}, "assignee": null,
        "department": null, "communicatedAgents": []});
    assert_eq!(post("r-1", "chat.new", chat).await, 200);
    app.wait_drained(Duration::from_secs(10)).await;
    let assignee = app.sandbox.assignee(81).expect("assignd assigned the chat");
    let own = "chat_history WHERE chat_id = 81 AND assigned_by = 'assignd'";
    assert_eq!(app.count(own).await, 1);
    // HelpCrunch reports assignd's own assignment: not someone else's.
    let assigned = json!({"id": 81, "assignee": {"id": assignee}});
    assert_eq!(post("r-2", "chat.assigned", assigned).await, 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let message = json!({"chat_id": 81, "agent": {"id": assignee, "name": "Agent"},
        "message": {"id": 1, "text": "Hello, how can I help?", "type": "message"}});
    assert_eq!(
        post("r-3", "message.chat.agent", message.clone()).await,
        200
    );
    // A repeated delivery is not a second reply.
    assert_eq!(post("r-3", "message.chat.agent", message).await, 200);

    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&text, "assignd_first_reply_seconds_count"), 1.0);
    assert!(
        sample(&text, "assignd_first_reply_seconds_sum") > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "assignd_time_to_assignment_seconds_count"),
        0.0
    );

    // The report's window ends at the last whole second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report: Value = serde_json::from_str(&app.cli_ok(&["report", "--json"]).await).unwrap();
    let chats = &report["chats"];
    assert_eq!(chats["arrived"], 1, "{report}");
    assert_eq!(chats["replied"], 1, "{report}");
    assert_eq!(chats["reply_share"], 1.0, "{report}");
    assert_eq!(chats["first_reply"]["count"], 1, "{report}");
    let reply_ms = chats["first_reply"]["p50_ms"]
        .as_i64()
        .expect("a reply time");
    assert!(reply_ms >= 20, "{report}");
    let by = &chats["time_to_assignment"];
    assert_eq!(
        (&by["assignd"]["count"], &by["other"]["count"]),
        (&json!(1), &json!(0))
    );
    assert!(by["assignd"]["p50_ms"].as_i64().unwrap() <= reply_ms);
    let text = app.cli_ok(&["report"]).await;
    assert!(text.contains("(1 of 1 chats replied, 100.0%)"), "{text}");
    daemon.stop().await;
}
