//! The `chat_history` table: each chat the daemon decided, as it first
//! decided it, and when it was seen closed, for `simulate --history`; and
//! what measuring routing needs of it (`facts.rs`).
//! Written inside transactions that already run (a settle, a close
//! webhook), so recording costs a statement or two, not a round trip.
//! This table comes before the chat's seat, follow-up and answers in
//! every transaction that writes them (PostgreSQL: two transactions never
//! wait for each other's rows).

mod facts;

use crate::domain::ChatId;

use super::db::{Stmt, Tx};
use super::{Store, StoreError, vals};

pub use facts::FirstFact;
pub(super) use facts::{record_assignee, record_outcome, record_reply};

/// The chat of queue row `$1` as the worker decided it (`$2` now), one row
/// of `chat_id, arrived_at, snapshot, attrs, priority`. What a producer
/// wrote with the wrong type is recorded as the worker read it (no
/// snapshot or attributes, enqueued now, priority bounded as the claim
/// bounds it), so that one bad row never breaks a replay or escapes
/// pruning.
macro_rules! decided {
    (sqlite) => {
        "SELECT chat_id,
            CASE WHEN typeof(enqueued_at) = 'integer' THEN enqueued_at ELSE $2 END AS arrived_at,
            CASE WHEN typeof(snapshot) = 'text' THEN snapshot END AS snapshot,
            CASE WHEN typeof(attrs) = 'text' THEN attrs END AS attrs,
            CASE WHEN typeof(priority) = 'integer'
                 THEN MAX(-1000000, MIN(1000000, priority)) ELSE 0 END AS priority
       FROM queue WHERE id = $1 AND typeof(chat_id) = 'integer'"
    };
    (postgres) => {
        "SELECT chat_id, COALESCE(enqueued_at, $2) AS arrived_at, snapshot, attrs,
            GREATEST(-1000000, LEAST(1000000, priority)) AS priority
       FROM queue WHERE id = $1"
    };
}

/// The first arrival wins (a later row of the same chat, a hand-back,
/// changes nothing); a row already there is not even locked (PostgreSQL:
/// a webhook may hold its other rows).
macro_rules! record {
    ($dialect:ident) => {
        concat!(
            "INSERT INTO chat_history (chat_id, arrived_at, snapshot, attrs, priority) ",
            decided!($dialect),
            " ON CONFLICT (chat_id) DO NOTHING"
        )
    };
}

/// A row only a fact wrote so far (`history/facts.rs`) takes the
/// decision's columns, and the earlier of the two arrivals (`$least`: the
/// dialect's name for the smaller of two values).
macro_rules! fill {
    ($dialect:ident, $least:literal) => {
        concat!(
            "UPDATE chat_history SET arrived_at = ",
            $least,
            "(chat_history.arrived_at, d.arrived_at),
                snapshot = d.snapshot, attrs = d.attrs, priority = d.priority,
                arrival = 'decided'
               FROM (",
            decided!($dialect),
            ") AS d WHERE chat_history.chat_id = d.chat_id AND chat_history.arrival != 'decided'"
        )
    };
}

const RECORD: Stmt = Stmt::each(record!(sqlite), record!(postgres));
const FILL: Stmt = Stmt::each(fill!(sqlite, "MIN"), fill!(postgres, "LEAST"));

/// The first close seen is kept: a later one (reconciliation finding the
/// chat closed again) says nothing new.
const CLOSE: &str =
    "UPDATE chat_history SET closed_at = $2 WHERE chat_id = $1 AND closed_at IS NULL";

/// Many closes at once, `$1` a JSON array of `[chat_id, closed_at_ms]`.
const CLOSE_MANY: Stmt = Stmt::each(
    "UPDATE chat_history SET closed_at = json_extract(j.value, '$[1]')
       FROM json_each($1) AS j
      WHERE chat_history.chat_id = json_extract(j.value, '$[0]')
        AND chat_history.closed_at IS NULL",
    "UPDATE chat_history h SET closed_at = (j.value->>1)::bigint
       FROM jsonb_array_elements($1::jsonb) AS j(value)
      WHERE h.chat_id = (j.value->>0)::bigint AND h.closed_at IS NULL",
);

const SINCE: &str = "SELECT chat_id, arrived_at AS arrived_at_ms, snapshot, attrs, priority,
       closed_at AS closed_at_ms
  FROM chat_history WHERE arrived_at >= $1 AND arrival = 'decided' ORDER BY arrived_at, chat_id";

/// Every decision recorded since `$1`, oldest first: the last `assigned`
/// one of a chat is what really happened to it.
const OUTCOMES: &str = "SELECT chat_id, result, rule, agent, reason FROM outcomes
  WHERE at >= $1 AND result IN ('assigned', 'shadow', 'no_agent', 'no_match', 'skipped') ORDER BY id";

/// The agents' answers still known (they are forgotten when a chat closes).
const ANSWERS: &str = "SELECT chat_id, MIN(at) FROM chat_answers GROUP BY chat_id";

/// A recorded chat.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    pub chat_id: ChatId,
    pub arrived_at_ms: i64,
    /// The chat object (JSON) the worker decided on, if the row had one.
    pub snapshot: Option<String>,
    pub attrs: Option<String>,
    pub priority: i64,
    pub closed_at_ms: Option<i64>,
}

