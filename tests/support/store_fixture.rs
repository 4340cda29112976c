//! The store test fixture, for the suites that run against both backends:
//! a migrated `Store` on a real SQLite file or a real PostgreSQL server
//! (`support/postgres.rs`), the producer's own connection, and `both!`,
//! which instantiates each case once per backend.
#![allow(dead_code)]

use std::time::Duration;

use assignd::config::Synchronous;
use assignd::domain::ChatId;
use assignd::store::{
    Assigned, LeaseKey, NewOutcome, NewQueueItem, Next, OutcomeResult, Settlement, Store,
};

use super::postgres;

/// A migrated store and what keeps it alive; `raw` runs a producer's SQL.
pub struct Fixture {
    pub store: Store,
    pub raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Fixture {
    pub async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = Store::open(&path, Synchronous::Normal).await.unwrap();
        store.migrate().await.unwrap();
        let url = format!("sqlite://{}", path.display());
        let raw = Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap());
        Fixture {
            store,
            raw,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<Fixture> {
        let url = postgres::server()?.database().await;
        let store = Store::connect_postgres(&url).await.unwrap();
        store.migrate().await.unwrap();
        let raw = Raw::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
        Some(Fixture {
            store,
            raw,
            _dir: None,
        })
    }

    /// Runs a producer's statement as it would, outside assignd.
    pub async fn producer(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        Ok(match &self.raw {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await?.rows_affected(),
            Raw::Postgres(p) => sqlx::query(sql).execute(p).await?.rows_affected(),
        })
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        match &self.raw {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        }
    }
}

#[macro_export]
macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Fixture::sqlite().await).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(f) = super::Fixture::postgres().await {
                        super::$case(f).await;
                    }
                }
            )*
        }
    };
}

pub fn item(chat_id: i64) -> NewQueueItem {
    NewQueueItem {
        chat_id: ChatId(chat_id),
        ..NewQueueItem::default()
    }
}

pub fn key(owner: &str, epoch: i64) -> LeaseKey {
    LeaseKey {
        owner: owner.into(),
        epoch,
    }
}

pub const LEASE: Duration = Duration::from_secs(60);

/// Enqueues `chat`, claims it, and settles it done with `assigned`.
pub async fn settle_assigned(f: &Fixture, chat: i64, assigned: Assigned) {
    f.store.enqueue(&[item(chat)]).await.unwrap();
    let (row, claim) = claim_one(f).await;
    let mut s = settlement(row.id, &claim, Next::Done);
    s.assigned = Some(assigned);
    assert!(f.store.settle(&s).await.unwrap());
}

/// Claims the one due row as owner `a`, epoch 1.
pub async fn claim_one(f: &Fixture) -> (assignd::store::QueueRow, LeaseKey) {
    let claim = key("a", 1);
    let row = f.store.claim(&claim, LEASE, 1).await.unwrap().remove(0);
    (row, claim)
}

pub fn settlement(queue_id: i64, lease: &LeaseKey, next: Next) -> Settlement<'_> {
    Settlement {
        queue_id,
        chat_id: ChatId(7),
        doubt: assignd::store::Doubt::Resolved {
            queue_id: Some(queue_id),
        },
        lease,
        next,
        last_error: None,
        waiting: None,
        priority: None,
        outcomes: vec![NewOutcome::new(ChatId(7), OutcomeResult::Assigned)],
        assigned: None,
        busy_reply: None,
    }
}
