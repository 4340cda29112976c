//! The one adapter from HelpCrunch's chat object to the rules' own
//! [`ChatContext`], so that the pure core knows nothing of the API.

use crate::rules::ChatContext;
use crate::rules::context::{Text, attrs_from_json};

use super::types::Chat;

impl Chat {
    /// The chat as the rules see it, with enqueue-time attributes.
    pub fn rules_context(&self, attrs: &serde_json::Map<String, serde_json::Value>) -> ChatContext {
        let customer = self.customer.as_ref();
        let department = self.department.as_ref();
        ChatContext {
            chat_id: self.id,
            department_id: department.map(|d| Text::new(d.id.to_string())),
            department_name: department.and_then(|d| d.name.clone()).map(Text::new),
            customer_email: customer.and_then(|c| c.email.clone()).map(Text::new),
            customer_name: customer.and_then(|c| c.name.clone()).map(Text::new),
            customer_id: customer.map(|c| Text::new(c.id.to_string())),
            customer_user_id: customer.and_then(|c| c.user_id.clone()).map(Text::new),
            status: self.status.clone().map(Text::new),
            created_with: self.created_with.clone().map(Text::new),
            message: self.last_message_text.clone().map(Text::new),
            attrs: attrs_from_json(attrs),
            assignee: self.assignee.as_ref().map(|a| a.id),
            last_agent: None,
            enqueued_at: None,
        }
    }
}
