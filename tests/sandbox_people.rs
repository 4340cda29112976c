//! The sandbox as an account with its own routing and people: the signed
//! webhooks it sends (and our listener takes), the choices its seed makes,
//! and the count of what clients wrote.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assignd::http::{SIGNATURE_HEADER, webhook_signature};
use assignd::sandbox::{AssignedBy, People, PeopleError, Sandbox, SandboxConfig, WebhookTarget};
use assignd::secrets::Secret;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::{Value, json};

const WEBHOOK_KEY: &str = "whk-people-key";

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sandbox() -> Sandbox {
    let config = SandboxConfig {
        agents: default_agents(),
        rate_limit: None,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A sandbox with `people`, sending its webhooks to a [`Receiver`].
async fn account(people: People) -> (Sandbox, Receiver) {
    let sandbox = sandbox().await;
    let hook = receiver().await;
    sandbox.send_webhooks_to(&hook.url, WEBHOOK_KEY);
    sandbox.set_people(Some(people)).unwrap();
    (sandbox, hook)
}

/// The daemon in this process with its listener taking webhooks signed
/// with [`WEBHOOK_KEY`]; the listener's webhook URL.
async fn serving(app: &TestApp) -> (InProcess, String) {
    let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let addr = daemon.http_addr.expect("the listener runs");
    (daemon, format!("http://{addr}/webhooks/helpcrunch"))
}

/// The events delivered with a 2xx for `chat`, in delivery order.
fn delivered(sandbox: &Sandbox, chat: i64) -> Vec<String> {
    sandbox
        .deliveries()
        .into_iter()
        .filter(|d| d.chat == chat && d.ok())
        .map(|d| d.event)
        .collect()
}

/// A webhook receiver that checks each signature, keeps each envelope,
/// and fails the first try of every `chat.new` with a 503.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

async fn receiver() -> Receiver {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let keep = keep.clone();
        async move {
            let signed = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
            if signed != Some(webhook_signature(WEBHOOK_KEY.as_bytes(), &body).as_str()) {
                return StatusCode::UNAUTHORIZED;
            }
            let envelope: Value = serde_json::from_slice(&body).unwrap();
            let first_new = envelope["event"] == "chat.new" && envelope["attempts"] == 0;
            keep.lock().unwrap().push(envelope);
            if first_new {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, seen }
}

impl Receiver {
    /// (event, attempts) of what reached it about `chat`, in order.
    fn of(&self, chat: i64) -> Vec<(String, i64)> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|e| {
                let data = &e["eventData"];
                data["id"].as_i64().or(data["chat_id"].as_i64()) == Some(chat)
            })
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_string(),
                    e["attempts"].as_i64().unwrap(),
                )
            })
            .collect()
    }
}

/// The sandbox's events reach our real listener, which takes them all: a
/// chat it learns of from `chat.new`, its own assignment coming back as
/// `chat.assigned`, the assignee's first reply, the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_takes_every_event_the_sandbox_sends() {
    let app = TestApp::builder()
        .worker("concurrency = 1")
        .listen()
        .build()
        .await;
    let (daemon, url) = serving(&app).await;
    let people = People {
        seed: 3,
        reply_after: Some(Duration::from_millis(30)),
        ..People::default()
    };
    app.sandbox.set_people(Some(people)).unwrap();
    app.sandbox.send_webhooks_to(url, WEBHOOK_KEY);

    app.sandbox.create_chat(31, |_| {});
    until("the first reply's delivery", || {
        delivered(&app.sandbox, 31).len() >= 3
    })
    .await;
    let assignee = app.sandbox.assignee(31).expect("assignd assigned it");
    let name = ABC.iter().find(|(_, id)| *id == assignee).unwrap().0;
    assert_eq!(
        delivered(&app.sandbox, 31),
        ["chat.new", "chat.assigned", "message.chat.agent"]
    );
    assert!(app.sandbox.deliveries().iter().all(|d| d.attempt == 0));
    assert_eq!(app.count("webhook_events").await, 3);
    assert_eq!(
        app.count(&format!(
            "chat_answers WHERE chat_id = 31 AND agent = '{name}'"
        ))
        .await,
        1
    );
    // Who assigned it, and the reply, as the sandbox recorded them.
    let assignments = app.sandbox.assignments();
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0].by, AssignedBy::Client);
    assert_eq!(assignments[0].agent, Some(assignee));
    let reply = app.sandbox.first_reply(31).expect("a first reply");
    assert_eq!(reply.agent, assignee);
    assert!(reply.at >= reply.assigned_at + reply.drawn);
    let chat = app.sandbox.chat_json(31).unwrap();
    assert_eq!(chat["status"], "opened");
    assert_eq!(chat["assignee"]["id"], assignee);

    assert!(app.sandbox.close_chat(31));
    until("chat.closed", || delivered(&app.sandbox, 31).len() >= 4).await;
    assert_eq!(
        app.count("webhook_events WHERE event = 'chat.closed'")
            .await,
        1
    );
    daemon.stop().await;
}

