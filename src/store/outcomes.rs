//! The `outcomes` table: one row per decision or API attempt.

use super::{NewOutcome, OutcomeCount, OutcomeRow, Store, StoreError, Tx, vals};

const INSERT: &str = "INSERT INTO outcomes (chat_id, queue_id, at, rule, pool, strategy, agent,
        agent_id, result, http_status, error_code, latency_ms, reason)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

impl Store {
    pub async fn recent_outcomes(&self, limit: u32) -> Result<Vec<OutcomeRow>, StoreError> {
        let sql = "SELECT id, chat_id, queue_id, at, rule, pool, strategy, agent, agent_id, result,
                          http_status, error_code, latency_ms, reason
                     FROM outcomes ORDER BY id DESC LIMIT $1";
        Ok(self.db.all(sql, vals![limit]).await?)
    }

    /// Successful assignments per agent since `since_ms`.
    pub async fn assignments_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT agent, COUNT(*) FROM outcomes WHERE result = 'assigned' AND at >= $1
                    GROUP BY agent ORDER BY agent";
        Ok(self.db.all(sql, vals![since_ms]).await?)
    }

    /// Outcome counts by (result, rule), all time.
    pub async fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        let sql = "SELECT result, COALESCE(rule, '') AS rule, COALESCE(agent, '') AS agent,
                          COUNT(*) AS count
                     FROM outcomes GROUP BY result, rule, agent ORDER BY result, rule, agent";
        Ok(self.db.all(sql, vals![]).await?)
    }
}

pub(super) async fn insert_outcome(
    tx: &mut Tx,
    o: &NewOutcome,
    queue_id: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let values = vals![
        o.chat_id,
        queue_id,
        now,
        o.rule.as_deref(),
        o.pool.as_deref(),
        o.strategy,
        o.agent.as_deref(),
        o.agent_id,
        o.result,
        o.http_status.map(i64::from),
        o.error_code.as_deref(),
        o.latency.map(|d| d.as_secs_f64() * 1000.0),
        o.reason.as_deref()
    ];
    tx.run(INSERT, values).await?;
    Ok(())
}
