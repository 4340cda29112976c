//! What processing a row decided ([`Plan`]), and the pure pieces a plan
//! is made of: the outcome a decision implies, what an assignment moves,
//! and the plans for rows not worked on.

use crate::domain::{ChatId, Route};

use jiff::Timestamp;

use crate::rules::fill::Fill;
use crate::rules::template::Template;
use crate::rules::{ChatContext, Decision, Rules, Target, Verdict};
use crate::store::{
    Assigned, BusyWait, Doubt, Followup, NewOutcome, Next, OutboxKind, OutboxMessage,
    OutcomeResult, QueueRow, StoreError, Wait, now_ms,
};

/// Counts recorded outcomes; for an assignment, the time since the chat
/// was enqueued.
pub(super) fn record_metrics(outcomes: &[NewOutcome], enqueued_at_ms: Option<i64>) {
    let m = crate::metrics::metrics();
    for o in outcomes {
        let labels = vec![
            ("result", o.result.as_str().to_string()),
            ("rule", o.rule.clone().unwrap_or_default()),
        ];
        m.outcomes.get_or_create(&labels).inc();
        if let (OutcomeResult::Assigned, Some(at)) = (o.result, enqueued_at_ms) {
            m.enqueue_to_assigned
                .observe((now_ms() - at).max(0) as f64 / 1000.0);
        }
    }
}

/// What a successful assignment moves: the rotation, the weights, the open
/// chat, the customer's agent, and the rule's note and reply.
pub(super) fn effects(rules: &Rules, decision: &Decision, context: &ChatContext) -> Assigned {
    let Verdict::Assign {
        agent,
        pool,
        weights,
        ..
    } = &decision.verdict
    else {
        return Assigned::default();
    };
    let agent = &rules.agents[*agent];
    let pool_name = pool.map(|p| rules.pools[p].name.clone());
    let rule = decision.rule.map(|r| &rules.rules[r]);
    let fill = Fill {
        rules,
        rule,
        pool: pool_name.as_deref(),
        agent: Some(&agent.name),
        context,
        position: None,
        now: Timestamp::now(),
    };
    let render = |t: &Template| fill.render(t);
    let mut messages = Vec::new();
    if let Some(note) = rule.and_then(|r| r.note.as_ref()) {
        messages.push(OutboxMessage {
            chat_id: context.chat_id,
            kind: OutboxKind::Private,
            agent_id: Some(agent.id),
            text: render(note),
        });
    }
    if let Some(reply) = rule.and_then(|r| r.reply.as_ref()) {
        messages.push(OutboxMessage {
            chat_id: context.chat_id,
            kind: OutboxKind::Message,
            agent_id: Some(rules.agents[reply.from].id),
            text: render(&reply.text),
        });
    }
    let followup = pool.and_then(|p| {
        let pool = &rules.pools[p];
        pool.reassign_after.map(|after| Followup {
            chat_id: context.chat_id,
            pool: pool.name.clone(),
            rule: rule.map(|r| r.name.clone()),
            agent: agent.name.clone(),
            hops: 0,
            tried: vec![agent.name.clone()],
            due_at_ms: now_ms() + after.as_millis() as i64,
        })
    });
    Assigned {
        followup,
        round_robin: pool_name.clone().map(|p| (p, agent.name.clone())),
        weights: pool_name.zip(weights.clone()),
        opened: Some((context.chat_id, agent.name.clone())),
        customer: context.customer_key().map(|k| (k, agent.name.clone())),
        messages,
    }
}

/// The call was not sent because its claim could not be confirmed: the
/// row goes back (its attempt given back) and is decided again shortly,
/// by whichever claim holds it then.
pub(super) fn not_sent(chat_id: ChatId, why: String, outcomes: Vec<NewOutcome>) -> Plan {
    retry_soon(chat_id, format!("not sent: {why}"), outcomes)
}

/// The routing state could not be read or reserved (PostgreSQL): decide
/// again shortly, the attempt given back, nothing called.
pub(super) fn storage_retry(chat_id: ChatId, e: &StoreError, outcomes: Vec<NewOutcome>) -> Plan {
    retry_soon(
        chat_id,
        format!("cannot lock the routing state: {e}"),
        outcomes,
    )
}

/// A `retry` outcome with `reason` after `outcomes`; the row is decided
/// again in a second, its attempt given back.
fn retry_soon(chat_id: ChatId, reason: String, outcomes: Vec<NewOutcome>) -> Plan {
    retry_at(chat_id, reason, now_ms() + 1000, outcomes)
}

/// [`retry_soon`], decided again at `at_ms`.
pub(super) fn retry_at(
    chat_id: ChatId,
    reason: String,
    at_ms: i64,
    mut outcomes: Vec<NewOutcome>,
) -> Plan {
    let mut outcome = NewOutcome::new(chat_id, OutcomeResult::Retry);
    outcome.reason = Some(reason);
    let retry = Next::Retry {
        at_ms,
        count_attempt: false,
    };
    let mut plan = Plan::finish(retry, outcome);
    outcomes.append(&mut plan.outcomes);
    plan.outcomes = outcomes;
    plan
}

