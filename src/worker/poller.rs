//! `[poller]`: for accounts without webhooks, new unassigned chats are
//! looked for from spare budget (background priority, so assignments
//! always go first) and enqueued with the chat as snapshot.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Worker;
use super::reconcile::search_failed;
use crate::helpcrunch::types::Chat;
use crate::store::{NewQueueItem, now_ms};

/// The `daemon_state` key holding the creation time (Unix seconds) the
/// next look starts from; kept in the database so a restart (or another
/// daemon) goes on from there.
const SINCE: &str = "poller_since";

impl Worker {
    /// One round of the poller job: enqueues chats created since the last
    /// look that nobody is assigned to.
    pub(super) async fn poller_round(&self, stop: &CancellationToken) -> Duration {
        let Some(every) = self.settings.poll_new_chats else {
            return Duration::from_secs(3600);
        };
        let since: i64 = match self.store.daemon_state_value(SINCE).await {
            Ok(Some(v)) => v.parse().unwrap_or(0),
            _ => (now_ms() - every.as_millis() as i64) / 1000,
        };
        // Timestamps are whole seconds: from `since` itself, so that a chat
        // created in the same second as the last one seen is not missed.
        // One seen again is assigned or closed by now (and filtered), or
        // already queued.
        match self.client().search_every(&[], Some(since), stop).await {
            Ok(chats) => self.enqueue_unassigned(&chats, since).await,
            Err(e) => search_failed(&e),
        }
        every
    }

    async fn enqueue_unassigned(&self, chats: &[(Chat, serde_json::Value)], since: i64) {
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
                priority: (self.intake_priority(c.id, &Default::default(), Some(c)))
                    .map_or(0, |r| r.max(0)),
                ranked: true,
            })
            .collect();
        match self.store.enqueue(&items).await {
            Ok(added) => {
                if added > 0 {
                    tracing::info!(added, "poller enqueued new chats");
                    self.wake();
                }
                // Stored even when nothing was seen, so that the next look
                // starts where this one did, not one interval before its own.
                let next = latest.map_or(since, |l| l.max(since));
                let _ = self.store.set_daemon_state(SINCE, &next.to_string()).await;
            }
            Err(e) => tracing::warn!(error = %e, "poller cannot enqueue; will look again"),
        }
    }
}
