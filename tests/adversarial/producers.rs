//! Garbage from producers: SQLite's type affinity lets any value into any
//! column of `queue`. A bad row is dead-lettered with a reason naming the
//! column, every good row is still assigned, nothing panics, and `status`
//! and `queue list` show the bad rows.

use std::time::Duration;

use assignd::store::{LeaseKey, Store};
use proptest::prelude::*;
use sqlx::sqlite::SqlitePool;

use crate::common::*;

/// A value of any SQLite storage class.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Val {
    /// SQL literal, for the table-driven cases below.
    fn literal(&self) -> String {
        match self {
            Val::Null => "NULL".into(),
            Val::Int(i) => i.to_string(),
            Val::Real(r) => format!("{r:?}"),
            Val::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Val::Blob(b) => format!(
                "X'{}'",
                b.iter().map(|x| format!("{x:02X}")).collect::<String>()
            ),
        }
    }
}

/// Rows whose producer columns hold the wrong type: (column, value, the
/// words their dead letter must contain).
fn bad_rows() -> Vec<(&'static str, Val, &'static str)> {
    vec![
        (
            "chat_id",
            Val::Text("abc".into()),
            "queue.chat_id holds a text",
        ),
        ("chat_id", Val::Real(12.5), "queue.chat_id holds a real"),
        (
            "chat_id",
            Val::Blob(vec![1, 2, 3]),
            "queue.chat_id holds a blob",
        ),
        ("chat_id", Val::Int(0), "not a HelpCrunch chat id"),
        ("chat_id", Val::Int(-7), "not a HelpCrunch chat id"),
        (
            "priority",
            Val::Text("high".into()),
            "queue.priority holds a text",
        ),
        ("priority", Val::Real(2.5), "queue.priority holds a real"),
        (
            "priority",
            Val::Blob(vec![0]),
            "queue.priority holds a blob",
        ),
        // TEXT affinity stores numbers as text: not a JSON object.
        ("attrs", Val::Int(42), "not a JSON object"),
        ("attrs", Val::Real(1.5), "not a JSON object"),
        (
            "attrs",
            Val::Blob(b"{}".to_vec()),
            "queue.attrs holds a blob",
        ),
        ("attrs", Val::Text("not json".into()), "not a JSON object"),
        ("attrs", Val::Text("[1, 2]".into()), "not a JSON object"),
    ]
}

/// Rows with garbage only in columns the daemon owns and repairs: they
/// are processed like any other.
fn repaired_rows() -> Vec<(&'static str, Val)> {
    vec![
        ("next_attempt_at", Val::Text("soon".into())),
        ("next_attempt_at", Val::Real(1.5)),
        ("next_attempt_at", Val::Blob(vec![9])),
        ("attempts", Val::Text("many".into())),
        ("attempts", Val::Real(2.5)),
        ("attempts", Val::Blob(vec![1])),
        ("enqueued_at", Val::Text("yesterday".into())),
        ("enqueued_at", Val::Blob(vec![1])),
        ("last_error", Val::Int(99)),
        ("last_error", Val::Blob(vec![0, 1])),
        ("updated_at", Val::Text("x".into())),
        // A snapshot is a saving, not a need: one that is not a chat object
        // is ignored and the chat decided without it (or fetched).
        ("snapshot", Val::Int(7)),
        ("snapshot", Val::Blob(vec![0xff])),
        ("snapshot", Val::Text("{\"id\": ".into())),
    ]
}

