//! The sandbox's error answers, with HelpCrunch's bodies and codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(super) fn error(status: StatusCode, entries: &[(&str, &str)]) -> Response {
    let errors: Vec<Value> = entries
        .iter()
        .map(|(c, m)| json!({"code": c, "message": m}))
        .collect();
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

/// HelpCrunch's 400: the generic error, then what is wrong with which field.
pub(super) fn invalid(field: &str, why: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &[("invalid_request", "Invalid request"), (field, why)],
    )
}

/// A 400 for a request without a JSON body.
pub(super) fn no_body() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &[("invalid_request", "Invalid request")],
    )
}

/// What is wrong with a request's body; answers as HelpCrunch's 400 (kept
/// small, unlike a `Response`, to travel in a `Result`).
pub(super) enum BadRequest {
    NoBody,
    /// The field, and what is wrong with it.
    Field(String, &'static str),
}

impl BadRequest {
    pub(super) fn field(name: impl Into<String>, why: &'static str) -> Self {
        Self::Field(name.into(), why)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        match self {
            BadRequest::NoBody => no_body(),
            BadRequest::Field(field, why) => invalid(&field, why),
        }
    }
}

pub(super) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, &[("not_found", "Not found")])
}

/// HelpCrunch's 429, with `Retry-After` when given.
pub(super) fn too_many_requests(retry_after: Option<HeaderValue>) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        &[
            ("invalid_request", "Invalid request"),
            ("too_many_requests", "You have exceeded your requests limit"),
        ],
    );
    if let Some(value) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, value);
    }
    r
}

pub(super) fn chat_not_found(id: i64) -> Response {
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
