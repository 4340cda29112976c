//! Issue 23, item 2, on both backends: the claim is served by its indexes
//! (the plan names them, and sorts no table), so its cost does not grow
//! with the rows that wait; and the order it takes due rows in is exactly
//! the documented one (`assignd::domain::claim_rank`: priority, bounded,
//! plus one per 10-minute mark passed since enqueued, then id), whatever
//! mix of fresh rows, retries come due, rows still waiting and expired
//! leases. `docs/benchmarks.md` has the figures at 1k–100k rows.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use assignd::domain::claim_rank;
use assignd::store::{Backend, UnrankedRow, now_ms};

use store_fixture::*;

both!(
    the_claim_is_served_by_its_indexes,
    due_rows_are_claimed_in_the_documented_order,
    rows_that_wait_are_ranked_when_they_come_due,
    pruning_goes_in_batches_and_takes_all_that_is_due
);

/// Runs `insert`, an `INSERT ... SELECT ... FROM generate_series(1, N)
/// AS g` of a producer's, on either backend (SQLite counts with a
/// recursive query instead).
async fn insert_series(f: &Fixture, insert: String) {
    let sql = match f.store.backend() {
        Backend::Postgres => insert,
        Backend::Sqlite => insert
            .replace(
                "FROM generate_series(1, ",
                "FROM (WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < ",
            )
            .replacen(") AS g", ") SELECT g FROM c)", 1),
    };
    f.producer(Box::leak(sql.into_boxed_str())).await.unwrap();
    f.producer("ANALYZE").await.unwrap();
}

/// A backlog: `n` fresh rows, `n` waiting for a time still to come, and
/// `n` whose retry time has come, with priorities and ages of every kind.
async fn backlog(f: &Fixture, n: i64) {
    let now = now_ms();
    let sql = format!(
        "INSERT INTO queue (chat_id, priority, enqueued_at, next_attempt_at)
         SELECT g, (g * 7) % 9 - 4, {now} - (g * 7919) % 7200000,
                CASE g % 3 WHEN 0 THEN 0 WHEN 1 THEN {now} + 3600000 ELSE {now} - g END
           FROM generate_series(1, {}) AS g",
        3 * n
    );
    insert_series(f, sql).await;
}

async fn the_claim_is_served_by_its_indexes(f: Fixture) {
    backlog(&f, 2000).await;
    let plan = f.store.claim_plan().await.unwrap();
    println!("{:?} claim plan:\n{plan}", f.store.backend());
    let (claim, promote) = plan.split_once("\n--\n").unwrap();
    assert!(claim.contains("queue_claim_order"), "{plan}");
    assert!(promote.contains("queue_due"), "{plan}");
    assert!(promote.contains("queue_unranked"), "{plan}");
    match f.store.backend() {
        Backend::Sqlite => {
            // The fresh rows come in index order: no sort of their own, and
            // no scan of the table (only the few candidates are sorted).
            assert!(
                !claim.contains("SCAN queue\n") && !claim.ends_with("SCAN queue"),
                "{plan}"
            );
            let sorts = claim.matches("TEMP B-TREE").count();
            assert!(
                sorts <= 2,
                "only the small lease branch and the merge sort: {plan}"
            );
            // Promotions and the next due time: ranges of queue_due, or
            // its first entry; never a scan of a whole index but the
            // ranking's, which holds only due rows still unranked.
            let scans = promote.replace("SCAN queue USING INDEX queue_unranked", "");
            assert!(!scans.contains("SCAN"), "{plan}");
        }
        Backend::Postgres => {
            // The promotion's rows come from queue_due; updating a third of
            // the table at once, the planner may scan it for the update.
            assert!(!claim.contains("Seq Scan"), "{plan}");
            assert!(promote.contains("Index Scan on queue_due"), "{plan}");
        }
    }
}

