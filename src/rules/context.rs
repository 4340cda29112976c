//! What the decision looks at: a chat, normalised once for matching.
//!
//! Text is lower-cased here, once per chat, so that matching 50 rules does
//! not allocate. The context is the core's own type: the adapter from
//! HelpCrunch's chat object lives with the client (`helpcrunch/context.rs`).

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::domain::{AgentId, ChatId};

/// A text value with its lower-case form precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub raw: String,
    pub lower: String,
}

impl Text {
    pub fn new(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let lower = raw.to_lowercase();
        Self { raw, lower }
    }
}

/// The chat as the rules see it.
#[derive(Debug, Clone, Default)]
pub struct ChatContext {
    pub chat_id: ChatId,
    pub department_id: Option<Text>,
    pub department_name: Option<Text>,
    pub customer_email: Option<Text>,
    pub customer_name: Option<Text>,
    pub customer_id: Option<Text>,
    pub customer_user_id: Option<Text>,
    pub status: Option<Text>,
    pub created_with: Option<Text>,
    pub message: Option<Text>,
    /// Attributes given at enqueue time; a list attribute holds every item.
    pub attrs: BTreeMap<String, Vec<Text>>,
    /// The current assignee's id, if the chat has one.
    pub assignee: Option<AgentId>,
    /// The agent who last had a chat of this customer, for `sticky`; the
    /// caller fills it in from its history.
    pub last_agent: Option<LastAgent>,
    /// When the chat was enqueued, for `escalate`: how long it has waited.
    pub enqueued_at: Option<jiff::Timestamp>,
}

/// Who last had a chat of the customer, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAgent {
    pub name: String,
    /// When they got it; `None` when unknown, which counts as recent.
    pub at: Option<Timestamp>,
}

impl LastAgent {
    pub fn new(name: impl Into<String>, at: Option<Timestamp>) -> Self {
        Self {
            name: name.into(),
            at,
        }
    }
}

impl ChatContext {
    /// A context that knows only the chat id and attributes (`fetch_chat =
    /// "never"` and no snapshot).
    pub fn bare(chat_id: ChatId, attrs: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            chat_id,
            attrs: attrs_from_json(attrs),
            ..Self::default()
        }
    }

    /// How long the chat has waited at `now` (zero when not known).
    pub fn waited(&self, now: jiff::Timestamp) -> std::time::Duration {
        self.enqueued_at
            .and_then(|at| std::time::Duration::try_from(now.duration_since(at)).ok())
            .unwrap_or_default()
    }

    /// The key under which the customer's last agent is remembered.
    pub fn customer_key(&self) -> Option<String> {
        match (&self.customer_id, &self.customer_email) {
            (Some(id), _) if id.raw != "0" => Some(format!("id:{}", id.raw)),
            (_, Some(email)) => Some(format!("email:{}", email.lower)),
            _ => None,
        }
    }

    pub fn customer_label(&self) -> &str {
        self.customer_name
            .as_ref()
            .or(self.customer_email.as_ref())
            .map(|t| t.raw.as_str())
            .unwrap_or("")
    }
}

/// Enqueue-time attributes as the rules match them: keys lower-cased, a
/// list holding every item.
pub fn attrs_from_json(
    attrs: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, Vec<Text>> {
    use serde_json::Value;
    fn scalar(v: &Value) -> Option<Text> {
        match v {
            Value::String(s) => Some(Text::new(s.as_str())),
            Value::Number(n) => Some(Text::new(n.to_string())),
            Value::Bool(b) => Some(Text::new(b.to_string())),
            _ => None,
        }
    }
    attrs
        .iter()
        .map(|(k, v)| {
            let values = match v {
                Value::Array(items) => items.iter().filter_map(scalar).collect(),
                other => scalar(other).into_iter().collect(),
            };
            (k.to_lowercase(), values)
        })
        .collect()
}
