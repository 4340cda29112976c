//! One row, start to end: build the chat's context, decide, call
//! HelpCrunch, and settle the row with its outcomes in one transaction.

use std::time::Duration;

use crate::config::FetchChat;
use crate::domain::Arm;
use crate::helpcrunch::types::Chat;
use crate::helpcrunch::{ApiError, ErrorClass};
use crate::limiter::Priority;
use crate::rules::{Agent, ChatContext, Decision, Rules, Verdict, WhenFull};
use crate::store::{
    Assigned, CallClaim, Doubt, Intent, LeaseKey, NewOutcome, Next, OutcomeResult, QueueRow,
    Settlement, Wait, now_ms,
};

use super::assign::{Put, Resolution};
use super::plan::{
    Plan, describe, effects, not_sent, record_metrics, released, retry_at, storage_retry,
};
use super::policy::{COMMIT_RETRY, Disposition, dispose};
use super::{Worker, lock};

impl Worker {
    #[tracing::instrument(skip_all, fields(chat_id = row.chat_id.0, queue_id = row.id))]
    pub(super) async fn process(&self, row: QueueRow, lease: &LeaseKey) {
        let plan = {
            let work = self.plan_in_arm(&row, lease);
            let keep = self.keep_claim(row.id, lease);
            tokio::pin!(work);
            tokio::select! {
                plan = &mut work => plan,
                never = keep => match never {},
            }
        };
        // The lease was renewed within a third of its length; the commit is
        // retried while it surely holds, so a passing storage fault costs no
        // repeat.
        let lease_ends = tokio::time::Instant::now()
            + (self.settings.lease * 2 / 3)
                .saturating_sub(Duration::from_secs(2))
                .max(Duration::from_secs(1));
        for o in &plan.outcomes {
            tracing::info!(
                result = o.result.as_str(),
                rule = o.rule.as_deref().unwrap_or("-"),
                agent = o.agent.as_deref().unwrap_or("-"),
                http_status = o.http_status,
                reason = o.reason.as_deref().unwrap_or(""),
                "outcome"
            );
        }
        let settlement = Settlement {
            queue_id: row.id,
            chat_id: row.chat_id,
            doubt: plan.doubt,
            lease,
            next: plan.next,
            last_error: plan.last_error,
            waiting: plan.waiting,
            priority: plan.priority,
            outcomes: plan.outcomes,
            assigned: plan.assigned,
            busy_reply: plan.busy_reply,
        };
        if self.settle(&settlement, lease_ends).await {
            record_metrics(&settlement.outcomes, Some(row.enqueued_at_ms));
            self.settled(&settlement);
        }
    }