async fn due_rows_are_claimed_in_the_documented_order(f: Fixture) {
    backlog(&f, 100).await;
    // Two expired leases among them.
    let expired = "UPDATE queue SET state = 'leased', lease_owner = 'gone', lease_epoch = 1,
                        lease_until = 1 WHERE chat_id IN (3, 4)";
    f.producer(expired).await.unwrap();
    let now = now_ms();
    let expected: Vec<i64> = {
        let due = |g: i64| g % 3 != 1 || g == 4;
        let mut rows: Vec<(i64, i64)> = (1..=300)
            .filter(|&g| due(g))
            .map(|g| {
                let priority = (g * 7) % 9 - 4;
                let enqueued = now - (g * 7919) % 7_200_000;
                (claim_rank(priority, enqueued, now), g)
            })
            .collect();
        // Ids are the chat ids here: the inserts ran in order.
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        rows.into_iter().map(|(_, g)| g).collect()
    };
    let mut claimed = Vec::new();
    for epoch in 0.. {
        let rows = f.store.claim(&key("a", epoch), LEASE, 7).await.unwrap();
        if rows.is_empty() {
            break;
        }
        claimed.extend(rows.iter().map(|r| r.chat_id.0));
    }
    assert_eq!(claimed.len(), expected.len(), "every due row, once");
    assert_eq!(claimed, expected);
    // The rows still waiting were not touched: their time has not come.
    let waiting = "SELECT COUNT(*) FROM queue WHERE state = 'pending' AND next_attempt_at > 0";
    assert_eq!(f.count(waiting).await, 99);
}

/// A producer's rows with a due time are not ranked by the claims before
/// it (a bulk load of them would cost every claim a batch): the first
/// claim after they come due ranks them, before it picks.
async fn rows_that_wait_are_ranked_when_they_come_due(f: Fixture) {
    let now = now_ms();
    let later = now + 3_600_000;
    let sql = format!(
        "INSERT INTO queue (chat_id, next_attempt_at)
         SELECT g, CASE WHEN g <= 300 THEN {later} ELSE 0 END FROM generate_series(1, 301) AS g"
    );
    insert_series(&f, sql).await;
    let seen = std::sync::Mutex::new(Vec::new());
    // Chat 7 ranks first once it is due.
    let rank = |row: &UnrankedRow| {
        seen.lock().unwrap().push(row.chat_id);
        (row.chat_id == Some(7)).then_some(100)
    };
    let rows = f
        .store
        .claim_ranked(&key("a", 1), LEASE, 1, &rank)
        .await
        .unwrap();
    assert_eq!(rows[0].chat_id.0, 301);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some(301)],
        "only the due row was ranked"
    );
    let unranked = "SELECT COUNT(*) FROM queue WHERE ranked = 0";
    assert_eq!(f.count(unranked).await, 300);
    let due = format!(
        "UPDATE queue SET next_attempt_at = {} WHERE chat_id = 7",
        now - 1
    );
    f.producer(Box::leak(due.into_boxed_str())).await.unwrap();
    let rows = f
        .store
        .claim_ranked(&key("a", 2), LEASE, 1, &rank)
        .await
        .unwrap();
    assert_eq!(
        rows[0].chat_id.0, 7,
        "ranked as it came due, then claimed first"
    );
    assert_eq!(rows[0].priority, 100);
    assert_eq!(f.count(unranked).await, 299);
}

/// 5,000 outcomes past the horizon and 10 within it: the prune takes the
/// 5,000 in batches (several transactions) and leaves the 10.
async fn pruning_goes_in_batches_and_takes_all_that_is_due(f: Fixture) {
    let now = now_ms();
    let old = format!(
        "INSERT INTO outcomes (chat_id, at, result)
         SELECT g, {} + g, 'assigned' FROM generate_series(1, 5010) AS g",
        now - 86_400_000 - 5000
    );
    insert_series(&f, old).await;
    let (_, outcomes) = f.store.prune(now - 86_400_000).await.unwrap();
    assert_eq!(outcomes, 4999, "every outcome older than the horizon");
    assert_eq!(f.count("SELECT COUNT(*) FROM outcomes").await, 11);
}
