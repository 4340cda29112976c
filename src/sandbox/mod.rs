//! A HelpCrunch look-alike on loopback, for the demo, the tests and staging.
//!
//! It checks the bearer token, serves the endpoints the daemon uses with the
//! documented bodies and error codes, enforces a rate limit (sliding or
//! fixed window, with or without `Retry-After`) and records every request so
//! that tests can assert on what the daemon really sent. Given a target,
//! it sends HelpCrunch's signed webhooks (webhooks.rs); given [`People`],
//! it routes, answers and closes chats by itself as an account would.

mod answers;
mod chats;
mod departments;
mod faults;
mod history;
mod people;
mod search;
mod serve;
mod webhooks;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use answers::{BadRequest, chat_not_found, error, invalid, no_body, not_found, too_many_requests};
pub use chats::SandboxChat;
pub use departments::SandboxDepartment;
pub use faults::{DateForm, Faults, Trick};
pub use history::{Applied, Closed, Injected, PutRecord};
pub use people::{AssignedBy, Assignment, FirstReply, People, PeopleError};
pub use search::{SandboxChats, SearchHook};
pub use webhooks::{Delivery, WebhookTarget};

/// A team member the sandbox knows.
#[derive(Debug, Clone)]
pub struct SandboxAgent {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Any `per`-long interval holds at most `requests` accepted calls.
    Sliding,
    /// Calendar-like windows starting when the sandbox started.
    Fixed,
}

#[derive(Debug, Clone, Copy)]
pub struct SandboxLimit {
    pub requests: u32,
    pub per: Duration,
    pub window: Window,
    /// Whether 429 answers carry `Retry-After`.
    pub retry_after: bool,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub api_key: String,
    pub agents: Vec<SandboxAgent>,
    /// Chat ids that exist; their content is generated from the id.
    pub chats: RangeInclusive<i64>,
    pub rate_limit: Option<SandboxLimit>,
    /// What `GET /departments` lists; `None`: it answers 404, as on
    /// accounts without the endpoint.
    pub departments: Option<Vec<SandboxDepartment>>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            api_key: "sandbox-key".into(),
            agents: Vec::new(),
            chats: 1..=100_000,
            rate_limit: Some(SandboxLimit {
                requests: 120,
                per: Duration::from_secs(60),
                window: Window::Sliding,
                retry_after: true,
            }),
            departments: Some(departments::defaults()),
        }
    }
}

/// One request as the sandbox saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub status: u16,
    /// When it arrived, since the sandbox started.
    pub at: Duration,
    /// When it arrived, on this process's monotonic clock.
    pub received: Instant,
    /// When it arrived, on the wall clock (to compare with HTTP dates).
    pub time: jiff::Timestamp,
    /// Set when the sandbox failed it on purpose instead of doing the work.
    pub injected: Option<Injected>,
}

struct Shared {
    api_key: String,
    agents: Vec<SandboxAgent>,
    departments: Option<Vec<SandboxDepartment>>,
    chat_ids: RangeInclusive<i64>,
    started: Instant,
    key_valid: AtomicBool,
    limit: Mutex<Option<SandboxLimit>>,
    accepted: Mutex<VecDeque<Instant>>,
    chats: Mutex<HashMap<i64, SandboxChat>>,
    messages: Mutex<Vec<Value>>,
    log: Mutex<Vec<Recorded>>,
    faults: Mutex<Faults>,
    tricks: faults::Tricks,
    between_searches: Mutex<Option<SearchHook>>,
    history: history::History,
    /// Itself, for the tasks its webhooks and people start.
    this: Weak<Shared>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    /// Tells this sandbox's webhook ids from another's.
    nonce: u64,
    webhooks: webhooks::Webhooks,
    staff: people::Staff,
}

