//! The sandbox's webhooks: once given a target URL and a signing key, it
//! POSTs the events HelpCrunch would send (`chat.new`, `chat.assigned`,
//! `message.chat.agent`, `chat.closed`) in HelpCrunch's envelope, signed
//! with `X-HelpCrunch-Signature` (hex HMAC-SHA1 of the raw body).
//!
//! Each chat has its own delivery task, so a chat's events arrive in the
//! order they happened while chats do not wait for each other; a delivery
//! answered with anything but 2xx is tried again a bounded number of times,
//! with `attempts` counting the earlier tries as HelpCrunch does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::chats::agent_json;
use super::people::mix;
use super::{Sandbox, SandboxChat, Shared};
use crate::http::{SIGNATURE_HEADER, webhook_signature};

/// Where and how the sandbox delivers its webhooks.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The full URL, e.g. `http://127.0.0.1:8080/webhooks/helpcrunch`.
    pub url: String,
    /// The account's "HTTP Webhook Signing Key".
    pub key: String,
    /// Tries per event, the first included (at least 1).
    pub attempts: u32,
    /// The wait before the second try; doubled before each later one.
    pub backoff: Duration,
}

impl WebhookTarget {
    /// Four tries, 50 ms apart at first.
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: key.into(),
            attempts: 4,
            backoff: Duration::from_millis(50),
        }
    }
}

// The key stays out of any debug output.
impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// One try at delivering one event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: String,
    /// The event's id (the same on every try).
    pub id: String,
    pub chat: i64,
    /// 0 for the first try.
    pub attempt: u32,
    /// The answer's status; None when no answer came (refused, timed out).
    pub status: Option<u16>,
    /// The body exactly as sent (and signed).
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Delivery {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// An event waiting in its chat's line.
struct Event {
    target: Arc<WebhookTarget>,
    name: &'static str,
    id: String,
    chat: i64,
    data: Value,
    created: jiff::Timestamp,
}

#[derive(Default)]
pub(super) struct Webhooks {
    target: Mutex<Option<Arc<WebhookTarget>>>,
    /// Each chat's line to its delivery task.
    lines: Mutex<HashMap<i64, mpsc::UnboundedSender<Event>>>,
    deliveries: Mutex<Vec<Delivery>>,
    sequence: AtomicU64,
    client: std::sync::OnceLock<reqwest::Client>,
}

impl Sandbox {
    /// Delivers webhooks to `url`, signed with `key`, from now on.
    pub fn send_webhooks_to(&self, url: impl Into<String>, key: impl Into<String>) {
        self.send_webhooks(Some(WebhookTarget::new(url, key)));
    }

    /// Sets (or with None stops) webhook delivery; events already queued
    /// still go to the target they were queued for.
    pub fn send_webhooks(&self, target: Option<WebhookTarget>) {
        *self.shared.webhooks.target.lock().expect("webhooks lock") = target.map(Arc::new);
    }

    /// Every delivery try so far, in the order they were answered.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared
            .webhooks
            .deliveries
            .lock()
            .expect("deliveries lock")
            .clone()
    }
}

impl Shared {
    /// Queues `event` about `chat` (the chat as it is now) when webhooks
    /// are on. Called with the chats lock held, so that a chat's events
    /// are queued in the order its changes were made.
    pub(super) fn emit_chat(&self, event: &'static str, chat: &SandboxChat) {
        if self.webhooks.target().is_some() {
            self.emit(event, chat.id, chat_data(self, chat));
        }
    }

    /// Queues `message.chat.agent` for `agent`'s message in `chat`.
    pub(super) fn emit_agent_message(&self, chat: &SandboxChat, agent: i64, text: &str) {
        if self.webhooks.target().is_none() {
            return;
        }
        let name = self.agents.iter().find(|a| a.id == agent);
        let data = json!({
            "chat_id": chat.id,
            "agent": agent_json(agent, name.map(|a| a.name.as_str())),
            "customer": {"id": chat.customer_id, "name": chat.customer_name, "email": chat.customer_email},
            "message": {"id": chat.id * 10 + 1, "text": text, "type": "message", "from": "agent", "createdAt": fractional(jiff::Timestamp::now())},
        });
        self.emit("message.chat.agent", chat.id, data);
    }

