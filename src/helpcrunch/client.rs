//! The HelpCrunch REST client. Every method waits for the shared
//! [`Limiter`] first, so no call can bypass the account's budget, and reports
//! a 429 to it so that every caller pauses.
//!
//! Nothing an answer says is trusted further than it must be: redirects are
//! never followed (only a 2xx from the configured host counts), `Retry-After`
//! is bounded whatever it holds, and every piece of an answer kept as text
//! (error bodies, `Location`, transport errors) is stripped of the API key
//! before it can reach a log, the database or `status`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::departments::{DepartmentRef, Departments, parse_page};
use super::error::{ApiError, parse_error_body_redacted};
use super::redact::{excerpt, redact};
use super::retry_after;
use super::types::{AgentRef, Chat, Message, NewMessage, Page};
use crate::domain::{AgentId, ChatId};
use crate::limiter::{Limiter, Priority};
use crate::secrets::Secret;

/// A call's result with its timings.
#[derive(Debug)]
pub struct Call<T> {
    pub result: Result<T, ApiError>,
    /// Time on the wire, from sending to the whole body read.
    pub latency: Duration,
    /// Time spent waiting for the limiter.
    pub waited: Duration,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    /// Only to redact it from what answers echo back.
    key: Secret,
    timeout: Duration,
    limiter: Arc<Limiter>,
    /// Shadow mode (SPEC §14): every write is refused here, whatever asks
    /// for it; an assignment still takes its rate slot (the live pace).
    read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    #[error("the API key contains characters that cannot be sent in a header")]
    BadKey,
}

