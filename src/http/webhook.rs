//! `POST /webhooks/helpcrunch`: signed events from HelpCrunch.

use crate::domain::{AgentId, ChatId};
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use hmac::Mac;
use serde::Deserialize;
use serde_json::Value;

use super::body::Body;
use super::conns::ConnHandle;
use super::{App, Listener, reject};
use crate::helpcrunch::types::Chat;
use crate::secrets::Secret;
use crate::store::{Applied, NewQueueItemJson, WebhookEffect};

/// The header that carries the lowercase hex HMAC-SHA1 of the raw body.
pub const SIGNATURE_HEADER: &str = "x-helpcrunch-signature";

/// The events the listener acts on: what operators subscribe in HelpCrunch
/// (`assignd init` and `assignd check` list them). Every other event is
/// accepted and ignored.
pub const EVENTS: [&str; 6] = [
    "chat.new",
    "chat.assigned",
    "chat.closed",
    "chat.status_updated",
    "message.chat.agent",
    "message.chat.customer",
];

#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(rename = "eventData")]
    event_data: Value,
    id: String,
    /// Seconds since the epoch, as a number or a string ("1607540767.414").
    #[serde(rename = "createdAt", default)]
    created_at: Option<Value>,
}

impl Envelope {
    /// The event's creation, in ms since the epoch, when it says.
    fn created_ms(&self) -> Option<i64> {
        let secs = match self.created_at.as_ref()? {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        secs.is_finite().then_some((secs * 1000.0) as i64)
    }
}

/// The `X-HelpCrunch-Signature` HelpCrunch sends for `body`: the HMAC-SHA1
/// of the raw bytes under the webhook key, in lower-case hex. For whoever
/// must sign like HelpCrunch (load tools, benchmarks); checking uses
/// [`signature_ok`], in constant time.
pub fn webhook_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the signature over the raw bytes, before any parsing, in constant time.
fn signature_ok(key: &[u8], body: &[u8], given: &[u8]) -> bool {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(given).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A webhook key and a well-formed signature header, checked before the
/// body is read (401 otherwise): a request that cannot be signed is never
/// waited for. The signature itself is checked once the body is in.
pub(super) struct Signed {
    key: Secret,
    given: Vec<u8>,
    /// Marked authenticated once the signature proves good.
    conn: Option<ConnHandle>,
}

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Some(key) = app.listener.secrets.webhook_key() else {
            count("unauthorized");
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "no webhook key is configured, so webhooks are refused",
            ));
        };
        let header = parts.headers.get(SIGNATURE_HEADER);
        let given = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| decode_hex(v.trim()));
        let Some(given) = given else {
            count("unauthorized");
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "missing or malformed X-HelpCrunch-Signature (40 hex digits)",
            ));
        };
        let conn = parts.extensions.get::<ConnHandle>().cloned();
        Ok(Self { key, given, conn })
    }
}

pub(super) async fn receive(State(app): State<Arc<App>>, signed: Signed, body: Body) -> Response {
    let response = handle(&app.listener, &signed, &body.bytes).await;
    count(match response.status().as_u16() {
        200 => "accepted",
        401 => "unauthorized",
        400 => "bad_request",
        410 => "stale",
        _ => "failed",
    });
    response
}

fn count(outcome: &str) {
    crate::metrics::metrics()
        .webhooks
        .get_or_create(&vec![("outcome", outcome.to_string())])
        .inc();
}

async fn handle(s: &Listener, signed: &Signed, body: &[u8]) -> Response {
    if !signature_ok(signed.key.expose().as_bytes(), body, &signed.given) {
        return reject(StatusCode::UNAUTHORIZED, "wrong X-HelpCrunch-Signature");
    }
    if let Some(ConnHandle(conn)) = &signed.conn {
        conn.authenticated();
    }
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("not a HelpCrunch event: {e}"),
            );
        }
    };
    // Its id may be forgotten by now: a replay would count as new.
    if envelope
        .created_ms()
        .is_some_and(|at| crate::store::now_ms() - at > crate::store::WEBHOOK_IDS_KEPT_MS)
    {
        tracing::warn!(event = %envelope.event, id = %envelope.id, "webhook event older than 7 days refused");
        return reject(
            StatusCode::GONE,
            "the event was created more than 7 days ago, longer than its id is remembered; refused",
        );
    }
    let effect = match effect_of(s, &envelope) {
        Ok(effect) => effect,
        Err(why) => return reject(StatusCode::BAD_REQUEST, why),
    };
    match s
        .store
        .apply_webhook_event(&envelope.id, &envelope.event, &effect)
        .await
    {
        Ok(Applied::Duplicate) => {
            (StatusCode::OK, "duplicate event; already applied\n").into_response()
        }
        Ok(Applied::New(first)) => {
            // Committed: a chat's first reply or assignment is measured once.
            if let Some(first) = &first {
                crate::metrics::metrics().observe_first(first);
            }
            match &effect {
                WebhookEffect::Enqueue(_) => s.intake.wake(),
                WebhookEffect::Assigned { chat_id, agent } => {
                    s.intake.note_open(*chat_id, agent.as_deref())
                }
                WebhookEffect::Closed { chat_id } => s.intake.note_open(*chat_id, None),
                WebhookEffect::Answered { .. }
                | WebhookEffect::Observed { .. }
                | WebhookEffect::CustomerWrote { .. }
                | WebhookEffect::Ignored => {}
            }
            tracing::info!(event = %envelope.event, id = %envelope.id, "webhook applied");
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store a webhook event");
            // HelpCrunch retries; nothing was stored.
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event cannot be stored right now; retry",
            )
        }
    }
}