/// The outcome row a decision implies, before any API call.
pub(super) fn describe(rules: &Rules, decision: &Decision, chat_id: ChatId) -> NewOutcome {
    let result = match decision.verdict {
        Verdict::Assign { .. } => OutcomeResult::Assigned,
        Verdict::NoCandidate { .. } => OutcomeResult::NoAgent,
        Verdict::Nobody => OutcomeResult::Skipped,
        Verdict::NoMatch => OutcomeResult::NoMatch,
    };
    let mut o = NewOutcome::new(chat_id, result);
    o.rule = decision.rule.map(|r| rules.rules[r].name.clone());
    let pool = match (
        &decision.verdict,
        decision.rule.map(|r| rules.rules[r].target),
    ) {
        (Verdict::Assign { pool, .. }, _) | (Verdict::NoCandidate { pool, .. }, _) => *pool,
        (_, Some(Target::Pool(p))) => Some(p),
        _ => None,
    };
    if let Some(p) = pool {
        o.pool = Some(rules.pools[p].name.clone());
        o.strategy = Some(rules.pools[p].strategy.name());
    }
    if let Verdict::Assign {
        agent, escalation, ..
    } = decision.verdict
    {
        o.agent = Some(rules.agents[agent].name.clone());
        o.agent_id = Some(rules.agents[agent].id);
        o.route = escalation.map(|_| Route::Escalated);
    }
    o.reason = Some(decision.reason(rules));
    o
}

/// The plan for a row the daemon did not work on because it is stopping:
/// back to pending as it was, its attempt given back.
pub(super) fn released(row: &QueueRow) -> Plan {
    Plan {
        next: Next::Release,
        last_error: row.last_error.clone(),
        waiting: row.waiting,
        priority: None,
        outcomes: Vec::new(),
        assigned: None,
        busy_reply: None,
        doubt: Doubt::Kept,
    }
}

/// What processing a row decided; written by [`Store::settle`].
pub(super) struct Plan {
    pub(super) next: Next,
    pub(super) last_error: Option<String>,
    pub(super) waiting: Option<Wait>,
    /// The deciding rule's priority, for a chat that waits.
    pub(super) priority: Option<i64>,
    pub(super) outcomes: Vec<NewOutcome>,
    pub(super) assigned: Option<Assigned>,
    /// The pool a chat that waits for a seat waits in, with its "all
    /// busy" message when due.
    pub(super) busy_reply: Option<BusyWait>,
    /// What the settlement does with the chat's assignment intent: only a
    /// plan that knows the answer (HelpCrunch's, or the chat as read)
    /// removes it; any other (a storage retry, a call not sent) leaves it
    /// for the next decision to resolve.
    pub(super) doubt: Doubt,
}

impl Plan {
    /// One outcome settles the row as `next`; its reason stays on a row
    /// that is not done.
    pub(super) fn finish(next: Next, outcome: NewOutcome) -> Self {
        Self {
            next,
            last_error: outcome.reason.clone().filter(|_| next != Next::Done),
            waiting: None,
            priority: None,
            outcomes: vec![outcome],
            assigned: None,
            busy_reply: None,
            doubt: Doubt::Kept,
        }
    }

    /// The row is done, with these outcomes and, for an assignment, what it
    /// moves.
    pub(super) fn done(outcomes: Vec<NewOutcome>, assigned: Option<Assigned>) -> Self {
        Self {
            next: Next::Done,
            last_error: None,
            waiting: None,
            priority: None,
            outcomes,
            assigned,
            busy_reply: None,
            doubt: Doubt::Kept,
        }
    }

    /// The row waits on purpose until `at_ms` (or until what ends the wait
    /// wakes it), its attempt given back.
    pub(super) fn wait(why: Wait, at_ms: i64, reason: String, outcomes: Vec<NewOutcome>) -> Self {
        Self {
            next: Next::Retry {
                at_ms,
                count_attempt: false,
            },
            last_error: Some(reason),
            waiting: Some(why),
            priority: None,
            outcomes,
            assigned: None,
            busy_reply: None,
            doubt: Doubt::Kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::WhenFull;

    /// An assignment by an `escalate` step is recorded as one; a plain
    /// assignment and a chat still waiting at a step are not.
    #[test]
    fn an_escalated_assignment_says_so_in_its_route() {
        let rules = crate::rules::load_sources(&[(
            "r.toml".into(),
            "[agents]\nann = { id = 1 }\ncy = { id = 3 }\n\
             [pools.support]\nagents = [\"ann\"]\nescalate = [{ after = \"5m\", assign = \"pool:overflow\" }]\n\
             [pools.overflow]\nagents = [\"cy\"]\n\
             [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n"
                .to_string(),
        )])
        .unwrap();
        let assign = |escalation| Decision {
            rule: Some(0),
            verdict: Verdict::Assign {
                agent: 1,
                pool: Some(1),
                previous: None,
                weights: None,
                escalation,
            },
        };
        let chat = ChatId(7);
        let escalated = describe(&rules, &assign(Some(0)), chat);
        assert_eq!(escalated.route, Some(Route::Escalated));
        assert_eq!(escalated.result, OutcomeResult::Assigned);
        assert_eq!(describe(&rules, &assign(None), chat).route, None);
        let waiting = Decision {
            rule: Some(0),
            verdict: Verdict::NoCandidate {
                pool: Some(0),
                when_full: WhenFull::Wait,
                hourly: Vec::new(),
                escalation: Some(0),
            },
        };
        assert_eq!(describe(&rules, &waiting, chat).route, None);
    }
}
