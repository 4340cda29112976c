//! The backend seam: a statement is run the same way whichever database
//! is behind the store. Values travel as [`Val`] (bound with their type,
//! so a NULL is a typed NULL on PostgreSQL too), rows come back as any
//! type that reads from both backends' rows ([`FromDb`]), and a statement
//! is one text for both dialects or a pair ([`Stmt`]).

use sqlx::postgres::{PgArguments, PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqliteRow};
use sqlx::{Arguments, Encode, FromRow, Transaction, Type};

use crate::config::Pooler;
use crate::domain::{
    AgentId, Arm, AuditAction, ChatId, OutboxKind, OutcomeResult, QueueState, Route, Wait,
};

/// The pools of one backend.
#[derive(Clone)]
pub(super) enum Db {
    /// One writer connection (SQLite allows one writer at a time; a pool of
    /// one makes that explicit) and a small reader pool.
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
    /// The pool, and what sits between it and the server (`pg!`).
    Postgres(PgPool, Pooler),
}

/// Which dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One statement: the same text on both backends, or one text each.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stmt {
    sqlite: &'static str,
    postgres: &'static str,
}

impl Stmt {
    /// A statement whose dialects differ.
    pub(super) const fn each(sqlite: &'static str, postgres: &'static str) -> Self {
        Self { sqlite, postgres }
    }

    /// The text in `backend`'s dialect.
    pub(super) fn text(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

impl From<&'static str> for Stmt {
    fn from(both: &'static str) -> Self {
        Self::each(both, both)
    }
}

/// A value bound to a statement, with its SQL type.
#[derive(Debug, Clone)]
pub(super) enum Val {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
}

/// The values of a statement, in `$N` order.
pub(super) type Vals = Vec<Val>;

/// `vals![a, b, c]`: the values of a statement, each converted by
/// `Val::from`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::store::db::Val::from($v)),*]
    };
}
pub(super) use vals;

macro_rules! val_from {
    ($variant:ident: $($t:ty => $f:expr),* $(,)?) => {$(
        impl From<$t> for Val {
            fn from(v: $t) -> Self {
                #[allow(clippy::redundant_closure_call)]
                Val::$variant(($f)(v))
            }
        }
    )*};
}

val_from!(Int:
    i64 => Some,
    Option<i64> => |v| v,
    &i64 => |v: &i64| Some(*v),
    u32 => |v| Some(i64::from(v)),
    bool => |v| Some(i64::from(v)),
);
val_from!(Int:
    ChatId => |v: ChatId| Some(v.0),
    &ChatId => |v: &ChatId| Some(v.0),
    AgentId => |v: AgentId| Some(v.0),
    Option<AgentId> => |v: Option<AgentId>| v.map(|a| a.0),
);
val_from!(Real: Option<f64> => |v| v);
val_from!(Text:
    QueueState => |v: QueueState| Some(v.as_str().to_owned()),
    OutcomeResult => |v: OutcomeResult| Some(v.as_str().to_owned()),
    Arm => |v: Arm| Some(v.as_str().to_owned()),
    OutboxKind => |v: OutboxKind| Some(v.as_str().to_owned()),
    AuditAction => |v: AuditAction| Some(v.as_str().to_owned()),
    Option<Wait> => |v: Option<Wait>| v.map(|w| w.as_str().to_owned()),
    Option<Route> => |v: Option<Route>| v.map(|r| r.as_str().to_owned()),
);
val_from!(Text:
    &str => |v: &str| Some(v.to_owned()),
    &String => |v: &String| Some(v.clone()),
    String => Some,
    Option<&str> => |v: Option<&str>| v.map(str::to_owned),
    Option<String> => |v| v,
);