/// A running sandbox; stops when dropped or on [`Sandbox::stop`].
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Starts serving on `addr` (use port 0 for an ephemeral port).
    pub async fn start(config: SandboxConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new_cyclic(|this| Shared {
            api_key: config.api_key,
            agents: config.agents,
            departments: config.departments,
            chat_ids: config.chats,
            started: Instant::now(),
            key_valid: AtomicBool::new(true),
            limit: Mutex::new(config.rate_limit),
            accepted: Mutex::new(VecDeque::new()),
            chats: Mutex::new(HashMap::new()),
            messages: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            tricks: faults::Tricks::default(),
            between_searches: Mutex::new(None),
            history: history::History::default(),
            this: this.clone(),
            runtime: tokio::runtime::Handle::current(),
            shutdown: shutdown.clone(),
            nonce: people::mix(jiff::Timestamp::now().as_nanosecond() as u64 ^ addr.port() as u64),
            webhooks: webhooks::Webhooks::default(),
            staff: people::Staff::default(),
        });
        let app = Router::new()
            .fallback(serve::handle)
            .with_state(shared.clone());
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sandbox server failed");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure as `[helpcrunch] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// The `(chat id, assignee id)` of every `PUT /chats/assignee`, whatever its answer.
    pub fn assign_calls(&self) -> Vec<(i64, i64, u16)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.path == "/v1/chats/assignee")
            .filter_map(|r| {
                let b = r.body?;
                Some((
                    b.get("id")?.as_i64()?,
                    b.get("assignee")?.as_i64()?,
                    r.status,
                ))
            })
            .collect()
    }

    /// Answers with status 429 so far.
    pub fn rejected_429(&self) -> usize {
        self.requests().iter().filter(|r| r.status == 429).count()
    }

    /// The chat's current assignee, if it exists and has one.
    pub fn assignee(&self, chat_id: i64) -> Option<i64> {
        self.shared
            .chats
            .lock()
            .expect("chats lock")
            .get(&chat_id)
            .and_then(|c| c.assignee)
    }

    /// The chat object as `GET /chats/{id}` would return it now.
    pub fn chat_json(&self, chat_id: i64) -> Option<Value> {
        self.shared.chat_json(chat_id)
    }

    /// Every `PUT /chats/assignee` so far, in the order their work was
    /// done: when each arrived, changed its chat, and was answered.
    pub fn put_history(&self) -> Vec<PutRecord> {
        self.shared.history.puts()
    }

    /// Every chat closed with [`Sandbox::close_chat`], in order.
    pub fn closes(&self) -> Vec<Closed> {
        self.shared.history.closes()
    }

    /// Closes a chat in HelpCrunch (an agent or the customer ended it),
    /// recorded in [`Sandbox::closes`]; false if it does not exist or was
    /// already closed.
    pub fn close_chat(&self, chat_id: i64) -> bool {
        self.shared.close(chat_id)
    }

    /// Messages posted with `POST /messages`.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.messages.lock().expect("messages lock").clone()
    }

    /// Makes every request fail with 401 (`false`) or succeed again.
    pub fn set_key_valid(&self, valid: bool) {
        self.shared.key_valid.store(valid, Ordering::SeqCst);
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    /// Answers every request with `trick` (until set to `None`).
    pub fn set_trick(&self, trick: Option<Trick>) {
        self.shared.tricks.set(trick);
    }

    /// The date a [`Trick::RetryAt`] put in `Retry-After`, once it answered.
    pub fn retry_date(&self) -> Option<jiff::Timestamp> {
        self.shared.tricks.retry_date()
    }

    pub fn set_rate_limit(&self, limit: Option<SandboxLimit>) {
        *self.shared.limit.lock().expect("limit lock") = limit;
        self.shared.accepted.lock().expect("accepted lock").clear();
    }

    /// Makes a chat exist now (as a customer starting it would), so that
    /// `POST /chats/search` finds it; `f` may set it up.
    ///
    /// Sends `chat.new` and lets the account's people ([`People`]) route it.
    pub fn create_chat(&self, chat_id: i64, f: impl FnOnce(&mut SandboxChat)) {
        let s = &self.shared;
        s.change_chat(chat_id, |c| {
            c.created_at = jiff::Timestamp::now().as_second();
            f(c);
            s.chat_created(c)
        });
    }

    /// Puts a chat into a given state before the daemon sees it.
    pub fn update_chat(&self, chat_id: i64, f: impl FnOnce(&mut SandboxChat)) {
        self.shared.change_chat(chat_id, f);
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Shared {
    /// Runs `f` on the chat if its id is in range, generating it the first
    /// time it is touched (so that any id in range exists without seeding).
    fn with_chat<T>(&self, id: i64, f: impl FnOnce(&mut SandboxChat) -> T) -> Option<T> {
        if !self.chat_ids.contains(&id) {
            return None;
        }
        let mut chats = self.chats.lock().expect("chats lock");
        Some(f(chats
            .entry(id)
            .or_insert_with(|| SandboxChat::generate(id))))
    }

    /// Runs `f` on the chat as a change: `updatedAt` moves to now first.
    fn change_chat<T>(&self, id: i64, f: impl FnOnce(&mut SandboxChat) -> T) -> Option<T> {
        self.with_chat(id, |c| {
            c.updated_at = jiff::Timestamp::now().as_second();
            f(c)
        })
    }

    fn chat_json(&self, id: i64) -> Option<Value> {
        self.with_chat(id, |c| c.to_json(&self.agents))
    }

    /// Closes a chat that is open (`chat.closed`); false otherwise.
    fn close(&self, id: i64) -> bool {
        self.with_chat(id, |c| {
            let open = c.status != "closed";
            if open {
                c.status = "closed".into();
                self.history.closed(id, Instant::now());
                self.emit_chat("chat.closed", c);
            }
            open
        })
        .unwrap_or(false)
    }
}

/// Whether a request is `PUT /chats/assignee`.
fn is_assign(method: &Method, uri: &Uri) -> bool {
    method == Method::PUT
        && uri.path().trim_start_matches("/v1").trim_matches('/') == "chats/assignee"
}

/// The key, then the rate limit: the 401 or 429 that refuses a request at
/// its arrival, or None.
fn admit(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", s.api_key));
    if !authorized || !s.key_valid.load(Ordering::SeqCst) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            &[
                ("invalid_request", "Invalid request"),
                ("unauthorized", "Unauthorized"),
            ],
        ));
    }
    rate_limited(s)
}

