//! One mode per database (SPEC §14): a daemon records the mode (live,
//! shadow) it runs the database in, and is refused while another daemon of
//! the database is alive in the other. The check and the record are one
//! step: two daemons that start at once in different modes cannot both
//! pass. Against the `Store` API, on a real SQLite file and a real
//! PostgreSQL server.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::time::Duration;

use assignd::store::ModeEntry;

use store_fixture::*;

/// How recently a daemon must have been heard from to count as running.
const ALIVE: Duration = Duration::from_secs(5);

/// Daemon `b`'s mode change, as another connection makes it: `shadow`
/// recorded in a transaction that is still open, holding the database's
/// write lock (SQLite) or a write lock on `daemon_state` (PostgreSQL).
enum Open {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

const TO_SHADOW: &str = "UPDATE daemon_state SET value = 'shadow' WHERE key = 'mode'";

async fn b_records_shadow(f: &Fixture) -> Open {
    match &f.raw {
        Raw::Sqlite(p) => {
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
            assert_eq!(
                sqlx::query(TO_SHADOW)
                    .execute(&mut *tx)
                    .await
                    .unwrap()
                    .rows_affected(),
                1
            );
            Open::Sqlite(tx)
        }
        Raw::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            assert_eq!(
                sqlx::query(TO_SHADOW)
                    .execute(&mut *tx)
                    .await
                    .unwrap()
                    .rows_affected(),
                1
            );
            Open::Postgres(tx)
        }
    }
}

impl Open {
    async fn commit(self) {
        match self {
            Open::Sqlite(tx) => tx.commit().await.unwrap(),
            Open::Postgres(tx) => tx.commit().await.unwrap(),
        }
    }
}

/// A database run live; daemon `b` (registered, heard from) switches it
/// to shadow, and before it commits, daemon `a` starts live: `a` waits for
/// `b`'s step, then sees the shadow mode and `b` alive, and is refused.
/// (Read before `b` commits, the mode still said live: both would run.)
async fn two_daemons_starting_in_different_modes_cannot_both_run(f: Fixture) {
    let entered = f.store.enter_mode("live", "a", ALIVE).await.unwrap();
    assert_eq!(entered, ModeEntry::Entered { from: None });
    f.store.register_daemon("a", "host-a", 1).await.unwrap();
    f.store.register_daemon("b", "host-b", 2).await.unwrap();
    let b = b_records_shadow(&f).await;
    let store = f.store.clone();
    let a = tokio::spawn(async move { store.enter_mode("live", "a", ALIVE).await });
    // Gives `a` the time to read, were its read not behind `b`'s step.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.commit().await;
    let a = a.await.unwrap().unwrap();
    assert_eq!(a, ModeEntry::Refused("shadow".into()));
    let mode = f
        .count("SELECT COUNT(*) FROM daemon_state WHERE key = 'mode' AND value = 'shadow'")
        .await;
    assert_eq!(mode, 1, "the refused daemon changed nothing");
}

/// A daemon alive in one mode refuses a start in the other, and nothing
/// changes; once it is gone (unregistered), the switch goes through and
/// says where from; the same mode again is no switch.
async fn a_running_daemons_mode_holds_until_it_is_gone(f: Fixture) {
    f.store.register_daemon("live-1", "h", 1).await.unwrap();
    f.store.register_daemon("shadow-1", "h", 2).await.unwrap();
    let first = f.store.enter_mode("live", "live-1", ALIVE).await;
    assert_eq!(first.unwrap(), ModeEntry::Entered { from: None });
    let refused = f.store.enter_mode("shadow", "shadow-1", ALIVE).await;
    assert_eq!(refused.unwrap(), ModeEntry::Refused("live".into()));
    f.store.unregister_daemon("live-1").await.unwrap();
    let switched = f.store.enter_mode("shadow", "shadow-1", ALIVE).await;
    let from = Some("live".to_string());
    assert_eq!(switched.unwrap(), ModeEntry::Entered { from });
    let again = f.store.enter_mode("shadow", "shadow-1", ALIVE).await;
    assert_eq!(again.unwrap(), ModeEntry::Entered { from: None });
}

both!(
    two_daemons_starting_in_different_modes_cannot_both_run,
    a_running_daemons_mode_holds_until_it_is_gone,
);
