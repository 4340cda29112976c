//! The pool's `busy_reply`: one message the customer sees when their chat
//! has waited `after` (since it was enqueued) with nobody free.
//!
//! The chat's place in line is not read here: two chats decided at once
//! would each miss the other. The store fills it in as it settles the row,
//! one chat of the pool at a time ([`crate::store::Store::settle`]).

use jiff::Timestamp;

use super::Worker;
use super::plan::Plan;
use crate::rules::fill::Fill;
use crate::rules::{ChatContext, Decision, Rules};
use crate::store::{BusyMessage, BusyWait, QueueRow, Wait};

impl Worker {
    /// Puts a chat that waits for a seat in its rule's pool's line, with
    /// the pool's busy reply when it has waited long enough and has not got
    /// one. A database error only delays the reply to the chat's next turn.
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
        let mut wait = BusyWait {
            pool: pool.name.clone(),
            reply: None,
        };
        if let Some(busy) = &pool.busy_reply
            && context.waited(Timestamp::now()) >= busy.after
        {
            match self.store.busy_replied(row.chat_id).await {
                Ok(true) => {}
                Ok(false) => {
                    let fill = Fill {
                        rules,
                        rule: decision.rule.map(|r| &rules.rules[r]),
                        pool: Some(&pool.name),
                        agent: None,
                        context,
                        position: None,
                        now: Timestamp::now(),
                    };
                    wait.reply = Some(BusyMessage {
                        chat_id: row.chat_id,
                        agent_id: rules.agents[busy.from].id,
                        text: fill.render_positioned(&busy.text),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether the busy reply went; trying on the next turn")
                }
            }
        }
        plan.busy_reply = Some(wait);
    }
}