/// A row type both backends can read.
pub(super) trait FromDb:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> FromDb for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Binds the values, in order, for either backend's statement.
fn arguments<A>(vals: Vals) -> Result<A, sqlx::Error>
where
    A: Arguments,
    Option<i64>: for<'t> Encode<'t, A::Database> + Type<A::Database>,
    Option<f64>: for<'t> Encode<'t, A::Database> + Type<A::Database>,
    Option<String>: for<'t> Encode<'t, A::Database> + Type<A::Database>,
{
    let mut args = A::default();
    for v in vals {
        match v {
            Val::Int(i) => args.add(i),
            Val::Real(r) => args.add(r),
            Val::Text(t) => args.add(t),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

fn sqlite_args(vals: Vals) -> Result<SqliteArguments, sqlx::Error> {
    arguments(vals)
}

fn pg_args(vals: Vals) -> Result<PgArguments, sqlx::Error> {
    arguments(vals)
}

/// Runs one statement on an executor: `$q` is `query_with` or
/// `query_as_with`, `$run` is `execute`, `fetch_all` or `fetch_optional`.
macro_rules! on {
    ($q:ident, $conn:expr, $sql:expr, $args:expr, $run:ident) => {
        sqlx::$q($sql, $args?).$run($conn).await
    };
}

/// [`on!`] for PostgreSQL's pool. Straight to the server, statements are
/// prepared once per connection and cached by name. Through a pooler in
/// transaction mode no session state lasts: a named statement would stay
/// on a server connection that other clients then get (`prepared
/// statement "sqlx_s_1" already exists`), and the pooler hands the server
/// connection back between sqlx's two round trips (Parse, then Bind and
/// Execute) unless a transaction is open. So there each statement is
/// unnamed and runs in a transaction of its own.
macro_rules! pg {
    ($q:ident, $pool:expr, $pooler:expr, $sql:expr, $vals:expr, $run:ident) => {
        match $pooler {
            Pooler::None => on!($q, $pool, $sql, pg_args($vals), $run),
            Pooler::Pgbouncer => {
                let mut tx = $pool.begin().await?;
                let query = sqlx::$q($sql, pg_args($vals)?).persistent(false);
                let done = query.$run(&mut *tx).await?;
                tx.commit().await?;
                Ok(done)
            }
        }
    };
}

impl Db {
    pub(super) fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(..) => Backend::Postgres,
        }
    }

    /// Runs one write statement outside a transaction; returns the rows it
    /// changed.
    pub(super) async fn run(&self, stmt: impl Into<Stmt>, vals: Vals) -> Result<u64, sqlx::Error> {
        let stmt = stmt.into();
        Ok(match self {
            Db::Sqlite { writer, .. } => {
                on!(query_with, writer, stmt.sqlite, sqlite_args(vals), execute)?.rows_affected()
            }
            Db::Postgres(pool, pooler) => {
                pg!(query_with, pool, pooler, stmt.postgres, vals, execute)?.rows_affected()
            }
        })
    }

    /// Every row a read finds.
    pub(super) async fn all<T: FromDb>(
        &self,
        stmt: impl Into<Stmt>,
        vals: Vals,
    ) -> Result<Vec<T>, sqlx::Error> {
        let stmt = stmt.into();
        match self {
            Db::Sqlite { reader, .. } => on!(
                query_as_with,
                reader,
                stmt.sqlite,
                sqlite_args(vals),
                fetch_all
            ),
            Db::Postgres(pool, pooler) => {
                pg!(query_as_with, pool, pooler, stmt.postgres, vals, fetch_all)
            }
        }
    }

    /// The plan an `EXPLAIN` (SQLite: `EXPLAIN QUERY PLAN`) statement
    /// gives, one line per node.
    pub(super) async fn plan(
        &self,
        explain: String,
        vals: Vals,
    ) -> Result<Vec<String>, sqlx::Error> {
        let explain = sqlx::AssertSqlSafe(explain);
        Ok(match self {
            Db::Sqlite { reader, .. } => {
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as_with(explain, sqlite_args(vals)?)
                        .fetch_all(reader)
                        .await?;
                rows.into_iter().map(|(_, _, _, detail)| detail).collect()
            }
            Db::Postgres(pool, pooler) => {
                let rows: Vec<(String,)> =
                    pg!(query_as_with, pool, pooler, explain, vals, fetch_all)?;
                rows.into_iter().map(|(line,)| line).collect()
            }
        })
    }

    /// The first row a read finds, if any.
    pub(super) async fn first<T: FromDb>(
        &self,
        stmt: impl Into<Stmt>,
        vals: Vals,
    ) -> Result<Option<T>, sqlx::Error> {
        self.first_on(Side::Read, stmt.into(), vals).await
    }

    /// The first row a statement returns, if any; a statement that writes
    /// (`RETURNING`, or a function that writes) runs on SQLite's writer.
    pub(super) async fn first_on<T: FromDb>(
        &self,
        side: Side,
        stmt: Stmt,
        vals: Vals,
    ) -> Result<Option<T>, sqlx::Error> {
        match self {
            Db::Sqlite { writer, reader } => {
                let pool = if side == Side::Write { writer } else { reader };
                on!(
                    query_as_with,
                    pool,
                    stmt.sqlite,
                    sqlite_args(vals),
                    fetch_optional
                )
            }
            Db::Postgres(pool, pooler) => pg!(
                query_as_with,
                pool,
                pooler,
                stmt.postgres,
                vals,
                fetch_optional
            ),
        }
    }

    /// The one value a statement that writes returns.
    pub(super) async fn value_write<T>(
        &self,
        stmt: impl Into<Stmt>,
        vals: Vals,
    ) -> Result<T, sqlx::Error>
    where
        (T,): FromDb,
    {
        one(self.first_on(Side::Write, stmt.into(), vals).await?)
    }

    /// The one value of a read that always returns one row (a count).
    pub(super) async fn value<T>(&self, stmt: impl Into<Stmt>, vals: Vals) -> Result<T, sqlx::Error>
    where
        (T,): FromDb,
    {
        one(self.first(stmt, vals).await?)
    }
}

/// Where a read can run: the store's pools, or inside a transaction.
pub(super) enum Source<'a> {
    Pools(&'a Db),
    Tx(&'a mut Tx),
}

impl Source<'_> {
    pub(super) async fn all<T: FromDb>(
        &mut self,
        stmt: impl Into<Stmt>,
        vals: Vals,
    ) -> Result<Vec<T>, sqlx::Error> {
        match self {
            Source::Pools(db) => db.all(stmt, vals).await,
            Source::Tx(tx) => tx.all(stmt, vals).await,
        }
    }
}

/// Which of SQLite's pools a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Read,
    Write,
}

