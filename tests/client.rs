//! The HelpCrunch client against the sandbox: every endpoint, every answer shape.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use assignd::helpcrunch::types::{MessageKind, NewMessage};
use assignd::helpcrunch::{ApiError, Client, ErrorClass};
use assignd::limiter::{Limiter, Priority};
use assignd::sandbox::{Sandbox, SandboxAgent, SandboxConfig};
use assignd::secrets::Secret;

async fn setup(agents: usize, key: &str) -> (Sandbox, Client) {
    let sandbox = Sandbox::start(
        SandboxConfig {
            api_key: "right-key".into(),
            agents: (1..=agents as i64)
                .map(|id| SandboxAgent {
                    id,
                    name: format!("agent{id}"),
                })
                .collect(),
            chats: 1..=1000,
            rate_limit: None,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let limiter = Arc::new(Limiter::new(
        NonZeroU32::new(6000).unwrap(),
        Duration::from_secs(60),
        NonZeroU32::MIN,
    ));
    let client = Client::new(
        &sandbox.base_url(),
        &Secret::new(key),
        Duration::from_secs(5),
        limiter,
    )
    .unwrap();
    (sandbox, client)
}

#[tokio::test]
async fn agents_are_read_page_by_page() {
    let (sandbox, client) = setup(230, "right-key").await;
    let agents = client.agents().await.unwrap();
    assert_eq!(agents.len(), 230);
    assert_eq!(agents[229].id, 230);
    let pages: Vec<String> = sandbox.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
}

#[tokio::test]
async fn chats_in_every_timestamp_form_are_read() {
    let (sandbox, client) = setup(3, "right-key").await;
    sandbox.update_chat(5, |c| c.agents = vec![2]); // `agents` as a single object
    for id in [3, 4, 5, 6] {
        let chat = client.chat(id, Priority::Assign).await.result.unwrap();
        assert_eq!(chat.id, id);
        assert_eq!(chat.created_at.unwrap().as_second(), 1_700_000_000 + id);
        assert!(chat.customer.is_some());
    }
    let chat = client.chat(5, Priority::Assign).await.result.unwrap();
    assert_eq!(chat.agents.len(), 1);
    assert_eq!(chat.last_communicated_agent_id, Some(2));
}

#[tokio::test]
async fn assign_and_its_errors() {
    let (sandbox, client) = setup(3, "right-key").await;
    let chat = client.assign(7, 2).await.result.unwrap();
    assert_eq!(chat.assignee.unwrap().id, 2);
    assert_eq!(sandbox.assignee(7), Some(2));

    let e = client.assign(7, 99).await.result.unwrap_err();
    assert_eq!(e.class(), ErrorClass::AgentRejected);
    assert_eq!(e.code(), Some("invalid_chat_value"));

    for missing in [5000, 5001] {
        let e = client.assign(missing, 2).await.result.unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.class(), ErrorClass::Permanent);
    }
}

#[tokio::test]
async fn messages_are_posted_with_their_type_and_agent() {
    let (sandbox, client) = setup(3, "right-key").await;
    let note = NewMessage {
        chat: 8,
        text: "Routed to agent1".into(),
        kind: MessageKind::Private,
        agent: Some(1),
    };
    let posted = client.post_message(&note).await.result.unwrap();
    assert_eq!(posted.kind.as_deref(), Some("private"));
    let messages = sandbox.messages();
    assert_eq!(messages[0]["type"], "private");
    assert_eq!(messages[0]["agent"]["id"], 1);
    assert_eq!(messages[0]["from"], "agent");
    let e = client
        .post_message(&NewMessage {
            chat: 9999,
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
    let e = client.assign(7, 1).await.result.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unauthorized);
    assert_eq!(e.code(), Some("unauthorized"));
    assert!(client.limiter().is_closed());
    let e = client.chat(7, Priority::Assign).await.result.unwrap_err();
    assert!(matches!(e, ApiError::NotSent(_)), "{e:?}");
    assert_eq!(sandbox.requests().len(), 1, "nothing is sent after the 401");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let limiter = Arc::new(Limiter::new(
        NonZeroU32::new(6000).unwrap(),
        Duration::from_secs(60),
        NonZeroU32::MIN,
    ));
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(
        &format!("http://127.0.0.1:{port}/v1"),
        &Secret::new("k"),
        Duration::from_secs(2),
        limiter,
    )
    .unwrap();
    let e = client.assign(1, 1).await.result.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
}