/// Inserts one row with `column` set to `value` (chat_id given unless it
/// is the column under test).
async fn insert(pool: &SqlitePool, chat_id: i64, column: &str, value: &Val) {
    let sql = if column == "chat_id" {
        format!("INSERT INTO queue (chat_id) VALUES ({})", value.literal())
    } else {
        format!(
            "INSERT INTO queue (chat_id, {column}) VALUES ({chat_id}, {})",
            value.literal()
        )
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

/// Bad rows inserted before the start and while the daemon runs: each one
/// ends `dead` naming its column, every good row is assigned, the daemon
/// never panics, and `status` and `queue list` show the bad rows. A
/// restart over the same database changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_rows_are_dead_lettered_and_the_rest_assigned() {
    let app = TestApp::builder().worker(NO_FETCH).build().await;
    app.migrate().await;
    let pool = app.producer().await;
    let bad = bad_rows();
    let (before, after) = bad.split_at(bad.len() / 2);
    for (i, (column, value, _)) in before.iter().enumerate() {
        insert(&pool, 5000 + i as i64, column, value).await;
    }
    app.insert_raw(1..=20).await;
    let mut daemon = app.spawn_daemon("garbage.log");
    for (i, (column, value, _)) in after.iter().enumerate() {
        insert(&pool, 5100 + i as i64, column, value).await;
    }
    for (i, (column, value)) in repaired_rows().iter().enumerate() {
        insert(&pool, 6000 + i as i64, column, value).await;
    }
    app.insert_raw(21..=40).await;
    app.wait_drained(Duration::from_secs(60)).await;
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");

    let good = 40 + repaired_rows().len() as i64;
    let assigned = app
        .scalar("SELECT COUNT(DISTINCT chat_id) FROM outcomes WHERE result = 'assigned'")
        .await;
    assert_eq!(assigned, good, "every good row is assigned");
    assert_eq!(app.count("queue WHERE state = 'done'").await, good);
    let dead: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, last_error FROM queue WHERE state = 'dead' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), bad.len(), "dead rows: {dead:?}");
    for (_, _, words) in &bad {
        assert!(
            dead.iter().any(|(_, why)| why.contains(words)),
            "no dead letter says {words:?}: {dead:?}"
        );
    }

    let listed = app.run_ok(&["queue", "list", "--state", "dead"]);
    assert_contains(&listed, &["'abc'", "X'010203'"]);
    let shown = app.run_ok(&["status"]);
    assert_contains(&shown, &["dead letters", "queue.chat_id"]);

    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());
    // A restart over the same rows: nothing panics, nothing changes.
    let mut again = app.spawn_daemon("garbage-again.log");
    app.insert_raw(41..=45).await;
    app.wait_drained(Duration::from_secs(30)).await;
    assert!(terminate(&mut again, Duration::from_secs(10)).success());
    let dead = app.count("queue WHERE state = 'dead'").await;
    assert_eq!(dead, bad.len() as i64);
    for log in ["garbage.log", "garbage-again.log"] {
        assert!(!app.log(log).contains("panicked"), "{}", app.log(log));
    }
    pool.close().await;
}

fn any_val() -> impl Strategy<Value = Val> {
    prop_oneof![
        Just(Val::Null),
        any::<i64>().prop_map(Val::Int),
        (1i64..1000).prop_map(Val::Int),
        any::<f64>()
            .prop_filter("SQLite stores NaN as NULL", |f| !f.is_nan())
            .prop_map(Val::Real),
        ".{0,12}".prop_map(Val::Text),
        "\\{\"[a-z]{1,3}\": [0-9]{1,3}\\}".prop_map(Val::Text),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Val::Blob),
    ]
}

const FUZZED: [&str; 8] = [
    "chat_id",
    "priority",
    "attrs",
    "snapshot",
    "next_attempt_at",
    "attempts",
    "enqueued_at",
    "last_error",
];

/// One fuzz case: a row of random values is claimed; the claim either
/// hands out a row that is sound or dead-letters it with a reason, never
/// panics and never leaves it leased, and `queue list` reads it.
async fn claim_one(values: Vec<Val>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("f.db"),
        assignd::config::Synchronous::Normal,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let literals: Vec<String> = values.iter().map(Val::literal).collect();
    let sql = format!(
        "INSERT INTO queue ({}) VALUES ({})",
        FUZZED.join(", "),
        literals.join(", ")
    );
    let key = LeaseKey {
        owner: format!("{}-fuzz", std::process::id()),
        epoch: 1,
    };
    let producer = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("f.db")))
        .await
        .unwrap();
    // NULL in a NOT NULL column is refused at the INSERT: the producer's error.
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&producer)
        .await;
    producer.close().await;
    if inserted.is_ok() {
        let claimed = store
            .claim(&key, Duration::from_secs(60), 10)
            .await
            .unwrap();
        for row in &claimed {
            assert!(row.chat_id.0 > 0, "{row:?}");
        }
        let listed = store.list_queue(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        let r = &listed[0];
        if claimed.is_empty() && r.state == "pending" {
            assert!(
                r.next_attempt_at_ms > assignd::store::now_ms(),
                "due but not claimed: {r:?}"
            );
        } else if claimed.is_empty() {
            assert_eq!(r.state, "dead", "{values:?} -> {r:?}");
            assert!(
                r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("queue.")),
                "{r:?}"
            );
        } else {
            assert_eq!(r.state, "leased");
        }
    }
    store.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn any_row_is_claimed_or_dead_lettered(values in proptest::collection::vec(any_val(), 8)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(claim_one(values));
    }
}
