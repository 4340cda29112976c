//! A HelpCrunch look-alike on loopback, for the demo, the tests and staging.
//!
//! It checks the bearer token, serves the endpoints the daemon uses with the
//! documented bodies and error codes, enforces a rate limit (sliding or
//! fixed window, with or without `Retry-After`) and records every request so
//! that tests can assert on what the daemon really sent.

mod chats;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use chats::SandboxChat;

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

/// Faults the sandbox injects, each drawn per request at the given share.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Answer 502/503 instead of doing the work.
    pub server_error: f64,
    /// With `server_error`: answer with an HTML page, as a proxy would.
    pub html_errors: bool,
    /// Do the work, then answer after `slow_for` (past a client's timeout).
    pub slow: f64,
    pub slow_for: Duration,
    /// Do the work, then drop the connection in the middle of the body.
    pub drop_connection: f64,
    /// Do the work, then wait this long before answering: widens the window
    /// between HelpCrunch applying an assignment and the daemon's commit.
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub api_key: String,
    pub agents: Vec<SandboxAgent>,
    /// Chat ids that exist; their content is generated from the id.
    pub chats: RangeInclusive<i64>,
    pub rate_limit: Option<SandboxLimit>,
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
}

struct Shared {
    api_key: String,
    agents: Vec<SandboxAgent>,
    chat_ids: RangeInclusive<i64>,
    started: Instant,
    key_valid: AtomicBool,
    limit: Mutex<Option<SandboxLimit>>,
    accepted: Mutex<VecDeque<Instant>>,
    chats: Mutex<HashMap<i64, SandboxChat>>,
    messages: Mutex<Vec<Value>>,
    log: Mutex<Vec<Recorded>>,
    faults: Mutex<Faults>,
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
        let shared = Arc::new(Shared {
            api_key: config.api_key,
            agents: config.agents,
            chat_ids: config.chats,
            started: Instant::now(),
            key_valid: AtomicBool::new(true),
            limit: Mutex::new(config.rate_limit),
            accepted: Mutex::new(VecDeque::new()),
            chats: Mutex::new(HashMap::new()),
            messages: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let shutdown = CancellationToken::new();
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
        let mut chats = self.shared.chats.lock().expect("chats lock");
        chat_entry(&mut chats, &self.shared.chat_ids, chat_id)
            .map(|c| c.to_json(&self.shared.agents))
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

    pub fn set_rate_limit(&self, limit: Option<SandboxLimit>) {
        *self.shared.limit.lock().expect("limit lock") = limit;
        self.shared.accepted.lock().expect("accepted lock").clear();
    }

    /// Makes a chat exist now (as a customer starting it would), so that
    /// `POST /chats/search` finds it; `f` may set it up.
    pub fn create_chat(&self, chat_id: i64, f: impl FnOnce(&mut SandboxChat)) {
        self.update_chat(chat_id, |c| {
            c.created_at = jiff::Timestamp::now().as_second();
            f(c)
        });
    }

    /// Puts a chat into a given state before the daemon sees it.
    pub fn update_chat(&self, chat_id: i64, f: impl FnOnce(&mut SandboxChat)) {
        let mut chats = self.shared.chats.lock().expect("chats lock");
        if let Some(c) = chat_entry(&mut chats, &self.shared.chat_ids, chat_id) {
            f(c);
        }
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

fn chat_entry<'a>(
    chats: &'a mut HashMap<i64, SandboxChat>,
    ids: &RangeInclusive<i64>,
    id: i64,
) -> Option<&'a mut SandboxChat> {
    if !ids.contains(&id) {
        return None;
    }
    Some(chats.entry(id).or_insert_with(|| SandboxChat::generate(id)))
}

fn error(status: StatusCode, entries: &[(&str, &str)]) -> Response {
    let errors: Vec<Value> = entries
        .iter()
        .map(|(c, m)| json!({"code": c, "message": m}))
        .collect();
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let faults = *s.faults.lock().expect("faults lock");
    let roll = |share: f64| share > 0.0 && rand::random::<f64>() < share;
    let injected_error = roll(faults.server_error);
    let response = if injected_error {
        server_error(faults.html_errors)
    } else {
        answer(&s, &method, &uri, &headers, body_json.as_ref())
    };
    s.log.lock().expect("log lock").push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        body: body_json,
        status: response.status().as_u16(),
        at: s.started.elapsed(),
        received: Instant::now(),
    });
    if injected_error {
        return response;
    }
    // The work is done; now the answer may be late, or never arrive whole.
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if roll(faults.slow) {
        tokio::time::sleep(faults.slow_for).await;
    }
    if roll(faults.drop_connection) {
        return dropped(response);
    }
    response
}

