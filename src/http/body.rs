//! Request bodies: read under a deadline, within a shared memory budget.
//!
//! hyper has no body read timeout, so a client that sends headers and half
//! a body would hold its connection forever; and every request may buffer
//! up to [`MAX_BODY`], so without a budget a burst of large bodies costs
//! that many MiB at once. A body takes its share as its bytes arrive and
//! waits for it (backpressure) at most [`BUDGET_WAIT`]; senders who proved
//! a credential in their headers draw on a budget strangers cannot touch.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{App, MAX_BODY, reject};

/// A client gets this long to send a whole body, once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies buffered at once from senders who proved a credential in their
/// headers (the intake's bearer, a console session).
pub const BODY_BUDGET: usize = 4 * MAX_BODY;

/// Bodies buffered at once from everyone else: webhooks before their
/// signature is checked, sign-in forms. Strangers cannot take what
/// authenticated senders need.
pub const STRANGER_BUDGET: usize = MAX_BODY;

/// How long a body waits for its share of the budget before 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The budget is counted in KiB: a semaphore's permits are a `u32`.
const UNIT: usize = 1024;

/// A body takes its share as its bytes arrive, this much at a time: a
/// client that declares 1 MiB and trickles holds only what it sent.
const STEP: usize = 16 * UNIT;

/// The shared budgets for buffered bodies.
pub(super) struct Budgets {
    proven: Arc<Semaphore>,
    strangers: Arc<Semaphore>,
}

impl Budgets {
    pub fn new() -> Self {
        Self {
            proven: Arc::new(Semaphore::new(BODY_BUDGET / UNIT)),
            strangers: Arc::new(Semaphore::new(STRANGER_BUDGET / UNIT)),
        }
    }
}

/// Left in a request's extensions by a check of a credential in its
/// headers, before the body is read: its body draws on [`BODY_BUDGET`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proven;

/// A request's whole body; it holds its share of the budget while alive.
pub(super) struct Body {
    pub bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

impl FromRequest<Arc<App>> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        if declared_length(req.headers()).is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let budget = match req.extensions().get::<Proven>() {
            Some(_) => app.bodies.proven.clone(),
            None => app.bodies.strangers.clone(),
        };
        let read = read(req.into_body(), budget);
        match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
            Ok(read) => read,
            Err(_) => Err(reject(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
            )),
        }
    }
}

/// The body's length as its `Content-Length` declares it, if it does.
pub(super) fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads frames into one buffer, taking budget as the bytes arrive.
async fn read(mut body: axum::body::Body, budget: Arc<Semaphore>) -> Result<Body, Response> {
    let mut buf: Vec<u8> = Vec::new();
    let mut share: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            reject(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let need = buf.len() + data.len();
        if need > MAX_BODY {
            return Err(too_large());
        }
        let held = share.as_ref().map_or(0, |s| s.num_permits() * UNIT);
        if need > held {
            let more = (need - held).div_ceil(STEP) * STEP;
            let got = take(&budget, (more / UNIT) as u32).await?;
            match share.as_mut() {
                Some(s) => s.merge(got),
                None => share = Some(got),
            }
            buf.reserve_exact((held + more).min(MAX_BODY) - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(Body {
        bytes: Bytes::from(buf),
        _share: share,
    })
}

/// `units` of the budget, within [`BUDGET_WAIT`], else 503.
async fn take(budget: &Arc<Semaphore>, units: u32) -> Result<OwnedSemaphorePermit, Response> {
    match tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(units)).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down")),
        Err(_) => {
            let mut r = reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies are being received; try again",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(r)
        }
    }
}

fn too_large() -> Response {
    reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {} KiB", MAX_BODY / 1024),
    )
}
