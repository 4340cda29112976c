//! The `outcomes` table: one row per decision or API attempt.

use std::collections::HashMap;

use jiff::Timestamp;

use super::{ChatId, NewOutcome, OutcomeCount, OutcomeRow, Store, StoreError, Tx, vals};

/// Assignment instants per agent name, oldest first (for `max_per_hour`).
pub type RecentAssignments = HashMap<String, Vec<Timestamp>>;

/// Each agent's assignments after $1 (Unix ms), oldest first: the outcomes
/// `assigned` (a reassignment hop is one too) and, while the database runs
/// in shadow mode, `shadow` (a shadow counts what it would have assigned; a
/// live daemon after a shadow run counts only what really was), and the
/// seats reserved under the routing lock whose assignment has not settled
/// yet (PostgreSQL: settling writes the outcome and clears the mark in one
/// transaction, so nothing is counted twice, and every daemon counts the
/// others' calls in flight), and the calls in doubt whose seat no longer
/// shows as reserved (a `chat.assigned` webhook for a call whose answer was
/// lost confirms the seat before the call is settled: without this the
/// assignment went uncounted until then, and an agent got one chat over
/// `max_per_hour`). The mode is the database's (`daemon_state`): every
/// daemon of a database runs in one.
pub(super) const RECENT_ASSIGNMENTS: &str = "SELECT agent, at FROM outcomes
     WHERE (result = 'assigned'
            OR result = 'shadow' AND EXISTS (SELECT 1 FROM daemon_state
                                              WHERE key = 'mode' AND value = 'shadow'))
       AND agent IS NOT NULL AND at > $1
    UNION ALL
    SELECT agent, assigned_at FROM open_chats WHERE reserved = 1 AND assigned_at > $1
    UNION ALL
    SELECT i.agent, i.at FROM assign_intents i
     WHERE i.at > $1 AND NOT EXISTS (SELECT 1 FROM open_chats o
                        WHERE o.chat_id = i.chat_id AND o.agent = i.agent AND o.reserved = 1)
    ORDER BY 1, 2";

/// The rows of [`RECENT_ASSIGNMENTS`], by agent.
pub(super) fn by_agent(rows: Vec<(String, i64)>) -> RecentAssignments {
    let mut out = RecentAssignments::new();
    for (agent, ms) in rows {
        if let Ok(at) = Timestamp::from_millisecond(ms) {
            out.entry(agent).or_default().push(at);
        }
    }
    out
}

/// The columns of an [`OutcomeRow`], before a filter and an order.
macro_rules! outcome_row {
    () => {
        "SELECT id, chat_id, queue_id, at, rule, pool, strategy, agent, agent_id, result,
                http_status, error_code, latency_ms, reason, arm
           FROM outcomes "
    };
}

const INSERT: &str = "INSERT INTO outcomes (chat_id, queue_id, at, rule, pool, strategy, agent,
        agent_id, result, http_status, error_code, latency_ms, reason, route, arm)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

impl Store {
    pub async fn recent_outcomes(&self, limit: u32) -> Result<Vec<OutcomeRow>, StoreError> {
        let sql = concat!(outcome_row!(), "ORDER BY id DESC LIMIT $1");
        Ok(self.db.all(sql, vals![limit]).await?)
    }

    /// A chat's outcomes, the newest first, at most `limit`.
    pub async fn chat_outcomes(
        &self,
        chat_id: ChatId,
        limit: u32,
    ) -> Result<Vec<OutcomeRow>, StoreError> {
        let sql = concat!(
            outcome_row!(),
            "WHERE chat_id = $1 ORDER BY id DESC LIMIT $2"
        );
        Ok(self.db.all(sql, vals![chat_id, limit]).await?)
    }

    /// Successful assignments per agent since `since_ms`.
    pub async fn assignments_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT agent, COUNT(*) FROM outcomes WHERE result = 'assigned' AND at >= $1
                    GROUP BY agent ORDER BY agent";
        Ok(self.db.all(sql, vals![since_ms]).await?)
    }

    /// Each agent's assignments after `since`, oldest first: what
    /// `max_per_hour` counts (see [`RECENT_ASSIGNMENTS`]).
    pub async fn recent_assignments(
        &self,
        since: Timestamp,
    ) -> Result<RecentAssignments, StoreError> {
        let rows = self
            .db
            .all(RECENT_ASSIGNMENTS, vals![since.as_millisecond()])
            .await?;
        Ok(by_agent(rows))
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
        o.reason.as_deref(),
        o.route,
        o.arm
    ];
    tx.run(INSERT, values).await?;
    super::history::record_outcome(tx, o, now).await?;
    Ok(())
}
