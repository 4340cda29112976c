//! PostgreSQL behind PgBouncer in transaction mode (`[database] pooler =
//! "pgbouncer"`), against the real thing: the Debian `pgbouncer` in front of
//! the tests' own PostgreSQL (`support/pgbouncer.rs`), with few server
//! connections handed out in turn, so that any reliance on a session of its
//! own (named prepared statements, a session advisory lock, LISTEN) meets
//! another server connection at the next transaction.
//!
//! PgBouncer killed and restarted mid-backlog runs in `tests/failover.rs`,
//! with that harness's checker over the history.
//!
//! Figures print with `cargo test --test pgbouncer -- --nocapture`.

mod common;
#[path = "support/cluster.rs"]
#[allow(dead_code)]
mod pg_cluster;
#[path = "support/pgbouncer.rs"]
mod pgbouncer;
#[path = "support/postgres.rs"]
mod postgres;

use std::str::FromStr;
use std::time::{Duration, Instant};

use assignd::config::{Config, Pooler};
use assignd::store::{Store, StoreError};
use common::*;
use pg_cluster::*;
use pgbouncer::{Bouncer, through};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The limit of the pickup test's cluster, per [`PER`].
const LIMIT_PICKUP: u32 = 30;

/// What the daemons log, once each, when they cannot listen.
const UNAVAILABLE: &str = "LISTEN/NOTIFY unavailable";

/// PgBouncer in front of the tests' server, with `extra` config lines;
/// `None` where PostgreSQL or PgBouncer is missing (and this is not CI).
fn bouncer(extra: &str) -> Option<Bouncer> {
    pgbouncer::start(postgres::server()?.port, extra)
}

/// Runs `sql` as a producer behind the same PgBouncer would: plain text
/// (nothing prepared), no startup parameter PgBouncer refuses.
async fn produce(url: &str, sql: String) {
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .extra_float_digits(None);
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// How many migrations `migrations/postgres` holds.
fn migration_files() -> i64 {
    std::fs::read_dir("migrations/postgres")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64
}

/// Asserts that every migration was applied, once, successfully.
async fn assert_migrated_once(db: &sqlx::PgPool) {
    let (rows, versions, ok): (i64, i64, bool) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT version), COALESCE(bool_and(success), false)
           FROM _sqlx_migrations",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let files = migration_files();
    assert_eq!(
        (rows, versions, ok),
        (files, files, true),
        "each of the {files} migrations applied once"
    );
}

/// Two daemons start at once through PgBouncer in transaction mode, on an
/// empty database: they migrate it once, assign 60 chats a producer
/// inserts through the same PgBouncer exactly once each, without a 429,
/// say once that LISTEN is unavailable and poll instead, and the CLI
/// (`status`, `report`, `migrate`) works through PgBouncer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_assign_every_chat_once_through_pgbouncer() {
    const CHATS: i64 = 60;
    const LIMIT: u32 = LIMIT_PICKUP;
    let Some(b) = bouncer("") else {
        return;
    };
    let mut direct = String::new();
    let started = Cluster::start_with(2, LIMIT, |app, url| {
        direct = url.to_string();
        through(app, &b, url);
    });
    let Some(c) = started.await else {
        return;
    };
    let url = b.url(&direct);
    let insert =
        format!("INSERT INTO queue (chat_id) SELECT g FROM generate_series(1, {CHATS}) AS g");
    produce(&url, insert).await;
    let took = c.wait_drained(Duration::from_secs(90)).await;
    let f = figures(&c.app.sandbox, LIMIT, PER, EDGE);
    f.print("2 daemons through PgBouncer, 60 chats", LIMIT, PER);
    let by_daemon = c.assigned_by_daemon();
    println!("drained in {took:?}; assigned per daemon {by_daemon:?}");
    assert_eq!(f.rejected, 0, "no 429\n{}", c.report().await);
    assert_eq!(
        f.chats_put,
        CHATS as usize,
        "every chat PUT\n{}",
        c.report().await
    );
    assert_eq!(f.repeats, 0, "no chat PUT twice (worst: {} PUTs)", f.worst);
    assert_eq!(
        c.int("SELECT COUNT(*) FROM queue WHERE state = 'done'")
            .await,
        CHATS,
        "every row done"
    );
    assert!(
        by_daemon.values().all(|n| *n > 0),
        "both daemons assign through PgBouncer: {by_daemon:?}"
    );
    assert_migrated_once(&c.db).await;
    let mut pickup = pickup(&c, &url, 1001..=1010).await;
    pickup.sort();
    println!("pickup through PgBouncer (poll_interval 100ms), sorted: {pickup:?}");
    for i in 1..=c.spawned {
        let log = c.app.log(&format!("d{i}.log"));
        assert_eq!(
            log.matches(UNAVAILABLE).count(),
            1,
            "d{i} says once that it cannot listen, and polls:\n{log}"
        );
        if let Some(line) = log.lines().find(|l| l.contains(UNAVAILABLE)) {
            println!("d{i}: {line}");
        }
        for bad in ["prepared statement", "cannot migrate", "ERROR"] {
            assert!(!log.contains(bad), "d{i} logged `{bad}`:\n{log}");
        }
    }
    cli_through_pgbouncer(&c);
    let db = direct.rsplit('/').next().unwrap();
    assert!(
        b.log().contains(&format!("login attempt: db={db} ")),
        "the daemons came through PgBouncer:\n{}",
        b.log()
    );
}