fn id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The chat of a message event: `chat_id`, or `chat.id`.
fn message_chat(e: &Envelope) -> Result<ChatId, String> {
    let data = &e.event_data;
    data.get("chat_id")
        .or_else(|| data.get("chat").and_then(|c| c.get("id")))
        .and_then(id_of)
        .map(ChatId)
        .ok_or_else(|| format!("`{}` without a chat id", e.event))
}

/// What an event means here. `chat.assigned` never triggers a decision: it
/// fires for the daemon's own assignments too, and only moves open counts.
fn effect_of(s: &Listener, e: &Envelope) -> Result<WebhookEffect, String> {
    let data = &e.event_data;
    let chat_id = || {
        data.get("id")
            .or_else(|| data.get("chat_id"))
            .and_then(id_of)
            .map(ChatId)
            .ok_or_else(|| format!("`{}` without a chat id", e.event))
    };
    Ok(match e.event.as_str() {
        "chat.new" => {
            let chat_id = chat_id()?;
            // Ranked now, from the chat in the event, as the decision will
            // read it (a chat that does not parse is read from HelpCrunch).
            let chat = serde_json::from_value::<Chat>(data.clone()).ok();
            let rule = s
                .intake
                .intake_priority(chat_id, &Default::default(), chat.as_ref());
            WebhookEffect::Enqueue(NewQueueItemJson {
                chat_id,
                snapshot: data.to_string(),
                priority: rule.map_or(0, |r| r.max(0)),
                ranked: true,
            })
        }
        "chat.assigned" => {
            let rules = s.intake.rules();
            let agent = data
                .get("assignee")
                .and_then(|a| a.get("id"))
                .and_then(id_of)
                .and_then(|id| rules.agent_by_id(AgentId(id)))
                .map(|a| rules.agents[a].name.clone());
            let chat_id = chat_id()?;
            match agent {
                // In shadow mode the seats are the shadow's own: what
                // really happened is recorded, and moves none of them.
                Some(agent) if s.intake.shadow() => WebhookEffect::Observed { chat_id, agent },
                None if s.intake.shadow() => WebhookEffect::Ignored,
                agent => WebhookEffect::Assigned { chat_id, agent },
            }
        }
        "chat.closed" => WebhookEffect::Closed {
            chat_id: chat_id()?,
        },
        "chat.status_updated" if data.get("status").and_then(Value::as_str) == Some("closed") => {
            WebhookEffect::Closed {
                chat_id: chat_id()?,
            }
        }
        "message.chat.agent" => {
            let rules = s.intake.rules();
            // `agent` is the agent object; an id alone is taken too. An
            // agent the rules do not name is kept by id, so that their
            // message never counts as the assignee's answer.
            let agent = data
                .get("agent")
                .and_then(|a| a.get("id").or(Some(a)))
                .and_then(id_of)
                .map(|id| match rules.agent_by_id(AgentId(id)) {
                    Some(a) => rules.agents[a].name.clone(),
                    None => format!("#{id}"),
                });
            WebhookEffect::Answered {
                chat_id: message_chat(e)?,
                agent,
                text: data
                    .pointer("/message/text")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }
        }
        "message.chat.customer" => WebhookEffect::CustomerWrote {
            chat_id: message_chat(e)?,
        },
        _ => WebhookEffect::Ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_over_raw_bytes() {
        let body = br#"{"event":"chat.new"}"#;
        let hex = webhook_signature(b"k", body);
        let given = decode_hex(&hex).unwrap();
        assert!(signature_ok(b"k", body, &given));
        assert!(!signature_ok(b"other", body, &given));
        assert!(!signature_ok(b"k", br#"{"event": "chat.new"}"#, &given));
        assert!(decode_hex("zz").is_none());
        assert!(decode_hex(&"g".repeat(40)).is_none());
    }
}
