//! Keeping in step with HelpCrunch from spare budget: open chats per agent
//! (`[load] refresh`), and, for accounts without webhooks, new unassigned
//! chats (`[poller]`). Both call at background priority, so assignments
//! always go first.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::helpcrunch::types::Chat;
use crate::store::{NewQueueItem, now_ms};

impl Worker {
    /// Every `load_refresh`, replaces each agent's open chats with what
    /// HelpCrunch reports, which corrects what webhooks missed.
    pub(super) async fn run_reconcile(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.load_refresh) => {}
            }
            let rules = self.rules();
            let mut changed = false;
            for agent in &rules.agents {
                let filter =
                    json!([{"field": "chats.assignee", "operator": "=", "value": agent.id}]);
                let Some(chats) = self.search_all(filter, &shutdown).await else {
                    break; // an error or shutdown: try again next round
                };
                let open: Vec<i64> = chats
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
        }
    }

    /// Every `every`, enqueues chats created since the last look that
    /// nobody is assigned to (with the chat as snapshot).
    pub(super) async fn run_poller(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        const SINCE: &str = "poller_since";
        let mut since: i64 = match self.store.daemon_state_value(SINCE).await {
            Ok(Some(v)) => v.parse().unwrap_or(0),
            _ => (now_ms() - every.as_millis() as i64) / 1000,
        };
        loop {
            // Timestamps are whole seconds: `>=` so that a chat created in the
            // same second as the last one seen is not missed. One seen again is
            // assigned or closed by now (and filtered), or already queued.
            let filter = json!([{"field": "chats.createdAt", "operator": ">=", "value": since}]);
            if let Some(chats) = self.search_all(filter, &shutdown).await {
                let latest = chats
                    .iter()
                    .filter_map(|(c, _)| c.created_at)
                    .map(|t| t.as_second())
                    .max();
                let items: Vec<NewQueueItem> = chats
                    .iter()
                    .filter(|(c, _)| c.assignee.is_none() && !c.is_closed())
                    .map(|(c, raw)| NewQueueItem {
                        chat_id: c.id,
                        attrs: None,
                        snapshot: Some(raw.clone()),
                        priority: 0,
                    })
                    .collect();
                match self.store.enqueue(&items).await {
                    Ok(added) => {
                        if added > 0 {
                            tracing::info!(added, "poller enqueued new chats");
                            self.wake();
                        }
                        if let Some(latest) = latest {
                            since = since.max(latest);
                            let _ = self.store.set_daemon_state(SINCE, &since.to_string()).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "poller cannot enqueue; will look again"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Every page of a search, each chat parsed and as sent, or `None` on an
    /// error or shutdown. A chat that does not parse is skipped and logged.
    async fn search_all(
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
