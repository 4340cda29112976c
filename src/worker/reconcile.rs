//! Keeping in step with HelpCrunch from spare budget: open chats per agent
//! (`[load] refresh`). Like the poller, it calls at background priority,
//! so assignments always go first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Worker, lock};
use crate::domain::ChatId;
use crate::helpcrunch::types::Chat;
use crate::store::now_ms;

impl Worker {
    /// One round of the reconcile job: merges each agent's open chats with
    /// what HelpCrunch reports, which corrects what webhooks missed. The
    /// search cannot know the seats reserved or opened after it started,
    /// nor the closes since: those stay as they are here (issue 14), so
    /// caps hold while decisions are in flight.
    pub(super) async fn reconcile_round(&self, stop: &CancellationToken) -> Duration {
        let rules = self.rules();
        let round_started = Instant::now();
        let mut changed = false;
        for agent in &rules.agents {
            let filter = json!([{"field": "chats.assignee", "operator": "=", "value": agent.id}]);
            let (since, since_ms) = (Instant::now(), now_ms());
            let Some(chats) = self.search_all(filter, stop).await else {
                break; // an error or shutdown: try again next round
            };
            let open: HashSet<ChatId> = chats
                .iter()
                .filter(|(c, _)| !c.is_closed())
                .map(|(c, _)| c.id)
                .collect();
            let list: Vec<ChatId> = open.iter().copied().collect();
            let lease = self.settings.lease;
            let stale_ms = since_ms - lease.as_millis() as i64;
            match self
                .store
                .reconcile_open_chats(&agent.name, &list, since_ms, stale_ms)
                .await
            {
                Ok(()) => changed = true,
                Err(e) => {
                    tracing::warn!(agent = %agent.name, error = %e, "cannot record open chats")
                }
            }
            let stale = since.checked_sub(lease);
            lock(&self.routing).reconcile(&agent.name, &open, since, stale);
            // After the open chats, which must follow the search closely.
            self.record_closes(&agent.name, &chats, since_ms).await;
        }
        lock(&self.routing).forget_closes(round_started);
        if changed {
            self.wake();
        }
        self.settings.load_refresh
    }

    /// For `simulate --history`: when each chat the search saw closed was
    /// closed (HelpCrunch's `closedAt`, else when the search started).
    async fn record_closes(&self, agent: &str, chats: &[(Chat, serde_json::Value)], since_ms: i64) {
        let closed: Vec<(ChatId, i64)> = chats
            .iter()
            .filter(|(c, _)| c.is_closed())
            .map(|(c, _)| (c.id, c.closed_at.map_or(since_ms, |t| t.as_millisecond())))
            .collect();
        if let Err(e) = self.store.record_closes(&closed).await {
            tracing::warn!(agent, error = %e, "cannot record closed chats");
        }
    }

    /// Every page of a search, each chat parsed and as sent, or `None` on an
    /// error or shutdown. A chat that does not parse is skipped and logged.
    pub(super) async fn search_all(
        &self,
        filter: serde_json::Value,
        shutdown: &CancellationToken,
    ) -> Option<Vec<(Chat, serde_json::Value)>> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let call = self.client().search_chats(filter.clone(), offset).await;
            let page = match call.result {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "POST /chats/search failed; will try again later");
                    return None;
                }
            };
            offset += page.data.len();
            let done = page.data.len() < 100 || offset >= page.meta.total as usize;
            for raw in page.data {
                match serde_json::from_value::<Chat>(raw.clone()) {
                    Ok(chat) => all.push((chat, raw)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a chat in a search answer could not be read; skipped")
                    }
                }
            }
            if done {
                return Some(all);
            }
        }
    }
}