/// A delivery the listener refuses is tried again a bounded number of
/// times, under the same event id, `attempts` counting the earlier tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deliveries_are_retried_a_bounded_number_of_times() {
    let app = TestApp::builder().listen().build().await;
    let (daemon, url) = serving(&app).await;
    app.sandbox.send_webhooks(Some(WebhookTarget {
        attempts: 3,
        backoff: Duration::from_millis(5),
        ..WebhookTarget::new(&url, "not-the-key")
    }));
    app.sandbox.create_chat(7, |_| {});
    until("three tries", || app.sandbox.deliveries().len() >= 3).await;
    // Nothing more comes: the tries are over.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tries = app.sandbox.deliveries();
    assert_eq!(tries.len(), 3);
    for (n, d) in tries.iter().enumerate() {
        assert_eq!(
            (d.event.as_str(), d.status, d.attempt),
            ("chat.new", Some(401), n as u32)
        );
        assert_eq!(d.id, tries[0].id);
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(body["attempts"], n);
    }
    assert_eq!(app.count("webhook_events").await, 0);

    app.sandbox.send_webhooks_to(&url, WEBHOOK_KEY);
    app.sandbox.create_chat(8, |_| {});
    until("chat 8's chat.new", || {
        !delivered(&app.sandbox, 8).is_empty()
    })
    .await;
    // (Its `chat.assigned` may follow: assignd assigns it.)
    let taken = "webhook_events WHERE event = 'chat.new'";
    assert_eq!(app.count(taken).await, 1);
    daemon.stop().await;
}

/// The account's own routing takes its share of new chats in turn among
/// its agents; each chat's events arrive in order, a retried one before
/// the next; the assignee replies, then the chat closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_routes_answers_and_closes_by_itself_in_order() {
    let (sandbox, hook) = account(People {
        seed: 11,
        assign_share: 1.0,
        assign_after: Duration::from_millis(20),
        reply_after: Some(Duration::from_millis(20)),
        close_after: Some(Duration::from_millis(20)),
        ..People::default()
    })
    .await;
    for chat in 1..=6 {
        sandbox.create_chat(chat, |_| {});
    }
    until("six closes", || sandbox.closes().len() == 6).await;
    until("the closes' deliveries", || {
        (1..=6).all(|c| delivered(&sandbox, c).len() >= 4)
    })
    .await;
    let ids: Vec<i64> = ABC.iter().map(|(_, id)| *id).collect();
    for chat in 1..=6 {
        let agent = ids[(chat as usize - 1) % 3];
        assert_eq!(sandbox.routing_pick(chat), Some(agent), "chat {chat}");
        assert_eq!(
            hook.of(chat),
            [
                ("chat.new".to_string(), 0),
                ("chat.new".to_string(), 1),
                ("chat.assigned".to_string(), 0),
                ("message.chat.agent".to_string(), 0),
                ("chat.closed".to_string(), 0),
            ],
            "chat {chat}"
        );
        let json = sandbox.chat_json(chat).unwrap();
        assert_eq!(
            (json["status"].as_str(), json["assignee"]["id"].as_i64()),
            (Some("closed"), Some(agent))
        );
        assert_eq!(sandbox.first_reply(chat).map(|r| r.agent), Some(agent));
    }
    let by_sandbox = sandbox
        .assignments()
        .iter()
        .filter(|a| a.by == AssignedBy::Sandbox)
        .count();
    assert_eq!(by_sandbox, 6);
    assert!(
        sandbox.writes().is_empty(),
        "the sandbox's own work is no client's write"
    );
}

/// The choices of a seed, as (chat, routing pick, assignee, reply agent and wait).
type Choices = Vec<(i64, Option<i64>, Option<i64>, Option<(i64, Duration)>)>;