impl Client {
    pub fn new(
        base_url: &str,
        key: &Secret,
        timeout: Duration,
        limiter: Arc<Limiter>,
    ) -> Result<Self, ClientError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ClientError::BadKey)?;
        // Keeps the value out of reqwest's Debug output.
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("assignd/", env!("CARGO_PKG_VERSION")))
            // Another host's 200 must never pass for HelpCrunch's.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Build(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            auth,
            key: key.clone(),
            timeout,
            limiter,
            read_only: false,
        })
    }

    /// This client, refusing every write if `read_only` (shadow mode).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// A write's answer in shadow mode: [`ApiError::ReadOnly`], nothing sent.
    fn refused<T>(&self) -> Option<Call<T>> {
        self.read_only.then(|| Call {
            result: Err(ApiError::ReadOnly),
            latency: Duration::ZERO,
            waited: Duration::ZERO,
        })
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// `PUT /chats/assignee`, sent only if its rate slot comes by `send_by`
    /// (else [`ApiError::TooLate`], nothing sent): a decision's call must
    /// land while the claim it was made under surely holds, and the slot
    /// may come after a long wait (a 429 pause) or a stopped process.
    pub async fn assign(
        &self,
        chat_id: ChatId,
        agent_id: AgentId,
        send_by: Option<Instant>,
    ) -> Call<Chat> {
        if self.read_only {
            return self.paced_nothing(Priority::Assign, send_by).await;
        }
        let req = self
            .http
            .put(format!("{}/chats/assignee", self.base))
            .json(&json!({ "id": chat_id, "assignee": agent_id }));
        self.send_by("PUT /chats/assignee", Priority::Assign, req, send_by)
            .await
    }

    /// The longest a call may take, from its slot to its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET /chats/{id}`.
    pub async fn chat(&self, chat_id: ChatId, priority: Priority) -> Call<Chat> {
        let req = self.http.get(format!("{}/chats/{chat_id}", self.base));
        self.send("GET /chats/{id}", priority, req).await
    }

    /// `POST /messages`.
    pub async fn post_message(&self, message: &NewMessage) -> Call<Message> {
        if let Some(refused) = self.refused() {
            return refused;
        }
        let req = self
            .http
            .post(format!("{}/messages", self.base))
            .json(message);
        self.send("POST /messages", Priority::Background, req).await
    }

    /// `POST /chats/search`, one page: `filter` as HelpCrunch takes it
    /// (`[{"field", "operator", "value"}]`), oldest first. The chats come as
    /// JSON, so that a caller can keep one as a snapshot. Every page of a
    /// search: [`Client::search_every`].
    pub async fn search_chats(
        &self,
        filter: serde_json::Value,
        offset: usize,
    ) -> Call<Page<serde_json::Value>> {
        let body = json!({
            "filter": filter,
            "comparison": "AND",
            "sort": "chats.createdAt",
            "order": "asc",
            "offset": offset,
            "limit": 100,
        });
        let req = self
            .http
            .post(format!("{}/chats/search", self.base))
            .json(&body);
        self.send("POST /chats/search", Priority::Background, req)
            .await
    }

    /// `GET /agents`, every page.
    pub async fn agents(&self) -> Result<Vec<AgentRef>, ApiError> {
        let mut all = Vec::new();
        loop {
            let req = self
                .http
                .get(format!("{}/agents", self.base))
                .query(&[("offset", all.len()), ("limit", 100)]);
            let page: Page<AgentRef> = self
                .send("GET /agents", Priority::Background, req)
                .await
                .result?;
            let done =
                page.data.len() < 100 || all.len() + page.data.len() >= page.meta.total as usize;
            all.extend(page.data);
            if done {
                return Ok(all);
            }
        }
    }

    /// `GET /departments`, every page; [`Departments::Unavailable`] when the
    /// account answers 404 or with something other than a list (see
    /// [`super::departments`]).
    pub async fn departments(&self) -> Result<Departments, ApiError> {
        let mut all: Vec<DepartmentRef> = Vec::new();
        loop {
            let req = self
                .http
                .get(format!("{}/departments", self.base))
                .query(&[("offset", all.len()), ("limit", 100)]);
            let body = match self
                .send::<serde_json::Value>("GET /departments", Priority::Background, req)
                .await
                .result
            {
                Ok(body) => body,
                Err(ApiError::Status { status: 404, .. }) => {
                    return Ok(Departments::Unavailable(
                        "GET /departments answered 404".into(),
                    ));
                }
                Err(ApiError::Unreadable { .. }) => return Ok(unexpected()),
                Err(e) => return Err(e),
            };
            let Some(page) = parse_page(&body) else {
                return Ok(unexpected());
            };
            let before = all.len();
            for d in page.departments {
                if !all.iter().any(|seen| seen.id == d.id) {
                    all.push(d);
                }
            }
            // A page that adds nothing ends it too: a server that ignores
            // `offset` must not loop forever.
            let added = all.len() - before;
            if !page.paged || added < 100 || page.total.is_some_and(|t| all.len() >= t) {
                return Ok(Departments::Listed(all));
            }
        }
    }

    /// Sends through the limiter and counts the call by endpoint and status.
    async fn send<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        priority: Priority,
        req: reqwest::RequestBuilder,
    ) -> Call<T> {
        self.send_by(endpoint, priority, req, None).await
    }

    /// [`Client::send`], given up if the slot comes after `send_by`.
    async fn send_by<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        priority: Priority,
        req: reqwest::RequestBuilder,
        send_by: Option<Instant>,
    ) -> Call<T> {
        let call = self.send_unmeasured(priority, req, send_by).await;
        let m = crate::metrics::metrics();
        let status = match &call.result {
            Ok(_) => "200".to_string(),
            Err(e) => e.status().map_or_else(
                || e.code().unwrap_or("error").to_string(),
                |s| s.to_string(),
            ),
        };
        m.api_calls
            .get_or_create(&vec![
                ("endpoint", endpoint.to_string()),
                ("status", status),
            ])
            .inc();
        m.limiter_wait.observe(call.waited.as_secs_f64());
        if matches!(&call.result, Err(ApiError::Status { status: 429, .. })) {
            m.rate_limited.inc();
        }
        call
    }

    /// Waits for the call's rate slot; its wait, or why nothing may go (a
    /// closed limiter, or a slot that came after `send_by`).
    async fn slot(
        &self,
        priority: Priority,
        send_by: Option<Instant>,
    ) -> Result<Duration, (ApiError, Duration)> {
        let mut waited = Duration::ZERO;
        loop {
            match self.limiter.acquire(priority).await {
                Ok(slot) if slot.fresh() => {
                    waited += slot.waited;
                    break;
                }
                Ok(stale) => {
                    waited += stale.waited;
                    self.limiter.forfeit(stale);
                }
                Err(closed) => return Err((closed.into(), waited)),
            }
        }
        // Checked once the slot is in hand, right before the request goes:
        // the wait for the slot is what may have outlasted the claim.
        if send_by.is_some_and(|by| Instant::now() > by) {
            return Err((ApiError::TooLate, waited));
        }
        Ok(waited)
    }

    /// A write in shadow mode: its slot is taken as a live daemon's would
    /// be, so that decisions keep the live pace, and nothing is sent
    /// ([`ApiError::ReadOnly`], or [`ApiError::TooLate`] as live).
    async fn paced_nothing<T>(&self, priority: Priority, send_by: Option<Instant>) -> Call<T> {
        let (e, waited) = match self.slot(priority, send_by).await {
            Ok(waited) => (ApiError::ReadOnly, waited),
            Err(failed) => failed,
        };
        Call {
            result: Err(e),
            latency: Duration::ZERO,
            waited,
        }
    }

    async fn send_unmeasured<T: DeserializeOwned>(
        &self,
        priority: Priority,
        req: reqwest::RequestBuilder,
        send_by: Option<Instant>,
    ) -> Call<T> {
        let failed = |e: ApiError, waited| Call {
            result: Err(e),
            latency: Duration::ZERO,
            waited,
        };
        let asked = Instant::now();
        let turn = match self.limiter.send_turn().await {
            Ok(turn) => turn,
            Err(closed) => return failed(closed.into(), asked.elapsed()),
        };
        let capped = asked.elapsed();
        let waited = match self.slot(priority, send_by).await {
            Ok(waited) => waited + capped,
            Err((e, waited)) => return failed(e, waited + capped),
        };
        // Sent now, as far as the shadow's cap is concerned.
        drop(turn);
        let started = Instant::now();
        let result = self.exchange(req).await;
        let latency = started.elapsed();
        match &result {
            Ok(_) => self.limiter.succeeded(),
            Err(e @ ApiError::Status { status: 429, .. }) => {
                let pause = self.limiter.pause(e.retry_after());
                tracing::warn!(
                    pause_ms = pause.as_millis() as u64,
                    "HelpCrunch answered 429; all calls pause"
                );
            }
            Err(ApiError::Status {
                status: 401 | 403, ..
            }) => {
                if self.limiter.close() {
                    tracing::error!(
                        "HelpCrunch rejects the API key; no call is sent until assignd is reloaded with a valid key"
                    );
                }
            }
            Err(_) => {}
        }
        Call {
            result,
            latency,
            waited,
        }
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let resp = req
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            return Err(ApiError::Redirect {
                status,
                location: self.location(resp.headers()),
            });
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| retry_after::parse(v.as_bytes(), jiff::Timestamp::now()));
        let body = resp
            .bytes()
            .await
            .map_err(|e| match self.transport_error(e) {
                ApiError::Connection(detail) => ApiError::Unreadable { status, detail },
                other => other,
            })?;
        if (200..300).contains(&status) {
            // serde's message may quote the body.
            serde_json::from_slice(&body).map_err(|e| ApiError::Unreadable {
                status,
                detail: self.clean(&e.to_string()),
            })
        } else {
            Err(ApiError::Status {
                status,
                errors: parse_error_body_redacted(&body, self.key.expose()),
                retry_after,
            })
        }
    }

    /// A redirect's target, for the reason shown to operators: redacted,
    /// printable and short.
    fn location(&self, headers: &HeaderMap) -> String {
        match headers.get(LOCATION) {
            None => "(no Location)".into(),
            Some(v) => self.clean(&String::from_utf8_lossy(v.as_bytes())),
        }
    }

    /// Text taken from an answer, fit to keep: no key, one line, bounded.
    fn clean(&self, text: &str) -> String {
        excerpt(&redact(text, self.key.expose()), 200)
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            // Walk to the root cause; reqwest's top line says little.
            let e = e.without_url();
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                detail = s.to_string();
                source = s.source();
            }
            ApiError::Connection(self.clean(&detail))
        }
    }
}

fn unexpected() -> Departments {
    Departments::Unavailable("GET /departments answered with no list of departments".into())
}
