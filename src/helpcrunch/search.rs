//! Reading every chat a search matches without missing one that matches
//! all along.
//!
//! Paging by offset misses chats: one that leaves the result between two
//! pages shifts the rest back, and the chat at the boundary is skipped.
//! Here the pages are ordered by `chats.createdAt` and each one starts at
//! the last creation time seen (`>=`, repeats dropped by id), so chats that
//! leave the result or join it at the end do not move the next page's
//! start: a chat that matches from the first page to the last is read.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::error::ApiError;
use super::types::{Chat, OPEN_STATUSES};
use crate::domain::{AgentId, ChatId};

/// HelpCrunch's largest page.
const PAGE: usize = 100;
/// How often a crowded second is read before the search gives up.
const READS: usize = 3;
/// How many chats two pages of a crowded second share.
const OVERLAP: usize = 10;

/// A chat as parsed, and as sent (to keep as a snapshot).
pub type Found = (Chat, Value);

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("stopped before the last page")]
    Stopped,
    #[error("more than {PAGE} chats created in second {0} kept changing while read")]
    Unsettled(i64),
    /// A full page whose creation times do not move the cursor on (none
    /// has one, or the answer ignored the filter): asking again would loop.
    #[error("a full page of chats that does not move the creation-time cursor on")]
    Stuck,
}

/// Where the next page starts, in creation time (Unix seconds).
#[derive(Debug, Clone, Copy)]
enum Cursor {
    Start,
    AtOrAfter(i64),
    After(i64),
}

impl Cursor {
    /// The cursor's place: each next page must start further on.
    fn place(self) -> (i64, u8) {
        match self {
            Cursor::Start => (i64::MIN, 0),
            Cursor::AtOrAfter(at) => (at, 1),
            Cursor::After(at) => (at, 2),
        }
    }

    fn filter(self) -> Option<Value> {
        let (operator, at) = match self {
            Cursor::Start => return None,
            Cursor::AtOrAfter(at) => (">=", at),
            Cursor::After(at) => (">", at),
        };
        Some(json!({"field": "chats.createdAt", "operator": operator, "value": at}))
    }
}

/// What a reconciliation keeps of a chat it read: its id and close time,
/// not the chat (a round may read every chat changed in the last minutes;
/// kept whole, they were the daemon's largest peak, docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenChat {
    pub id: ChatId,
    pub closed: bool,
    pub closed_at: Option<jiff::Timestamp>,
    /// An agent who has written in the chat (its last, else one of its
    /// `agents`): for the first reply's measure where no webhook says it.
    pub answered_by: Option<AgentId>,
}

impl SeenChat {
    fn of((chat, _): Found) -> SeenChat {
        let answered_by = chat
            .last_communicated_agent_id
            .or(chat.agents.first().map(|a| a.id));
        SeenChat {
            id: chat.id,
            closed: chat.is_closed(),
            closed_at: chat.closed_at,
            answered_by,
        }
    }
}

/// An agent's chats, as one reconciliation read them.
#[derive(Debug, Default)]
pub struct AgentChats {
    /// Open with the agent when last read.
    pub open: Vec<SeenChat>,
    /// Closed with the agent, among the chats changed since the time asked.
    pub closed: Vec<SeenChat>,
}

impl Client {
    /// Every chat that passes all `filters` and was created at or after
    /// `from` (Unix seconds), oldest first, each once.
    pub async fn search_every(
        &self,
        filters: &[Value],
        from: Option<i64>,
        stop: &CancellationToken,
    ) -> Result<Vec<Found>, SearchError> {
        self.search_kept(filters, from, stop, |found| found).await
    }

