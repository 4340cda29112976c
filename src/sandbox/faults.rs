//! What the sandbox does wrong on purpose: [`Faults`] drawn per request
//! (5xx, 429s, latency, slow or late answers, dropped and reset
//! connections), switchable at run time with
//! [`super::Sandbox::set_faults`], and [`Trick`]s, answers that
//! try to fool a client (issue 10): a redirect to another host, absurd or
//! date-valued `Retry-After`, an error page that echoes the credentials.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;

use super::too_many_requests;

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
    /// Wait a random time up to this before doing the work (network and
    /// server latency); admission to the rate limit is at arrival.
    pub latency: Duration,
    /// `PUT /chats/assignee` only: hold it this long before applying it (a
    /// slow path to HelpCrunch), so that a read in between still sees the
    /// chat as it was.
    pub hold_put: Duration,
    /// `PUT /chats/assignee` only: apply the assignment, then answer after
    /// `late_for` (set it past the client's timeout): the client cannot
    /// know whether the chat changed.
    pub late_put: f64,
    pub late_for: Duration,
    /// Answer 429 with `Retry-After: throttle_for` (whole seconds, rounded
    /// up) without doing the work: a 429 the sandbox was told to give.
    pub throttle: f64,
    pub throttle_for: Duration,
    /// Drop the connection before doing any work: no answer at all.
    pub reset: f64,
}

impl Faults {
    /// Whether this draw (a share of requests) hits.
    pub(super) fn roll(share: f64) -> bool {
        share > 0.0 && rand::random::<f64>() < share
    }

    /// A random latency up to [`Faults::latency`].
    pub(super) fn latency_draw(&self) -> Duration {
        self.latency.mul_f64(rand::random::<f64>())
    }
}

/// An answer that replaces the normal one for every request while set;
/// nothing is done (no chat changes) when a trick answers.
#[derive(Debug, Clone)]
pub enum Trick {
    /// `status` (301, 302, 307, 308) with `Location: <to><path>`, as a
    /// moved or hijacked base URL would answer; `to` is an origin such as
    /// `http://127.0.0.1:8080`.
    Redirect { status: u16, to: String },
    /// 200 with a plausible chat to anything, whoever asks: the far end of
    /// a redirect, which a client must never reach.
    AcceptAll,
    /// 429 with this exact `Retry-After` value.
    RetryAfter(HeaderValue),
    /// 429 with `Retry-After` as an HTTP date, `lead` (rounded up to a
    /// whole second) after the first request, to every request until that
    /// date; normal answers after it. [`super::Sandbox::retry_date`] tells
    /// the date.
    RetryAt { lead: Duration, form: DateForm },
    /// An error page with `status` that echoes the request headers,
    /// `Authorization` first, and the bare token once more (HTML, or a
    /// HelpCrunch-shaped JSON error body).
    EchoHeaders { status: u16, json: bool },
}

/// The three forms of an HTTP date (RFC 9110 §5.6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateForm {
    /// `Sun, 06 Nov 1994 08:49:37 GMT`
    ImfFixdate,
    /// `Sunday, 06-Nov-94 08:49:37 GMT`
    Rfc850,
    /// `Sun Nov  6 08:49:37 1994`
    Asctime,
}

impl DateForm {
    pub fn format(self, at: Timestamp) -> String {
        let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
        let pattern = match self {
            DateForm::ImfFixdate => "%a, %d %b %Y %H:%M:%S GMT",
            DateForm::Rfc850 => "%A, %d-%b-%y %H:%M:%S GMT",
            DateForm::Asctime => "%a %b %e %H:%M:%S %Y",
        };
        utc.strftime(pattern).to_string()
    }
}

/// The trick in force, and the date a [`Trick::RetryAt`] fixed.
#[derive(Default)]
pub(super) struct Tricks {
    state: Mutex<(Option<Trick>, Option<Timestamp>)>,
}

impl Tricks {
    pub(super) fn set(&self, trick: Option<Trick>) {
        *self.state.lock().expect("tricks lock") = (trick, None);
    }

    pub(super) fn retry_date(&self) -> Option<Timestamp> {
        self.state.lock().expect("tricks lock").1
    }

