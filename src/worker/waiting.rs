//! Chats that wait for a seat are not read again at every wake-up.
//!
//! A row without a snapshot is decided on a fresh read of its chat. When
//! the decision is to wait for a seat, the read is kept here; at the next
//! wake-up the row is decided on it first, under the same routing lock, and
//! the chat is read again only if a seat is there for it now. So a backlog
//! of waiting chats costs a read per seat that frees up, not a read per
//! waiting chat per wake-up (every close wakes them all), and the budget
//! stays for assignments and reconciliation. A PUT is always decided on a
//! fresh read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::domain::{ChatId, Wait};
use crate::helpcrunch::types::Chat;
use crate::rules::{ChatContext, Verdict, WhenFull, decide};
use crate::store::QueueRow;

use super::plan::{Plan, describe};
use super::{Worker, lock};

/// How many reads are kept at most: past it, new waiters are read at every
/// wake-up as before (memory stays bounded whatever the backlog).
const KEPT: usize = 10_000;
/// How long a read stands in for the chat: older ones are read again.
const FRESH_FOR: Duration = Duration::from_secs(600);

/// The reads of chats waiting for a seat, by chat.
#[derive(Default)]
pub(super) struct WaitingReads(HashMap<ChatId, (Chat, Instant)>);

impl WaitingReads {
    fn get(&self, chat: ChatId) -> Option<Chat> {
        let (read, at) = self.0.get(&chat)?;
        (at.elapsed() < FRESH_FOR).then(|| read.clone())
    }

    fn keep(&mut self, chat: ChatId, read: Chat) {
        if self.0.len() >= KEPT && !self.0.contains_key(&chat) {
            self.0.retain(|_, (_, at)| at.elapsed() < FRESH_FOR);
            if self.0.len() >= KEPT {
                return;
            }
        }
        self.0.insert(chat, (read, Instant::now()));
    }

    pub(super) fn forget(&mut self, chat: ChatId) {
        self.0.remove(&chat);
    }
}

impl Worker {
    /// For a row that waits for a seat and whose chat was read when it
    /// started waiting: the plan to wait on, if the decision on that read
    /// still finds no seat; `None` when the chat must be read (a seat may
    /// be there, or the rules now say something else).
    pub(super) async fn still_waiting(
        &self,
        row: &QueueRow,
        attrs: &serde_json::Map<String, serde_json::Value>,
        arm: crate::domain::Arm,
    ) -> Option<Plan> {
        if row.waiting != Some(Wait::Candidate) {
            return None;
        }
        let read = lock(&self.waiting_reads).get(row.chat_id)?;
        let context = self.context_of(row, read.rules_context(attrs)).await;
        let rules = self.rules_of(arm);
        let now = jiff::Timestamp::now();
        let peek = self.reserve(&rules, |routing| {
            (decide(&rules, &context, &routing.state, now), None)
        });
        let (decision, _) = peek.await.ok()?;
        let Verdict::NoCandidate {
            when_full: WhenFull::Wait,
            ..
        } = decision.verdict
        else {
            return None;
        };
        let outcome = describe(&rules, &decision, row.chat_id);
        let mut plan = self.unassigned(row, &rules, &decision, outcome, Vec::new());
        self.add_busy_reply(row, &rules, &decision, &context, &mut plan)
            .await;
        Some(plan.handed_back(row))
    }

    /// Keeps `read` (a fresh read of the row's chat) while `plan` makes the
    /// row wait for a seat; forgets it otherwise.
    pub(super) fn note_read(&self, chat: ChatId, read: Option<Chat>, plan: &Plan) {
        let mut reads = lock(&self.waiting_reads);
        match read {
            Some(read) if plan.waiting == Some(Wait::Candidate) => reads.keep(chat, read),
            _ => reads.forget(chat),
        }
    }

    /// A chat's context for the rules, with what the row and the store add:
    /// when it was enqueued, and the customer's last agent.
    pub(super) async fn context_of(&self, row: &QueueRow, mut context: ChatContext) -> ChatContext {
        context.enqueued_at = jiff::Timestamp::from_millisecond(row.enqueued_at_ms).ok();
        if let Some(key) = context.customer_key() {
            match self.store.customer_last_agent(&key).await {
                Ok(agent) => context.last_agent = agent,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the customer's last agent; deciding without it")
                }
            }
        }
        context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(id: i64) -> Chat {
        serde_json::from_value(serde_json::json!({"id": id, "status": "new"})).unwrap()
    }

    #[test]
    fn reads_are_kept_up_to_the_bound_and_forgotten_on_demand() {
        let mut reads = WaitingReads::default();
        for id in 0..KEPT as i64 + 5 {
            reads.keep(ChatId(id), chat(id));
        }
        assert_eq!(reads.0.len(), KEPT, "never more than the bound");
        assert!(
            reads.get(ChatId(KEPT as i64 + 1)).is_none(),
            "past the bound: read again"
        );
        assert_eq!(reads.get(ChatId(7)).map(|c| c.id), Some(ChatId(7)));
        // A chat already kept is refreshed even at the bound.
        reads.keep(ChatId(7), chat(7));
        reads.forget(ChatId(7));
        assert!(reads.get(ChatId(7)).is_none());
    }
}
