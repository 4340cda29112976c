//! Errors of HelpCrunch calls, and what the daemon should do about each.

use std::time::Duration;

use serde::Deserialize;

use super::redact::{excerpt, redact};

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
    /// A 3xx: never followed, as another host's 200 would pass for
    /// HelpCrunch's (and the key would travel with the request).
    #[error(
        "HTTP {status} redirect to {location} refused: assignd follows no redirects (check helpcrunch.base_url)"
    )]
    Redirect { status: u16, location: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connection(String),
    /// Not sent: an earlier 401 closed the limiter until a reload.
    #[error(transparent)]
    NotSent(#[from] crate::limiter::Closed),
    /// Not sent: the slot came after the caller's `send_by`, when the
    /// decision the call carries may no longer be the caller's to make.
    #[error("not sent: the call could not go while its decision was surely still held")]
    TooLate,
    /// Not sent: a shadow daemon's client writes nothing to HelpCrunch.
    #[error("not sent: in shadow mode nothing is written to HelpCrunch")]
    ReadOnly,
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
    /// Also a refused 3xx redirect: it means a wrong `base_url` or a proxy
    /// in the way, which an operator fixes; retrying with backoff (then
    /// `dead` with the reason after `max_attempts`) loses no chat meanwhile.
    Transient,
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. }
            | ApiError::Unreadable { status, .. }
            | ApiError::Redirect { status, .. } => Some(*status),
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
            ApiError::Redirect { .. } => Some("redirect_refused"),
            ApiError::Timeout(_) => Some("timeout"),
            ApiError::Connection(_) => Some("connection"),
            ApiError::Unreadable { .. } => Some("unreadable_body"),
            ApiError::NotSent(_) => Some("not_sent"),
            ApiError::TooLate => Some("too_late"),
            ApiError::ReadOnly => Some("shadow_mode"),
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
            ApiError::ReadOnly => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }

    /// Whether HelpCrunch may have done what the request asked although the
    /// answer is an error: no answer in time, a broken connection, a 5xx
    /// (a proxy's, maybe after HelpCrunch's own success), an unreadable
    /// body. A 4xx, a refused redirect, or a call never sent did nothing.
    pub fn maybe_applied(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status >= 500,
            ApiError::Redirect { .. }
            | ApiError::NotSent(_)
            | ApiError::TooLate
            | ApiError::ReadOnly => false,
            ApiError::Timeout(_) | ApiError::Connection(_) | ApiError::Unreadable { .. } => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// At most this many entries of an error body are kept.
const MAX_ENTRIES: usize = 10;
/// The longest code kept (codes go to the database and to metrics).
const MAX_CODE: usize = 64;
/// The longest message kept.
const MAX_MESSAGE: usize = 300;
/// The longest excerpt of a body that is not HelpCrunch's error JSON.
const MAX_EXCERPT: usize = 120;

/// Parses an error body; anything unreadable becomes one entry holding a
/// short, printable excerpt (an HTML error page, say). Only `Bearer` and
/// `Authorization` values are redacted: the client uses
/// [`parse_error_body_redacted`], which also knows the key.
pub fn parse_error_body(body: &[u8]) -> Vec<ErrorEntry> {
    parse_error_body_redacted(body, "")
}

/// [`parse_error_body`], with every trace of `key` redacted from the whole
/// body before anything is cut, so that no excerpt can keep part of it.
pub fn parse_error_body_redacted(body: &[u8], key: &str) -> Vec<ErrorEntry> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<ErrorEntry>,
    }
    let clean = |text: &str, max: usize| excerpt(&redact(text, key), max);
    match serde_json::from_slice::<Body>(body) {
        Ok(b) if !b.errors.is_empty() => b
            .errors
            .iter()
            .take(MAX_ENTRIES)
            .map(|e| ErrorEntry {
                code: clean(&e.code, MAX_CODE),
                message: clean(&e.message, MAX_MESSAGE),
            })
            .collect(),
        _ => vec![ErrorEntry {
            code: "unparsed_error_body".into(),
            message: clean(&String::from_utf8_lossy(body), MAX_EXCERPT),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpcrunch::redact::MIN_PREFIX;

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

    const KEY: &str = "canary-SECRET-7f3a9c";

    #[test]
    fn echoed_keys_are_redacted_before_the_excerpt_is_cut() {
        // The key straddles the excerpt's end: cutting first would keep
        // "canary-SECRET" even though the whole key is never in the excerpt.
        for pad in 100..MAX_EXCERPT + 5 {
            let page = format!("{}token {KEY} and more", "x".repeat(pad));
            let e = parse_error_body_redacted(page.as_bytes(), KEY);
            assert!(
                !e[0].message.contains("canary-S"),
                "{pad}: {}",
                e[0].message
            );
        }
        let json =
            format!(r#"{{"errors":[{{"code":"{KEY}","message":"Authorization: Bearer {KEY}"}}]}}"#);
        let e = parse_error_body_redacted(json.as_bytes(), KEY);
        assert_eq!(e[0].code, "***");
        assert_eq!(e[0].message, "Authorization: Bearer ***");
    }

    #[test]
    fn bodies_are_bounded() {
        let entry = format!(
            r#"{{"code":"{}","message":"{}"}}"#,
            "c".repeat(500),
            "m".repeat(5000)
        );
        let json = format!(r#"{{"errors":[{}]}}"#, vec![entry; 50].join(","));
        let e = parse_error_body(json.as_bytes());
        assert_eq!(e.len(), MAX_ENTRIES);
        assert_eq!(e[0].code.chars().count(), MAX_CODE);
        assert_eq!(e[0].message.chars().count(), MAX_MESSAGE);
    }

    #[test]
    fn a_redirect_is_transient_and_says_why() {
        let e = ApiError::Redirect {
            status: 301,
            location: "http://elsewhere.example/v1/chats/assignee".into(),
        };
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(e.status(), Some(301));
        assert_eq!(e.code(), Some("redirect_refused"));
        let text = e.to_string();
        assert!(
            text.contains("HTTP 301 redirect to http://elsewhere.example"),
            "{text}"
        );
        assert!(text.contains("follows no redirects"), "{text}");
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        "[A-Za-z0-9._~+/=-]{8,40}"
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any bytes, with the key dropped in anywhere, never panic and
        /// never leave the key or the start of it in what is kept.
        #[test]
        fn no_body_leaks_the_key(
            key in key(),
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            cut in 0usize..48,
            json in proptest::prelude::any::<bool>(),
        ) {
            let keep = &key[..cut.min(key.len())];
            let body = if json {
                let (b, a) = (String::from_utf8_lossy(&before), String::from_utf8_lossy(&after));
                serde_json::to_vec(&serde_json::json!({"errors": [
                    {"code": format!("{keep}{b}"), "message": format!("{b}{key}{a}{keep}")},
                ]}))
                .unwrap()
            } else {
                [&before[..], key.as_bytes(), &after, keep.as_bytes()].concat()
            };
            let prefix = &key[..MIN_PREFIX];
            for e in parse_error_body_redacted(&body, &key) {
                proptest::prop_assert!(!e.code.contains(prefix), "{:?}", e);
                proptest::prop_assert!(!e.message.contains(prefix), "{:?}", e);
                proptest::prop_assert!(e.message.chars().count() <= MAX_MESSAGE);
            }
        }
    }
}