/// `status`, `report` and `migrate` through PgBouncer.
fn cli_through_pgbouncer(c: &Cluster) {
    let status = c.app.run_ok(&["status"]);
    assert_contains(
        &status,
        &[
            "listen: unavailable",
            "pooler = \"pgbouncer\"",
            "polling the queue every 100ms",
        ],
    );
    let daemons = status_daemons(&status, "leader").expect("a daemons section");
    let mut pids: Vec<u32> = daemons.iter().map(|(pid, _)| *pid).collect();
    pids.sort();
    let mut ours = c.pids();
    ours.sort();
    assert_eq!(pids, ours, "status lists both daemons:\n{status}");
    let json: serde_json::Value =
        serde_json::from_str(&c.app.run_ok(&["status", "--json"])).unwrap();
    assert!(
        json["daemon_state"]["listen"]["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("unavailable")),
        "{json}"
    );
    let report = c.app.run_ok(&["report", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(report.is_object(), "{report}");
    let migrate = c.app.run_ok(&["migrate"]);
    assert_contains(&migrate, &["is up to date"]);
}

/// Inserts `chats` one by one through PgBouncer, each once the last is
/// assigned and the budget is free again; how long each took from its
/// INSERT to its PUT.
async fn pickup(c: &Cluster, url: &str, chats: std::ops::RangeInclusive<i64>) -> Vec<Duration> {
    let mut took = Vec::new();
    for chat in chats {
        tokio::time::sleep(PER / LIMIT_PICKUP * 3).await;
        let at = Instant::now();
        produce(url, format!("INSERT INTO queue (chat_id) VALUES ({chat})")).await;
        let put = loop {
            if let Some(p) = puts(&c.app.sandbox).into_iter().find(|p| p.chat == chat) {
                break p;
            }
            assert!(
                at.elapsed() < Duration::from_secs(20),
                "chat {chat} assigned within 20 s\n{}",
                c.report().await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        took.push(put.received.saturating_duration_since(at));
    }
    took
}

/// A store on `url` through `pooler`, as the daemon opens it.
async fn store(url: &str, pooler: &str) -> Result<Store, StoreError> {
    let text = format!("[database]\nurl = \"{url}\"\npooler = \"{pooler}\"\n");
    let config = Config::parse(std::path::Path::new("assignd.toml"), &text).unwrap();
    Store::connect(&config.database(), config.database.synchronous).await
}

/// Three stores migrate one empty database at once, straight to the server
/// and through PgBouncer: each returns Ok (none applies a migration the
/// other applied, which would fail), and every migration is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_at_once_migrate_once_direct_and_through_pgbouncer() {
    let Some(b) = bouncer("") else {
        return;
    };
    let server = postgres::server().expect("a server where PgBouncer runs");
    for round in 0..3 {
        for pooler in [Pooler::None, Pooler::Pgbouncer] {
            let direct = server.database().await;
            let (url, name) = match pooler {
                Pooler::None => (direct.clone(), "none"),
                Pooler::Pgbouncer => (b.url(&direct), "pgbouncer"),
            };
            let mut stores = Vec::new();
            for _ in 0..3 {
                stores.push(store(&url, name).await.unwrap());
            }
            let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
            for (i, r) in results.iter().enumerate() {
                assert!(
                    r.is_ok(),
                    "round {round}, {name}: store {i} failed to migrate: {r:?}"
                );
            }
            let db = sqlx::PgPool::connect(&direct).await.unwrap();
            assert_migrated_once(&db).await;
            db.close().await;
            for s in stores {
                s.close().await;
            }
        }
    }
}

/// Without `pooler = "pgbouncer"`, PgBouncer refuses the connection and
/// the CLI says which setting fixes it; with it, no LISTEN is tried. A
/// listener that PgBouncer lets in (its startup parameter ignored) is found
/// out by its own NOTIFY, which never comes back; straight to the server it
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_is_named_when_missed_and_listening_proves_itself() {
    let Some(strict) = bouncer("") else {
        return;
    };
    let lenient = bouncer("ignore_startup_parameters = extra_float_digits").unwrap();
    let server = postgres::server().unwrap();
    let direct = server.database().await;
    store(&direct, "none")
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();

    let app = TestApp::builder().build().await;
    app.use_database(&strict.url(&direct));
    let (code, _, err) = app.exec(&["status"]);
    assert_eq!(code, 1, "{err}");
    assert_contains(
        &err,
        &["unsupported startup parameter", "pooler = \"pgbouncer\""],
    );

    let configured = store(&strict.url(&direct), "pgbouncer").await.unwrap();
    let listened = configured.listen_queue().await;
    assert!(
        matches!(listened, Err(StoreError::ListenUnavailable(ref why)) if why.contains("pooler")),
        "{:?}",
        listened.err()
    );
    let missed = store(&lenient.url(&direct), "none").await.unwrap();
    let listened = missed.listen_queue().await;
    assert!(
        matches!(listened, Err(StoreError::ListenUnavailable(ref why)) if why.contains("did not come back")),
        "{:?}",
        listened.err()
    );
    let straight = store(&direct, "none").await.unwrap();
    let listened = straight.listen_queue().await;
    assert!(
        matches!(listened, Ok(Some(_))),
        "straight to the server, LISTEN works: {:?}",
        listened.err()
    );
}
