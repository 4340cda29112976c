//! Shadow mode and experiments in the worker (SPEC §14): which arm a
//! chat's decision belongs to, and with which rules it is taken.

use std::sync::Arc;

use super::plan::{Plan, storage_retry};
use super::{Worker, read, write};
use crate::config::Mode;
use crate::domain::{Arm, ChatId};
use crate::rules::Rules;
use crate::store::{LeaseKey, NewOutcome, Next, OutcomeResult, QueueRow, StoreError};

impl Worker {
    /// Whether this daemon runs in shadow mode: decides and records
    /// everything, writes nothing to HelpCrunch.
    pub fn shadow(&self) -> bool {
        self.settings.mode == Mode::Shadow
    }

    /// The arm of `chat`'s decisions: `shadow` in shadow mode; with an
    /// experiment, the arm the chat was first decided in (chosen now by
    /// its hash if this is its first decision); else `a`.
    pub(super) async fn arm_of(&self, chat: ChatId) -> Result<Arm, StoreError> {
        if self.shadow() {
            return Ok(Arm::Shadow);
        }
        match &self.settings.split {
            Some(split) => self.store.chat_arm(chat, split.arm_of(chat)).await,
            None => Ok(Arm::A),
        }
    }

    /// The rules an arm decides with: arm b's own, the others `[rules] path`.
    pub(super) fn rules_of(&self, arm: Arm) -> Arc<Rules> {
        // Not holding one lock while taking the other (see
        // `share_hourly_counts`, which takes both).
        let b = read(&self.rules_b).clone();
        match (arm, b) {
            (Arm::B, Some(b)) => b,
            _ => self.rules(),
        }
    }

    /// Shadow mode or the running experiment, in words (the console).
    pub(super) fn experiment_summary(&self) -> Option<String> {
        if self.shadow() {
            return Some(
                "Shadow mode: every chat is decided and recorded; nothing is written to HelpCrunch."
                    .into(),
            );
        }
        let split = self.settings.split?;
        let mut text = format!(
            "Experiment: assignd assigns {:.0}% of chats (the rest are left to HelpCrunch)",
            split.share * 100.0
        );
        if split.b_share > 0.0 {
            text.push_str(&format!(
                "; of those, {:.0}% by rule set b, the others by rule set a",
                split.b_share * 100.0
            ));
        }
        text.push_str(". Compare the arms with `assignd report --compare`.");
        Some(text)
    }

    /// The rules that have pool `name`: `[rules] path`'s, else arm b's (a
    /// follow-up of a pool only arm b has).
    pub(super) fn rules_with_pool(&self, name: &str) -> Arc<Rules> {
        let a = self.rules();
        if a.pool_by_name(name).is_some() {
            return a;
        }
        let b = read(&self.rules_b).clone();
        b.filter(|b| b.pool_by_name(name).is_some()).unwrap_or(a)
    }

    /// The rules that have pool `name` for a chat of `arm`: the arm's own
    /// if they have it (both arms may name a pool alike and set it up
    /// differently), else [`Worker::rules_with_pool`]'s.
    pub(super) fn rules_with_pool_in(&self, arm: Arm, name: &str) -> Arc<Rules> {
        let own = self.rules_of(arm);
        if own.pool_by_name(name).is_some() {
            return own;
        }
        self.rules_with_pool(name)
    }

    /// The rule sets in use: `[rules] path`'s, and arm b's if any.
    pub(super) fn every_rules(&self) -> Vec<Arc<Rules>> {
        let b = read(&self.rules_b).clone();
        std::iter::once(self.rules()).chain(b).collect()
    }

    /// Sets arm b's rules (at start, and at each reload).
    pub fn set_rules_b(&self, rules: Option<Arc<Rules>>) {
        *write(&self.rules_b) = rules;
        self.share_hourly_counts();
    }

    /// Both arms decide on one set of hourly counts, which each decision
    /// trims to its rules' highest cap: each set keeps as many as the
    /// other's caps need too.
    pub(super) fn share_hourly_counts(&self) {
        let (mut a, mut b) = (write(&self.rules), write(&self.rules_b));
        let Some(b) = b.as_mut() else {
            return;
        };
        let cap = a.highest_hourly_cap().max(b.highest_hourly_cap()) as u32;
        for rules in [&mut *a, b] {
            if rules.highest_hourly_cap() < cap as usize {
                Arc::make_mut(rules).hourly_floor = cap;
            }
        }
    }
}

impl Worker {
    /// [`Worker::plan`] in the chat's arm: a chat outside a canary's share
    /// is left alone; every outcome records its arm, and in shadow mode an
    /// assignment is recorded as what assignd would have done.
    pub(super) async fn plan_in_arm(&self, row: &QueueRow, lease: &LeaseKey) -> Plan {
        let arm = match self.arm_of(row.chat_id).await {
            Ok(arm) => arm,
            Err(e) => return storage_retry(row.chat_id, &e, Vec::new()),
        };
        let mut plan = match arm {
            Arm::Left => self.left_alone(row.chat_id),
            _ => self.plan(row, lease, arm).await,
        };
        stamp(&mut plan.outcomes, arm);
        plan
    }

    /// The outcome of a chat outside the canary's share.
    fn left_alone(&self, chat: ChatId) -> Plan {
        let share = self.settings.split.map_or(1.0, |s| s.share);
        let mut o = NewOutcome::new(chat, OutcomeResult::Skipped);
        o.reason = Some(format!(
            "left to HelpCrunch's routing: outside the experiment's share ({:.0}% of chats are assigned by assignd)",
            share * 100.0
        ));
        Plan::finish(Next::Done, o)
    }

    /// The arm of the outcomes of work on a chat decided before (a
    /// reassignment hop, a hand-back), as of the chat.
    pub(super) async fn stamp_followup(&self, chat: ChatId, outcomes: &mut [NewOutcome]) {
        let arm = match &self.settings.split {
            _ if self.shadow() => Arm::Shadow,
            // Unread (the database failing), the hash's arm: the chat's
            // own unless the shares changed since its first decision.
            Some(split) => {
                let drawn = split.arm_of(chat);
                self.store.chat_arm(chat, drawn).await.unwrap_or(drawn)
            }
            None => Arm::A,
        };
        stamp(outcomes, arm);
    }
}

/// Records `arm` on each outcome; a shadow assignment becomes `shadow`.
fn stamp(outcomes: &mut [NewOutcome], arm: Arm) {
    for o in outcomes {
        o.arm = arm;
        if arm == Arm::Shadow && o.result == OutcomeResult::Assigned {
            o.result = OutcomeResult::Shadow;
            o.http_status = None;
            o.latency = None;
            o.reason = o.reason.take().map(|r| format!("shadow, not sent: {r}"));
        }
    }
}
