//! Each agent's seats (open chats, plus chats on their way away from them)
//! in time that does not grow with the open chats (issue 23).
//!
//! `open_chats` stays the truth, one row per chat. Triggers on it append
//! every change as +1/-1 rows to `agent_seat_changes`: appends only, so
//! that writers (a close, a reconciliation, a decision) never wait on one
//! agent's counter in opposite orders. The decision, under the routing
//! lock, folds the changes into `agent_seats` ([`fold_seats`]; retention
//! too, `Store::fold_seats`, for SQLite, whose decisions take their seats
//! in memory, and a quiet PostgreSQL cluster) and reads
//! the sum of both ([`SEATS`]): one row per agent plus the changes since the
//! last decision. A read without the lock sums the same two tables, so it
//! is exact too, only with more changes to add.

use super::db::Stmt;
use super::{Tx, vals};

/// Seats per agent, agents with none left out.
pub(super) const SEATS: &str = "SELECT agent, CAST(SUM(n) AS BIGINT) FROM (
        SELECT agent, seats AS n FROM agent_seats
        UNION ALL SELECT agent, delta AS n FROM agent_seat_changes) AS s
     GROUP BY agent HAVING SUM(n) > 0";

/// The changes added to the counters, then dropped. PostgreSQL does both
/// in one statement, so a change committed between them is neither lost
/// nor counted twice; SQLite's one writer holds both.
const FOLD: [Stmt; 2] = [
    Stmt::each(
        "INSERT INTO agent_seats (agent, seats)
         SELECT agent, SUM(delta) FROM agent_seat_changes WHERE true GROUP BY agent
         ON CONFLICT (agent) DO UPDATE SET seats = agent_seats.seats + excluded.seats",
        "WITH gone AS (DELETE FROM agent_seat_changes RETURNING agent, delta)
         INSERT INTO agent_seats (agent, seats)
         SELECT agent, SUM(delta) FROM gone GROUP BY agent
         ON CONFLICT (agent) DO UPDATE SET seats = agent_seats.seats + excluded.seats",
    ),
    Stmt::each("DELETE FROM agent_seat_changes", "SELECT 1 WHERE FALSE"),
];

/// Folds the changes since the last fold into the counters. Only under the
/// routing lock: two folds at once could count one change twice.
pub(super) async fn fold_seats(tx: &mut Tx) -> Result<(), sqlx::Error> {
    for stmt in FOLD {
        tx.run(stmt, vals![]).await?;
    }
    Ok(())
}

impl super::Store {
    /// The plans of what a decision reads that could grow with the open
    /// chats: the seats, and the hourly counts (whose reserved seats are
    /// the decisions in flight), one line per node; `tests/seats.rs`
    /// checks that neither reads `open_chats` but through its index of
    /// reserved seats.
    pub async fn decision_read_plans(
        &self,
    ) -> Result<Vec<(&'static str, String)>, super::StoreError> {
        let reads: [(&'static str, &'static str); 2] = [
            ("seats", SEATS),
            ("hourly counts", super::outcomes::RECENT_ASSIGNMENTS),
        ];
        let mut out = Vec::new();
        for (what, sql) in reads {
            let explain = match self.backend() {
                super::Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
                super::Backend::Postgres => format!("EXPLAIN {sql}"),
            };
            let values = if sql.contains("$1") {
                vals![0_i64]
            } else {
                vals![]
            };
            out.push((what, self.db.plan(explain, values).await?.join("\n")));
        }
        Ok(out)
    }
}
