//! Keeping in step with HelpCrunch from spare budget: open chats per agent
//! (`[load] refresh`). Like the poller, it calls at background priority,
//! so assignments always go first.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::domain::ChatId;
use crate::helpcrunch::types::Chat;

impl Worker {
    /// One round of the reconcile job: replaces each agent's open chats
    /// with what HelpCrunch reports, which corrects what webhooks missed.
    pub(super) async fn reconcile_round(&self, stop: &CancellationToken) -> Duration {
        let rules = self.rules();
        let mut changed = false;
        for agent in &rules.agents {
            let filter = json!([{"field": "chats.assignee", "operator": "=", "value": agent.id}]);
            let Some(chats) = self.search_all(filter, stop).await else {
                break; // an error or shutdown: try again next round
            };
            let open: Vec<ChatId> = chats
                .iter()
                .filter(|(c, _)| !c.is_closed())
                .map(|(c, _)| c.id)
                .collect();
            match self.store.replace_open_chats(&agent.name, &open).await {
                Ok(()) => changed = true,
                Err(e) => {
                    tracing::warn!(agent = %agent.name, error = %e, "cannot record open chats")
                }
            }
        }
        if changed {
            self.reload_open_chats().await;
            self.wake();
        }
        self.settings.load_refresh
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

    /// Reads open chats back from the database after a reconciliation.
    async fn reload_open_chats(&self) {
        let (Ok(stored), Ok(open_chats)) = (
            self.store.load_routing().await,
            self.store.open_chats().await,
        ) else {
            return;
        };
        let mut routing = super::lock(&self.routing);
        routing.state.open = stored.open;
        routing.open_chats = open_chats;
    }
}
