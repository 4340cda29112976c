//! HelpCrunch objects as they really arrive: timestamps as integers, digit
//! strings, fractional strings or null; ids as integers (or digit strings);
//! `agents` as a list or a single object.

use jiff::Timestamp;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{AgentId, ChatId};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Chat {
    #[serde(deserialize_with = "id")]
    pub id: ChatId,
    pub status: Option<String>,
    #[serde(deserialize_with = "timestamp")]
    pub created_at: Option<Timestamp>,
    #[serde(deserialize_with = "timestamp")]
    pub closed_at: Option<Timestamp>,
    #[serde(deserialize_with = "timestamp")]
    pub last_message_at: Option<Timestamp>,
    #[serde(deserialize_with = "timestamp")]
    pub last_customer_message_at: Option<Timestamp>,
    pub last_message_text: Option<String>,
    pub created_with: Option<String>,
    #[serde(deserialize_with = "opt_id")]
    pub last_communicated_agent_id: Option<AgentId>,
    #[serde(deserialize_with = "one_or_many")]
    pub agents: Vec<AgentRef>,
    pub customer: Option<Customer>,
    pub assignee: Option<AgentRef>,
    pub department: Option<Department>,
}

/// The documented statuses that hold an agent's seat: all but `closed`,
/// as [`Chat::is_closed`] counts them. A search filter takes one status at
/// a time (`=`; no `!=` is documented), so reconciliation asks for each.
pub const OPEN_STATUSES: [&str; 6] = [
    "new",
    "opened",
    "pending",
    "onhold",
    "no communication",
    "empty",
];

impl Chat {
    /// Only `closed` frees the seat; every other status (known or not)
    /// keeps it.
    pub fn is_closed(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("closed"))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentRef {
    #[serde(deserialize_with = "id")]
    pub id: AgentId,
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Customer {
    #[serde(deserialize_with = "id")]
    pub id: i64,
    pub name: Option<String>,
    pub email: Option<String>,
    #[serde(deserialize_with = "opt_text")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Department {
    #[serde(deserialize_with = "id")]
    pub id: i64,
    pub name: Option<String>,
}

/// A page of a list endpoint: `{"data": [...], "meta": {"total": N}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub meta: Meta,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Meta {
    #[serde(deserialize_with = "id")]
    pub total: i64,
}

/// A message to post with `POST /messages`.
#[derive(Debug, Clone, Serialize)]
pub struct NewMessage {
    pub chat: ChatId,
    pub text: String,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// The posting agent; `None` posts on behalf of the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Seen by the customer.
    Message,
    /// A note only agents see.
    Private,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Message {
    #[serde(deserialize_with = "id")]
    pub id: i64,
    pub text: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Reads a JSON value as a number of seconds: integer, float, digit string,
/// fractional string; null and empty string are `None`.
pub fn timestamp_from_value(v: &Value) -> Result<Option<Timestamp>, String> {
    let seconds: f64 = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64().ok_or("timestamp out of range")?,
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a timestamp"))?,
        other => return Err(format!("{other} is not a timestamp")),
    };
    if !seconds.is_finite() {
        return Err("timestamp is not finite".into());
    }
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9).round() as i32;
    Timestamp::new(whole as i64, nanos.min(999_999_999))
        .map(Some)
        .map_err(|e| e.to_string())
}

fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    timestamp_from_value(&Value::deserialize(d)?).map_err(de::Error::custom)
}

fn id_from_value(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{n} is not an id")),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("`{s}` is not an id")),
        other => Err(format!("{other} is not an id")),
    }
}

fn id<'de, D: Deserializer<'de>, T: From<i64>>(d: D) -> Result<T, D::Error> {
    id_from_value(&Value::deserialize(d)?)
        .map(|v| T::from(v.unwrap_or(0)))
        .map_err(de::Error::custom)
}

fn opt_id<'de, D: Deserializer<'de>, T: From<i64>>(d: D) -> Result<Option<T>, D::Error> {
    id_from_value(&Value::deserialize(d)?)
        .map(|v| v.map(T::from))
        .map_err(de::Error::custom)
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AgentRef>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(de::Error::custom))
            .collect(),
        one => serde_json::from_value(one)
            .map(|a| vec![a])
            .map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_timestamp_form() {
        for (v, want) in [
            (serde_json::json!(1592332354), Some(1592332354)),
            (serde_json::json!("1603885746"), Some(1603885746)),
            (serde_json::json!("1607540767.414"), Some(1607540767)),
            (serde_json::json!(null), None),
        ] {
            assert_eq!(
                timestamp_from_value(&v).unwrap().map(|t| t.as_second()),
                want
            );
        }
        let frac = timestamp_from_value(&serde_json::json!("1607540767.414"))
            .unwrap()
            .unwrap();
        assert_eq!(frac.subsec_millisecond(), 414);
        assert!(timestamp_from_value(&serde_json::json!("soon")).is_err());
    }

    #[test]
    fn agents_as_object_or_list_and_nulls() {
        let one: Chat = serde_json::from_str(
            r#"{"id": 5, "agents": {"id": 1, "name": "A"}, "assignee": null, "department": null,
                "createdAt": "1603885746", "closedAt": null, "customer": {"id": "7", "userId": 42}}"#,
        )
        .unwrap();
        assert_eq!(one.agents.len(), 1);
        assert!(one.assignee.is_none());
        assert_eq!(one.customer.unwrap().user_id.as_deref(), Some("42"));
        let many: Chat =
            serde_json::from_str(r#"{"id": 5, "agents": [{"id": 1}, {"id": 2}]}"#).unwrap();
        assert_eq!(many.agents.len(), 2);
    }
}
