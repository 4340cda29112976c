//! Pool `handback`: who answered which chat and when its customer last
//! wrote (from webhooks), the open chats of agents who are absent, and the
//! queue rows that hand those chats back, each with its outcome and a mark
//! so that a chat goes back once per absence.

use crate::domain::{Arm, ChatId};

use super::db::Stmt;
use super::outcomes::insert_outcome;
use super::{NewOutcome, Store, StoreError, Tx, now_ms, vals};

/// An answer counts for the agent the event names, else for the chat's
/// assignee (an event without a known agent).
const RECORD_ANSWER: &str = "INSERT INTO chat_answers (chat_id, agent, at)
    SELECT $1, who, $3
      FROM (SELECT COALESCE($2, (SELECT agent FROM open_chats WHERE chat_id = $1)) AS who) AS w
     WHERE who IS NOT NULL
    ON CONFLICT (chat_id, agent) DO UPDATE SET at = excluded.at";

const RECORD_CUSTOMER: &str = "INSERT INTO chat_customer_messages (chat_id, at) VALUES ($1, $2)
    ON CONFLICT (chat_id) DO UPDATE SET at = excluded.at";

/// The open chats of the agents `$agents` names (`$1`, a JSON array of
/// names), with what deciding a hand-back needs: the pool of the chat's
/// last assignment (`$2`: `assigned`, or `shadow` in shadow mode; only if
/// it was to this agent: a chat moved by hand was
/// not assigned from the pool), the chat's experiment arm (whose rules have
/// the pool), the agent's last answer, the customer's last message, and the
/// mark of an earlier hand-back. One read for every absent agent, in each
/// dialect's way of reading a JSON array.
macro_rules! chats_of {
    ($agents:literal) => {
        concat!(
            "SELECT o.chat_id, o.agent, o.assigned_at,
       (SELECT CASE WHEN x.agent = o.agent THEN x.pool END FROM outcomes x
         WHERE x.chat_id = o.chat_id AND x.result IN ('assigned', $2)
         ORDER BY x.id DESC LIMIT 1) AS pool,
       (SELECT r.arm FROM chat_arms r WHERE r.chat_id = o.chat_id) AS arm,
       (SELECT a.at FROM chat_answers a WHERE a.chat_id = o.chat_id AND a.agent = o.agent)
           AS answered_at,
       (SELECT c.at FROM chat_customer_messages c WHERE c.chat_id = o.chat_id) AS customer_at,
       (SELECT h.at FROM handbacks h WHERE h.chat_id = o.chat_id AND h.agent = o.agent)
           AS handed_at
  FROM open_chats o
 WHERE o.agent IN (",
            $agents,
            ") AND o.reserved = 0 ORDER BY o.agent, o.chat_id"
        )
    };
}

const CHATS_OF: Stmt = Stmt::each(
    chats_of!("SELECT value FROM json_each($1)"),
    chats_of!("SELECT jsonb_array_elements_text($1::jsonb)"),
);

/// A hand-back row: due now, at the normal claim priority (0), so that it
/// goes before older waiting chats but behind urgent ones. A chat with an
/// active row gets none (the unique index; the trigger ignores it).
const ENQUEUE: &str = "INSERT INTO queue (chat_id, priority, handback, enqueued_at, updated_at)
    VALUES ($1, 0, $2, $3, $3) RETURNING id";

/// A chat that already waits on a pending row: that row becomes the
/// hand-back (a leased one is in flight; the next round sees it again).
const MARK_PENDING: &str = "UPDATE queue SET handback = $2, next_attempt_at = $3, updated_at = $3
  WHERE chat_id = $1 AND state = 'pending' RETURNING id";

const MARK: &str = "INSERT INTO handbacks (chat_id, agent, at) VALUES ($1, $2, $3)
    ON CONFLICT (chat_id) DO UPDATE SET agent = excluded.agent, at = excluded.at";

/// Marks of chats that are no longer open with the agent they were
/// handed back from.
const FORGET_MOVED: &str = "DELETE FROM handbacks WHERE NOT EXISTS
    (SELECT 1 FROM open_chats o WHERE o.chat_id = handbacks.chat_id AND o.agent = handbacks.agent)";

/// One open chat of an absent agent, as [`Store::handback_chats`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HandbackChat {
    pub chat_id: ChatId,
    pub agent: String,
    pub assigned_at: i64,
    /// The pool of the chat's last assignment, if it was to this agent.
    pub pool: Option<String>,
    /// The chat's experiment arm, if one was drawn for it.
    pub arm: Option<Arm>,
    /// When this agent last wrote in the chat.
    pub answered_at: Option<i64>,
    /// When the customer last wrote in the chat.
    pub customer_at: Option<i64>,
    /// When the chat was last handed back from this agent.
    pub handed_at: Option<i64>,
}