/// The value of a one-column row that must be there.
fn one<T>(row: Option<(T,)>) -> Result<T, sqlx::Error> {
    row.map(|(v,)| v).ok_or(sqlx::Error::RowNotFound)
}

/// A write transaction on either backend.
pub(super) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    /// Through a pooler, its statements are unnamed (see `pg!`).
    Postgres(Transaction<'static, Postgres>, Pooler),
}

impl Tx {
    /// Runs one write statement; returns the rows it changed.
    pub(super) async fn run(
        &mut self,
        stmt: impl Into<Stmt>,
        vals: Vals,
    ) -> Result<u64, sqlx::Error> {
        let stmt = stmt.into();
        Ok(match self {
            Tx::Sqlite(tx) => on!(
                query_with,
                &mut **tx,
                stmt.sqlite,
                sqlite_args(vals),
                execute
            )?
            .rows_affected(),
            Tx::Postgres(tx, pooler) => sqlx::query_with(stmt.postgres, pg_args(vals)?)
                .persistent(*pooler == Pooler::None)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Every row a statement returns (a read, or a write with RETURNING).
    pub(super) async fn all<T: FromDb>(
        &mut self,
        stmt: impl Into<Stmt>,
        vals: Vals,
    ) -> Result<Vec<T>, sqlx::Error> {
        let stmt = stmt.into();
        match self {
            Tx::Sqlite(tx) => on!(
                query_as_with,
                &mut **tx,
                stmt.sqlite,
                sqlite_args(vals),
                fetch_all
            ),
            Tx::Postgres(tx, pooler) => {
                sqlx::query_as_with(stmt.postgres, pg_args(vals)?)
                    .persistent(*pooler == Pooler::None)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
    }

    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx, _) => tx.commit().await,
        }
    }
}
