//! The `followups` table: checks that a chat's assignee answered
//! (`reassign_after`). A check is written with the assignment that starts
//! it, by `routing.rs`, with the rest of what an assignment moves.

use crate::domain::ChatId;
use std::time::Duration;

use super::outcomes::insert_outcome;
use super::routing::apply_assigned;
use super::{Assigned, Doubt, Followup, NewOutcome, Store, StoreError, now_ms, vals};

/// Takes due follow-ups, moving each one's due time on by the lease.
const CLAIM: &str = "UPDATE followups SET due_at = $1
  WHERE chat_id IN (SELECT chat_id FROM followups WHERE due_at <= $2 ORDER BY due_at LIMIT $3)
  RETURNING chat_id, pool, rule, agent, hops, tried, due_at";

impl Store {
    /// Takes up to `limit` follow-ups that are due, moving each one's due
    /// time on by `lease` so that a crash mid-check retries it later.
    /// `answers`: whether an answer seen by webhook settles a follow-up
    /// (in shadow mode it does not: the answer is reality's agent's, and
    /// the check reads whether the shadow's own assignee wrote).
    pub async fn claim_followups(
        &self,
        lease: Duration,
        limit: u32,
        answers: bool,
    ) -> Result<Vec<Followup>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // An answer seen by webhook settles the follow-up without a call,
        // unless its hop is in doubt: the check reads the chat and records
        // the hop (the answer may well be the new agent's).
        if answers {
            tx.run(
                "DELETE FROM followups WHERE answered_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM assign_intents i
                                WHERE i.chat_id = followups.chat_id AND i.queue_id IS NULL)",
                vals![],
            )
            .await?;
        }
        let until = now + lease.as_millis() as i64;
        let rows: Vec<FollowupRow> = tx.all(CLAIM, vals![until, now, limit]).await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(Followup::from).collect())
    }

    /// Records a follow-up check in one transaction: its outcomes, what a
    /// reassignment moved (with the next follow-up), notes; then, unless a
    /// reassignment replaced it, the follow-up is put off to `next_due_ms`
    /// or, with `None`, ended.
    pub async fn settle_followup(
        &self,
        chat_id: ChatId,
        outcomes: &[NewOutcome],
        assigned: Option<&Assigned>,
        next_due_ms: Option<i64>,
        doubt: Doubt,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for o in outcomes {
            insert_outcome(&mut tx, o, None, now).await?;
        }
        if let Some(a) = assigned {
            apply_assigned(&mut tx, a, None, now).await?;
        }
        // After what it moves: the open chat reads the intent's time.
        if let Doubt::Resolved { queue_id } = doubt {
            super::intents::settle_intent(&mut tx, chat_id, queue_id).await?;
        }
        // A reassignment wrote the next follow-up above; otherwise the check
        // is either put off or over.
        if assigned.is_none_or(|a| a.followup.is_none()) {
            match next_due_ms {
                Some(due) => {
                    let sql = "UPDATE followups SET due_at = $1 WHERE chat_id = $2";
                    tx.run(sql, vals![due, chat_id]).await?
                }
                None => {
                    let sql = "DELETE FROM followups WHERE chat_id = $1";
                    tx.run(sql, vals![chat_id]).await?
                }
            };
        }
        tx.commit().await?;
        Ok(())
    }

    /// When the next follow-up is due, if any.
    pub async fn followup_next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .db
            .value("SELECT MIN(due_at) FROM followups", vals![])
            .await?)
    }
}

/// A `followups` row as stored.
#[derive(sqlx::FromRow)]
struct FollowupRow {
    chat_id: ChatId,
    pool: String,
    rule: Option<String>,
    agent: String,
    hops: i64,
    tried: String,
    due_at: i64,
}

impl From<FollowupRow> for Followup {
    fn from(r: FollowupRow) -> Self {
        Self {
            chat_id: r.chat_id,
            pool: r.pool,
            rule: r.rule,
            agent: r.agent,
            hops: u32::try_from(r.hops).unwrap_or(0),
            tried: serde_json::from_str(&r.tried).unwrap_or_default(),
            due_at_ms: r.due_at,
        }
    }
}
