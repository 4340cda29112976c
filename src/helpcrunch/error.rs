//! Errors of HelpCrunch calls, and what the daemon should do about each.

use std::time::Duration;

use serde::Deserialize;

/// One entry of HelpCrunch's `{"errors": [{"code", "message"}]}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ErrorEntry {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// HelpCrunch answered with an error status.
    #[error("HTTP {status} {}", describe(errors))]
    Status {
        status: u16,
        errors: Vec<ErrorEntry>,
        retry_after: Option<Duration>,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connection(String),
    /// Not sent: an earlier 401 closed the limiter until a reload.
    #[error(transparent)]
    NotSent(#[from] crate::limiter::Closed),
    /// A 2xx (or error) answer whose body could not be read.
    #[error("unreadable answer (HTTP {status}): {detail}")]
    Unreadable { status: u16, detail: String },
}

fn describe(errors: &[ErrorEntry]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What an error means for the work at hand (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 400 `invalid_chat_value`: HelpCrunch rejects the agent.
    AgentRejected,
    /// Other 400s and 404s: repeating the same request cannot succeed.
    Permanent,
    /// 401: the key is wrong; stop taking work.
    Unauthorized,
    /// 429: the account's limit was hit.
    RateLimited,
    /// 5xx, timeouts, connection errors, unreadable bodies: try again later.
    Transient,
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } | ApiError::Unreadable { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The most specific error code: the generic `invalid_request` that
    /// HelpCrunch often puts first is skipped when a specific one follows.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Status { errors, .. } => errors
                .iter()
                .rev()
                .find(|e| e.code != "invalid_request")
                .or(errors.first())
                .map(|e| e.code.as_str()),
            ApiError::Timeout(_) => Some("timeout"),
            ApiError::Connection(_) => Some("connection"),
            ApiError::Unreadable { .. } => Some("unreadable_body"),
            ApiError::NotSent(_) => Some("not_sent"),
        }
    }

    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, ApiError::Status { errors, .. } if errors.iter().any(|e| e.code == code))
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Status { status: 400, .. } if self.has_code("invalid_chat_value") => {
                ErrorClass::AgentRejected
            }
            ApiError::Status {
                status: 401 | 403, ..
            } => ErrorClass::Unauthorized,
            ApiError::Status { status: 429, .. } => ErrorClass::RateLimited,
            ApiError::Status {
                status: 400..=499, ..
            } => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Parses an error body; anything unreadable becomes one entry holding a
/// short, printable excerpt (an HTML error page, say).
pub fn parse_error_body(body: &[u8]) -> Vec<ErrorEntry> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<ErrorEntry>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) if !b.errors.is_empty() => b.errors,
        _ => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
            vec![ErrorEntry {
                code: "unparsed_error_body".into(),
                message: excerpt,
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, codes: &[&str]) -> ApiError {
        ApiError::Status {
            status,
            errors: codes
                .iter()
                .map(|c| ErrorEntry {
                    code: c.to_string(),
                    message: String::new(),
                })
                .collect(),
            retry_after: None,
        }
    }

    #[test]
    fn classes_follow_the_spec_table() {
        assert_eq!(
            status(400, &["invalid_chat_value"]).class(),
            ErrorClass::AgentRejected
        );
        assert_eq!(
            status(400, &["invalid_request", "customer"]).class(),
            ErrorClass::Permanent
        );
        assert_eq!(status(404, &["not_fount"]).class(), ErrorClass::Permanent);
        assert_eq!(
            status(401, &["invalid_request", "unauthorized"]).class(),
            ErrorClass::Unauthorized
        );
        assert_eq!(
            status(429, &["too_many_requests"]).class(),
            ErrorClass::RateLimited
        );
        assert_eq!(status(503, &[]).class(), ErrorClass::Transient);
        assert_eq!(
            ApiError::Timeout(Duration::from_secs(1)).class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn the_specific_code_wins() {
        assert_eq!(
            status(401, &["invalid_request", "unauthorized"]).code(),
            Some("unauthorized")
        );
        assert_eq!(
            status(400, &["invalid_request"]).code(),
            Some("invalid_request")
        );
    }

    #[test]
    fn bodies_of_every_shape() {
        let e = parse_error_body(br#"{"errors":[{"code":"invalid_request","message":"Invalid request"},{"code":"too_many_requests","message":"Too many requests"}]}"#);
        assert_eq!(e.len(), 2);
        let html = parse_error_body(b"<html><body>502 Bad Gateway</body></html>");
        assert_eq!(html[0].code, "unparsed_error_body");
        assert!(html[0].message.contains("502"));
    }
}
