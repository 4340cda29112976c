//! Filling a message template (`note`, `reply`, `busy_reply`) from a
//! decision: one place, for the worker and the simulations alike.

use jiff::Timestamp;

use super::template::{Placeholder, Template};
use super::{ChatContext, Rule, Rules};
use crate::domain::PositionedText;

/// What a message template's placeholders stand for.
pub struct Fill<'a> {
    pub rules: &'a Rules,
    pub rule: Option<&'a Rule>,
    pub pool: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub context: &'a ChatContext,
    /// For `busy_reply` only: the chat's place in the queue.
    pub position: Option<i64>,
    /// For `{next_open}`.
    pub now: Timestamp,
}

impl Fill<'_> {
    pub fn render(&self, t: &Template) -> String {
        t.render(|p| self.value(p))
    }

    /// The text with its `{position}` left open, for a place in line that
    /// only the store can tell.
    pub fn render_positioned(&self, t: &Template) -> PositionedText {
        PositionedText(t.render_around(|p| self.value(p), Some(Placeholder::Position)))
    }

    fn value(&self, p: Placeholder) -> String {
        match p {
            Placeholder::Agent => self.agent.unwrap_or_default().to_string(),
            Placeholder::Rule => self.rule.map(|r| r.name.clone()).unwrap_or_default(),
            Placeholder::Pool => self.pool.unwrap_or_default().to_string(),
            Placeholder::Chat => self.context.chat_id.to_string(),
            Placeholder::Customer => self.context.customer_label().to_string(),
            Placeholder::NextOpen => self
                .rule
                .and_then(|r| r.schedule)
                .and_then(|s| self.rules.schedules[s].next_open(self.now))
                .map(|z| z.strftime("%A %-d %B, %H:%M %Z").to_string())
                .unwrap_or_default(),
            Placeholder::Position => self.position.map(|n| n.to_string()).unwrap_or_default(),
        }
    }
}
