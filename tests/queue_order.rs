//! Issues 14 and 21, in the store, on both backends: the claim order
//! (priority, then age, with aging so no priority starves; a waiting row
//! keeps its rule's priority; a row no intake ranked is ranked before the
//! claim picks) and the busy reply (a chat's place in its pool's line,
//! unique and in claim order however the settlements interleave; one
//! reply per chat whatever happens).

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use assignd::domain::{AgentId, ChatId};
use assignd::store::{
    BusyMessage, BusyWait, LeaseKey, NewQueueItem, Next, PositionedText, Settlement, UnrankedRow,
    Wait,
};

use store_fixture::*;

/// A settlement that puts the row back until `at_ms`, its attempt given back.
fn retry_at(queue_id: i64, lease: &LeaseKey, at_ms: i64) -> Settlement<'_> {
    settlement(
        queue_id,
        lease,
        Next::Retry {
            at_ms,
            count_attempt: false,
        },
    )
}

fn with(chat_id: i64, priority: i64) -> NewQueueItem {
    NewQueueItem {
        chat_id: ChatId(chat_id),
        priority,
        ..NewQueueItem::default()
    }
}

both!(
    claims_take_priority_then_age_and_waiting_rows_keep_their_rules_priority,
    a_busy_reply_knows_its_place_and_goes_once,
    a_claim_ranks_the_rows_no_intake_ranked_before_it_picks,
);

async fn claims_take_priority_then_age_and_waiting_rows_keep_their_rules_priority(f: Fixture) {
    let items = [with(1, 0), with(2, 5), with(3, 0), with(4, 0), with(5, 4)];
    f.store.enqueue(&items).await.unwrap();
    // 25 minutes old: two or three levels gained (one per 10-minute mark of
    // the clock passed), so above 1 and 3, below 5.
    let aged = "UPDATE queue SET enqueued_at = enqueued_at - 1500000 WHERE chat_id = 4";
    assert_eq!(f.producer(aged).await.unwrap(), 1);
    let mut order = Vec::new();
    for epoch in 0..5 {
        let row = f.store.claim(&key("a", epoch), LEASE, 1).await.unwrap();
        order.push(row[0].chat_id.0);
    }
    assert_eq!(order, [2, 5, 4, 1, 3]);

    // A chat that waits keeps its rule's priority (raised, never lowered).
    f.store.enqueue(&[with(10, 0)]).await.unwrap();
    let (row, claim) = claim_one(&f).await;
    let mut wait = retry_at(row.id, &claim, 0);
    wait.priority = Some(7);
    assert!(f.store.settle(&wait).await.unwrap());
    f.store.enqueue(&[with(11, 6)]).await.unwrap();
    let b1 = key("b", 1);
    let first = f.store.claim(&b1, LEASE, 1).await.unwrap();
    assert_eq!(
        first[0].chat_id.0, 10,
        "the waiting chat's rule priority 7 beats 6"
    );
    assert_eq!(first[0].priority, 7);
    let mut lower = retry_at(first[0].id, &b1, 0);
    lower.priority = Some(-3);
    assert!(f.store.settle(&lower).await.unwrap());
    let again = f.store.claim(&key("b", 2), LEASE, 2).await.unwrap();
    assert_eq!(again[0].chat_id.0, 10);
    assert_eq!(
        again[0].priority, 7,
        "a lower rule priority never lowers the row's"
    );
}

/// A wait in `pool` with its busy reply: "number {position} in line".
fn busy(chat: i64, pool: &str) -> BusyWait {
    BusyWait {
        pool: pool.into(),
        reply: Some(BusyMessage {
            chat_id: ChatId(chat),
            agent_id: AgentId(2533),
            text: PositionedText(vec!["number ".into(), " in line".into()]),
        }),
    }
}

/// Claims every due row, one claim each, as a daemon at concurrency N
/// would: (chat, queue id, claim), in claim order.
async fn claim_all(f: &Fixture, owner: &str) -> Vec<(i64, i64, LeaseKey)> {
    let mut out = Vec::new();
    for epoch in 0.. {
        let claim = key(owner, epoch);
        let Some(row) = f.store.claim(&claim, LEASE, 1).await.unwrap().pop() else {
            return out;
        };
        out.push((row.chat_id.0, row.id, claim));
    }
    unreachable!()
}

/// Settles `chat` (of `claimed`) as waiting in `pool`, with its reply,
/// due again now or never.
async fn wait_in(f: &Fixture, claimed: &[(i64, i64, LeaseKey)], chat: i64, pool: &str, now: bool) {
    let (_, id, claim) = claimed.iter().find(|c| c.0 == chat).unwrap();
    let due = if now { 0 } else { i64::MAX / 2 };
    let mut wait = retry_at(*id, claim, due);
    wait.waiting = Some(Wait::Candidate);
    wait.busy_reply = Some(busy(chat, pool));
    assert!(f.store.settle(&wait).await.unwrap());
}

/// The place `chat` was told, from its message (0: none).
async fn told(f: &Fixture, chat: i64) -> i64 {
    for n in 1..=9 {
        let sql: &'static str = Box::leak(
            format!(
                "SELECT COUNT(*) FROM outbox WHERE chat_id = {chat} AND text = 'number {n} in line'"
            )
            .into_boxed_str(),
        );
        if f.count(sql).await == 1 {
            return n;
        }
    }
    0
}

async fn places(f: &Fixture, chats: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    for &c in chats {
        out.push(told(f, c).await);
    }
    out
}