    /// Renews the row's lease every third of its length while the row is
    /// worked on (waits at the limiter, a 429 pause, the routing lock), so
    /// no other claim can take it meanwhile; never returns. Once the claim
    /// is found lost it stops: the call's own confirmation refuses to send.
    async fn keep_claim(&self, queue_id: i64, key: &LeaseKey) -> std::convert::Infallible {
        let lease = self.settings.lease;
        let claim = CallClaim::Row {
            queue_id,
            key,
            lease,
        };
        loop {
            tokio::time::sleep(lease / 3).await;
            match self.store.renew_claim(claim).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the row's lease was lost while it was worked on");
                    return std::future::pending().await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the row's lease"),
            }
        }
    }

    /// Writes the settlement, retrying a failed commit while the lease
    /// holds; returns whether it was written.
    async fn settle(&self, settlement: &Settlement<'_>, lease_ends: tokio::time::Instant) -> bool {
        let mut delay = COMMIT_RETRY.0;
        loop {
            let settled = self.store.settle(settlement).await;
            self.storage_result(&settled);
            let e = match settled {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::warn!(
                        "lease was lost before the row was settled; another claim owns it now"
                    );
                    return false;
                }
                Err(e) => e,
            };
            if tokio::time::Instant::now() + delay >= lease_ends {
                tracing::error!(error = %e, "giving up recording the outcome: the lease ends, and the chat will be processed again");
                return false;
            }
            tracing::error!(error = %e, "cannot record the outcome; trying again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(COMMIT_RETRY.1);
        }
    }

    /// Once a settlement is written: the status line, the open chat in
    /// memory, and the outbox woken for the rule's note or reply.
    fn settled(&self, settlement: &Settlement<'_>) {
        if let Some(o) = settlement.outcomes.last() {
            let agent = o.agent.as_deref().unwrap_or("");
            let line = format!("chat {} {} {agent}", o.chat_id, o.result.as_str());
            *lock(&self.last_outcome) = Some(line.trim_end().to_string());
        }
        if settlement
            .assigned
            .as_ref()
            .is_some_and(|a| a.followup.is_some())
        {
            self.followups_wake.notify_one();
        }
        if let Some(Assigned {
            opened: Some((chat, agent)),
            messages,
            ..
        }) = &settlement.assigned
        {
            self.opened(*chat, agent);
            if !messages.is_empty() {
                self.outbox_wake.notify_one();
            }
        }
    }

    /// The plan for a row that must wait for a reload of the API key: back
    /// to pending, its attempt given back, no call made.
    pub(super) fn held_for_auth(&self) -> Plan {
        Plan::wait(
            Wait::ApiKey,
            now_ms(),
            "waiting: HelpCrunch rejected the API key (401)".into(),
            Vec::new(),
        )
    }

    pub(super) async fn plan(&self, row: &QueueRow, lease: &LeaseKey, arm: Arm) -> Plan {
        let attrs = match row
            .attrs
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>)
        {
            None => serde_json::Map::new(),
            Some(Ok(serde_json::Value::Object(map))) => map,
            Some(Ok(serde_json::Value::Null)) => serde_json::Map::new(),
            Some(_) => {
                let mut o = NewOutcome::new(row.chat_id, OutcomeResult::Failed);
                o.error_code = Some("bad_attrs".into());
                o.reason = Some("queue.attrs is not a JSON object".into());
                return Plan::finish(Next::Dead, o);
            }
        };
        let snapshot = match row.snapshot.as_deref().map(serde_json::from_str::<Chat>) {
            Some(Ok(chat)) => Some(chat),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "queue.snapshot is not a chat object; ignoring it");
                None
            }
            None => None,
        };
        // An earlier call for this chat whose answer is unknown is settled
        // by reading the chat first: a snapshot never outranks it.
        let intent = match self.store.intent_for(row.chat_id).await {
            Ok(intent) => intent,
            Err(e) => return storage_retry(row.chat_id, &e, Vec::new()),
        };
        let mut read = None;
        if let Some(intent) = intent {
            if let Some(until) = self.in_flight_until(&intent) {
                let why = format!(
                    "an earlier call for this chat (to {}, by {}) may still be on its way",
                    intent.agent, intent.owner
                );
                return retry_at(row.chat_id, why, until + 100, Vec::new());
            }
            match self.resolve_intent(&intent).await {
                Resolution::Applied(chat) => {
                    return self.confirmed(&intent, &chat, &attrs).handed_back(row);
                }
                Resolution::NotApplied(chat) => read = Some(*chat),
                Resolution::Unknown(e, latency) => {
                    let outcome = NewOutcome::new(row.chat_id, OutcomeResult::Retry);
                    let mut plan = self.failed_call(row, &e, latency, outcome);
                    plan.doubt = Doubt::Kept;
                    return plan;
                }
            }
        }
        let fetch = self.after_promotion()
            || match self.settings.fetch_chat {
                FetchChat::Always => true,
                FetchChat::Auto => snapshot.is_none(),
                FetchChat::Never => false,
            };
        // A fresh read of the chat, kept while the chat waits for a seat.
        let mut fresh = read.clone();
        let chat = if read.is_some() {
            read
        } else if fetch {
            if let Some(plan) = self.still_waiting(row, &attrs, arm).await {
                return plan;
            }
            let call = self.client().chat(row.chat_id, Priority::Assign).await;
            match call.result {
                Ok(chat) => {
                    fresh = Some(chat.clone());
                    Some(chat)
                }
                Err(e) => {
                    return self.failed_call(
                        row,
                        &e,
                        call.latency,
                        NewOutcome::new(row.chat_id, OutcomeResult::Failed),
                    );
                }
            }
        } else {
            snapshot
        };
        let context = match &chat {
            Some(chat) => {
                if let Some(skip) = self.skip(row, chat) {
                    return skip;
                }
                chat.rules_context(&attrs)
            }
            None => ChatContext::bare(row.chat_id, &attrs),
        };
        let context = self.context_of(row, context).await;
        let plan = (self.assign(row, lease, &context, arm).await).handed_back(row);
        self.note_read(row.chat_id, fresh, &plan);
        plan
    }

    /// Whether the database was found promoted from a replica lately:
    /// the old primary's last commits (an outcome, the claim and intent of
    /// a call made) may be lost, so a chat is read from HelpCrunch before
    /// it is decided, whatever `fetch_chat` says. For two leases: a row
    /// whose lost settlement left it leased comes back within one.
    fn after_promotion(&self) -> bool {
        self.store.promoted_within(self.settings.lease * 2)
    }

    /// The plan for a chat there is nothing to decide for: closed, or
    /// assigned already (unless the row is a hand-back, which exists to
    /// move a chat that has an assignee, or `reassign` is on). In shadow
    /// mode an assignee is reality's, to compare with: the chat is decided.
    fn skip(&self, row: &QueueRow, chat: &Chat) -> Option<Plan> {
        let reason = if chat.is_closed() {
            "chat is closed".to_string()
        } else if let (Some(a), false, None) = (
            &chat.assignee,
            self.settings.reassign || self.shadow(),
            &row.handback,
        ) {
            format!("chat is already assigned to agent {}", a.id)
        } else {
            return None;
        };
        let mut o = NewOutcome::new(row.chat_id, OutcomeResult::Skipped);
        o.reason = Some(reason);
        Some(Plan::finish(Next::Done, o))
    }

    /// Decides and assigns; after HelpCrunch rejects an agent, decides once
    /// more without that agent.
    pub(super) async fn assign(
        &self,
        row: &QueueRow,
        lease: &LeaseKey,
        context: &ChatContext,
        arm: Arm,
    ) -> Plan {
        let mut outcomes = Vec::new();
        let mut rejected_once = false;
        let claim = CallClaim::Row {
            queue_id: row.id,
            key: lease,
            lease: self.settings.lease,
        };
        loop {
            let rules = self.rules_of(arm);
            let decided = std::time::Instant::now();
            let (decision, reserved) = match self.decide_and_reserve(&rules, context).await {
                Ok(decided) => decided,
                Err(e) => return storage_retry(row.chat_id, &e, outcomes),
            };
            let mut outcome = describe(&rules, &decision, row.chat_id);
            let Verdict::Assign { agent, .. } = decision.verdict else {
                let mut plan = self.unassigned(row, &rules, &decision, outcome, outcomes);
                self.add_busy_reply(row, &rules, &decision, context, &mut plan)
                    .await;
                return plan;
            };
            let agent = &rules.agents[agent];
            let intent = self.intent(row.chat_id, agent, Some(row.id), &outcome);
            let (e, latency, doubt) =
                match self.put_assignee(claim, &intent, reserved, decided).await {
                    Put::Applied(latency) => {
                        outcome.latency = Some(latency);
                        outcome.http_status = Some(200);
                        outcomes.push(outcome);
                        let moved = self.settled_effects(effects(&rules, &decision, context));
                        let mut plan = Plan::done(outcomes, Some(moved));
                        plan.doubt = Doubt::Resolved {
                            queue_id: Some(row.id),
                        };
                        return plan;
                    }
                    Put::NotSent(why) => return not_sent(row.chat_id, why, outcomes),
                    Put::Uncertain(e, latency) => (e, latency, Doubt::Kept),
                    Put::Refused(e, latency) => (
                        e,
                        latency,
                        Doubt::Resolved {
                            queue_id: Some(row.id),
                        },
                    ),
                };
            outcome.latency = Some(latency);
            if e.class() == ErrorClass::AgentRejected && !rejected_once {
                rejected_once = true;
                outcomes.push(self.drop_rejected(agent, &e, outcome));
                continue;
            }
            let mut plan = self.failed_call(row, &e, latency, outcome);
            outcomes.append(&mut plan.outcomes);
            plan.outcomes = outcomes;
            if let (Doubt::Kept, Next::Retry { at_ms, .. }) = (&doubt, &mut plan.next) {
                // The chat says nothing of the call until it can no longer
                // be on its way ([`Worker::in_flight_until`]).
                *at_ms = (*at_ms).max(now_ms() + self.settings.lease.as_millis() as i64 + 100);
            }
            plan.doubt = doubt;
            return plan;
        }
    }

    /// The plan for a row whose earlier assignment call, of unknown answer,
    /// is found applied by reading the chat: the assignment is recorded as
    /// it was decided, with what it moves, and nothing is called again.
    fn confirmed(
        &self,
        intent: &Intent,
        chat: &Chat,
        attrs: &serde_json::Map<String, serde_json::Value>,
    ) -> Plan {
        let rules = self.rules();
        let mut outcome = NewOutcome::new(intent.chat_id, OutcomeResult::Assigned);
        outcome.rule = intent.rule.clone();
        outcome.pool = intent.pool.clone();
        outcome.agent = Some(intent.agent.clone());
        outcome.agent_id = Some(intent.agent_id);
        outcome.route = intent.route;
        outcome.http_status = Some(200);
        outcome.reason = Some(format!(
            "assigned to {} by an earlier call whose answer was lost; HelpCrunch shows the chat with {}",
            intent.agent, intent.agent
        ));
        let context = chat.rules_context(attrs);
        let decision = Decision {
            rule: intent
                .rule
                .as_deref()
                .and_then(|r| rules.rules.iter().position(|x| x.name == r)),
            verdict: Verdict::Assign {
                agent: rules.agent_by_name(&intent.agent).unwrap_or(usize::MAX),
                pool: intent.pool.as_deref().and_then(|p| rules.pool_by_name(p)),
                previous: None,
                weights: None,
                escalation: None,
            },
        };
        let mut moved = match rules.agent_by_name(&intent.agent) {
            Some(_) => effects(&rules, &decision, &context),
            // Removed by a reload since: only the open chat is known.
            None => Assigned {
                opened: Some((intent.chat_id, intent.agent.clone())),
                ..Assigned::default()
            },
        };
        // The rotation moved when the seat was reserved.
        moved.round_robin = None;
        moved.weights = None;
        let mut plan = Plan::done(vec![outcome], Some(moved));
        plan.doubt = Doubt::Resolved {
            queue_id: intent.queue_id,
        };
        plan
    }

    /// The plan for a decision that assigns nobody: no rule matched, the
    /// rule says nobody, or its target has no candidate (wait, or not).
    pub(super) fn unassigned(
        &self,
        row: &QueueRow,
        rules: &Rules,
        decision: &Decision,
        mut outcome: NewOutcome,
        mut outcomes: Vec<NewOutcome>,
    ) -> Plan {
        match decision.verdict {
            Verdict::Nobody => outcome.result = OutcomeResult::Skipped,
            Verdict::NoCandidate {
                when_full: WhenFull::Wait,
                ..
            } => {
                let wait_reason = format!("waiting: {}", decision.reason(rules));
                // One outcome when a chat starts waiting, not one per retry.
                if row.last_error.as_deref() != Some(&wait_reason) {
                    outcomes.push(outcome);
                }
                let delay = self.wait_delay(rules, decision, row.enqueued_at_ms);
                let at_ms = now_ms() + delay.as_millis() as i64;
                let mut plan = Plan::wait(Wait::Candidate, at_ms, wait_reason, outcomes);
                plan.priority = decision.rule.map(|r| rules.rules[r].priority);
                return plan;
            }
            _ => {}
        }
        outcomes.push(outcome);
        Plan::done(outcomes, None)
    }

    /// HelpCrunch rejected `agent`: it is left out until the next reload,
    /// and the outcome says so.
    fn drop_rejected(&self, agent: &Agent, e: &ApiError, mut outcome: NewOutcome) -> NewOutcome {
        lock(&self.routing)
            .state
            .unusable
            .insert(agent.name.clone());
        tracing::warn!(agent = %agent.name, agent_id = agent.id.0, "HelpCrunch rejects this agent id; deciding again without it");
        outcome.result = OutcomeResult::Failed;
        outcome.http_status = e.status();
        outcome.error_code = e.code().map(str::to_string);
        outcome.reason = Some(format!(
            "HelpCrunch rejected agent {} ({e}); deciding again without it",
            agent.name
        ));
        outcome
    }

    /// The plan after a failed call, by SPEC §6.
    pub(super) fn failed_call(
        &self,
        row: &QueueRow,
        e: &ApiError,
        latency: Duration,
        mut outcome: NewOutcome,
    ) -> Plan {
        let (next, result) = match dispose(e, row.attempts, self.settings.max_attempts) {
            Disposition::Release => return released(row),
            Disposition::HoldForKey => return self.held_for_auth(),
            Disposition::Dead { .. } => (Next::Dead, OutcomeResult::Failed),
            Disposition::Retry {
                at_ms,
                count_attempt,
            } => (
                Next::Retry {
                    at_ms,
                    count_attempt,
                },
                OutcomeResult::Retry,
            ),
        };
        outcome.http_status = e.status();
        outcome.error_code = e.code().map(str::to_string);
        outcome.latency = Some(latency);
        outcome.result = result;
        let why = match (e.class(), next) {
            (ErrorClass::Transient, Next::Dead) => {
                format!("{e} (gave up after {} attempts)", row.attempts)
            }
            _ => e.to_string(),
        };
        outcome.reason = Some(why);
        // Never `Done`: the reason stays on the row.
        Plan::finish(next, outcome)
    }
}
