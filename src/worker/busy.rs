//! The pool's `busy_reply`: one message the customer sees when their chat
//! has waited `after` (since it was enqueued) with nobody free.

use jiff::Timestamp;

use super::Worker;
use super::process::Plan;
use crate::rules::fill::Fill;
use crate::rules::{ChatContext, Decision, Rules};
use crate::store::{OutboxKind, OutboxMessage, QueueRow, Wait};

impl Worker {
    /// Adds the pool's busy reply to the plan of a chat that waits for a
    /// seat and has waited long enough, unless it already got one. A
    /// database error only delays it to the chat's next turn.
    pub(super) async fn add_busy_reply(
        &self,
        row: &QueueRow,
        rules: &Rules,
        decision: &Decision,
        context: &ChatContext,
        plan: &mut Plan,
    ) {
        if plan.waiting != Some(Wait::Candidate) {
            return;
        }
        let Some(pool) = decision.rule_pool(rules) else {
            return;
        };
        let Some(busy) = &pool.busy_reply else {
            return;
        };
        if context.waited(Timestamp::now()) < busy.after {
            return;
        }
        let priority = row.priority.max(plan.priority.unwrap_or(i64::MIN));
        let position = match self.store.busy_replied(row.chat_id).await {
            Ok(true) => return,
            Ok(false) => {
                self.store
                    .waiting_position(row.id, priority, row.enqueued_at_ms)
                    .await
            }
            Err(e) => Err(e),
        };
        let position = match position {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether the busy reply went; trying on the next turn");
                return;
            }
        };
        let fill = Fill {
            rules,
            rule: decision.rule.map(|r| &rules.rules[r]),
            pool: Some(&pool.name),
            agent: None,
            context,
            position: Some(position),
            now: Timestamp::now(),
        };
        plan.busy_reply = Some(OutboxMessage {
            chat_id: row.chat_id,
            kind: OutboxKind::Message,
            agent_id: Some(rules.agents[busy.from].id),
            text: fill.render(&busy.text),
        });
    }
}