    fn emit(&self, name: &'static str, chat: i64, data: Value) {
        let Some(target) = self.webhooks.target() else {
            return;
        };
        let seq = self.webhooks.sequence.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            target,
            name,
            id: event_id(self.nonce, seq),
            chat,
            data,
            created: jiff::Timestamp::now(),
        };
        let mut lines = self.webhooks.lines.lock().expect("webhook lines lock");
        let line = lines.entry(chat).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            if let Some(s) = self.this.upgrade() {
                self.runtime.spawn(deliver_line(s, rx));
            }
            tx
        });
        // A line whose task is gone (the sandbox stopping) drops the event.
        let _ = line.send(event);
    }
}

impl Webhooks {
    fn target(&self) -> Option<Arc<WebhookTarget>> {
        self.target.lock().expect("webhooks lock").clone()
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default()
        })
    }

    fn record(&self, delivery: Delivery) {
        self.deliveries
            .lock()
            .expect("deliveries lock")
            .push(delivery);
    }
}

/// The chat as a chat event carries it: the chat object with
/// `communicatedAgents`.
fn chat_data(s: &Shared, chat: &SandboxChat) -> Value {
    let mut data = chat.to_json(&s.agents);
    let communicated: Vec<Value> = chat
        .agents
        .iter()
        .map(|&id| {
            let name = s.agents.iter().find(|a| a.id == id);
            agent_json(id, name.map(|a| a.name.as_str()))
        })
        .collect();
    data["communicatedAgents"] = Value::Array(communicated);
    data
}

/// Delivers one chat's events, one after the other, until the sandbox stops.
async fn deliver_line(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Event>) {
    loop {
        let event = tokio::select! {
            _ = s.shutdown.cancelled() => return,
            event = rx.recv() => match event {
                Some(e) => e,
                None => return,
            },
        };
        if !deliver(&s, &event).await {
            return;
        }
    }
}

/// Tries `event` until a 2xx or the tries run out; false if the sandbox
/// stopped meanwhile.
async fn deliver(s: &Shared, event: &Event) -> bool {
    let tries = event.target.attempts.max(1);
    for attempt in 0..tries {
        let body = envelope(event, attempt);
        let signature = webhook_signature(event.target.key.as_bytes(), &body);
        let sent = s
            .webhooks
            .client()
            .post(&event.target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone());
        let status = tokio::select! {
            _ = s.shutdown.cancelled() => return false,
            answer = sent.send() => answer.ok().map(|r| r.status().as_u16()),
        };
        let delivery = Delivery {
            event: event.name.to_string(),
            id: event.id.clone(),
            chat: event.chat,
            attempt,
            status,
            body,
            at: Instant::now(),
        };
        let ok = delivery.ok();
        s.webhooks.record(delivery);
        if ok {
            return true;
        }
        if attempt + 1 < tries {
            let wait = event.target.backoff.saturating_mul(1 << attempt.min(16));
            tokio::select! {
                _ = s.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    tracing::debug!(
        event = event.name,
        chat = event.chat,
        "sandbox webhook given up"
    );
    true
}

/// HelpCrunch's envelope for the `attempt`-th try (0 for the first).
fn envelope(event: &Event, attempt: u32) -> Vec<u8> {
    let body = json!({
        "event": event.name,
        "eventData": event.data,
        "attempts": attempt,
        "lastAttemptAt": jiff::Timestamp::now().as_second(),
        "createdAt": fractional(event.created),
        "id": event.id,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Seconds with milliseconds, as a string: the form webhooks use.
fn fractional(t: jiff::Timestamp) -> String {
    let ms = t.as_millisecond();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A UUID-shaped id, unique to this sandbox (`nonce`) and event (`seq`).
fn event_id(nonce: u64, seq: u64) -> String {
    let hi = mix(nonce ^ seq.rotate_left(17));
    let lo = mix(hi ^ seq);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xfff,
        (lo >> 48) & 0xfff,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_uuid_shaped_and_distinct() {
        let a = event_id(7, 0);
        let b = event_id(7, 1);
        assert_ne!(a, b);
        assert_ne!(event_id(8, 0), a);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }

    #[test]
    fn created_at_keeps_milliseconds() {
        let t = jiff::Timestamp::from_millisecond(1_607_540_767_414).unwrap();
        assert_eq!(fractional(t), "1607540767.414");
        let t = jiff::Timestamp::from_millisecond(1_607_540_767_004).unwrap();
        assert_eq!(fractional(t), "1607540767.004");
    }
}
