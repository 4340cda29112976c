//! Issue 23: the decision reads each agent's seats from counters that
//! triggers keep beside `open_chats` (`store/seats.rs`), not by counting
//! the open chats. The counters must always equal the count: after every
//! kind of write to `open_chats` (reservations and hops, seats given back,
//! reconciliations, closes and `chat.assigned` webhooks, a producer's own
//! SQL), before and after a decision folds the changes, and with several
//! writers at once. Seeded random operations, both backends.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::collections::BTreeMap;
use std::sync::Arc;

use assignd::domain::ChatId;
use assignd::store::{Assigned, WebhookEffect, now_ms};

use store_fixture::*;

both!(
    seats_equal_the_open_chats_after_every_write,
    seats_stay_exact_with_writers_at_once,
    the_decision_reads_no_open_chat_but_those_in_flight
);

const AGENTS: [&str; 4] = ["ann", "bob", "cid", "dee"];

/// A small deterministic generator (xorshift), so a failure replays.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Seats per agent counted from `open_chats` itself, as the decision read
/// them before the counters.
async fn counted(f: &Fixture) -> BTreeMap<String, u32> {
    let sql = "SELECT agent, CAST(COUNT(*) AS BIGINT) FROM (SELECT agent FROM open_chats UNION ALL
                   SELECT previous_agent FROM open_chats WHERE previous_agent IS NOT NULL) AS s
                GROUP BY agent";
    let rows: Vec<(String, i64)> = match &f.raw {
        Raw::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        Raw::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
    };
    rows.into_iter().map(|(a, n)| (a, n as u32)).collect()
}

async fn seats(f: &Fixture) -> BTreeMap<String, u32> {
    let open = f.store.load_routing().await.unwrap().open;
    open.into_iter().collect()
}

/// One random write to `open_chats` through the store, as the daemon makes
/// them, or a producer's own statement. `sole`: this writer may also
/// reconcile and run a producer's statements over many rows (one daemon
/// reconciles at a time; two multi-row statements at once may deadlock on
/// the rows themselves, which is not what this checks).
async fn write(f: &Fixture, dice: &mut Dice, marks: &mut Vec<(i64, String, i64)>, sole: bool) {
    let chat = dice.roll(30) as i64 + 1;
    let agent = AGENTS[dice.roll(4) as usize].to_string();
    let now = now_ms();
    let op = match dice.roll(8) {
        3 | 6 if !sole => 7,
        op => op,
    };
    match op {
        0 | 1 => {
            // A decision's reservation: a hop when the chat is open already.
            let (held, _) = f.store.lock_routing().await.unwrap();
            let seat = Assigned {
                opened: Some((ChatId(chat), agent.clone())),
                ..Assigned::default()
            };
            let mark = held.reserve(&seat).await.unwrap();
            marks.push((chat, agent, mark));
        }
        2 => {
            if !marks.is_empty() {
                let (chat, agent, mark) = marks.swap_remove(dice.roll(marks.len() as u64) as usize);
                let mark = (dice.roll(2) == 0).then_some(mark);
                f.store
                    .unreserve(ChatId(chat), &agent, mark, None)
                    .await
                    .unwrap();
            }
        }
        3 => {
            let n = dice.roll(4) as i64;
            let chats: Vec<ChatId> = (0..n).map(|i| ChatId(chat + i)).collect();
            let stale = now - dice.roll(2) as i64 * 60_000;
            let reconcile = f.store.reconcile_open_chats(&agent, &chats, now, stale);
            reconcile.await.unwrap();
        }
        4 => {
            let effect = WebhookEffect::Closed {
                chat_id: ChatId(chat),
            };
            let id = format!("close-{}", dice.roll(u64::MAX));
            f.store
                .apply_webhook(&id, "chat.closed", &effect)
                .await
                .unwrap();
        }
        5 => {
            let who = (dice.roll(3) > 0).then(|| agent.clone());
            let effect = WebhookEffect::Assigned {
                chat_id: ChatId(chat),
                agent: who,
            };
            let id = format!("assigned-{}", dice.roll(u64::MAX));
            f.store
                .apply_webhook(&id, "chat.assigned", &effect)
                .await
                .unwrap();
        }
        6 => {
            // A producer's own statement, several rows at once.
            let sql = match dice.roll(3) {
                0 => "DELETE FROM open_chats WHERE chat_id % 5 = 0",
                1 => "UPDATE open_chats SET agent = 'ann' WHERE chat_id % 7 = 1",
                _ => "UPDATE open_chats SET previous_agent = NULL WHERE chat_id % 3 = 2",
            };
            f.producer(sql).await.unwrap();
        }
        _ => {
            // A decision that assigned nobody: it only folds.
            let (held, _) = f.store.lock_routing().await.unwrap();
            held.release().await.unwrap();
        }
    }
}