    /// The trick's answer to this request, or `None` for the normal one.
    pub(super) fn answer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let mut state = self.state.lock().expect("tricks lock");
        let (trick, date) = &mut *state;
        Some(match trick.as_ref()? {
            Trick::Redirect { status, to } => redirect(*status, to, uri),
            Trick::AcceptAll => accept_all(),
            Trick::RetryAfter(value) => too_many_requests(Some(value.clone())),
            Trick::RetryAt { lead, form } => {
                let now = Timestamp::now();
                let until = *date.get_or_insert_with(|| whole_second_after(now, *lead));
                if now >= until {
                    return None;
                }
                too_many_requests(Some(HeaderValue::from_str(&form.format(until)).ok()?))
            }
            Trick::EchoHeaders { status, json } => echo(*status, *json, method, uri, headers),
        })
    }
}

fn whole_second_after(now: Timestamp, lead: Duration) -> Timestamp {
    let at = now
        .checked_add(jiff::SignedDuration::try_from(lead).unwrap_or_default())
        .unwrap_or(now);
    let up = i64::from(at.subsec_nanosecond() > 0);
    Timestamp::from_second(at.as_second() + up).unwrap_or(at)
}

fn redirect(status: u16, to: &str, uri: &Uri) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let target = format!("{}{}", to.trim_end_matches('/'), uri);
    let mut r = (status, format!("Moved to {target}")).into_response();
    if let Ok(v) = HeaderValue::from_str(&target) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn accept_all() -> Response {
    let now = Timestamp::now().as_second();
    axum::Json(json!({
        "id": 1, "status": "opened", "createdAt": now,
        "assignee": {"id": 4188, "name": "impostor", "email": null, "role": "agent"},
    }))
    .into_response()
}

/// A debugging proxy's error page: the request line and headers,
/// `Authorization` first (so that it falls inside a short excerpt), then
/// the bare token, as some pages print it.
fn echo(status: u16, json: bool, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut lines = vec![format!("{method} {uri}")];
    let mut sorted: Vec<_> = headers.iter().collect();
    sorted.sort_by_key(|(name, _)| *name != header::AUTHORIZATION);
    for (name, value) in sorted {
        lines.push(format!(
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).replace("Bearer ", ""))
        .unwrap_or_default();
    lines.push(format!("token={token}"));
    if json {
        let body = json!({"errors": [
            {"code": "invalid_request", "message": lines.join("\n")},
            {"code": token, "message": format!("token {token} was not accepted")},
        ]});
        return (status, axum::Json(body)).into_response();
    }
    let page = format!(
        "<html><body><pre>{}</pre><h1>{status}</h1></body></html>",
        lines.join("\n")
    );
    (status, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

pub(super) fn server_error(html: bool) -> Response {
    if html {
        let page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>";
        (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response()
    } else {
        super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &[("service_unavailable", "Service temporarily unavailable")],
        )
    }
}

/// The answer's head, then a body that breaks off: the connection drops.
pub(super) fn dropped(response: Response) -> Response {
    let (parts, _) = response.into_parts();
    broken(parts, Some(Bytes::from_static(b"{\"id\": ")))
}

/// A connection that drops before any answer: the body fails at once, so
/// the server closes the connection instead of finishing the response.
pub(super) fn reset() -> Response {
    let (parts, _) = StatusCode::BAD_GATEWAY.into_response().into_parts();
    broken(parts, None)
}

fn broken(parts: axum::http::response::Parts, first: Option<Bytes>) -> Response {
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = first.into_iter().map(Ok).collect();
    chunks.push(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "injected drop",
    )));
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

/// The 429 of [`Faults::throttle`].
pub(super) fn throttled(retry_after: Duration) -> Response {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    too_many_requests(Some(secs.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_in_every_form_and_parse_back() {
        let at: Timestamp = "1994-11-06T08:49:37Z".parse().unwrap();
        assert_eq!(
            DateForm::ImfFixdate.format(at),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            DateForm::Rfc850.format(at),
            "Sunday, 06-Nov-94 08:49:37 GMT"
        );
        assert_eq!(DateForm::Asctime.format(at), "Sun Nov  6 08:49:37 1994");
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-10-21T07:28:00Z".parse().unwrap();
        for form in [DateForm::ImfFixdate, DateForm::Rfc850, DateForm::Asctime] {
            let text = form.format(later);
            assert_eq!(
                crate::helpcrunch::retry_after::http_date(&text, now),
                Some(later),
                "{text}"
            );
        }
    }

    #[test]
    fn retry_dates_are_whole_seconds() {
        let now: Timestamp = "2026-10-21T07:28:00.250Z".parse().unwrap();
        let at = whole_second_after(now, Duration::from_secs(3));
        assert_eq!(at.to_string(), "2026-10-21T07:28:04Z");
    }
}
