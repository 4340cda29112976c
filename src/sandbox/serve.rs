//! One request through the sandbox: the faults that answer instead of the
//! work, admission (the key, the rate limit) at arrival, latency, the work,
//! then the faults that spoil its answer; all of it recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::faults::{self, Faults};
use super::history::{Applied, Injected, PutRecord};
use super::{Recorded, Sandbox, Shared};

/// A request as it arrived.
struct Arrival {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Value>,
    received: Instant,
    at: Duration,
    time: jiff::Timestamp,
}

impl Sandbox {
    /// Every write a client sent (PUT, POST, PATCH, DELETE), whatever its
    /// answer; `POST /chats/search` is a read and is left out. The
    /// sandbox's own webhooks and people are not clients.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
            .filter(|r| r.path.trim_end_matches('/') != "/v1/chats/search")
            .collect()
    }
}

pub(super) async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Arrival {
        method,
        uri,
        headers,
        body: serde_json::from_slice(&body).ok(),
        received: Instant::now(),
        at: s.started.elapsed(),
        time: jiff::Timestamp::now(),
    };
    // On a task of its own: a client that gives up (its timeout) drops this
    // future, but the work and the record of when its answer was ready go on.
    tokio::spawn(serve(s, arrival))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn serve(s: Arc<Shared>, r: Arrival) -> Response {
    let faults = *s.faults.lock().expect("faults lock");
    let mut applied = None;
    let (response, injected) = match injected(&s, &faults, &r) {
        Some((response, why)) => (response, Some(why)),
        None => (work(&s, &faults, &r, &mut applied).await, None),
    };
    let status = response.status().as_u16();
    let put = super::is_assign(&r.method, &r.uri).then(|| {
        s.history.put(PutRecord {
            seq: 0,
            chat: field(&r.body, "id").unwrap_or(-1),
            assignee: field(&r.body, "assignee"),
            received: r.received,
            applied,
            answered: None,
            status,
            injected,
            dropped: false,
        })
    });
    s.log.lock().expect("log lock").push(Recorded {
        method: r.method.to_string(),
        path: r.uri.path().to_string(),
        body: r.body,
        status,
        at: r.at,
        received: r.received,
        time: r.time,
        injected,
    });
    let (response, dropped) = match injected {
        Some(_) => (response, injected == Some(Injected::Reset)),
        None => spoil(&faults, put.is_some(), response).await,
    };
    if let Some(index) = put {
        s.history.answered(index, dropped);
    }
    response
}

/// An answer that replaces the work: a trick, or a fault drawn now.
fn injected(s: &Shared, faults: &Faults, r: &Arrival) -> Option<(Response, Injected)> {
    if let Some(trick) = s.tricks.answer(&r.method, &r.uri, &r.headers) {
        return Some((trick, Injected::Trick));
    }
    if Faults::roll(faults.reset) {
        return Some((faults::reset(), Injected::Reset));
    }
    if Faults::roll(faults.throttle) {
        return Some((faults::throttled(faults.throttle_for), Injected::Throttle));
    }
    Faults::roll(faults.server_error).then(|| {
        (
            faults::server_error(faults.html_errors),
            Injected::ServerError,
        )
    })
}

/// Admission at arrival, then latency, then the work itself.
async fn work(s: &Shared, faults: &Faults, r: &Arrival, applied: &mut Option<Applied>) -> Response {
    if let Some(refused) = super::admit(s, &r.headers) {
        return refused;
    }
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency_draw()).await;
    }
    if !faults.hold_put.is_zero() && super::is_assign(&r.method, &r.uri) {
        tokio::time::sleep(faults.hold_put).await;
    }
    super::answer(s, &r.method, &r.uri, r.body.as_ref(), applied)
}

/// The work is done; now the answer may be late, or never arrive whole.
/// Whether its body breaks off.
async fn spoil(faults: &Faults, put: bool, response: Response) -> (Response, bool) {
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if Faults::roll(faults.slow) {
        tokio::time::sleep(faults.slow_for).await;
    }
    if put && Faults::roll(faults.late_put) {
        tokio::time::sleep(faults.late_for).await;
    }
    if Faults::roll(faults.drop_connection) {
        return (faults::dropped(response), true);
    }
    (response, false)
}

fn field(body: &Option<Value>, name: &str) -> Option<i64> {
    body.as_ref()?.get(name)?.as_i64()
}