/// The work of an admitted request; `applied` says what a PUT changed.
fn answer(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    body: Option<&Value>,
    applied: &mut Option<Applied>,
) -> Response {
    let path = uri.path();
    let segments: Vec<&str> = path
        .trim_start_matches("/v1")
        .trim_matches('/')
        .split('/')
        .collect();
    match (method.as_str(), segments.as_slice()) {
        ("PUT", ["chats", "assignee"]) => put_assignee(s, body, applied),
        ("GET", ["chats", id]) => match id.parse::<i64>() {
            Ok(id) => match s.chat_json(id) {
                Some(chat) => axum::Json(chat).into_response(),
                None => chat_not_found(id),
            },
            Err(_) => not_found(),
        },
        ("GET", ["agents"]) => agents(s, uri),
        ("GET", ["departments"]) => departments::departments(s, uri),
        ("POST", ["chats", "search"]) => search::search(s, body),
        ("POST", ["messages"]) => post_message(s, body),
        _ => not_found(),
    }
}

/// Counts the call against the window, or answers 429.
fn rate_limited(s: &Shared) -> Option<Response> {
    let limit = (*s.limit.lock().expect("limit lock"))?;
    let now = Instant::now();
    let mut accepted = s.accepted.lock().expect("accepted lock");
    let wait = match limit.window {
        Window::Sliding => {
            while accepted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limit.per)
            {
                accepted.pop_front();
            }
            (accepted.len() >= limit.requests as usize)
                .then(|| limit.per - now.duration_since(accepted[0]))
        }
        Window::Fixed => {
            let per = limit.per.as_nanos();
            let window_of = |t: Instant| t.duration_since(s.started).as_nanos() / per;
            let current = window_of(now);
            accepted.retain(|t| window_of(*t) == current);
            (accepted.len() >= limit.requests as usize).then(|| {
                Duration::from_nanos(
                    ((current + 1) * per - now.duration_since(s.started).as_nanos()) as u64,
                )
            })
        }
    };
    match wait {
        None => {
            accepted.push_back(now);
            None
        }
        Some(wait) => {
            // `Retry-After` takes whole seconds: round up, and never say 0.
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Some(too_many_requests(limit.retry_after.then(|| secs.into())))
        }
    }
}

