//! `reassign_after`: when an assignee has not answered in time, the chat
//! moves on to the pool's next candidate, at most `max_reassign` times; then
//! a private note says so. Each hop is an outcome row.

use crate::domain::{AgentId, ChatId, Route};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rand::RngExt;

use super::Worker;
use super::assign::Put;
use super::plan::record_metrics;
use super::routing::Seat;
use crate::helpcrunch::types::Chat;
use crate::helpcrunch::{ApiError, ErrorClass};
use crate::limiter::Priority;
use crate::rules::{ChatContext, Rules, reassign_pick};
use crate::store::{
    Assigned, CallClaim, Doubt, Followup, Intent, NewOutcome, OutboxKind, OutboxMessage,
    OutcomeResult, now_ms,
};

/// How soon a check that could not be made (429, 401, a network error) is tried again.
const CHECK_RETRY: Duration = Duration::from_secs(5);

/// What a follow-up check concluded.
enum Step {
    /// Nothing more to watch (answered, closed, taken over, or gone).
    Done(Option<NewOutcome>),
    /// Check again at this time.
    Later(i64),
    /// The chat moved to another agent.
    Moved(NewOutcome, Box<Assigned>),
    /// Give up moving it: record, leave a note, stop watching.
    GiveUp(NewOutcome, OutboxMessage),
    /// The hop's answer is unknown: record, keep its seat and intent, and
    /// read the chat again at this time.
    InDoubt(NewOutcome, i64),
}

/// The next candidate for a chat nobody answered, reserved.
struct Pick {
    agent: usize,
    weights: Option<Vec<(String, i64)>>,
    reserved: Seat,
}

/// Whether `agent_id` has written in the chat.
fn answered(chat: &Chat, agent_id: AgentId) -> bool {
    chat.last_communicated_agent_id == Some(agent_id)
        || chat.agents.iter().any(|a| a.id == agent_id)
}

impl Worker {
    /// One round of the follow-up job: checks the chats whose answer is due.
    pub(super) async fn followups_round(self: &Arc<Self>) -> Duration {
        let answers = !self.shadow();
        let claimed = (self.store.claim_followups(self.settings.lease, 8, answers)).await;
        let next_due = self.store.followup_next_due_ms();
        self.drain_due("follow-ups", claimed, next_due, |f| async move {
            let step = self.check(&f).await;
            self.settle_check(f.chat_id, step).await;
        })
        .await
    }

    /// Records what a check concluded, in one transaction.
    async fn settle_check(&self, chat_id: ChatId, step: Step) {
        let mut doubt = Doubt::Resolved { queue_id: None };
        let (mut outcomes, assigned, next) = match step {
            Step::Done(o) => (o.into_iter().collect(), None, None),
            Step::Later(at) => (Vec::new(), None, Some(at)),
            Step::InDoubt(o, at) => {
                doubt = Doubt::Kept;
                (vec![o], None, Some(at))
            }
            Step::Moved(o, a) => (vec![o], Some(*a), None),
            Step::GiveUp(o, note) => {
                let note = Assigned {
                    messages: vec![note],
                    ..Assigned::default()
                };
                (vec![o], Some(note), None)
            }
        };
        self.stamp_followup(chat_id, &mut outcomes).await;
        for o in &outcomes {
            tracing::info!(
                chat_id = chat_id.0,
                result = o.result.as_str(),
                agent = o.agent.as_deref().unwrap_or("-"),
                reason = o.reason.as_deref().unwrap_or(""),
                "follow-up"
            );
        }
        let moved = assigned.as_ref().and_then(|a| a.opened.clone());
        let result = self
            .store
            .settle_followup(chat_id, &outcomes, assigned.as_ref(), next, doubt)
            .await;
        if let Err(e) = result {
            tracing::error!(chat_id = chat_id.0, error = %e, "cannot record the follow-up; it will be checked again");
            return;
        }
        record_metrics(&outcomes, None);
        if let Some((chat, agent)) = moved {
            self.opened(chat, &agent);
        }
        if assigned.is_some_and(|a| !a.messages.is_empty()) {
            self.outbox_wake.notify_one();
        }
    }

