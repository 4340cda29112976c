//! Keeping in step with HelpCrunch from spare budget: open chats per agent
//! (`[load] refresh`). Like the poller, it calls at background priority,
//! so assignments always go first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Worker, lock};
use crate::domain::ChatId;
use crate::helpcrunch::SearchError;
use crate::helpcrunch::SeenChat;
use crate::helpcrunch::search::AgentChats;
use crate::rules::Rules;
use crate::store::now_ms;

/// The `daemon_state` key holding when the last complete round started
/// (Unix seconds): the next round asks for the chats changed since then,
/// among them the ones closed in between. Kept in the database, so that a
/// restart (or a new leader) goes on from there.
const CHANGED_SINCE: &str = "reconcile_since";
/// HelpCrunch's clock may be behind ours: ask for changes this much earlier.
const CLOCK_MARGIN_S: i64 = 60;

impl Worker {
    /// One round of the reconcile job: merges each agent's open chats with
    /// what HelpCrunch reports, which corrects what webhooks missed. The
    /// search cannot know the seats reserved or opened after it started,
    /// nor the closes since: those stay as they are here (issue 14), so
    /// caps hold while decisions are in flight.
    pub(super) async fn reconcile_round(&self, stop: &CancellationToken) -> Duration {
        let rules = self.rules();
        let round_started = Instant::now();
        let started_s = now_ms() / 1000;
        let changed_since = self.changed_since().await - CLOCK_MARGIN_S;
        let (mut changed, mut complete) = (false, true);
        for agent in &rules.agents {
            let (since, since_ms) = (Instant::now(), now_ms());
            let chats = match self
                .client()
                .agent_chats(agent.id, changed_since, stop)
                .await
            {
                Ok(chats) => chats,
                Err(e) => {
                    search_failed(&e);
                    complete = false;
                    break; // try again next round
                }
            };
            changed |= if self.shadow() {
                self.observe(&agent.name, &chats.open, since_ms).await;
                self.close_seen(&chats.closed).await
            } else {
                self.merge_open(&agent.name, &chats.open, since, since_ms)
                    .await
            };
            // After the open chats, which must follow the search closely.
            self.record_closes(&agent.name, &chats.closed, since_ms)
                .await;
            self.record_replies(&rules, &chats, since_ms).await;
        }
        lock(&self.routing).forget_closes(round_started);
        if complete {
            let _ = self
                .store
                .set_daemon_state(CHANGED_SINCE, &started_s.to_string())
                .await;
        }
        if changed {
            self.wake();
        }
        self.settings.load_refresh
    }

    /// On PostgreSQL, where a daemon that does not lead reconciles nothing:
    /// every `[load] refresh`, takes the open chats the database holds
    /// (which every daemon's webhooks and the leader's rounds keep), so
    /// chats closed through another daemon leave this one's memory.
    pub(super) async fn resync_when_due(&self, last: &mut Option<Instant>) {
        if last.is_some_and(|t| t.elapsed() < self.settings.load_refresh) {
            return;
        }
        let since = Instant::now();
        match self.store.open_chats().await {
            Ok(stored) => {
                let mut routing = lock(&self.routing);
                routing.resync(&stored, since);
                routing.forget_closes(since);
                *last = Some(since);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the open chats; will try again"),
        }
    }

    /// When the last complete round started, or one interval ago.
    async fn changed_since(&self) -> i64 {
        let stored = match self.store.daemon_state_value(CHANGED_SINCE).await {
            Ok(Some(v)) => v.parse().ok(),
            _ => None,
        };
        let interval = self.settings.load_refresh.as_millis() as i64;
        stored.unwrap_or((now_ms() - interval) / 1000)
    }

    /// Merges the open chats a search that started at `since` found for
    /// `agent`, in the database and here; whether the database took them.
    async fn merge_open(
        &self,
        agent: &str,
        found: &[SeenChat],
        since: Instant,
        since_ms: i64,
    ) -> bool {
        let open: HashSet<ChatId> = found.iter().map(|c| c.id).collect();
        let list: Vec<ChatId> = open.iter().copied().collect();
        let lease = self.settings.lease;
        let stale_ms = since_ms - lease.as_millis() as i64;
        let stored = self
            .store
            .reconcile_open_chats(agent, &list, since_ms, stale_ms)
            .await;
        if let Err(e) = &stored {
            tracing::warn!(agent, error = %e, "cannot record open chats");
        }
        let stale = since.checked_sub(lease);
        lock(&self.routing).reconcile(agent, &open, since, stale);
        stored.is_ok()
    }

    /// The replies a search saw (an agent who wrote in the chat), as the
    /// chats' first replies where none is known: a measure, for accounts
    /// without `message.chat.agent` webhooks.
    async fn record_replies(&self, rules: &Rules, chats: &AgentChats, since_ms: i64) {
        let replies: Vec<(ChatId, String)> = (chats.open.iter().chain(&chats.closed))
            .filter_map(|c| {
                let by = c.answered_by?;
                let name = rules
                    .agent_by_id(by)
                    .map_or_else(|| format!("#{}", by.0), |a| rules.agents[a].name.clone());
                Some((c.id, name))
            })
            .collect();
        if let Err(e) = self.store.record_replies_read(&replies, since_ms).await {
            tracing::warn!(error = %e, "cannot record the replies a search saw");
        }
    }

    /// Shadow mode: records who really has the chats a search found open
    /// with `agent` (a measure; the shadow's seats stay its own).
    async fn observe(&self, agent: &str, open: &[SeenChat], since_ms: i64) {
        let ids: Vec<ChatId> = open.iter().map(|c| c.id).collect();
        if let Err(e) = self.store.record_assignees(agent, &ids, since_ms).await {
            tracing::warn!(agent, error = %e, "cannot record who has the chats");
        }
    }

    /// Shadow mode: the chats HelpCrunch has open are with reality's
    /// agents, not the shadow's, so only the closes a search saw free the
    /// shadow's seats. Whether the database took them.
    async fn close_seen(&self, closed: &[SeenChat]) -> bool {
        let ids: Vec<ChatId> = closed.iter().map(|c| c.id).collect();
        if let Err(e) = self.store.close_chats(&ids).await {
            tracing::warn!(error = %e, "cannot record the closed chats");
            return false;
        }
        for c in ids {
            self.note_open(c, None);
        }
        true
    }

    /// For `simulate --history`: when each chat the search saw closed was
    /// closed (HelpCrunch's `closedAt`, else when the search started).
    async fn record_closes(&self, agent: &str, closed: &[SeenChat], since_ms: i64) {
        let closed: Vec<(ChatId, i64)> = closed
            .iter()
            .map(|c| (c.id, c.closed_at.map_or(since_ms, |t| t.as_millisecond())))
            .collect();
        if let Err(e) = self.store.record_closes(&closed).await {
            tracing::warn!(agent, error = %e, "cannot record closed chats");
        }
    }
}

/// Logs why a search stopped short; a shutdown needs no word.
pub(super) fn search_failed(e: &SearchError) {
    if !matches!(e, SearchError::Stopped) {
        tracing::warn!(error = %e, "POST /chats/search failed; will try again later");
    }
}
