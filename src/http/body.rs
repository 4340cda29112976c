//! Request bodies: read under a deadline, within a shared memory budget.
//!
//! hyper has no body read timeout, so a client that sends headers and half
//! a body would hold its connection forever; and every request may buffer
//! up to [`MAX_BODY`], so without a budget a burst of large bodies costs
//! that many MiB at once. A request waits for its share of the budget
//! (backpressure) rather than being refused.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{App, MAX_BODY, reject};

/// A client gets this long to send a whole body, once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies buffered at once, all requests together.
pub const BODY_BUDGET: usize = 4 * MAX_BODY;

/// The budget is counted in KiB: a semaphore's permits are a `u32`.
const UNIT: usize = 1024;

/// The shared budget for buffered bodies.
pub(super) fn budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(BODY_BUDGET / UNIT))
}

/// A request's whole body; it holds its share of the budget while alive.
pub(super) struct Body {
    pub bytes: Bytes,
    _share: OwnedSemaphorePermit,
}

impl FromRequest<Arc<App>> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        // Without a Content-Length (chunked), reserve the most it may be.
        let size = declared.map_or(MAX_BODY, |n| n as usize);
        let units = size.div_ceil(UNIT).max(1) as u32;
        let share = app.body_budget.clone().acquire_many_owned(units).await;
        let Ok(share) = share else {
            return Err(reject(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        };
        let body = req.into_body();
        match tokio::time::timeout(BODY_READ_TIMEOUT, read(body, size)).await {
            Ok(Ok(bytes)) => Ok(Body {
                bytes,
                _share: share,
            }),
            Ok(Err(response)) => Err(response),
            Err(_) => Err(reject(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
            )),
        }
    }
}

/// Reads frames into one buffer of the declared size: no second copy.
async fn read(mut body: axum::body::Body, size: usize) -> Result<Bytes, Response> {
    let mut buf = BytesMut::with_capacity(size);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            reject(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn too_large() -> Response {
    reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {} KiB", MAX_BODY / 1024),
    )
}
