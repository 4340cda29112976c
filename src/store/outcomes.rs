//! The `outcomes` table: one row per decision or API attempt.

use sqlx::SqliteConnection;

use super::{NewOutcome, OutcomeCount, OutcomeRow, Store, StoreError};

impl Store {
    pub async fn recent_outcomes(&self, limit: u32) -> Result<Vec<OutcomeRow>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, queue_id, at, rule, pool, strategy, agent, agent_id, result,
                    http_status, error_code, latency_ms, reason
               FROM outcomes ORDER BY id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }

    /// Successful assignments per agent since `since_ms`.
    pub async fn assignments_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT agent, COUNT(*) FROM outcomes WHERE result = 'assigned' AND at >= ?
              GROUP BY agent ORDER BY agent",
        )
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Outcome counts by (result, rule), all time.
    pub async fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT result, COALESCE(rule, '') AS rule, COALESCE(agent, '') AS agent, COUNT(*) AS count
               FROM outcomes GROUP BY result, rule, agent ORDER BY result, rule, agent",
        )
        .fetch_all(&self.reader)
        .await?)
    }
}

pub(super) async fn insert_outcome(
    conn: &mut SqliteConnection,
    o: &NewOutcome,
    queue_id: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outcomes (chat_id, queue_id, at, rule, pool, strategy, agent, agent_id, result,
                               http_status, error_code, latency_ms, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(o.chat_id)
    .bind(queue_id)
    .bind(now)
    .bind(o.rule.as_deref())
    .bind(o.pool.as_deref())
    .bind(o.strategy)
    .bind(o.agent.as_deref())
    .bind(o.agent_id)
    .bind(o.result.as_str())
    .bind(o.http_status.map(i64::from))
    .bind(o.error_code.as_deref())
    .bind(o.latency.map(|d| d.as_secs_f64() * 1000.0))
    .bind(o.reason.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}
