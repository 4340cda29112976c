//! Issue 23, item 2, on both backends: what `status`, the console's queue
//! page, `report` and `report --compare` read is served by an index (the plan names it, and
//! sorts no table), so a page or a count does not read the rows that wait
//! and the report reads its window in order. `docs/benchmarks.md` has the
//! figures at 1k–100k rows (`cargo bench --bench costs`).

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use assignd::store::{Backend, now_ms};

use store_fixture::*;

both!(each_read_is_served_by_its_index);

/// The outcomes' spacing: 3,000 of them span 90 days, of which the
/// report's window (30 days) holds a third.
const DAY3: i64 = 2_592_000;

/// `n` rows of each kind: waiting (for a retry), dead, and done with an
/// outcome and a chat's history each.
async fn history(f: &Fixture, n: i64) {
    let now = now_ms();
    let series = |sql: String| match f.store.backend() {
        Backend::Postgres => sql.replace("FROM c", &format!("FROM generate_series(1, {n}) AS g")),
        Backend::Sqlite => format!(
            "WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < {n}) {sql}"
        ),
    };
    let inserts = [
        format!(
            "INSERT INTO queue (chat_id, state, ranked, enqueued_at, updated_at)
             SELECT 3000000 + g, 'done', 1, {now} - g * CAST({DAY3} AS BIGINT), {now} - g * CAST({DAY3} AS BIGINT) + 500 FROM c"
        ),
        format!(
            "INSERT INTO outcomes (chat_id, queue_id, at, rule, agent, result)
             SELECT 3000000 + g, g, {now} - g * CAST({DAY3} AS BIGINT) + 500, 'all', 'alice', 'assigned' FROM c"
        ),
        format!(
            "INSERT INTO chat_history (chat_id, arrived_at, assigned_at, assigned_by, first_reply_at)
             SELECT 3000000 + g, {now} - g * CAST({DAY3} AS BIGINT),
                    {now} - g * CAST({DAY3} AS BIGINT) + 500, 'assignd',
                    {now} - g * CAST({DAY3} AS BIGINT) + 9000 FROM c"
        ),
        // An experiment's arms (every other chat), as `report --compare` reads them.
        format!(
            "INSERT INTO chat_arms (chat_id, arm, at)
             SELECT 3000000 + g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
                    {now} - g * CAST({DAY3} AS BIGINT) + 500 FROM c"
        ),
        format!(
            "INSERT INTO queue (chat_id, priority, last_error, next_attempt_at, enqueued_at)
             SELECT 1000000 + g, g % 3, 'HelpCrunch answered 503', {now} + 3600000 + g,
                    {now} - g * 10 FROM c"
        ),
        format!(
            "INSERT INTO queue (chat_id, state, last_error, updated_at)
             SELECT 2000000 + g, 'dead', 'HelpCrunch answered 404', {now} - g FROM c"
        ),
    ];
    for sql in inserts {
        f.producer(Box::leak(series(sql).into_boxed_str()))
            .await
            .unwrap();
    }
    let analyze = match f.store.backend() {
        Backend::Postgres => "VACUUM ANALYZE",
        Backend::Sqlite => "ANALYZE",
    };
    f.producer(analyze).await.unwrap();
}

async fn each_read_is_served_by_its_index(f: Fixture) {
    history(&f, 3000).await;
    let plans = f.store.read_plans().await.unwrap();
    let index = [
        ("queue depth", "queue_dead"),
        ("waiting rows", "queue_waiting"),
        ("dead rows", "queue_dead"),
        ("active rows", "queue_active_order"),
        ("active rows after", "queue_active_order"),
        ("report outcomes", "outcomes_by_time"),
        ("report chats", "chat_history_arrived"),
        ("compare chats", "chat_history_arrived"),
        ("report dead letters", "queue_dead_by_time"),
    ];
    for ((what, plan), (want, name)) in plans.iter().zip(index) {
        println!("{:?} {what}:\n{plan}\n", f.store.backend());
        assert_eq!(*what, want);
        assert!(
            plan.contains(name),
            "{what} is not served by {name}: {plan}"
        );
        match f.store.backend() {
            Backend::Sqlite => {
                // A table is read only through an index (a later page
                // scans its two bounded parts, `same` and `below`), and
                // nothing is sorted but those parts.
                let scans = plan.lines().filter(|l| l.contains("SCAN queue"));
                for line in scans {
                    assert!(line.contains("INDEX"), "{what} scans a table: {plan}");
                }
                assert!(!plan.contains("SCAN outcomes"), "{what}: {plan}");
                assert!(!plan.contains("SCAN chat_arms"), "{what}: {plan}");
                assert!(!plan.contains("SCAN chat_history"), "{what}: {plan}");
                let sorts = plan.matches("TEMP B-TREE").count();
                assert!(sorts == 0 || *what == "active rows after", "{what}: {plan}");
            }
            Backend::Postgres => {
                assert!(!plan.contains("Seq Scan"), "{what} scans a table: {plan}");
                // A chat's own outcomes (a handful, by `outcomes_by_chat`)
                // may be sorted by id; nothing else.
                let sorts = plan.lines().filter(|l| l.contains("Sort  ")).count();
                let bounded = ["active rows after", "compare chats"].contains(what);
                assert!(sorts == 0 || bounded, "{what}: {plan}");
            }
        }
    }
    let depth = &plans[0].1;
    for index in ["queue_dead", "queue_finished", "queue_leases", "queue_due"] {
        assert!(
            depth.contains(index),
            "queue depth without {index}: {depth}"
        );
    }
}
