//! The `followups` table: checks that a chat's assignee answered
//! (`reassign_after`).

use std::time::Duration;

use sqlx::SqliteConnection;

use super::outcomes::insert_outcome;
use super::routing::apply_assigned;
use super::{Assigned, Followup, NewOutcome, Store, StoreError, now_ms};

impl Store {
    /// Takes up to `limit` follow-ups that are due, moving each one's due
    /// time on by `lease` so that a crash mid-check retries it later.
    pub async fn claim_followups(
        &self,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Followup>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // An answer seen by webhook settles the follow-up without a call.
        sqlx::query("DELETE FROM followups WHERE answered_at IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        let rows: Vec<FollowupRow> = sqlx::query_as(
            "UPDATE followups SET due_at = ?1
              WHERE chat_id IN (SELECT chat_id FROM followups WHERE due_at <= ?2 ORDER BY due_at LIMIT ?3)
          RETURNING chat_id, pool, rule, agent, hops, tried, due_at",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(Followup::from).collect())
    }

    /// Records a follow-up check in one transaction: its outcomes, what a
    /// reassignment moved (with the next follow-up), notes; then, unless a
    /// reassignment replaced it, the follow-up is put off to `next_due_ms`
    /// or, with `None`, ended.
    pub async fn settle_followup(
        &self,
        chat_id: i64,
        outcomes: &[NewOutcome],
        assigned: Option<&Assigned>,
        next_due_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for o in outcomes {
            insert_outcome(&mut tx, o, None, now).await?;
        }
        if let Some(a) = assigned {
            apply_assigned(&mut tx, a, None, now).await?;
        }
        // A reassignment wrote the next follow-up above; otherwise the check
        // is either put off or over.
        if assigned.is_none_or(|a| a.followup.is_none()) {
            match next_due_ms {
                Some(due) => {
                    sqlx::query("UPDATE followups SET due_at = ? WHERE chat_id = ?")
                        .bind(due)
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM followups WHERE chat_id = ?")
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// When the next follow-up is due, if any.
    pub async fn followup_next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM followups")
            .fetch_one(&self.reader)
            .await?)
    }
}

/// A `followups` row as stored.
#[derive(sqlx::FromRow)]
struct FollowupRow {
    chat_id: i64,
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

pub(super) async fn upsert_followup(
    conn: &mut SqliteConnection,
    f: &Followup,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO followups (chat_id, pool, rule, agent, hops, tried, due_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (chat_id) DO UPDATE SET pool = excluded.pool, rule = excluded.rule, agent = excluded.agent,
             hops = excluded.hops, tried = excluded.tried, due_at = excluded.due_at, answered_at = NULL",
    )
    .bind(f.chat_id)
    .bind(&f.pool)
    .bind(f.rule.as_deref())
    .bind(&f.agent)
    .bind(f.hops as i64)
    .bind(serde_json::to_string(&f.tried).unwrap_or_else(|_| "[]".into()))
    .bind(f.due_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}
