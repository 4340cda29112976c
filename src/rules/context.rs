//! What the decision looks at: a chat, normalised once for matching.
//!
//! Text is lower-cased here, once per chat, so that matching 50 rules does
//! not allocate.

use std::collections::BTreeMap;

use crate::helpcrunch::types::Chat;

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
    pub chat_id: i64,
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
    pub assignee: Option<i64>,
    /// The agent who last had a chat of this customer, for `sticky`; the
    /// caller fills it in from its history.
    pub last_agent: Option<String>,
}

impl ChatContext {
    /// Builds the context from a chat object and enqueue-time attributes.
    pub fn from_chat(chat: &Chat, attrs: &serde_json::Map<String, serde_json::Value>) -> Self {
        let customer = chat.customer.as_ref();
        Self {
            chat_id: chat.id,
            department_id: chat
                .department
                .as_ref()
                .map(|d| Text::new(d.id.to_string())),
            department_name: chat
                .department
                .as_ref()
                .and_then(|d| d.name.clone())
                .map(Text::new),
            customer_email: customer.and_then(|c| c.email.clone()).map(Text::new),
            customer_name: customer.and_then(|c| c.name.clone()).map(Text::new),
            customer_id: customer.map(|c| Text::new(c.id.to_string())),
            customer_user_id: customer.and_then(|c| c.user_id.clone()).map(Text::new),
            status: chat.status.clone().map(Text::new),
            created_with: chat.created_with.clone().map(Text::new),
            message: chat.last_message_text.clone().map(Text::new),
            attrs: attrs_from_json(attrs),
            assignee: chat.assignee.as_ref().map(|a| a.id),
            last_agent: None,
        }
    }

    /// A context that knows only the chat id and attributes (`fetch_chat =
    /// "never"` and no snapshot).
    pub fn bare(chat_id: i64, attrs: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            chat_id,
            attrs: attrs_from_json(attrs),
            ..Self::default()
        }
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

fn attrs_from_json(
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
