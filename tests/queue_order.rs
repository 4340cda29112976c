//! Issues 14 and 21, in the store, on both backends: the claim order
//! (priority, then age, with aging so no priority starves; a waiting row
//! keeps its rule's priority; a row no intake ranked is ranked before the
//! claim picks) and the busy reply (a chat's place in line; one reply
//! per chat whatever happens).

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use assignd::domain::{AgentId, ChatId};
use assignd::store::{
    LeaseKey, NewQueueItem, Next, OutboxKind, OutboxMessage, Settlement, UnrankedRow, Wait,
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
    let items = [with(1, 0), with(2, 5), with(3, 0), with(4, 0), with(5, 3)];
    f.store.enqueue(&items).await.unwrap();
    // 25 minutes old: two levels gained (one per 10 minutes), so above 1 and 3.
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

async fn a_busy_reply_knows_its_place_and_goes_once(f: Fixture) {
    // Three chats wait for a seat: 1 and 2 at priority 0, 3 at priority 2.
    f.store
        .enqueue(&[with(1, 0), with(2, 0), with(3, 2)])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for epoch in 0..3 {
        let claim = key("a", epoch);
        let row = f.store.claim(&claim, LEASE, 1).await.unwrap().remove(0);
        let mut wait = retry_at(row.id, &claim, i64::MAX / 2);
        wait.waiting = Some(Wait::Candidate);
        assert!(f.store.settle(&wait).await.unwrap());
        ids.push((row.chat_id.0, row.id, row.enqueued_at_ms));
    }
    let row = |chat: i64| *ids.iter().find(|(c, _, _)| *c == chat).unwrap();
    let place = async |chat: i64, priority: i64, aged_ms: i64| {
        let (_, id, at) = row(chat);
        f.store
            .waiting_position(id, priority, at - aged_ms)
            .await
            .unwrap()
    };
    // Chat 3 goes first; of 1 and 2, the older.
    assert_eq!(place(3, 2, 0).await, 1);
    assert_eq!(place(1, 0, 0).await, 2);
    assert_eq!(place(2, 0, 0).await, 3);
    // Chat 2 has waited 30 minutes: three levels gained, it goes first.
    let aged = "UPDATE queue SET enqueued_at = enqueued_at - 1800000 WHERE chat_id = 2";
    assert_eq!(f.producer(aged).await.unwrap(), 1);
    assert_eq!(place(2, 0, 1_800_000).await, 1);
    assert_eq!(place(3, 2, 0).await, 2);

    // Twice the reply, from two claims of the chat: one message, once.
    f.store.enqueue(&[with(4, 0)]).await.unwrap();
    let message = OutboxMessage {
        chat_id: ChatId(4),
        kind: OutboxKind::Message,
        agent_id: Some(AgentId(2533)),
        text: "all busy".into(),
    };
    assert!(!f.store.busy_replied(ChatId(4)).await.unwrap());
    for epoch in 10..12 {
        let claim = key("b", epoch);
        let row = f.store.claim(&claim, LEASE, 1).await.unwrap().remove(0);
        assert_eq!(row.chat_id, ChatId(4));
        let mut wait = retry_at(row.id, &claim, 0);
        wait.busy_reply = Some(message.clone());
        assert!(f.store.settle(&wait).await.unwrap());
    }
    assert!(f.store.busy_replied(ChatId(4)).await.unwrap());
    assert_eq!(
        f.count("SELECT COUNT(*) FROM outbox WHERE chat_id = 4")
            .await,
        1
    );
    // A settlement that lost its claim sends nothing.
    f.store.enqueue(&[with(5, 0)]).await.unwrap();
    let row = f
        .store
        .claim(&key("c", 1), LEASE, 1)
        .await
        .unwrap()
        .remove(0);
    let lost = key("c", 2);
    let mut late = settlement(row.id, &lost, Next::Done);
    late.busy_reply = Some(OutboxMessage {
        chat_id: ChatId(5),
        ..message
    });
    assert!(!f.store.settle(&late).await.unwrap());
    assert!(!f.store.busy_replied(ChatId(5)).await.unwrap());
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
