//! The plans of what `status`, the console's queue page, `report` and
//! `report --compare` read
//! (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL): what
//! `docs/benchmarks.md` shows and `tests/read_cost.rs` checks, that each
//! read is served by its index and reads a bounded number of rows (or, for
//! the counts and the report's window, only an index's entries).

use super::db::Stmt;
use super::{Backend, Store, StoreError, now_ms, vals};

impl Store {
    /// (what, plan) for each read, the plan one line per node.
    pub async fn read_plans(&self) -> Result<Vec<(&'static str, String)>, StoreError> {
        let now = now_ms();
        let reads: [(&'static str, Stmt, super::db::Vals); 9] = [
            ("queue depth", super::queue::DEPTH.into(), vals![]),
            ("waiting rows", super::queue::WAITING, vals![20_i64]),
            ("dead rows", super::console::DEAD, vals![i64::MAX, 101_i64]),
            ("active rows", super::console::ACTIVE, vals![101_i64]),
            (
                "active rows after",
                super::console::ACTIVE_AFTER,
                vals![0_i64, now, 1_i64, 101_i64],
            ),
            (
                "report outcomes",
                super::report::OUTCOMES,
                // A page much smaller than the window, as a page of 5,000
                // is to a month of outcomes.
                vals![now - 30 * 86_400_000, i64::MIN, now, 100_i64],
            ),
            (
                "report chats",
                super::report::CHATS.into(),
                vals![now - 30 * 86_400_000, i64::MIN, now, 100_i64],
            ),
            (
                "compare chats",
                super::compare::CHATS.into(),
                vals![now - 30 * 86_400_000, i64::MIN, now, 100_i64],
            ),
            (
                "report dead letters",
                super::report::DEAD,
                vals![now - 30 * 86_400_000, now, 100_i64],
            ),
        ];
        let mut out = Vec::new();
        for (what, stmt, values) in reads {
            let sql = stmt.text(self.backend());
            let explain = match self.backend() {
                Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
                Backend::Postgres => format!("EXPLAIN {sql}"),
            };
            out.push((what, self.db.plan(explain, values).await?.join("\n")));
        }
        Ok(out)
    }
}