    async fn check(&self, f: &Followup) -> Step {
        // The chat's own arm first: both arms may name a pool alike and
        // set it up differently.
        let arm = match self.arm_of(f.chat_id).await {
            Ok(arm) => arm,
            Err(e) => {
                tracing::warn!(chat_id = f.chat_id.0, error = %e, "cannot read the chat's arm; the follow-up will be checked again");
                return Step::Later(now_ms() + CHECK_RETRY.as_millis() as i64);
            }
        };
        let rules = self.rules_with_pool_in(arm, &f.pool);
        let Some(p) = rules.pool_by_name(&f.pool) else {
            return Step::Done(None); // the pool was removed by a reload
        };
        let pool = &rules.pools[p];
        let call = self.client().chat(f.chat_id, Priority::Assign).await;
        let chat = match call.result {
            Ok(chat) => chat,
            Err(e) => return self.check_failed(&e),
        };
        // A hop in doubt is resolved first, whatever a reload changed since.
        match self.store.intent_for(f.chat_id).await {
            Ok(None) => {}
            Ok(Some(i)) if i.queue_id.is_none() => {
                // A hop that timed out may still land: its chat says
                // nothing until it can no longer be on its way.
                if let Some(until) = self.in_flight_until(&i) {
                    return Step::Later(until + 100);
                }
                if chat.assignee.as_ref().map(|a| a.id) == Some(i.agent_id) {
                    return confirmed_hop(&rules, p, f, &i, &chat);
                }
                // The hop did nothing: its seat goes back, and the check
                // goes on with the agent who has the chat.
                self.release_seat(f.chat_id, &i.agent).await;
            }
            // A queue row's call for this chat is in doubt: that row reads
            // the chat first; look again later.
            Ok(Some(_)) | Err(_) => return Step::Later(now_ms() + CHECK_RETRY.as_millis() as i64),
        }
        let (Some(after), Some(current)) = (pool.reassign_after, rules.agent_by_name(&f.agent))
        else {
            return Step::Done(None);
        };
        // In shadow mode the chat is with reality's assignee, never with
        // the shadow's: the check goes on as if it were.
        let taken_over = chat.assignee.as_ref().map(|a| a.id) != Some(rules.agents[current].id);
        if chat.is_closed() || (taken_over && !self.shadow()) {
            return Step::Done(None); // closed, or someone took it over
        }
        if answered(&chat, rules.agents[current].id) {
            return Step::Done(None);
        }
        let waited = humanize(after);
        let mut outcome = NewOutcome::new(f.chat_id, OutcomeResult::Skipped);
        outcome.rule = f.rule.clone();
        outcome.pool = Some(pool.name.clone());
        outcome.strategy = Some(pool.strategy.name());
        if f.hops >= pool.max_reassign {
            outcome.agent = Some(f.agent.clone());
            outcome.agent_id = Some(rules.agents[current].id);
            outcome.reason = Some(format!(
                "{} did not answer within {waited}; stopped after {} reassignment(s)",
                f.agent, f.hops
            ));
            return Step::GiveUp(
                outcome,
                give_up_note(
                    &rules,
                    f,
                    current,
                    &format!(
                        "Nobody answered within {waited} after {} reassignment(s); the chat stays with {}.",
                        f.hops, f.agent
                    ),
                ),
            );
        }
        self.move_on(&rules, (p, current), f, &chat, outcome, &waited)
            .await
    }

    async fn move_on(
        &self,
        rules: &Rules,
        (p, current): (usize, usize),
        f: &Followup,
        chat: &Chat,
        mut outcome: NewOutcome,
        waited: &str,
    ) -> Step {
        let pool = &rules.pools[p];
        let context = chat.rules_context(&serde_json::Map::new());
        self.ensure_recent().await;
        let decided = std::time::Instant::now();
        let Some(Pick {
            agent: next,
            weights,
            reserved,
        }) = self.pick_next(rules, p, f, &context).await
        else {
            outcome.agent = Some(f.agent.clone());
            outcome.reason = Some(format!(
                "{} did not answer within {waited}, and no other agent of pool `{}` is available",
                f.agent, pool.name
            ));
            let note = format!(
                "Nobody answered within {waited} and no other agent is available; the chat stays with {}.",
                f.agent
            );
            return Step::GiveUp(outcome, give_up_note(rules, f, current, &note));
        };
        let agent = &rules.agents[next];
        outcome.agent = Some(agent.name.clone());
        outcome.agent_id = Some(agent.id);
        outcome.route = Some(Route::Reassigned);
        let claim = CallClaim::Followup {
            chat_id: f.chat_id,
            until_ms: f.due_at_ms,
            lease: self.settings.lease,
        };
        let intent = self.intent(f.chat_id, agent, None, &outcome);
        let retry_at = now_ms() + CHECK_RETRY.as_millis() as i64;
        let e = match self
            .put_assignee(claim, &intent, Some(reserved), decided)
            .await
        {
            Put::Applied(latency) => {
                outcome.latency = Some(latency);
                outcome.result = OutcomeResult::Assigned;
                outcome.http_status = Some(200);
                outcome.reason = Some(format!(
                    "reassigned: {} did not answer within {waited} -> {} (hop {} of {})",
                    f.agent,
                    agent.name,
                    f.hops + 1,
                    pool.max_reassign
                ));
                let moved = self.settled_effects(hop(rules, p, f, next, weights, &context));
                return Step::Moved(outcome, Box::new(moved));
            }
            Put::NotSent(_) => return Step::Later(retry_at),
            Put::Uncertain(e, latency) => {
                outcome.latency = Some(latency);
                outcome.result = OutcomeResult::Retry;
                outcome.reason = Some(format!(
                    "reassignment to {} has no known answer ({e}); the chat is read before anything else",
                    agent.name
                ));
                return Step::InDoubt(outcome, retry_at);
            }
            Put::Refused(e, latency) => {
                outcome.latency = Some(latency);
                e
            }
        };
        outcome.route = None;
        outcome.result = OutcomeResult::Failed;
        outcome.http_status = e.status();
        outcome.error_code = e.code().map(str::to_string);
        outcome.reason = Some(format!("reassignment to {} failed: {e}", agent.name));
        match e.class() {
            ErrorClass::Permanent | ErrorClass::AgentRejected => Step::Done(Some(outcome)),
            _ => Step::Later(retry_at),
        }
    }

