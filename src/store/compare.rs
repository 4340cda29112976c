//! What `assignd report --compare` reads: each chat that arrived in a
//! window, with its arm and what is known of its fate. Only reads.

use super::report::Paged;
use super::{ChatId, Store, StoreError};

/// The chats that arrived after ($1 arrived_at, $2 chat_id) and before $3
/// (Unix ms) and whose arrival is known, at most $4 a page, in the order
/// of `chat_history`'s arrival index, each with its outcomes' facts (read
/// through `outcomes_by_chat`): its arm (an experiment's, kept in
/// `chat_arms`; else `shadow` if a shadow decided it; else none: a chat
/// decided with no experiment running is in no arm), the shadow's decision, the rule of its first
/// assignment (after hours or not), its reassignment hops and hand-backs.
pub(super) const CHATS: &str = "SELECT h.chat_id, h.arrived_at, h.assigned_at, h.assigned_agent,
        h.first_reply_at,
        COALESCE((SELECT a.arm FROM chat_arms a WHERE a.chat_id = h.chat_id),
                 (SELECT o.arm FROM outcomes o WHERE o.chat_id = h.chat_id
                     AND o.arm = 'shadow' ORDER BY o.id LIMIT 1)) AS arm,
        (SELECT o.at FROM outcomes o WHERE o.chat_id = h.chat_id AND o.result = 'shadow'
          ORDER BY o.id LIMIT 1) AS shadow_at,
        (SELECT o.agent FROM outcomes o WHERE o.chat_id = h.chat_id AND o.result = 'shadow'
          ORDER BY o.id LIMIT 1) AS shadow_agent,
        (SELECT o.rule FROM outcomes o WHERE o.chat_id = h.chat_id
            AND o.result IN ('assigned', 'shadow') ORDER BY o.id LIMIT 1) AS rule,
        (SELECT COUNT(*) FROM outcomes o WHERE o.chat_id = h.chat_id
            AND o.route = 'reassigned' AND o.result IN ('assigned', 'shadow')) AS reassignments,
        (SELECT COUNT(*) FROM outcomes o WHERE o.chat_id = h.chat_id
            AND o.route = 'handed_back' AND o.result = 'skipped') AS handbacks
   FROM chat_history h
  WHERE (h.arrived_at, h.chat_id) > ($1, $2) AND h.arrived_at < $3 AND h.arrival != 'seen'
  ORDER BY h.arrived_at, h.chat_id LIMIT $4";

/// A chat as the comparison reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CompareChat {
    pub chat_id: ChatId,
    #[sqlx(rename = "arrived_at")]
    pub arrived_at_ms: i64,
    /// Its first assignment, by anyone (Unix ms), and to whom.
    #[sqlx(rename = "assigned_at")]
    pub assigned_at_ms: Option<i64>,
    pub assigned_agent: Option<String>,
    /// Its first agent reply (Unix ms).
    #[sqlx(rename = "first_reply_at")]
    pub first_reply_at_ms: Option<i64>,
    /// `a`, `b`, `shadow` or `left`; none when assignd decided nothing.
    pub arm: Option<String>,
    /// The shadow's first decision to assign it, and to whom.
    #[sqlx(rename = "shadow_at")]
    pub shadow_at_ms: Option<i64>,
    pub shadow_agent: Option<String>,
    /// The rule of its first assignment by assignd (or the shadow's).
    pub rule: Option<String>,
    pub reassignments: i64,
    pub handbacks: i64,
}

impl Paged for CompareChat {
    fn key(&self) -> (i64, i64) {
        (self.arrived_at_ms, self.chat_id.0)
    }
}

impl Store {
    /// The chats that arrived in `[since_ms, until_ms)` and whose arrival
    /// is known, oldest first, each handed to `each`, a page at a time.
    pub async fn compare_chats(
        &self,
        since_ms: i64,
        until_ms: i64,
        each: impl FnMut(CompareChat),
    ) -> Result<(), StoreError> {
        self.pages(CHATS.into(), (since_ms, until_ms), each).await
    }
}
