//! Request bodies: read under a deadline, within a shared memory budget.
//!
//! hyper has no body read timeout, so a client that sends headers and half
//! a body would hold its connection forever; and every request may buffer
//! up to [`MAX_BODY`], so without a budget a burst of large bodies costs
//! that many MiB at once. The first [`SMALL`] bytes of a body need no
//! budget (they are bounded by the connection cap), so a webhook or a form
//! never waits for one; a larger body reserves the rest of its declared
//! size once, when its bytes pass [`SMALL`], waiting at most
//! [`BUDGET_WAIT`] and never while holding a share (so two large bodies
//! cannot hold part each and wait for each other); senders who proved a
//! credential in their headers draw on a budget strangers cannot touch.

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

/// The bytes of a body buffered without a share of the budget: every
/// webhook and console form fits, and at most `MAX_CONNECTIONS` of them
/// are read at once (2 MiB). A client that declares 1 MiB and trickles
/// holds no budget until it has sent this much.
pub const SMALL: usize = 16 * UNIT;

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
        let size = declared_length(req.headers()).map_or(MAX_BODY, |n| n as usize);
        let read = read(req.into_body(), budget, size);
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

/// Reads frames into one buffer; past [`SMALL`] bytes, reserves the rest
/// of `size` (the declared length, or the most a body may be).
async fn read(
    mut body: axum::body::Body,
    budget: Arc<Semaphore>,
    size: usize,
) -> Result<Body, Response> {
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
        if need > SMALL && share.is_none() {
            let rest = size.max(need).min(MAX_BODY) - SMALL;
            share = Some(take(&budget, rest.div_ceil(UNIT) as u32).await?);
            buf.reserve_exact(size.max(need).min(MAX_BODY) - buf.len());
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
