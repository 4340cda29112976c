//! The sandbox's chats: generated from the id, so any id in range exists
//! without seeding, and rendered in every timestamp form the API uses.

use serde_json::{Value, json};

use super::SandboxAgent;

pub(super) const DEPARTMENTS: [(i64, &str); 3] = [(1, "Support"), (2, "Billing"), (3, "Sales")];

#[derive(Debug, Clone)]
pub struct SandboxChat {
    pub id: i64,
    pub status: String,
    pub department: Option<(i64, String)>,
    pub customer_id: i64,
    pub customer_email: String,
    pub customer_name: String,
    pub assignee: Option<i64>,
    pub created_at: i64,
    /// When the chat last changed (searchable as `chats.updatedAt`).
    pub updated_at: i64,
    pub last_message_text: String,
    /// Agents who wrote in the chat.
    pub agents: Vec<i64>,
}

impl SandboxChat {
    /// Every 10th customer is a `@bigcorp.com` VIP; departments rotate.
    pub fn generate(id: i64) -> Self {
        let (dept_id, dept) = DEPARTMENTS[(id.rem_euclid(3)) as usize];
        Self {
            id,
            status: "new".into(),
            department: (id % 7 != 0).then(|| (dept_id, dept.to_string())),
            customer_id: id + 500_000,
            customer_email: if id % 10 == 0 {
                format!("boss{id}@bigcorp.com")
            } else {
                format!("customer{id}@example.com")
            },
            customer_name: format!("Customer {id}"),
            assignee: None,
            created_at: 1_700_000_000 + id,
            updated_at: 1_700_000_000 + id,
            last_message_text: format!("Hello, I have a question ({id})"),
            agents: Vec::new(),
        }
    }

    /// The chat object, with timestamps in the form picked by the id
    /// (integer, digit string, fractional string) so clients meet them all.
    pub fn to_json(&self, agents: &[SandboxAgent]) -> Value {
        let ts = |t: i64| -> Value {
            match self.id.rem_euclid(3) {
                0 => json!(t),
                1 => json!(t.to_string()),
                _ => json!(format!("{t}.414")),
            }
        };
        let agent = |id: i64| {
            let name = agents.iter().find(|a| a.id == id).map(|a| a.name.as_str());
            agent_json(id, name)
        };
        let communicated: Vec<Value> = self.agents.iter().map(|&a| agent(a)).collect();
        json!({
            "id": self.id,
            "status": self.status,
            "closedBy": if self.status == "closed" { json!("agent") } else { Value::Null },
            "createdAt": ts(self.created_at),
            "closedAt": if self.status == "closed" { ts(self.created_at + 60) } else { Value::Null },
            "lastCustomerMessageAt": ts(self.created_at),
            "lastMessageAt": ts(self.created_at),
            "lastMessageText": self.last_message_text,
            "lastMessageId": self.id * 10,
            "createdWith": "customer_message",
            "snoozedUntil": null,
            "rating": null,
            "applicationId": 1,
            "lastCommunicatedAgentId": self.agents.last(),
            "readByAgent": false,
            "readByCustomer": true,
            // One documented example shows a single object: use it for one agent.
            "agents": if communicated.len() == 1 { communicated[0].clone() } else { Value::Array(communicated) },
            "customer": {"id": self.customer_id, "name": self.customer_name, "email": self.customer_email, "userId": format!("u{}", self.id)},
            "assignee": self.assignee.map(agent),
            "department": self.department.as_ref().map(|(id, name)| json!({"id": id, "name": name})),
        })
    }
}

/// An agent as a chat or a message embeds one, without an email.
pub(super) fn agent_json(id: i64, name: Option<&str>) -> Value {
    json!({"id": id, "name": name, "email": null, "role": "agent"})
}
