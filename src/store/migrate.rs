//! Applying the schema's migrations, on both backends, safe behind a
//! pooler in transaction mode and with several daemons starting at once.
//!
//! sqlx's migrator serialises migrators with a *session* advisory lock
//! (`pg_advisory_lock`, released by `pg_advisory_unlock` on the same
//! session). Through PgBouncer in transaction mode the lock and the unlock
//! may land on different server connections: the lock stays held by a
//! server connection that other clients then use, and the next daemon waits
//! for it forever. Here PostgreSQL's migrations run instead in one
//! transaction that first takes a *transaction* advisory lock
//! (`pg_advisory_xact_lock`): a second daemon waits for the first's commit,
//! then finds every migration applied. The transaction holds one server
//! connection throughout, through a pooler too.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPool;

use super::{Db, Store, StoreError};
use crate::config::Pooler;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The advisory lock key that serialises PostgreSQL's migrations (one of
/// assignd's single-key locks, as the routing lock's 1095976773).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(1095976775)";

impl Store {
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite { writer, .. } => SQLITE_MIGRATIONS.run(writer).await?,
            Db::Postgres(pool, pooler) => {
                migrate_postgres(pool, *pooler)
                    .await
                    .map_err(|e| hint(e, *pooler))?;
            }
        }
        Ok(())
    }
}

/// Applies PostgreSQL's migrations under [`MIGRATION_LOCK`], in one
/// transaction (each migration in a savepoint of it): all or none.
async fn migrate_postgres(pool: &PgPool, pooler: Pooler) -> Result<(), MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_locking(false);
    let mut tx = pool.begin().await?;
    // Plain text: the simple protocol prepares nothing.
    sqlx::raw_sql(MIGRATION_LOCK).execute(&mut *tx).await?;
    // The migrator's own statements are named (`sqlx_s_1`, …) and never
    // closed. Behind a pooler they would stay on this server connection,
    // which other clients get next: dropped before (another client's
    // migration may have left some) and after, while the transaction holds
    // the connection. The client caches none (`statement_cache_capacity(0)`).
    let behind_pooler = pooler == Pooler::Pgbouncer;
    if behind_pooler {
        sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
    }
    migrator.run(&mut *tx).await?;
    if behind_pooler {
        sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A migration that failed the way a pooler in transaction mode makes
/// sqlx's default connections fail says so, with the setting that fixes it.
fn hint(e: MigrateError, pooler: Pooler) -> StoreError {
    match e {
        MigrateError::Execute(e) if pooler == Pooler::None && pooler_symptom(&e) => {
            StoreError::Pooler(e)
        }
        e => StoreError::Migrate(e),
    }
}

/// Whether `e` is what PgBouncer in transaction mode does to a connection
/// made as if to the server itself: a startup parameter it does not pass
/// on, or named prepared statements that collide on, or are missing from,
/// the server connection it hands out.
pub(super) fn pooler_symptom(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    db.message().contains("unsupported startup parameter")
        || matches!(db.code().as_deref(), Some("42P05" | "26000"))
}