async fn seats_equal_the_open_chats_after_every_write(f: Fixture) {
    let mut dice = Dice(0x5eed_0001);
    let mut marks = Vec::new();
    for step in 0..400 {
        write(&f, &mut dice, &mut marks, true).await;
        assert_eq!(seats(&f).await, counted(&f).await, "after step {step}");
    }
    let (held, under_lock) = f.store.lock_routing().await.unwrap();
    held.release().await.unwrap();
    let folded: BTreeMap<String, u32> = under_lock.open.into_iter().collect();
    assert_eq!(folded, counted(&f).await, "read under the lock, folded");
    let left = "SELECT COUNT(*) FROM agent_seat_changes";
    assert_eq!(f.count(left).await, 0, "the fold took every change");
    // Retention's fold, where no decision folds (SQLite): the changes of
    // more writes go, the seats stay exact.
    for _ in 0..50 {
        write(&f, &mut dice, &mut marks, true).await;
    }
    f.store.fold_seats().await.unwrap();
    assert_eq!(f.count(left).await, 0, "retention's fold took every change");
    assert_eq!(seats(&f).await, counted(&f).await, "after retention's fold");
}

async fn seats_stay_exact_with_writers_at_once(f: Fixture) {
    let f = Arc::new(f);
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut dice = Dice(0x5eed_1000 + w);
                let mut marks = Vec::new();
                for _ in 0..200 {
                    write(&f, &mut dice, &mut marks, w == 0).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(seats(&f).await, counted(&f).await, "before a fold");
    let (held, _) = f.store.lock_routing().await.unwrap();
    held.release().await.unwrap();
    assert_eq!(seats(&f).await, counted(&f).await, "after a fold");
}

/// 3,000 open chats, 10 of them reserved by decisions in flight: what a
/// decision reads touches none of the others (the seats read the counters;
/// the hourly counts read the reserved seats through their index).
async fn the_decision_reads_no_open_chat_but_those_in_flight(f: Fixture) {
    let sql = match f.store.backend() {
        assignd::store::Backend::Postgres => {
            "INSERT INTO open_chats (chat_id, agent, assigned_at, reserved)
             SELECT g, 'ann', g, CASE WHEN g <= 10 THEN 1 ELSE 0 END
               FROM generate_series(1, 3000) AS g"
        }
        assignd::store::Backend::Sqlite => {
            "WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < 3000)
             INSERT INTO open_chats (chat_id, agent, assigned_at, reserved)
             SELECT g, 'ann', g, CASE WHEN g <= 10 THEN 1 ELSE 0 END FROM c"
        }
    };
    f.producer(sql).await.unwrap();
    let (held, _) = f.store.lock_routing().await.unwrap();
    held.release().await.unwrap();
    f.producer("ANALYZE").await.unwrap();
    for (what, plan) in f.store.decision_read_plans().await.unwrap() {
        println!("{:?} {what}:\n{plan}\n", f.store.backend());
        let reads_open: Vec<&str> = plan
            .lines()
            .filter(|l| l.contains("open_chats") && !l.contains("open_chats_reserved"))
            .filter(|l| !l.contains("PRIMARY KEY") && !l.contains("open_chats_pkey"))
            .collect();
        assert!(reads_open.is_empty(), "{what} reads the open chats: {plan}");
        if what == "seats" {
            assert!(!plan.contains("open_chats"), "{plan}");
        }
    }
}
