//! Pool `handback`: the open chats of an agent who is marked away or whose
//! shift ended go back through the rules (all of them, or those the agent
//! has not answered), and so does a chat whose customer writes while its
//! assignee is absent. Each goes back as a queue row marked with the
//! reason, decided like any chat; the absent agent is no candidate then.
//!
//! Level-triggered: every round looks at who is absent now, so a missed
//! round, a restart or a new leader loses nothing; a mark per chat makes it
//! go back once per absence (again only if the customer writes later).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;

use super::Worker;
use super::plan::Plan;
use crate::domain::Arm;
use crate::helpcrunch::ErrorClass;
use crate::limiter::Priority;
use crate::rules::{Handback, Rules};
use crate::store::handback::{HandBack, HandbackChat};
use crate::store::{NewOutcome, OutcomeResult, QueueRow, Route, StoreError, now_ms};

/// How often absences are looked at: a hand-back waits at most this long.
pub(super) const HANDBACK_EVERY: Duration = Duration::from_secs(1);

/// Answers, customer messages and marks of closed chats are kept this
/// long (a `chat.closed` webhook forgets them at once), pruned this often.
const KEEP_MS: i64 = 86_400_000;
const PRUNE_EVERY_MS: i64 = 600_000;

/// Why an agent is absent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Absence {
    /// `assignd agent away`, since then (Unix ms).
    Away { since_ms: i64 },
    /// Their `schedule` is closed.
    OffShift,
}

impl Absence {
    /// The event, for "handed back from alice (away)".
    fn event(self) -> &'static str {
        match self {
            Absence::Away { .. } => "away",
            Absence::OffShift => "shift ended",
        }
    }

    /// The state, for "customer wrote while alice is away".
    fn state(self) -> &'static str {
        match self {
            Absence::Away { .. } => "away",
            Absence::OffShift => "off shift",
        }
    }
}

/// Why a chat goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Absent,
    CustomerWrote,
}

impl Worker {
    /// One round of the hand-back job.
    pub(super) async fn handback_round(&self) -> Duration {
        // Arm b's rules may have pools that hand back where arm a's have none.
        let sets = self.every_rules();
        // No pool hands back: nothing to read.
        if !sets.iter().any(|r| hands_back(r)) {
            return HANDBACK_EVERY;
        }
        if let Err(e) = self.hand_back_absent(&sets).await {
            tracing::warn!(error = %e, "cannot hand chats back from absent agents; will try again");
            return HANDBACK_EVERY * 5;
        }
        let now = now_ms();
        if now - self.handback_pruned.load(Ordering::Relaxed) >= PRUNE_EVERY_MS {
            self.handback_pruned.store(now, Ordering::Relaxed);
            if let Err(e) = self.store.prune_handback(now - KEEP_MS).await {
                tracing::warn!(error = %e, "cannot prune what hand-backs remember; will try again");
            }
        }
        HANDBACK_EVERY
    }

    /// Hands back what the absent agents' chats call for, and forgets the
    /// marks of agents who are present again. Each chat is judged by the
    /// rules of the pool it was assigned through (its arm's), absence too:
    /// arm b's rules may give an agent another schedule.
    async fn hand_back_absent(&self, sets: &[Arc<Rules>]) -> Result<(), StoreError> {
        let away = self.store.away_since().await?;
        let now = Timestamp::now();
        let absent: BTreeSet<String> = sets
            .iter()
            .flat_map(|rules| absent_agents(rules, &away, now))
            .collect();
        let mut moves = Vec::new();
        let names: Vec<&str> = absent.iter().map(String::as_str).collect();
        for chat in self.store.handback_chats(&names, self.shadow()).await? {
            let Some(pool) = chat.pool.as_deref() else {
                continue;
            };
            let rules = self.rules_with_pool_in(chat.arm.unwrap_or(Arm::A), pool);
            let Some(absence) = absence(&rules, &chat.agent, &away, now) else {
                continue;
            };
            let Some(m) = hand_back(&rules, &chat, absence) else {
                continue;
            };
            if needs_upstream_check(&rules, &chat) && !self.unanswered_upstream(&m).await? {
                continue;
            }
            let mut m = m;
            let chat = m.outcome.chat_id;
            self.stamp_followup(chat, std::slice::from_mut(&mut m.outcome))
                .await;
            moves.push(m);
        }
        let present: Vec<String> = self
            .store
            .handback_agents()
            .await?
            .into_iter()
            .filter(|a| !absent.contains(a))
            .collect();
        if moves.is_empty() && present.is_empty() {
            return Ok(());
        }
        let moved = self.store.hand_back(&moves, &present).await?;
        for m in moves.iter().take(moved as usize) {
            tracing::info!(
                chat_id = m.outcome.chat_id.0,
                reason = m.outcome.reason.as_deref().unwrap_or(""),
                "hand-back"
            );
        }
        if moved > 0 {
            self.wake();
        }
        Ok(())
    }