async fn choices(seed: u64) -> Choices {
    let sandbox = sandbox().await;
    let people = People {
        seed,
        assign_share: 0.5,
        assign_after: Duration::from_millis(5),
        reply_after: Some(Duration::from_millis(20)),
        reply_after_by_agent: vec![(4761, Duration::from_millis(60))],
        ..People::default()
    };
    sandbox.set_people(Some(people)).unwrap();
    for chat in 1..=40 {
        sandbox.create_chat(chat, |_| {});
    }
    let picked = (1..=40)
        .filter(|&c| sandbox.routing_pick(c).is_some())
        .count();
    until("every pick's reply", || {
        sandbox.first_replies().len() >= picked
    })
    .await;
    (1..=40)
        .map(|c| {
            let reply = sandbox.first_reply(c).map(|r| (r.agent, r.drawn));
            (c, sandbox.routing_pick(c), sandbox.assignee(c), reply)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_makes_the_same_choices() {
    let (a, b, other) = (choices(5).await, choices(5).await, choices(6).await);
    assert_eq!(a, b);
    assert_ne!(a, other);
    let picked = a.iter().filter(|c| c.1.is_some()).count();
    assert!((10..=30).contains(&picked), "{picked} of 40 at one half");
    // Every pick was assigned and answered by that agent; the others not.
    for (chat, pick, assignee, reply) in &a {
        assert_eq!(pick, assignee, "chat {chat}");
        assert_eq!(reply.map(|r| r.0), *pick, "chat {chat}");
    }
}

/// A chat someone assigned first is left to them: the routing never
/// overrides an assignee, and their agent is the one who replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_leaves_a_chat_assigned_before_it() {
    let sandbox = sandbox().await;
    let people = People {
        seed: 1,
        assign_share: 1.0,
        assign_after: Duration::from_millis(10),
        reply_after: Some(Duration::from_millis(10)),
        ..People::default()
    };
    sandbox.set_people(Some(people)).unwrap();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/chats/assignee", sandbox.base_url()))
        .bearer_auth(sandbox.api_key())
        .json(&json!({"id": 9, "assignee": 6694}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    sandbox.create_chat(9, |_| {});
    sandbox.create_chat(10, |_| {});
    until("chat 10's reply", || sandbox.first_reply(10).is_some()).await;
    until("chat 9's reply", || sandbox.first_reply(9).is_some()).await;
    assert_eq!(sandbox.routing_pick(9), Some(4188));
    assert_eq!(sandbox.assignee(9), Some(6694));
    assert_eq!(sandbox.first_reply(9).unwrap().agent, 6694);
    let of_9: Vec<AssignedBy> = sandbox
        .assignments()
        .iter()
        .filter(|a| a.chat == 9)
        .map(|a| a.by)
        .collect();
    assert_eq!(of_9, [AssignedBy::Client]);
}

/// `writes()` holds what clients wrote and nothing else: no read (a
/// search is a POST but reads), no webhook, nothing the people did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_the_clients_writes_only() {
    let (sandbox, hook) = account(People {
        seed: 2,
        assign_share: 1.0,
        reply_after: Some(Duration::from_millis(5)),
        ..People::default()
    })
    .await;
    sandbox.create_chat(3, |_| {});
    until("the reply", || delivered(&sandbox, 3).len() >= 3).await;

    let http = reqwest::Client::new();
    let base = sandbox.base_url();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(sandbox.api_key())
            .json(&body)
            .send()
    };
    call(reqwest::Method::GET, "/chats/3", json!(null))
        .await
        .unwrap();
    call(reqwest::Method::GET, "/agents", json!(null))
        .await
        .unwrap();
    let search = json!({"filter": [{"field": "chats.status", "operator": "=", "value": "opened"}]});
    call(reqwest::Method::POST, "/chats/search", search)
        .await
        .unwrap();
    assert!(sandbox.writes().is_empty(), "{:?}", sandbox.writes());
    assert_eq!(hook.of(3).len(), 4, "webhooks went out meanwhile");

    call(
        reqwest::Method::PUT,
        "/chats/assignee",
        json!({"id": 4, "assignee": 4188}),
    )
    .await
    .unwrap();
    let note = json!({"chat": 4, "text": "note", "type": "private", "agent": 4188});
    call(reqwest::Method::POST, "/messages", note)
        .await
        .unwrap();
    call(reqwest::Method::DELETE, "/chats/4", json!(null))
        .await
        .unwrap();
    let writes: Vec<(String, String)> = sandbox
        .writes()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        [
            ("PUT".to_string(), "/v1/chats/assignee".to_string()),
            ("POST".to_string(), "/v1/messages".to_string()),
            ("DELETE".to_string(), "/v1/chats/4".to_string()),
        ]
    );
}

#[tokio::test]
async fn bad_people_are_refused_with_a_reason() {
    let sandbox = sandbox().await;
    let share = People {
        assign_share: 1.5,
        ..People::default()
    };
    assert_eq!(
        sandbox.set_people(Some(share)),
        Err(PeopleError::Share(1.5))
    );
    let stranger = People {
        agents: vec![4188, 1],
        ..People::default()
    };
    let refused = sandbox.set_people(Some(stranger)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "agent 1 is not one of the sandbox's agents"
    );
    // Refused settings changed nothing: no routing.
    sandbox.create_chat(1, |_| {});
    assert_eq!(sandbox.routing_pick(1), None);
}
