//! The `assign_intents` table: assignment calls whose answer is not known
//! yet, and the claim check that comes before each call (SPEC §15.1).
//!
//! Before every `PUT /chats/assignee` one transaction confirms the claim
//! the call is made for (the queue row's lease, renewed; or the follow-up's
//! claim) and writes the intent. The transaction that records the answer
//! removes it. An intent that stays (the answer was lost, the process died,
//! the database failed before the outcome was written) keeps its seat, and
//! the chat is read from HelpCrunch before anything else is decided for it.

use std::time::Duration;

use crate::domain::{AgentId, ChatId, Route};

use super::{LeaseKey, Store, StoreError, Tx, now_ms, vals};

/// An assignment call about to be made, or made with no known answer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Intent {
    pub chat_id: ChatId,
    pub agent: String,
    pub agent_id: AgentId,
    pub rule: Option<String>,
    pub pool: Option<String>,
    pub route: Option<Route>,
    /// The queue row the call is made for; `None` for a reassignment hop.
    pub queue_id: Option<i64>,
    /// The daemon that made it.
    pub owner: String,
    #[sqlx(rename = "at")]
    pub at_ms: i64,
}

/// What a call is made for, confirmed right before it is sent.
#[derive(Debug, Clone, Copy)]
pub enum CallClaim<'a> {
    /// A queue row under this lease; confirming renews it for `lease`.
    Row {
        queue_id: i64,
        key: &'a LeaseKey,
        lease: Duration,
    },
    /// A follow-up claimed until `until_ms`; confirming moves that on by
    /// `lease`.
    Followup {
        chat_id: ChatId,
        until_ms: i64,
        lease: Duration,
    },
}

/// Renews a row's lease while its claim (owner and epoch) holds it.
const RENEW_ROW: &str = "UPDATE queue SET lease_until = $1
  WHERE id = $2 AND state = 'leased' AND lease_owner = $3 AND lease_epoch = $4";

/// Moves a claimed follow-up's due time on while the claim is still ours.
const RENEW_FOLLOWUP: &str = "UPDATE followups SET due_at = $1 WHERE chat_id = $2 AND due_at = $3";

/// Records a call's intent. An intent of the same claim (the same queue
/// row, or a hop of the chat's follow-up) is replaced: it was resolved
/// before this call was decided. One of another claim is not: that call
/// may still be on its way, and its chat has one call in doubt at a time.
const UPSERT_INTENT: &str = "INSERT INTO assign_intents
        (chat_id, agent, agent_id, rule, pool, route, queue_id, owner, at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (chat_id) DO UPDATE SET agent = excluded.agent, agent_id = excluded.agent_id,
        rule = excluded.rule, pool = excluded.pool, route = excluded.route,
        queue_id = excluded.queue_id, owner = excluded.owner, at = excluded.at
    WHERE COALESCE(assign_intents.queue_id, -1) = COALESCE(excluded.queue_id, -1)";

const SELECT_INTENTS: &str =
    "SELECT chat_id, agent, agent_id, rule, pool, route, queue_id, owner, at FROM assign_intents";
const SELECT_INTENT: &str =
    "SELECT chat_id, agent, agent_id, rule, pool, route, queue_id, owner, at
    FROM assign_intents WHERE chat_id = $1";

/// Whether a call may be sent, as [`Store::begin_call`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Began {
    /// The claim is confirmed and the intent recorded: send it.
    Confirmed,
    /// The claim is no longer held: send nothing.
    ClaimLost,
    /// Another claim's call for the chat is in doubt (this intent): send
    /// nothing until that one is resolved.
    Busy(Box<Intent>),
}

impl Store {
    /// Confirms `claim` (renewing it) and records `intent`, in one
    /// transaction; see [`Began`] for when the call must not be sent.
    pub async fn begin_call(
        &self,
        claim: CallClaim<'_>,
        intent: &Intent,
    ) -> Result<Began, StoreError> {
        let mut tx = self.begin_write().await?;
        if !renew(&mut tx, claim).await? {
            tx.commit().await?;
            return Ok(Began::ClaimLost);
        }
        let i = intent;
        let values = vals![
            i.chat_id,
            &i.agent,
            i.agent_id,
            i.rule.as_deref(),
            i.pool.as_deref(),
            i.route,
            i.queue_id,
            &i.owner,
            now_ms(),
        ];
        if tx.run(UPSERT_INTENT, values).await? == 0 {
            // The conflicting row stays locked until the commit: the
            // statement locked it (PostgreSQL), or the write did (SQLite).
            let other: Vec<Intent> = tx.all(SELECT_INTENT, vals![i.chat_id]).await?;
            tx.commit().await?;
            let other = other.into_iter().next().unwrap_or_else(|| i.clone());
            return Ok(Began::Busy(Box::new(other)));
        }
        tx.commit().await?;
        Ok(Began::Confirmed)
    }

    /// Renews `claim` while it is still held; false when it is not.
    pub async fn renew_claim(&self, claim: CallClaim<'_>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let held = renew(&mut tx, claim).await?;
        tx.commit().await?;
        Ok(held)
    }

    /// The call of unknown answer recorded for `chat`, if any.
    pub async fn intent_for(&self, chat: ChatId) -> Result<Option<Intent>, StoreError> {
        Ok(self.db.first(SELECT_INTENT, vals![chat]).await?)
    }

    /// Every call of unknown answer: the seats they keep, at start and at
    /// takeover.
    pub async fn intents(&self) -> Result<Vec<Intent>, StoreError> {
        Ok(self.db.all(SELECT_INTENTS, vals![]).await?)
    }

    /// Forgets the intent for `chat`: the call was answered and the answer
    /// says it was not applied, or reading the chat settled the question.
    pub async fn clear_intent(&self, chat: ChatId) -> Result<(), StoreError> {
        self.db
            .run("DELETE FROM assign_intents WHERE chat_id = $1", vals![chat])
            .await?;
        Ok(())
    }
}

/// Renews a claim inside `tx`; whether it is still held.
async fn renew(tx: &mut Tx, claim: CallClaim<'_>) -> Result<bool, sqlx::Error> {
    let n = match claim {
        CallClaim::Row {
            queue_id,
            key,
            lease,
        } => {
            let until = now_ms() + lease.as_millis() as i64;
            let values = vals![until, queue_id, &key.owner, key.epoch];
            tx.run(RENEW_ROW, values).await?
        }
        CallClaim::Followup {
            chat_id,
            until_ms,
            lease,
        } => {
            // The same value again when renewed within one millisecond:
            // still ours.
            let until = (now_ms() + lease.as_millis() as i64).max(until_ms);
            tx.run(RENEW_FOLLOWUP, vals![until, chat_id, until_ms])
                .await?
        }
    };
    Ok(n == 1)
}

/// Removes the intent for `chat` made for queue row `queue_id` (`None`: a
/// follow-up's hop) inside the transaction that records its answer.
pub(super) async fn settle_intent(
    tx: &mut Tx,
    chat: ChatId,
    queue_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM assign_intents
        WHERE chat_id = $1 AND COALESCE(queue_id, -1) = COALESCE($2, -1)";
    tx.run(sql, vals![chat, queue_id]).await?;
    Ok(())
}