    /// Picks the pool's next candidate among those who have not had the
    /// chat, and reserves its seat under the routing lock as a decision
    /// does (on PostgreSQL: the shared lock, over fresh state).
    async fn pick_next(
        &self,
        rules: &Rules,
        p: usize,
        f: &Followup,
        context: &ChatContext,
    ) -> Option<Pick> {
        let skills = f
            .rule
            .as_ref()
            .and_then(|r| rules.rules.iter().find(|x| &x.name == r))
            .map(|r| r.require_skills.clone())
            .unwrap_or_default();
        let reserved = self
            .reserve(rules, |routing| {
                routing.state.entropy = rand::rng().random();
                let now = Timestamp::now();
                let Some((agent, weights)) =
                    reassign_pick(rules, p, context, &routing.state, now, &skills, &f.tried)
                else {
                    return (None, None);
                };
                let applied =
                    routing
                        .state
                        .apply_pick(rules, agent, Some(p), weights.as_deref(), now);
                let pool = rules.pools[p].name.clone();
                let seat = Assigned {
                    round_robin: Some((pool.clone(), applied.agent.clone())),
                    weights: weights.clone().map(|w| (pool, w)),
                    opened: Some((f.chat_id, applied.agent.clone())),
                    ..Assigned::default()
                };
                (Some((agent, weights)), Some((applied, seat)))
            })
            .await;
        match reserved {
            Ok((Some((agent, weights)), Some(reserved))) => Some(Pick {
                agent,
                weights,
                reserved,
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot lock the routing state for a reassignment");
                None
            }
        }
    }

    fn check_failed(&self, e: &ApiError) -> Step {
        match e.class() {
            // The chat is gone: nothing to watch.
            ErrorClass::Permanent | ErrorClass::AgentRejected => Step::Done(None),
            _ => Step::Later(now_ms() + CHECK_RETRY.as_millis() as i64),
        }
    }
}

/// What a successful hop moves: the rotation, the open chat, the
/// customer's agent, and the next follow-up.
fn hop(
    rules: &Rules,
    p: usize,
    f: &Followup,
    next: usize,
    weights: Option<Vec<(String, i64)>>,
    context: &ChatContext,
) -> Assigned {
    let pool = &rules.pools[p];
    let agent = &rules.agents[next];
    let mut tried = f.tried.clone();
    tried.push(agent.name.clone());
    Assigned {
        round_robin: Some((pool.name.clone(), agent.name.clone())),
        weights: weights.map(|w| (pool.name.clone(), w)),
        opened: Some((f.chat_id, agent.name.clone())),
        customer: context.customer_key().map(|k| (k, agent.name.clone())),
        messages: Vec::new(),
        followup: Some(Followup {
            agent: agent.name.clone(),
            hops: f.hops + 1,
            tried,
            due_at_ms: now_ms() + pool.reassign_after.unwrap_or_default().as_millis() as i64,
            ..f.clone()
        }),
    }
}

/// A hop whose answer was lost, found applied by reading the chat: it is
/// recorded as the hop it was, and nothing is called again.
fn confirmed_hop(rules: &Rules, p: usize, f: &Followup, intent: &Intent, chat: &Chat) -> Step {
    let Some(next) = rules.agent_by_name(&intent.agent) else {
        return Step::Done(None); // removed by a reload: nothing more to watch
    };
    let mut outcome = NewOutcome::new(f.chat_id, OutcomeResult::Assigned);
    outcome.rule = f.rule.clone();
    outcome.pool = Some(rules.pools[p].name.clone());
    outcome.strategy = Some(rules.pools[p].strategy.name());
    outcome.agent = Some(intent.agent.clone());
    outcome.agent_id = Some(intent.agent_id);
    outcome.route = Some(Route::Reassigned);
    outcome.http_status = Some(200);
    outcome.reason = Some(format!(
        "reassigned: {} -> {} (hop {}) by a call whose answer was lost; HelpCrunch shows the chat with {}",
        f.agent,
        intent.agent,
        f.hops + 1,
        intent.agent
    ));
    let context = chat.rules_context(&serde_json::Map::new());
    let mut moved = hop(rules, p, f, next, None, &context);
    // The rotation moved when the seat was reserved.
    moved.round_robin = None;
    Step::Moved(outcome, Box::new(moved))
}

fn give_up_note(rules: &Rules, f: &Followup, current: usize, text: &str) -> OutboxMessage {
    OutboxMessage {
        chat_id: f.chat_id,
        kind: OutboxKind::Private,
        agent_id: Some(rules.agents[current].id),
        text: text.to_string(),
    }
}

/// "5m", "90s", "500ms": the duration as the rules would write it.
fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}
