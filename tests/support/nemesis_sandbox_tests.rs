//! The nemesis's instruments: the sandbox faults it switches on, and the
//! history the checker reads, each seen from a real HTTP client.

use std::time::Duration;

use assignd::sandbox::{Faults, Injected, Sandbox, SandboxConfig};
use serde_json::json;

use crate::common::*;

async fn sandbox() -> Sandbox {
    let config = SandboxConfig {
        agents: agents(&ABC),
        rate_limit: None,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `PUT /chats/assignee` of `chat` to alice, with a client `timeout`:
/// the status, or None when the call failed.
async fn put(s: &Sandbox, chat: i64, timeout: Duration) -> Option<u16> {
    let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
    let sent = http
        .put(format!("{}/chats/assignee", s.base_url()))
        .bearer_auth(s.api_key())
        .json(&json!({"id": chat, "assignee": ABC[0].1}))
        .send()
        .await
        .ok()?;
    let status = sent.status().as_u16();
    sent.bytes().await.ok()?;
    Some(status)
}

#[tokio::test]
async fn a_late_put_is_applied_at_once_and_answered_after_the_timeout() {
    let s = sandbox().await;
    s.set_faults(Faults {
        late_put: 1.0,
        late_for: Duration::from_millis(800),
        ..Faults::default()
    });
    assert_eq!(
        put(&s, 7, Duration::from_millis(300)).await,
        None,
        "the client times out"
    );
    assert_eq!(s.assignee(7), Some(ABC[0].1), "applied all the same");
    wait_for("the late answer", Duration::from_secs(5), || {
        s.put_history().iter().all(|p| p.answered.is_some())
    })
    .await;
    let p = &s.put_history()[0];
    let applied = p.applied.expect("applied");
    assert_eq!(applied.before, None);
    assert!(applied.at.duration_since(p.received) < Duration::from_millis(300));
    let answered = p.answered.unwrap().duration_since(p.received);
    assert!(answered >= Duration::from_millis(800), "{answered:?}");
    assert_eq!(
        (p.chat, p.assignee, p.status, p.injected),
        (7, Some(ABC[0].1), 200, None)
    );
}

#[tokio::test]
async fn a_reset_drops_the_connection_before_any_work() {
    let s = sandbox().await;
    s.set_faults(Faults {
        reset: 1.0,
        ..Faults::default()
    });
    assert_eq!(
        put(&s, 8, Duration::from_secs(5)).await,
        None,
        "no whole answer"
    );
    assert_eq!(s.assignee(8), None, "nothing applied");
    let p = &s.put_history()[0];
    assert_eq!(
        (p.applied, p.injected, p.dropped),
        (None, Some(Injected::Reset), true)
    );
    assert!(p.answered.is_some());
}

#[tokio::test]
async fn a_throttle_is_a_429_the_sandbox_was_told_to_give() {
    let s = sandbox().await;
    s.set_faults(Faults {
        throttle: 1.0,
        throttle_for: Duration::from_millis(5200),
        ..Faults::default()
    });
    let http = reqwest::Client::new();
    let answer = http
        .put(format!("{}/chats/assignee", s.base_url()))
        .bearer_auth(s.api_key())
        .json(&json!({"id": 9, "assignee": ABC[0].1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 429);
    assert_eq!(
        answer.headers()["retry-after"],
        "6",
        "whole seconds, rounded up"
    );
    assert_eq!(s.assignee(9), None);
    let r = &s.requests()[0];
    assert_eq!((r.status, r.injected), (429, Some(Injected::Throttle)));
    // Switched off at run time: the next call does the work.
    s.set_faults(Faults::default());
    assert_eq!(put(&s, 9, Duration::from_secs(5)).await, Some(200));
    assert_eq!(s.put_history()[1].applied.map(|a| a.before), Some(None));
}

#[tokio::test]
async fn latency_comes_before_the_work_and_closes_are_recorded() {
    let s = sandbox().await;
    s.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    });
    for _ in 0..5 {
        assert_eq!(put(&s, 10, Duration::from_secs(5)).await, Some(200));
    }
    for p in s.put_history() {
        let waited = p.applied.unwrap().at.duration_since(p.received);
        assert!(waited <= Duration::from_millis(300), "{waited:?}");
    }
    // The second PUT saw the first's assignee.
    assert_eq!(s.put_history()[1].applied.unwrap().before, Some(ABC[0].1));
    assert!(s.close_chat(10));
    assert!(!s.close_chat(10), "already closed");
    assert_eq!(s.closes().iter().map(|c| c.chat).collect::<Vec<_>>(), [10]);
}
