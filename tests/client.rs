//! The HelpCrunch client against the sandbox: every endpoint, every answer
//! shape, and answers that try to fool it (redirects, absurd or dated
//! `Retry-After`, error pages that echo the key).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assignd::domain::{AgentId, ChatId};
use assignd::helpcrunch::types::{MessageKind, NewMessage};
use assignd::helpcrunch::{ApiError, Client, Departments, ErrorClass};
use assignd::limiter::{Limiter, Priority};
use assignd::sandbox::{DateForm, Sandbox, SandboxAgent, SandboxConfig, SandboxDepartment, Trick};
use assignd::secrets::Secret;
use reqwest::header::HeaderValue;

/// A sandbox that expects `right-key`, and a client that sends `key`.
async fn setup(agents: usize, key: &str) -> (Sandbox, Client) {
    start("right-key", agents, key).await
}

/// A sandbox that expects `sandbox_key`, with agents `agent1`..`agent{agents}`
/// and chats 1..=1000, and a client that sends `key`.
async fn start(sandbox_key: &str, agents: usize, key: &str) -> (Sandbox, Client) {
    let sandbox = Sandbox::start(
        SandboxConfig {
            api_key: sandbox_key.into(),
            agents: (1..=agents as i64)
                .map(|id| SandboxAgent {
                    id,
                    name: format!("agent{id}"),
                })
                .collect(),
            chats: 1..=1000,
            rate_limit: None,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = client(&sandbox.base_url(), key, Duration::from_secs(5));
    (sandbox, client)
}

/// A client whose limiter never holds a test back (6000 a minute).
fn client(base_url: &str, key: &str, timeout: Duration) -> Client {
    let limiter = Arc::new(Limiter::new(
        NonZeroU32::new(6000).unwrap(),
        Duration::from_secs(60),
        NonZeroU32::MIN,
    ));
    Client::new(base_url, &Secret::new(key), timeout, limiter).unwrap()
}

#[tokio::test]
async fn agents_are_read_page_by_page() {
    let (sandbox, client) = setup(230, "right-key").await;
    let agents = client.agents().await.unwrap();
    assert_eq!(agents.len(), 230);
    assert_eq!(agents[229].id, AgentId(230));
    let pages: Vec<String> = sandbox.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
}

#[tokio::test]
async fn departments_are_read_page_by_page_or_are_unavailable() {
    let departments = (1..=150)
        .map(|id| SandboxDepartment {
            id,
            name: format!("d{id}"),
            agents: vec![1],
        })
        .collect();
    let config = SandboxConfig {
        api_key: "k".into(),
        agents: vec![SandboxAgent {
            id: 1,
            name: "a".into(),
        }],
        rate_limit: None,
        departments: Some(departments),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = client(&sandbox.base_url(), "k", Duration::from_secs(5));
    let Departments::Listed(list) = client.departments().await.unwrap() else {
        panic!("listed");
    };
    assert_eq!(list.len(), 150);
    assert_eq!(
        (list[149].id, list[149].name.as_deref()),
        (150, Some("d150"))
    );
    assert_eq!(list[0].agents, [AgentId(1)]);
    assert_eq!(sandbox.requests().len(), 2);
    // Another shape (here a chat, to anything) is no list either.
    sandbox.set_trick(Some(Trick::AcceptAll));
    assert!(matches!(
        client.departments().await,
        Ok(Departments::Unavailable(_))
    ));
    sandbox.set_trick(None);
    sandbox.set_key_valid(false);
    let refused = client.departments().await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Unauthorized);

    let (_none, client) = start_without_departments().await;
    assert_eq!(
        client.departments().await.unwrap(),
        Departments::Unavailable("GET /departments answered 404".into())
    );
}

async fn start_without_departments() -> (Sandbox, Client) {
    let config = SandboxConfig {
        rate_limit: None,
        departments: None,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = client(&sandbox.base_url(), "sandbox-key", Duration::from_secs(5));
    (sandbox, client)
}

#[tokio::test]
async fn chats_in_every_timestamp_form_are_read() {
    let (sandbox, client) = setup(3, "right-key").await;
    sandbox.update_chat(5, |c| c.agents = vec![2]); // `agents` as a single object
    for id in [3, 4, 5, 6] {
        let chat = client
            .chat(ChatId(id), Priority::Assign)
            .await
            .result
            .unwrap();
        assert_eq!(chat.id, ChatId(id));
        assert_eq!(chat.created_at.unwrap().as_second(), 1_700_000_000 + id);
        assert!(chat.customer.is_some());
    }
    let chat = client
        .chat(ChatId(5), Priority::Assign)
        .await
        .result
        .unwrap();
    assert_eq!(chat.agents.len(), 1);
    assert_eq!(chat.last_communicated_agent_id, Some(AgentId(2)));
}

#[tokio::test]
async fn assign_and_its_errors() {
    let (sandbox, client) = setup(3, "right-key").await;
    let chat = client
        .assign(ChatId(7), AgentId(2), None)
        .await
        .result
        .unwrap();
    assert_eq!(chat.assignee.unwrap().id, AgentId(2));
    assert_eq!(sandbox.assignee(7), Some(2));

    let e = assign_err(&client, 7, 99).await;
    assert_eq!(e.class(), ErrorClass::AgentRejected);
    assert_eq!(e.code(), Some("invalid_chat_value"));

    for missing in [5000, 5001] {
        let e = assign_err(&client, missing, 2).await;
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.class(), ErrorClass::Permanent);
    }
}

#[tokio::test]
async fn messages_are_posted_with_their_type_and_agent() {
    let (sandbox, client) = setup(3, "right-key").await;
    let note = NewMessage {
        chat: ChatId(8),
        text: "Routed to agent1".into(),
        kind: MessageKind::Private,
        agent: Some(AgentId(1)),
    };
    let posted = client.post_message(&note).await.result.unwrap();
    assert_eq!(posted.kind.as_deref(), Some("private"));
    let messages = sandbox.messages();
    assert_eq!(messages[0]["type"], "private");
    assert_eq!(messages[0]["agent"]["id"], 1);
    assert_eq!(messages[0]["from"], "agent");
    let e = client
        .post_message(&NewMessage {
            chat: ChatId(9999),
            text: "x".into(),
            kind: MessageKind::Message,
            agent: None,
        })
        .await
        .result
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
}

#[tokio::test]
async fn a_wrong_key_closes_the_limiter() {
    let (sandbox, client) = setup(3, "wrong-key").await;
    let e = assign_err(&client, 7, 1).await;
    assert_eq!(e.class(), ErrorClass::Unauthorized);
    assert_eq!(e.code(), Some("unauthorized"));
    assert!(client.limiter().is_closed());
    let e = client
        .chat(ChatId(7), Priority::Assign)
        .await
        .result
        .unwrap_err();
    assert!(matches!(e, ApiError::NotSent(_)), "{e:?}");
    assert_eq!(sandbox.requests().len(), 1, "nothing is sent after the 401");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client(
        &format!("http://127.0.0.1:{port}/v1"),
        "k",
        Duration::from_secs(2),
    );
    let e = assign_err(&client, 1, 1).await;
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}

/// A client with `key` against a sandbox that knows it, for the tricks.
async fn tricked(key: &str) -> (Sandbox, Client) {
    start(key, 1, key).await
}

#[tokio::test]
async fn redirects_are_refused_not_followed() {
    let (sandbox, client) = tricked("right-key").await;
    let elsewhere = Sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    elsewhere.set_trick(Some(Trick::AcceptAll));
    for status in [301, 302, 303, 307, 308] {
        sandbox.set_trick(Some(Trick::Redirect {
            status,
            to: format!("http://{}", elsewhere.addr()),
        }));
        let e = assign_err(&client, 7, 1).await;
        assert!(matches!(e, ApiError::Redirect { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(e.status(), Some(status));
        let text = e.to_string();
        let target = format!("redirect to http://{}/v1/chats/assignee", elsewhere.addr());
        assert!(text.contains(&target), "{text}");
        assert!(text.contains("follows no redirects"), "{text}");
    }
    assert!(elsewhere.requests().is_empty(), "a redirect was followed");
    assert_eq!(sandbox.assignee(7), None);
}

#[tokio::test]
async fn absurd_retry_after_values_are_capped_and_never_panic() {
    let cap = assignd::helpcrunch::retry_after::MAX_RETRY_AFTER;
    let values: [(&[u8], Option<Duration>); 9] = [
        (b"99999999999999999999", Some(cap)),
        (b"18446744073709551616.5", Some(cap)),
        (b"Thu, 31 Dec 9998 23:59:59 GMT", Some(cap)),
        (b"1e400", None),
        (b"-1", None),
        (b"NaN", None),
        (b"", None),
        (b"\xff\xfe", None),
        (b"Thu, 01 Jan 1970 00:00:00 GMT", None),
    ];
    for (value, want) in values {
        // A fresh client each time: the last one stays paused.
        let (sandbox, client) = tricked("right-key").await;
        let header = HeaderValue::from_bytes(value).unwrap();
        sandbox.set_trick(Some(Trick::RetryAfter(header)));
        let e = assign_err(&client, 7, 1).await;
        assert_eq!(e.class(), ErrorClass::RateLimited);
        assert_eq!(e.retry_after(), want, "{value:?}");
        let paused = client.limiter().paused_until().unwrap();
        assert!(paused <= tokio::time::Instant::now() + cap, "{value:?}");
    }
}

#[tokio::test]
async fn retry_after_dates_in_every_form_are_honoured() {
    for form in [DateForm::ImfFixdate, DateForm::Rfc850, DateForm::Asctime] {
        let (sandbox, client) = tricked("right-key").await;
        sandbox.set_trick(Some(Trick::RetryAt {
            lead: Duration::from_secs(30),
            form,
        }));
        let e = assign_err(&client, 7, 1).await;
        let date = sandbox.retry_date().unwrap();
        let want = date.duration_since(jiff::Timestamp::now());
        let got = e.retry_after().expect("a pause from the date");
        let off = (got.as_secs_f64() - want.as_secs_f64()).abs();
        assert!(off < 2.0, "{form:?}: {got:?} for a date {want:?} away");
    }
}

#[tokio::test]
async fn echoed_credentials_never_reach_an_error() {
    const KEY: &str = "canary-SECRET-7f3a9c";
    let (sandbox, client) = tricked(KEY).await;
    for (status, json) in [(400, true), (400, false), (502, false), (502, true)] {
        sandbox.set_trick(Some(Trick::EchoHeaders { status, json }));
        let e = assign_err(&client, 7, 1).await;
        assert_eq!(e.status(), Some(status));
        let shown = format!("{e} {e:?} {:?}", e.code());
        assert!(!shown.contains("canary-S"), "{shown}");
        assert!(
            shown.contains("***"),
            "the echo is visible, redacted: {shown}"
        );
    }
}

/// A decision's call goes only while the decision is surely still the
/// caller's: a slot that comes after `send_by` sends nothing.
#[tokio::test]
async fn an_assignment_whose_slot_comes_too_late_is_not_sent() {
    let (sandbox, _) = setup(3, "right-key").await;
    // One call every 2 s: the second waits for its slot past its `send_by`.
    let limiter = Arc::new(Limiter::new(
        NonZeroU32::MIN,
        Duration::from_secs(2),
        NonZeroU32::MIN,
    ));
    let client = Client::new(
        &sandbox.base_url(),
        &Secret::new("right-key"),
        Duration::from_secs(5),
        limiter,
    )
    .unwrap();
    let soon = Some(Instant::now() + Duration::from_millis(500));
    let first = client.assign(ChatId(7), AgentId(2), soon).await;
    assert!(first.result.is_ok(), "the first slot is at once");
    let late = client.assign(ChatId(8), AgentId(2), soon).await;
    assert!(
        matches!(late.result, Err(ApiError::TooLate)),
        "{:?}",
        late.result
    );
    assert!(
        late.waited > Duration::from_millis(500),
        "{:?}",
        late.waited
    );
    assert!(!late.result.unwrap_err().maybe_applied());
    assert_eq!(sandbox.assignee(8), None, "nothing was sent for chat 8");
    let puts = sandbox
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chats/assignee"))
        .count();
    assert_eq!(puts, 1);
}

/// An assignment that HelpCrunch refuses, and why.
async fn assign_err(client: &Client, chat: i64, agent: i64) -> ApiError {
    client
        .assign(ChatId(chat), AgentId(agent), None)
        .await
        .result
        .unwrap_err()
}