/// A recorded decision: (chat, result, rule, agent, reason).
pub type HistoryOutcome = (
    ChatId,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// What the history of a window holds: its chats, the outcomes recorded
/// for them (oldest first), and the first answer of chats still open.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub chats: Vec<HistoryRow>,
    /// (chat, result, rule, agent, reason).
    pub outcomes: Vec<HistoryOutcome>,
    pub answers: Vec<(ChatId, i64)>,
}

/// Records the chat of queue row `queue_id` as first decided (in the
/// settle's transaction, at `now` ms).
pub(super) async fn record_arrival(
    tx: &mut Tx,
    queue_id: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    if tx.run(RECORD, vals![queue_id, now]).await? == 0 {
        tx.run(FILL, vals![queue_id, now]).await?;
    }
    Ok(())
}

/// Records that `chat_id` was seen closed at `at_ms` (in the webhook's
/// transaction).
pub(super) async fn record_close(
    tx: &mut Tx,
    chat_id: ChatId,
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    tx.run(CLOSE, vals![chat_id, at_ms]).await?;
    Ok(())
}

impl Store {
    /// Records that `agent` has `chats` as of `at_ms` where no assignment
    /// was recorded (load reconciliation: without webhooks, the first sign
    /// of one; in shadow mode, who really took the chat). In a transaction
    /// of its own, after the reconciliation's, that writes this table alone.
    pub async fn record_assignees(
        &self,
        agent: &str,
        chats: &[ChatId],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        if chats.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chat in chats {
            record_assignee(&mut tx, *chat, agent, at_ms, false).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records, where no first reply was recorded, that `agent` (a name,
    /// or `#<id>`) had written in each of `chats` by `at_ms`, when a search
    /// read them: without `message.chat.agent` webhooks, the first sign of
    /// a reply (its time known only to within a `[load] refresh`).
    pub async fn record_replies_read(
        &self,
        replies: &[(ChatId, String)],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        if replies.is_empty() {
            return Ok(());
        }
        // A read cannot tell assignd's own reply (a rule's `reply`, posted
        // in an agent's name) from the agent's: a chat it posted one to is
        // left to the webhooks (one recorded, not posted, in shadow mode
        // keeps its error).
        let own = "SELECT chat_id FROM outbox WHERE chat_id = $1 AND kind = 'message'
            AND state = 'done' AND last_error IS NULL";
        let mut tx = self.begin_write().await?;
        for (chat, agent) in replies {
            let posted: Vec<(ChatId,)> = tx.all(own, vals![*chat]).await?;
            if posted.is_empty() {
                record_reply(&mut tx, *chat, Some(agent), None, at_ms).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records chats seen closed by a search (load reconciliation), each
    /// with when it closed, in one statement.
    pub async fn record_closes(&self, closed: &[(ChatId, i64)]) -> Result<(), StoreError> {
        if closed.is_empty() {
            return Ok(());
        }
        let pairs: Vec<[i64; 2]> = closed.iter().map(|(c, at)| [c.0, *at]).collect();
        // Numbers only: this cannot fail.
        let json = serde_json::to_string(&pairs).unwrap_or_default();
        let mut tx = self.begin_write().await?;
        tx.run(CLOSE_MANY, vals![json]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The chats that arrived at or after `since_ms`, their outcomes, and
    /// the answers still known.
    pub async fn history_since(&self, since_ms: i64) -> Result<History, StoreError> {
        Ok(History {
            chats: self.db.all(SINCE, vals![since_ms]).await?,
            outcomes: self.db.all(OUTCOMES, vals![since_ms]).await?,
            answers: self.db.all(ANSWERS, vals![]).await?,
        })
    }
}