async fn a_busy_reply_knows_its_place_and_goes_once(f: Fixture) {
    // Four chats wait for a seat in `support`, one in `other`; claim order
    // 3 (priority 2), then 1, 2, 4, 9 by age.
    let items = [with(1, 0), with(2, 0), with(3, 2), with(4, 0), with(9, 0)];
    f.store.enqueue(&items).await.unwrap();
    let claimed = claim_all(&f, "a").await;
    let order: Vec<i64> = claimed.iter().map(|c| c.0).collect();
    assert_eq!(order, [3, 1, 2, 4, 9]);
    // All five decided at once, settled in the worst order: a chat with a
    // row ahead of it still being decided for the first time is not told.
    for chat in [4, 2, 9, 3, 1] {
        let pool = if chat == 9 { "other" } else { "support" };
        wait_in(&f, &claimed, chat, pool, true).await;
    }
    // (9 waits in another pool, but 3 and 1, ahead of it, were still
    // being decided for the first time: they might have joined its line.)
    assert_eq!(places(&f, &[3, 1, 2, 4, 9]).await, [1, 2, 0, 0, 0]);
    // Their next turn, again all at once and out of order: each is told a
    // place of its own, in claim order.
    let again = claim_all(&f, "b").await;
    assert_eq!(again.len(), 5);
    for (chat, pool) in [(4, "support"), (2, "support"), (1, "support"), (9, "other")] {
        wait_in(&f, &again, chat, pool, true).await;
    }
    assert_eq!(places(&f, &[3, 1, 2, 4, 9]).await, [1, 2, 3, 4, 1]);

    // Chat 3 gets a seat and leaves the line; a new chat's place is 4 now,
    // but 4 was told to a chat still waiting ahead of it: it is told 5.
    let (_, id, claim) = again.iter().find(|c| c.0 == 3).unwrap();
    assert!(
        f.store
            .settle(&settlement(*id, claim, Next::Done))
            .await
            .unwrap()
    );
    f.store.enqueue(&[with(5, 0)]).await.unwrap();
    let fresh = claim_all(&f, "c").await;
    let order: Vec<i64> = fresh.iter().map(|c| c.0).collect();
    assert_eq!(order, [1, 2, 4, 9, 5]);
    wait_in(&f, &fresh, 5, "support", false).await;
    assert_eq!(told(&f, 5).await, 5, "a place no waiting chat ahead holds");

    // Twice the reply, from two claims of the chat: one message, once.
    for (chat, pool) in [(1, "support"), (2, "support"), (4, "support"), (9, "other")] {
        wait_in(&f, &fresh, chat, pool, false).await;
    }
    assert!(f.store.busy_replied(ChatId(1)).await.unwrap());
    assert_eq!(
        f.count("SELECT COUNT(*) FROM outbox WHERE chat_id = 1")
            .await,
        1
    );
    // A settlement that lost its claim sends nothing.
    f.store.enqueue(&[with(6, 0)]).await.unwrap();
    let row = f
        .store
        .claim(&key("d", 1), LEASE, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(row.chat_id, ChatId(6));
    let lost = key("d", 2);
    let mut late = settlement(row.id, &lost, Next::Done);
    late.busy_reply = Some(busy(6, "support"));
    assert!(!f.store.settle(&late).await.unwrap());
    assert!(!f.store.busy_replied(ChatId(6)).await.unwrap());
}

/// A producer's INSERT of chat `chat` with `attrs` (JSON) and `priority`.
async fn insert(f: &Fixture, chat: i64, attrs: &str, priority: i64) {
    let sql: &'static str = Box::leak(
        format!(
            "INSERT INTO queue (chat_id, attrs, priority) VALUES ({chat}, '{attrs}', {priority})"
        )
        .into_boxed_str(),
    );
    assert_eq!(f.producer(sql).await.unwrap(), 1);
}

/// Rows no intake ranked take their rule priority in the claim's own
/// transaction, before it picks: the higher of theirs and the rule's.
async fn a_claim_ranks_the_rows_no_intake_ranked_before_it_picks(f: Fixture) {
    // Rule priority: 10 for gold, -5 for spam, unknown otherwise.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let rank = |row: &UnrankedRow| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let attrs = row.attrs.as_deref().unwrap_or("");
        match () {
            _ if attrs.contains("gold") => Some(10),
            _ if attrs.contains("spam") => Some(-5),
            _ => None,
        }
    };
    for chat in 1..=3 {
        insert(&f, chat, "{}", 0).await;
    }
    insert(&f, 4, r#"{"tier": "spam"}"#, 1).await;
    insert(&f, 5, r#"{"tier": "gold"}"#, 0).await;
    insert(&f, 6, r#"{"tier": "gold"}"#, 20).await;
    // Ranked at intake already: not ranked again.
    let ranked = NewQueueItem {
        ranked: true,
        ..with(7, 3)
    };
    f.store.enqueue(&[ranked]).await.unwrap();
    let mut order = Vec::new();
    for epoch in 0..7 {
        let rows = f
            .store
            .claim_ranked(&key("a", epoch), LEASE, 1, &rank)
            .await
            .unwrap();
        order.push((rows[0].chat_id.0, rows[0].priority));
    }
    assert_eq!(
        order,
        [(6, 20), (5, 10), (7, 3), (4, 1), (1, 0), (2, 0), (3, 0)],
        "gold first, its own higher priority kept; spam not lowered"
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        6,
        "each row once"
    );
    // A claimed row that goes back is not ranked again: its decision did.
    assert_eq!(
        f.count("SELECT COUNT(*) FROM queue WHERE ranked = 0").await,
        0
    );
}
