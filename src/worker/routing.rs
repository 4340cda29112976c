//! The routing state in memory: decisions are taken and reserved under one
//! lock, so concurrent tasks never pick from a stale rotation, and a failed
//! call gives back what its decision reserved.

use crate::domain::ChatId;
use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use rand::RngExt;

use crate::rules::{Applied, ChatContext, Decision, RoutingState, Rules, Target, decide};
use crate::store::{Assigned, Backend, StoreError, StoredRouting, away_from_ms};

use super::policy::WAIT_RETRY;
use super::process::effects;
use super::{Worker, lock};

impl Worker {
    /// Decides under the routing lock and applies what the decision moves
    /// (rotation, weights, the agent's open count) at once, so that
    /// concurrent tasks decide on current state. On PostgreSQL the lock and
    /// the state are the database's, shared by every daemon, and the
    /// reservation is written before the lock goes. Returns what to give
    /// back if the assignment then fails.
    pub(super) async fn decide_and_reserve(
        &self,
        rules: &Rules,
        context: &ChatContext,
    ) -> Result<(Decision, Option<Applied>), StoreError> {
        if self.store.backend() == Backend::Sqlite {
            return Ok(self.decide_in_memory(rules, context, None));
        }
        let (held, stored) = self.store.lock_routing().await?;
        let (decision, reserved) = self.decide_in_memory(rules, context, Some(stored));
        match reserved {
            Some(_) => {
                let Assigned {
                    round_robin,
                    weights,
                    opened,
                    ..
                } = effects(rules, &decision, context);
                let reservation = Assigned {
                    round_robin,
                    weights,
                    opened,
                    ..Assigned::default()
                };
                held.reserve(&reservation).await?;
            }
            None => held.release().await?,
        }
        Ok((decision, reserved))
    }

    /// Decides on the in-memory state (refreshed from `fresh` first, when
    /// the database's state is shared) and applies the decision to it.
    fn decide_in_memory(
        &self,
        rules: &Rules,
        context: &ChatContext,
        fresh: Option<StoredRouting>,
    ) -> (Decision, Option<Applied>) {
        let mut routing = lock(&self.routing);
        if let Some(stored) = fresh {
            routing.state.last_pick = stored.last_pick;
            routing.state.weights = stored.weights;
            routing.state.open = stored.open;
            routing.state.away = away_from_ms(stored.away);
        }
        routing.state.entropy = rand::rng().random();
        let started = std::time::Instant::now();
        let decision = decide(rules, context, &routing.state, Timestamp::now());
        crate::metrics::metrics()
            .decision
            .observe(started.elapsed().as_secs_f64());
        let reserved = routing.state.apply(rules, &decision);
        (decision, reserved)
    }

    /// What a settle writes of an assignment's effects. On PostgreSQL the
    /// rotation and weights are the shared state's, moved under its lock
    /// when decisions reserve; written again after the call, they could
    /// rewind another daemon's later pick, so they are left out.
    pub(super) fn settled_effects(&self, mut moved: Assigned) -> Assigned {
        if self.store.backend() == Backend::Postgres {
            moved.round_robin = None;
            moved.weights = None;
        }
        moved
    }

    /// Gives back what a decision reserved. The rotation and weights go back
    /// only if no other decision has moved them since; on PostgreSQL the
    /// shared state too.
    pub(super) async fn undo_reservation(&self, chat_id: ChatId, reserved: Option<Applied>) {
        let Some(applied) = reserved else { return };
        if self.store.backend() == Backend::Postgres {
            let rotation = applied
                .pool
                .as_deref()
                .map(|p| (p, applied.previous_pick()));
            if let Err(e) = self
                .store
                .unreserve(chat_id, &applied.agent, rotation)
                .await
            {
                tracing::warn!(error = %e, "cannot give back the reserved seat; reconciliation will");
            }
        }
        lock(&self.routing).state.undo(applied);
    }

    /// Records in memory that `chat` is now open with `agent` (the open count
    /// was reserved at decision time); a chat that moves from another agent
    /// lowers that agent's count.
    pub(super) fn opened(&self, chat: ChatId, agent: &str) {
        let mut routing = lock(&self.routing);
        if let Some(before) = routing.open_chats.insert(chat, agent.to_string())
            && let Some(n) = routing.state.open.get_mut(&before)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// A webhook said which agent `chat` is open with now (`None`: nobody we
    /// route to, or closed). Already stored; this moves the in-memory
    /// counts, and a freed seat wakes the waiting chats.
    pub fn note_open(&self, chat: ChatId, agent: Option<&str>) {
        let freed = {
            let mut routing = lock(&self.routing);
            let previous = match agent {
                Some(a) => routing.open_chats.insert(chat, a.to_string()),
                None => routing.open_chats.remove(&chat),
            };
            if previous.as_deref() == agent {
                return;
            }
            if let Some(prev) = &previous
                && let Some(n) = routing.state.open.get_mut(prev)
            {
                *n = n.saturating_sub(1);
            }
            if let Some(a) = agent {
                *routing.state.open.entry(a.to_string()).or_default() += 1;
            }
            previous.is_some()
        };
        if freed {
            self.wake();
        }
    }

    /// Open chats per agent, as the decisions see them.
    pub fn open_counts(&self) -> Vec<(String, u32)> {
        let routing = lock(&self.routing);
        let mut v: Vec<(String, u32)> = routing
            .state
            .open
            .iter()
            .map(|(a, n)| (a.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Reads the away flags the CLI keeps in the database.
    pub(super) async fn refresh_away(&self) {
        match self.store.load_away().await {
            Ok(away) => lock(&self.routing).state.away = away_from_ms(away),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read away flags; keeping the last known ones")
            }
        }
    }

    /// How long a chat waits for a candidate: [`WAIT_RETRY`], or less if a
    /// member's shift starts sooner.
    pub(super) fn wait_delay(&self, rules: &Rules, decision: &Decision) -> Duration {
        let now = Timestamp::now();
        let members: Vec<usize> = match decision.rule.map(|r| rules.rules[r].target) {
            Some(Target::Pool(p)) => rules.pools[p].members.clone(),
            Some(Target::Agent(a)) => vec![a],
            _ => Vec::new(),
        };
        members
            .iter()
            .filter_map(|&a| rules.agents[a].schedule)
            .filter_map(|s| rules.schedules[s].next_open(now))
            .filter_map(|z| Duration::try_from(z.timestamp().duration_since(now)).ok())
            .min()
            .map_or(WAIT_RETRY, |d| {
                d.clamp(Duration::from_millis(50), WAIT_RETRY)
            })
    }
}

/// The decision state, and which agent each open chat is with (so that a
/// chat moving between agents moves its count).
pub(super) struct Routing {
    pub(super) state: RoutingState,
    pub(super) open_chats: HashMap<ChatId, String>,
}