fn put_assignee(s: &Shared, body: Option<&Value>, applied: &mut Option<Applied>) -> Response {
    let Some(body) = body else {
        return no_body();
    };
    let Some(chat_id) = body.get("id").and_then(Value::as_i64) else {
        return invalid("id", "This value should be of type numeric.");
    };
    let assignee = match body.get("assignee") {
        Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(a) if s.agents.iter().any(|x| x.id == a) => Some(a),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &[("invalid_chat_value", "assignee value is invalid")],
                );
            }
        },
        None => return invalid("assignee", "This value should not be blank."),
    };
    let assigned = s.change_chat(chat_id, |c| {
        *applied = Some(Applied {
            before: c.assignee,
            at: Instant::now(),
        });
        let before = std::mem::replace(&mut c.assignee, assignee);
        s.assignee_changed(c, before, AssignedBy::Client);
        c.to_json(&s.agents)
    });
    match assigned {
        Some(chat) => axum::Json(chat).into_response(),
        None => chat_not_found(chat_id),
    }
}

fn agents(s: &Shared, uri: &Uri) -> Response {
    let (offset, limit) = departments::paging(uri);
    let data: Vec<Value> = s
        .agents
        .iter()
        .skip(offset)
        .take(limit)
        .map(|a| json!({"id": a.id, "name": a.name, "email": format!("{}@example.com", a.name.to_lowercase()), "role": "agent"}))
        .collect();
    axum::Json(json!({"data": data, "meta": {"total": s.agents.len()}})).into_response()
}

/// A message as `POST /messages` accepts it.
struct NewMessage<'a> {
    chat_id: i64,
    text: &'a str,
    kind: &'a str,
    agent: Option<SandboxAgent>,
}

fn post_message(s: &Shared, body: Option<&Value>) -> Response {
    let m = match new_message(s, body) {
        Ok(m) => m,
        Err(bad) => return bad.into_response(),
    };
    if s.with_chat(m.chat_id, |_| ()).is_none() {
        return chat_not_found(m.chat_id);
    }
    let mut messages = s.messages.lock().expect("messages lock");
    let now = jiff::Timestamp::now().as_second();
    let message = json!({
        "id": messages.len() + 1,
        "agent": m.agent.as_ref().map(|a| chats::agent_json(a.id, Some(&a.name))),
        "type": m.kind,
        "text": m.text,
        "read": false,
        "createdAt": now,
        "updatedAt": now,
        "edited": false,
        "broadcastType": null,
        "chat": m.chat_id,
        "from": if m.agent.is_some() { "agent" } else { "customer" },
    });
    messages.push(message.clone());
    axum::Json(message).into_response()
}

/// The body's message, or the 400 HelpCrunch gives for it.
fn new_message<'a>(s: &Shared, body: Option<&'a Value>) -> Result<NewMessage<'a>, BadRequest> {
    let body = body.ok_or(BadRequest::NoBody)?;
    let chat_id = body.get("chat").and_then(Value::as_i64);
    let text = body.get("text").and_then(Value::as_str);
    let kind = body.get("type").and_then(Value::as_str);
    let (Some(chat_id), Some(text), Some(kind @ ("message" | "private"))) = (chat_id, text, kind)
    else {
        return Err(BadRequest::field(
            "chat",
            "This value should be of type numeric.",
        ));
    };
    let agent = match body.get("agent") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().and_then(|a| s.agents.iter().find(|x| x.id == a)) {
            Some(a) => Some(a.clone()),
            None => return Err(BadRequest::field("agent", "Agent not found.")),
        },
    };
    Ok(NewMessage {
        chat_id,
        text,
        kind,
        agent,
    })
}