fn server_error(html: bool) -> Response {
    if html {
        let page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>";
        (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &[("service_unavailable", "Service temporarily unavailable")],
        )
    }
}

/// The answer's head, then a body that breaks off: the connection drops.
fn dropped(response: Response) -> Response {
    let (parts, _) = response.into_parts();
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"id\": ")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected drop",
        )),
    ];
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

fn answer(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", s.api_key));
    if !authorized || !s.key_valid.load(Ordering::SeqCst) {
        return error(
            StatusCode::UNAUTHORIZED,
            &[
                ("invalid_request", "Invalid request"),
                ("unauthorized", "Unauthorized"),
            ],
        );
    }
    if let Some(r) = rate_limited(s) {
        return r;
    }
    let path = uri.path();
    let segments: Vec<&str> = path
        .trim_start_matches("/v1")
        .trim_matches('/')
        .split('/')
        .collect();
    match (method.as_str(), segments.as_slice()) {
        ("PUT", ["chats", "assignee"]) => put_assignee(s, body),
        ("GET", ["chats", id]) => match id.parse::<i64>() {
            Ok(id) => match chat_entry(&mut s.chats.lock().expect("chats lock"), &s.chat_ids, id) {
                Some(c) => axum::Json(c.to_json(&s.agents)).into_response(),
                None => chat_not_found(id),
            },
            Err(_) => error(StatusCode::NOT_FOUND, &[("not_found", "Not found")]),
        },
        ("GET", ["agents"]) => agents(s, uri),
        ("POST", ["chats", "search"]) => search(s, body),
        ("POST", ["messages"]) => post_message(s, body),
        _ => error(StatusCode::NOT_FOUND, &[("not_found", "Not found")]),
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
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &[
                    ("invalid_request", "Invalid request"),
                    ("too_many_requests", "You have exceeded your requests limit"),
                ],
            );
            if limit.retry_after {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            Some(r)
        }
    }
}

fn chat_not_found(id: i64) -> Response {
    // The documentation shows both forms; answer with each in turn.
    if id % 2 == 0 {
        error(
            StatusCode::NOT_FOUND,
            &[("chat_not_found", "Chat is missing")],
        )
    } else {
        error(
            StatusCode::NOT_FOUND,
            &[("not_fount", &format!("Chat for ID \"{id}\" was not found"))],
        )
    }
}

fn put_assignee(s: &Shared, body: Option<&Value>) -> Response {
    let Some(body) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            &[("invalid_request", "Invalid request")],
        );
    };
    let Some(chat_id) = body.get("id").and_then(Value::as_i64) else {
        return error(
            StatusCode::BAD_REQUEST,
            &[
                ("invalid_request", "Invalid request"),
                ("id", "This value should be of type numeric."),
            ],
        );
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
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                &[
                    ("invalid_request", "Invalid request"),
                    ("assignee", "This value should not be blank."),
                ],
            );
        }
    };
    let mut chats = s.chats.lock().expect("chats lock");
    match chat_entry(&mut chats, &s.chat_ids, chat_id) {
        Some(c) => {
            c.assignee = assignee;
            axum::Json(c.to_json(&s.agents)).into_response()
        }
        None => chat_not_found(chat_id),
    }
}

