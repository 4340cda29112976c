//! The database a test's daemon runs on, SQLite or PostgreSQL, as the test
//! reads it: one test body, run once per backend. (A test file includes
//! this beside `mod common` and `support/postgres.rs` as `mod postgres`.)
//! Without a PostgreSQL server the harness fails under CI and skips loudly
//! elsewhere (`postgres::binaries`).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, SqlitePool};

use crate::common::TestApp;
use crate::postgres;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A producer's connection to the app's database, either kind.
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Points `app` at a fresh, migrated database of `backend`; None where
    /// PostgreSQL is missing outside CI.
    pub async fn of(app: &TestApp, backend: Backend) -> Option<Db> {
        match backend {
            Backend::Sqlite => {
                app.migrate().await;
                Some(Db::Sqlite(app.producer().await))
            }
            Backend::Postgres => {
                let url = postgres::server()?.database().await;
                app.use_database(&url);
                app.migrate().await;
                Some(Db::Postgres(PgPool::connect(&url).await.unwrap()))
            }
        }
    }

    /// The rows `sql` selects (SQL both dialects take).
    pub async fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let rows = match self {
            Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        };
        rows.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `SELECT COUNT(*) FROM {from}`.
    pub async fn count(&self, from: &str) -> i64 {
        let rows: Vec<(i64,)> = self.rows(&format!("SELECT COUNT(*) FROM {from}")).await;
        rows[0].0
    }

    /// Waits until [`Self::count`] of `from` is at least `at_least`;
    /// panics with `what` after `timeout`.
    pub async fn wait_count(&self, from: &str, at_least: i64, timeout: Duration, what: &str) {
        self.wait(from, timeout, what, |n| n >= at_least).await;
    }

    /// Waits until `from` holds no row.
    pub async fn wait_none(&self, from: &str, timeout: Duration, what: &str) {
        self.wait(from, timeout, what, |n| n == 0).await;
    }

    async fn wait(&self, from: &str, timeout: Duration, what: &str, done: impl Fn(i64) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(from).await;
            if done(n) {
                return;
            }
            assert!(Instant::now() < deadline, "{what} ({from}: {n} rows)");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}