    /// For "unanswered" with no answer seen by webhook: whether HelpCrunch
    /// also says the agent has not written in the chat (its `agents`, or
    /// `lastCommunicatedAgentId`). An answer found is recorded, so the chat
    /// is asked about once; a call that may succeed later is tried next
    /// round, and a chat HelpCrunch refuses (gone) goes back, to be
    /// settled by the worker like any row.
    async fn unanswered_upstream(&self, m: &HandBack) -> Result<bool, StoreError> {
        let (chat_id, Some(agent_id)) = (m.outcome.chat_id, m.outcome.agent_id) else {
            return Ok(true);
        };
        let chat = match self
            .client()
            .chat(chat_id, Priority::Background)
            .await
            .result
        {
            Ok(chat) => chat,
            Err(e) => {
                tracing::debug!(chat_id = chat_id.0, error = %e, "cannot check whether the chat was answered");
                let gone = matches!(e.class(), ErrorClass::Permanent | ErrorClass::AgentRejected);
                return Ok(gone);
            }
        };
        let answered = chat.last_communicated_agent_id == Some(agent_id)
            || chat.agents.iter().any(|a| a.id == agent_id);
        if answered {
            self.store.note_answer(chat_id, &m.agent).await?;
        }
        Ok(!answered)
    }
}

impl Plan {
    /// A hand-back row's outcomes say that it was one, and why.
    pub(super) fn handed_back(mut self, row: &QueueRow) -> Self {
        if let Some(why) = &row.handback {
            for o in &mut self.outcomes {
                o.reason = Some(match o.reason.take() {
                    Some(r) => format!("hand-back ({why}): {r}"),
                    None => format!("hand-back ({why})"),
                });
            }
        }
        self
    }
}

/// Whether some pool of `rules` hands back.
fn hands_back(rules: &Rules) -> bool {
    rules.pools.iter().any(|p| p.handback != Handback::None)
}

/// The members of pools of `rules` that hand back who are absent at `now`.
fn absent_agents(
    rules: &Rules,
    away: &[(String, Option<i64>, i64)],
    now: Timestamp,
) -> BTreeSet<String> {
    rules
        .pools
        .iter()
        .filter(|p| p.handback != Handback::None)
        .flat_map(|p| p.members.iter().map(|&a| &rules.agents[a].name))
        .filter(|name| absence(rules, name, away, now).is_some())
        .cloned()
        .collect()
}

/// Why agent `name` of `rules` is absent at `now`, if they are: marked
/// away (`away`: name, until, since), else off their shift.
fn absence(
    rules: &Rules,
    name: &str,
    away: &[(String, Option<i64>, i64)],
    now: Timestamp,
) -> Option<Absence> {
    let agent = &rules.agents[rules.agent_by_name(name)?];
    let now_ms = now.as_millisecond();
    let marked = away
        .iter()
        .find(|(n, until, _)| n == name && until.is_none_or(|u| u > now_ms));
    match (marked, agent.schedule) {
        (Some((_, _, since)), _) => Some(Absence::Away { since_ms: *since }),
        (None, Some(s)) if !rules.schedules[s].is_open(now) => Some(Absence::OffShift),
        _ => None,
    }
}

/// The hand-back an absent agent's open chat calls for, if any.
fn hand_back(rules: &Rules, chat: &HandbackChat, absence: Absence) -> Option<HandBack> {
    let pool = &rules.pools[rules.pool_by_name(chat.pool.as_deref()?)?];
    let agent = &rules.agents[rules.agent_by_name(&chat.agent)?];
    let reason = match why(pool.handback, chat, absence)? {
        Why::Absent => format!("handed back from {} ({})", agent.name, absence.event()),
        Why::CustomerWrote => format!(
            "handed back from {} (customer wrote while {} is {})",
            agent.name,
            agent.name,
            absence.state()
        ),
    };
    let mut outcome = NewOutcome::new(chat.chat_id, OutcomeResult::Skipped);
    outcome.pool = Some(pool.name.clone());
    outcome.strategy = Some(pool.strategy.name());
    outcome.agent = Some(agent.name.clone());
    outcome.agent_id = Some(agent.id);
    outcome.reason = Some(reason);
    outcome.route = Some(Route::HandedBack);
    Some(HandBack {
        agent: agent.name.clone(),
        outcome,
    })
}

