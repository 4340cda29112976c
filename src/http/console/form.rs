//! The console's forms, read through the listener's body reader (a read
//! deadline, the shared memory budget) and only after the checks that
//! come before them: a form is small, so one that says it is not, or does
//! not say how long it is, is refused before a byte of it is read.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::{App, refuse};
use crate::http::body::Body;

/// The largest console form: a name, a token, a CSRF field, an agent.
pub(super) const FORM_MAX: u64 = 4096;

/// A console form's fields, parsed as `application/x-www-form-urlencoded`.
pub(super) struct ConsoleForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for ConsoleForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        match crate::http::body::declared_length(req.headers()) {
            None => {
                let why = "a console form must say its length (Content-Length)";
                return Err(refuse(StatusCode::LENGTH_REQUIRED, why));
            }
            Some(n) if n > FORM_MAX => {
                let why = format!("a console form is at most {FORM_MAX} bytes");
                return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, &why));
            }
            Some(_) => {}
        }
        let body = Body::from_request(req, app).await?;
        serde_urlencoded::from_bytes(&body.bytes)
            .map(ConsoleForm)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, &format!("unreadable form: {e}")))
    }
}