/// A chat to hand back: from `agent`, recorded as `outcome` (whose reason
/// the queue row carries).
#[derive(Debug, Clone)]
pub struct HandBack {
    pub agent: String,
    pub outcome: NewOutcome,
}

impl Store {
    /// Agents marked away: (name, until, since), Unix ms.
    pub async fn away_since(&self) -> Result<Vec<(String, Option<i64>, i64)>, StoreError> {
        let sql = "SELECT agent, until, since FROM agent_away";
        Ok(self.db.all(sql, vals![]).await?)
    }

    /// Records that `agent` has written in the chat (seen in HelpCrunch).
    pub async fn note_answer(&self, chat_id: ChatId, agent: &str) -> Result<(), StoreError> {
        let values = vals![chat_id, agent, now_ms()];
        self.db.run(RECORD_ANSWER, values).await?;
        Ok(())
    }

    /// The open chats of `agents`, with what deciding a hand-back needs,
    /// by agent then chat: one read however many are absent.
    pub async fn handback_chats(
        &self,
        agents: &[&str],
        shadow: bool,
    ) -> Result<Vec<HandbackChat>, StoreError> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let names = serde_json::to_string(agents).expect("names serialize");
        // In shadow mode its own decisions count as the chats' assignments;
        // live, only the ones made (a shadow's never moved a chat).
        let assigned = if shadow { "shadow" } else { "assigned" };
        Ok(self.db.all(CHATS_OF, vals![names, assigned]).await?)
    }

    /// The agents some chat was handed back from.
    pub async fn handback_agents(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .db
            .all("SELECT DISTINCT agent FROM handbacks", vals![])
            .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    /// Hands chats back, in one transaction: a queue row for each (or the
    /// chat's pending row, marked), its outcome, and its mark; then forgets
    /// the marks of `present` agents and of chats that moved on. Returns
    /// how many chats went back (one with a row in flight waits for the
    /// next round).
    pub async fn hand_back(
        &self,
        moves: &[HandBack],
        present: &[String],
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut moved = 0;
        for m in moves {
            let chat = m.outcome.chat_id;
            let reason = m.outcome.reason.as_deref();
            let mut ids: Vec<(i64,)> = tx.all(ENQUEUE, vals![chat, reason, now]).await?;
            if ids.is_empty() {
                ids = tx.all(MARK_PENDING, vals![chat, reason, now]).await?;
            }
            let Some((queue_id,)) = ids.first() else {
                continue;
            };
            insert_outcome(&mut tx, &m.outcome, Some(*queue_id), now).await?;
            tx.run(MARK, vals![chat, &m.agent, now]).await?;
            moved += 1;
        }
        for agent in present {
            let sql = "DELETE FROM handbacks WHERE agent = $1";
            tx.run(sql, vals![agent]).await?;
        }
        tx.run(FORGET_MOVED, vals![]).await?;
        self.commit_queue_change(tx).await?;
        Ok(moved)
    }

    /// Forgets answers, customer messages and marks older than `before_ms`
    /// of chats no longer open.
    pub async fn prune_handback(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for table in [
            "DELETE FROM chat_answers WHERE at < $1
               AND chat_id NOT IN (SELECT chat_id FROM open_chats)",
            "DELETE FROM chat_customer_messages WHERE at < $1
               AND chat_id NOT IN (SELECT chat_id FROM open_chats)",
            "DELETE FROM handbacks WHERE at < $1
               AND chat_id NOT IN (SELECT chat_id FROM open_chats)",
        ] {
            n += tx.run(table, vals![before_ms]).await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// `message.chat.agent`: `agent` (else the chat's assignee) answered.
pub(super) async fn record_answer(
    tx: &mut Tx,
    chat_id: ChatId,
    agent: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    tx.run(RECORD_ANSWER, vals![chat_id, agent, now]).await?;
    Ok(())
}

/// `message.chat.customer`: the customer wrote.
pub(super) async fn record_customer_message(
    tx: &mut Tx,
    chat_id: ChatId,
    now: i64,
) -> Result<(), sqlx::Error> {
    tx.run(RECORD_CUSTOMER, vals![chat_id, now]).await?;
    Ok(())
}

/// A closed chat: nothing about it matters to a hand-back any more.
pub(super) async fn forget_chat(tx: &mut Tx, chat_id: ChatId) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM chat_answers WHERE chat_id = $1",
        "DELETE FROM chat_customer_messages WHERE chat_id = $1",
        "DELETE FROM handbacks WHERE chat_id = $1",
    ] {
        tx.run(sql, vals![chat_id]).await?;
    }
    Ok(())
}