/// Whether the webhooks leave open if the agent answered: pool
/// "unanswered" and no message event seen in the chat (an account may send
/// none). A customer message seen says what it needs by itself.
fn needs_upstream_check(rules: &Rules, chat: &HandbackChat) -> bool {
    let mode = chat
        .pool
        .as_deref()
        .and_then(|p| rules.pool_by_name(p))
        .map(|p| rules.pools[p].handback);
    mode == Some(Handback::Unanswered) && chat.answered_at.is_none() && chat.customer_at.is_none()
}

/// Whether (and why) a chat of an absent agent goes back under `mode`.
fn why(mode: Handback, chat: &HandbackChat, absence: Absence) -> Option<Why> {
    // The customer's last message, if the agent has not answered it.
    let waiting = chat
        .customer_at
        .filter(|&c| chat.answered_at.is_none_or(|a| c > a));
    // Handed back before and still theirs (nobody could take it, or the
    // rules gave it back): again only for a message since.
    if let Some(h) = chat.handed_at.filter(|&h| h >= chat.assigned_at) {
        return waiting.filter(|&c| c > h).map(|_| Why::CustomerWrote);
    }
    let wrote_while_absent = waiting.is_some_and(|c| match absence {
        Absence::Away { since_ms } => c >= since_ms,
        // When the shift ended is not kept; the message is unanswered.
        Absence::OffShift => true,
    });
    match mode {
        Handback::None => None,
        Handback::All => Some(Why::Absent),
        Handback::Unanswered if chat.answered_at.is_none() => Some(Why::Absent),
        // Answered, but the customer wrote again: unanswered once more.
        Handback::Unanswered if waiting.is_some() => Some(if wrote_while_absent {
            Why::CustomerWrote
        } else {
            Why::Absent
        }),
        Handback::Unanswered => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChatId;

    fn chat(answered: Option<i64>, customer: Option<i64>, handed: Option<i64>) -> HandbackChat {
        HandbackChat {
            chat_id: ChatId(7),
            agent: "alice".into(),
            assigned_at: 100,
            pool: Some("support".into()),
            arm: None,
            answered_at: answered,
            customer_at: customer,
            handed_at: handed,
        }
    }

    const AWAY: Absence = Absence::Away { since_ms: 1000 };

    #[test]
    fn all_hands_back_every_chat_once() {
        assert_eq!(
            why(Handback::All, &chat(Some(200), None, None), AWAY),
            Some(Why::Absent)
        );
        assert_eq!(
            why(Handback::All, &chat(None, None, Some(1500)), AWAY),
            None
        );
        assert_eq!(why(Handback::None, &chat(None, None, None), AWAY), None);
    }

    #[test]
    fn unanswered_keeps_answered_chats_until_the_customer_writes() {
        let m = Handback::Unanswered;
        assert_eq!(why(m, &chat(None, None, None), AWAY), Some(Why::Absent));
        assert_eq!(why(m, &chat(Some(200), None, None), AWAY), None);
        assert_eq!(why(m, &chat(Some(200), Some(150), None), AWAY), None);
        assert_eq!(
            why(m, &chat(Some(200), Some(1200), None), AWAY),
            Some(Why::CustomerWrote)
        );
        // Unanswered before the absence began: it goes back for that.
        assert_eq!(
            why(m, &chat(Some(200), Some(300), None), AWAY),
            Some(Why::Absent)
        );
    }

    #[test]
    fn a_chat_handed_back_goes_again_only_for_a_later_message() {
        let m = Handback::All;
        assert_eq!(why(m, &chat(None, Some(1200), Some(1500)), AWAY), None);
        assert_eq!(
            why(m, &chat(None, Some(1600), Some(1500)), AWAY),
            Some(Why::CustomerWrote)
        );
        // A mark older than the assignment belongs to an earlier one.
        assert_eq!(
            why(m, &chat(None, None, Some(50)), Absence::OffShift),
            Some(Why::Absent)
        );
    }
}
