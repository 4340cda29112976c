//! The HTTP listener (`[http] listen`): HelpCrunch webhooks, the enqueue
//! API, health and readiness for the service manager, and the console.
//!
//! Every request is checked before anything is parsed or stored: a bad
//! signature or token gets 401, an oversize body 413, malformed JSON 400, and
//! a rejected request stores nothing. A 2xx is answered only after the
//! effect is committed.

mod body;
mod conns;
mod console;
mod peer;
mod ready;
mod scrape;
mod server;
mod tls;
mod webhook;

use crate::domain::ChatId;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::secrets::Secret;
use crate::store::{NewQueueItem, Store};
use crate::worker::{Console, Health, Intake};
pub use body::{BODY_BUDGET, BODY_READ_TIMEOUT, BUDGET_WAIT, SMALL as SMALL_BODY, STRANGER_BUDGET};
pub use conns::{MAX_CONNECTIONS, MAX_PER_CLIENT};
pub use console::{SIGN_IN_FREE_TRIES, Site as ConsoleSite};
pub use peer::{ClientAddr, TrustedProxies};
pub use ready::{PROBE_CACHE, PROBE_WAIT};
pub use server::{CLOSE_GRACE, HEADER_READ_TIMEOUT, LISTEN_BACKLOG};
pub use tls::{HANDSHAKE_TIMEOUT, ServerTls, TlsError};
pub use webhook::{EVENTS as WEBHOOK_EVENTS, SIGNATURE_HEADER, webhook_signature};

/// The largest body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

pub struct Listener {
    pub store: Store,
    /// Tells the worker about new work and changed assignees.
    pub intake: Intake,
    /// Why the worker cannot work, for `/readyz`; open chats for `/metrics`.
    pub health: Health,
    pub secrets: Arc<ListenerSecrets>,
    /// The rules, a chat read from HelpCrunch and the wake-up, for the console.
    pub console: Console,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// The console's scheme (`[http] public_url`) and sign-in record.
    pub console_site: ConsoleSite,
    /// Serve HTTPS with this certificate; None: plain HTTP behind a proxy.
    pub tls: Option<Arc<ServerTls>>,
}

/// The secrets the listener checks requests against.
#[derive(Default, Clone)]
pub struct ListenerKeys {
    pub webhook_key: Option<Secret>,
    pub intake_token: Option<Secret>,
    /// Opens `/console/`; without it the console is not served.
    pub console_token: Option<Secret>,
}

/// The listener's secrets, replaced as a whole on reload.
#[derive(Default)]
pub struct ListenerSecrets {
    inner: std::sync::RwLock<ListenerKeys>,
}

impl ListenerSecrets {
    pub fn new(webhook_key: Option<Secret>, intake_token: Option<Secret>) -> Arc<Self> {
        Self::of(ListenerKeys {
            webhook_key,
            intake_token,
            console_token: None,
        })
    }
    pub fn of(keys: ListenerKeys) -> Arc<Self> {
        Arc::new(Self {
            inner: std::sync::RwLock::new(keys),
        })
    }
    pub fn replace(&self, keys: ListenerKeys) {
        *self.inner.write().expect("secrets lock") = keys;
    }
    fn keys(&self) -> std::sync::RwLockReadGuard<'_, ListenerKeys> {
        self.inner.read().expect("secrets lock")
    }
    pub fn webhook_key(&self) -> Option<Secret> {
        self.keys().webhook_key.clone()
    }
    pub fn intake_token(&self) -> Option<Secret> {
        self.keys().intake_token.clone()
    }
    pub fn console_token(&self) -> Option<Secret> {
        self.keys().console_token.clone()
    }
}

/// What the handlers share: the listener's parts and its own limits.
struct App {
    listener: Listener,
    bodies: body::Budgets,
    write_probe: ready::WriteProbe,
}