fn agents(s: &Shared, uri: &Uri) -> Response {
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let offset = query
        .get("offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0usize);
    let limit = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .min(100);
    let data: Vec<Value> = s
        .agents
        .iter()
        .skip(offset)
        .take(limit)
        .map(|a| json!({"id": a.id, "name": a.name, "email": format!("{}@example.com", a.name.to_lowercase()), "role": "agent"}))
        .collect();
    axum::Json(json!({"data": data, "meta": {"total": s.agents.len()}})).into_response()
}

fn post_message(s: &Shared, body: Option<&Value>) -> Response {
    let Some(body) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            &[("invalid_request", "Invalid request")],
        );
    };
    let chat_id = body.get("chat").and_then(Value::as_i64);
    let text = body.get("text").and_then(Value::as_str);
    let kind = body.get("type").and_then(Value::as_str);
    let (Some(chat_id), Some(text), Some(kind @ ("message" | "private"))) = (chat_id, text, kind)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            &[
                ("invalid_request", "Invalid request"),
                ("chat", "This value should be of type numeric."),
            ],
        );
    };
    let agent = match body.get("agent") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().and_then(|a| s.agents.iter().find(|x| x.id == a)) {
            Some(a) => Some(a.clone()),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &[
                        ("invalid_request", "Invalid request"),
                        ("agent", "Agent not found."),
                    ],
                );
            }
        },
    };
    if chat_entry(
        &mut s.chats.lock().expect("chats lock"),
        &s.chat_ids,
        chat_id,
    )
    .is_none()
    {
        return chat_not_found(chat_id);
    }
    let mut messages = s.messages.lock().expect("messages lock");
    let now = jiff::Timestamp::now().as_second();
    let message = json!({
        "id": messages.len() + 1,
        "agent": agent.as_ref().map(|a| json!({"id": a.id, "name": a.name, "email": null, "role": "agent"})),
        "type": kind,
        "text": text,
        "read": false,
        "createdAt": now,
        "updatedAt": now,
        "edited": false,
        "broadcastType": null,
        "chat": chat_id,
        "from": if agent.is_some() { "agent" } else { "customer" },
    });
    messages.push(message.clone());
    axum::Json(message).into_response()
}

/// One search filter, as a test of a chat.
type ChatTest = Box<dyn Fn(&SandboxChat) -> bool>;

/// `POST /chats/search` over the chats that exist so far (created or
/// touched): `=`, `!=`, `>`, `>=`, `<`, `<=` on `chats.assignee`,
/// `chats.status` and `chats.createdAt`, joined by AND or OR.
fn search(s: &Shared, body: Option<&Value>) -> Response {
    let bad = |field: &str, why: &str| {
        error(
            StatusCode::BAD_REQUEST,
            &[("invalid_request", "Invalid request"), (field, why)],
        )
    };
    let Some(body) = body else {
        return bad("filter", "This value should not be blank.");
    };
    let filters = body
        .get("filter")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let any = body.get("comparison").and_then(Value::as_str) == Some("OR");
    let mut tests: Vec<ChatTest> = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let field = f.get("field").and_then(Value::as_str).unwrap_or("");
        let op = f
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or("=")
            .to_string();
        let value = f.get("value").cloned().unwrap_or(Value::Null);
        let cmp = move |have: Option<i64>, want: i64| -> bool {
            match (op.as_str(), have) {
                ("=", h) => h == Some(want),
                ("!=", h) => h != Some(want),
                (">", Some(h)) => h > want,
                (">=", Some(h)) => h >= want,
                ("<", Some(h)) => h < want,
                ("<=", Some(h)) => h <= want,
                _ => false,
            }
        };
        let key = format!("filter[{i}].value");
        match field {
            "chats.assignee" | "chats.createdAt" => {
                let Some(want) = value.as_i64() else {
                    return bad(&key, "This value should be of type numeric.");
                };
                let by_assignee = field == "chats.assignee";
                tests.push(Box::new(move |c: &SandboxChat| {
                    cmp(
                        if by_assignee {
                            c.assignee
                        } else {
                            Some(c.created_at)
                        },
                        want,
                    )
                }));
            }
            "chats.status" => {
                let Some(want) = value.as_str().map(str::to_string) else {
                    return bad(&key, "This value should be of type string.");
                };
                let negate = f.get("operator").and_then(Value::as_str) == Some("!=");
                tests.push(Box::new(move |c: &SandboxChat| {
                    (c.status == want) != negate
                }));
            }
            _ => return bad(&format!("filter[{i}].field"), "This value is not valid."),
        }
    }
    let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .min(100) as usize;
    let chats = s.chats.lock().expect("chats lock");
    let mut found: Vec<&SandboxChat> = chats
        .values()
        .filter(|c| {
            tests.is_empty()
                || if any {
                    tests.iter().any(|t| t(c))
                } else {
                    tests.iter().all(|t| t(c))
                }
        })
        .collect();
    found.sort_by_key(|c| (c.created_at, c.id));
    if body.get("order").and_then(Value::as_str) == Some("desc") {
        found.reverse();
    }
    let total = found.len();
    let data: Vec<Value> = found
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|c| c.to_json(&s.agents))
        .collect();
    axum::Json(json!({"data": data, "meta": {"total": total}})).into_response()
}