    /// [`Client::search_every`], keeping of each chat what `keep` makes of
    /// it, page by page.
    async fn search_kept<T>(
        &self,
        filters: &[Value],
        from: Option<i64>,
        stop: &CancellationToken,
        keep: impl Fn(Found) -> T,
    ) -> Result<Vec<T>, SearchError> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor = from.map_or(Cursor::Start, Cursor::AtOrAfter);
        loop {
            let (page, sent) = self.page(filters, cursor.filter(), 0, stop).await?;
            let last = page
                .iter()
                .filter_map(|(c, _)| c.created_at)
                .map(|t| t.as_second())
                .max();
            keep_new(&mut found, &mut seen, page, &keep);
            if sent < PAGE {
                return Ok(found);
            }
            let next = match (last, cursor) {
                (None, _) => return Err(SearchError::Stuck),
                // A whole page from one second: that second is read by
                // itself, and the next page starts after it.
                (Some(last), Cursor::AtOrAfter(at)) if last <= at => {
                    let crowd = self.one_second(filters, at, stop).await?;
                    keep_new(&mut found, &mut seen, crowd, &keep);
                    Cursor::After(at)
                }
                (Some(last), _) => Cursor::AtOrAfter(last),
            };
            if next.place() <= cursor.place() {
                return Err(SearchError::Stuck);
            }
            cursor = next;
        }
    }

    /// The chats that pass `filters` created in second `at`, more than a
    /// page of them, by offset. Pages overlap: one that shares no chat with
    /// the page before may have skipped one (chats left before it), so the
    /// second is read again. Within a second HelpCrunch's order is taken to
    /// be stable (the sandbox orders by id).
    async fn one_second(
        &self,
        filters: &[Value],
        at: i64,
        stop: &CancellationToken,
    ) -> Result<Vec<Found>, SearchError> {
        let in_second = json!({"field": "chats.createdAt", "operator": "=", "value": at});
        'read: for _ in 0..READS {
            let (mut read, mut offset) = (Vec::new(), 0);
            let mut before: Option<HashSet<ChatId>> = None;
            loop {
                let (page, sent) = self
                    .page(filters, Some(in_second.clone()), offset, stop)
                    .await?;
                let ids: HashSet<ChatId> = page.iter().map(|(c, _)| c.id).collect();
                if before.is_some_and(|b| b.is_disjoint(&ids)) {
                    continue 'read;
                }
                read.extend(page);
                if sent < PAGE {
                    return Ok(read);
                }
                offset += PAGE - OVERLAP;
                before = Some(ids);
            }
        }
        Err(SearchError::Unsettled(at))
    }

    /// One page: the chats that parse, and how many were sent. A chat that
    /// does not parse is skipped and logged.
    async fn page(
        &self,
        filters: &[Value],
        cursor: Option<Value>,
        offset: usize,
        stop: &CancellationToken,
    ) -> Result<(Vec<Found>, usize), SearchError> {
        if stop.is_cancelled() {
            return Err(SearchError::Stopped);
        }
        let filter: Vec<Value> = filters.iter().cloned().chain(cursor).collect();
        let page = self
            .search_chats(Value::Array(filter), offset)
            .await
            .result?;
        let sent = page.data.len();
        let mut parsed = Vec::with_capacity(sent);
        for raw in page.data {
            match serde_json::from_value::<Chat>(raw.clone()) {
                Ok(chat) => parsed.push((chat, raw)),
                Err(e) => {
                    tracing::warn!(error = %e, "a chat in a search answer could not be read; skipped")
                }
            }
        }
        Ok((parsed, sent))
    }

    /// The chats assigned to `agent` that are open, read status by status
    /// (a filter takes one status), then the agent's chats changed since
    /// `changed_since` (Unix seconds), whatever their status. A chat whose
    /// status moved during the reading, from one not yet read to one read
    /// already, is among the changed ones, and so are the chats closed
    /// since then. A chat's last read decides whether it is open.
    pub async fn agent_chats(
        &self,
        agent: AgentId,
        changed_since: i64,
        stop: &CancellationToken,
    ) -> Result<AgentChats, SearchError> {
        let assignee = json!({"field": "chats.assignee", "operator": "=", "value": agent});
        let mut last: HashMap<ChatId, SeenChat> = HashMap::new();
        for status in OPEN_STATUSES {
            let status = json!({"field": "chats.status", "operator": "=", "value": status});
            let filters = [assignee.clone(), status];
            let found = self.search_kept(&filters, None, stop, SeenChat::of).await?;
            last.extend(found.into_iter().map(|c| (c.id, c)));
        }
        let changed = json!({"field": "chats.updatedAt", "operator": ">=", "value": changed_since});
        let filters = [assignee, changed];
        let found = self.search_kept(&filters, None, stop, SeenChat::of).await?;
        last.extend(found.into_iter().map(|c| (c.id, c)));
        let (closed, open) = last.into_values().partition(|c| c.closed);
        Ok(AgentChats { open, closed })
    }
}

/// Adds what `keep` makes of the chats of `page` not seen yet.
fn keep_new<T>(
    found: &mut Vec<T>,
    seen: &mut HashSet<ChatId>,
    page: Vec<Found>,
    keep: &impl Fn(Found) -> T,
) {
    found.extend(
        page.into_iter()
            .filter(|(c, _)| seen.insert(c.id))
            .map(keep),
    );
}