/// Serves on `addr` until `shutdown`; returns the bound address at once.
/// The task ends at most [`CLOSE_GRACE`] after `shutdown`, whatever the
/// clients do.
pub async fn serve(
    listener: Listener,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket = server::bind(addr)?;
    let bound = socket.local_addr()?;
    let proxies = listener.trusted_proxies.clone();
    let tls = listener.tls.clone();
    let app = router(Arc::new(App {
        listener,
        bodies: body::Budgets::new(),
        write_probe: ready::WriteProbe::default(),
    }));
    let task = tokio::spawn(server::run(socket, app, proxies, tls, shutdown));
    Ok((bound, task))
}

fn router(state: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::readyz))
        .route("/metrics", get(scrape::metrics_page))
        .route("/webhooks/helpcrunch", post(webhook::receive))
        .route("/v1/enqueue", post(enqueue))
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A JSON error answer: `{"error": "..."}`.
pub(crate) fn reject(status: StatusCode, why: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": why.into() }))).into_response()
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use hmac::Mac;
    // HMAC both under a fixed key and compare the tags in constant time:
    // lengths and contents leak nothing.
    let tag = |v: &[u8]| {
        let mut m =
            hmac::Hmac::<sha1::Sha1>::new_from_slice(b"assignd-compare").expect("any key length");
        m.update(v);
        m.finalize().into_bytes()
    };
    let mut check =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(b"assignd-compare").expect("any key length");
    check.update(given);
    check.verify_slice(&tag(expected)).is_ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueItem {
    chat_id: ChatId,
    #[serde(default)]
    attrs: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    priority: i64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EnqueueBody {
    One(EnqueueItem),
    Many(Vec<EnqueueItem>),
}

/// The intake's bearer token, checked from the headers before the body
/// is read (401 otherwise): a stranger's body is never waited for.
struct IntakeBearer;

impl axum::extract::FromRequestParts<Arc<App>> for IntakeBearer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<App>,
    ) -> Result<Self, Response> {
        let Some(token) = app.listener.secrets.intake_token() else {
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "no intake token is configured, so the enqueue API is closed",
            ));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.as_bytes(), token.expose().as_bytes()) {
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            ));
        }
        parts.extensions.insert(body::Proven);
        conns::authenticated(&parts.extensions);
        Ok(IntakeBearer)
    }
}

/// `POST /v1/enqueue` with `Authorization: Bearer <intake token>`.
async fn enqueue(State(app): State<Arc<App>>, _: IntakeBearer, body: body::Body) -> Response {
    let s = &app.listener;
    let items = match serde_json::from_slice::<EnqueueBody>(&body.bytes) {
        Ok(EnqueueBody::One(i)) => vec![i],
        Ok(EnqueueBody::Many(v)) => v,
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"chat_id\": N, \"attrs\": {{...}}, \"priority\": N}} or a list of them: {e}"
                ),
            );
        }
    };
    if let Some(bad) = items.iter().find(|i| i.chat_id.0 <= 0) {
        return reject(
            StatusCode::BAD_REQUEST,
            format!("chat_id {} is not a HelpCrunch chat id", bad.chat_id),
        );
    }
    let rows: Vec<NewQueueItem> = items
        .into_iter()
        .map(|i| {
            let attrs = i.attrs.clone().unwrap_or_default();
            let rule = s.intake.intake_priority(i.chat_id, &attrs, None);
            NewQueueItem {
                chat_id: i.chat_id,
                attrs: i.attrs,
                snapshot: None,
                priority: rule.map_or(i.priority, |r| r.max(i.priority)),
                ranked: true,
            }
        })
        .collect();
    match s.store.enqueue(&rows).await {
        Ok(added) => {
            s.intake.wake();
            (
                StatusCode::ACCEPTED,
                axum::Json(
                    json!({ "enqueued": added, "already_queued": rows.len() as u64 - added }),
                ),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot enqueue");
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the queue cannot be written right now; try again",
            )
        }
    }
}
