//! Store operations that race in production, run against each other on
//! both backends, over and over: a `chat.closed` webhook and a
//! reconciliation of the same agent committed at the same moment; a queue
//! row's call and a follow-up's hop for one chat begun at the same moment;
//! a settlement retried after a commit whose answer was lost;
//! and the shared API budget every daemon takes its slots from.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::time::Duration;

use assignd::domain::{AgentId, ChatId};
use assignd::store::{Assigned, Began, CallClaim, Followup, Intent, Next, WebhookEffect, now_ms};

use store_fixture::*;

const ROUNDS: i64 = 150;

/// A chat closes while its agent's reconciliation, whose search started
/// before the close and still saw the chat open, is writing: the close
/// wins every time (the chat is not counted open afterwards), whichever
/// commits first.
async fn a_close_is_never_undone_by_a_reconciliation_under_way(f: Fixture) {
    for chat in 1..=ROUNDS {
        let opened = WebhookEffect::Assigned {
            chat_id: ChatId(chat),
            agent: Some("amy".into()),
        };
        let id = format!("o{chat}");
        f.store
            .apply_webhook(&id, "chat.assigned", &opened)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let since = now_ms();
        let found = [ChatId(chat)];
        let reconcile = f
            .store
            .reconcile_open_chats("amy", &found, since, since - 60_000);
        let closed = WebhookEffect::Closed {
            chat_id: ChatId(chat),
        };
        let id = format!("c{chat}");
        let close = f.store.apply_webhook(&id, "chat.closed", &closed);
        let (reconciled, applied) = tokio::join!(reconcile, close);
        reconciled.unwrap();
        applied.unwrap();
        let open = f.store.open_chats().await.unwrap();
        assert!(
            !open.contains_key(&ChatId(chat)),
            "round {chat}: the chat closed, yet it is counted open"
        );
    }
}

/// An intent for `chat`: to `agent`, for queue row `queue_id` (`None`: a
/// hop).
fn intent(chat: i64, agent: &str, queue_id: Option<i64>) -> Intent {
    Intent {
        chat_id: ChatId(chat),
        agent: agent.into(),
        agent_id: AgentId(if queue_id.is_some() { 1 } else { 2 }),
        rule: None,
        pool: Some("support".into()),
        route: None,
        queue_id,
        owner: format!("daemon-of-{agent}"),
        at_ms: 0,
    }
}

/// A chat with a follow-up due, claimed, and a queue row, claimed: two
/// claims on one chat. Returns the follow-up's claim and the row's.
async fn two_claims(f: &Fixture, chat: i64) -> (Followup, assignd::store::QueueRow) {
    let followup = Followup {
        chat_id: ChatId(chat),
        pool: "support".into(),
        rule: None,
        agent: "amy".into(),
        hops: 0,
        tried: vec!["amy".into()],
        due_at_ms: now_ms() - 1,
    };
    let assigned = Assigned {
        followup: Some(followup),
        ..Assigned::default()
    };
    settle_assigned(f, chat, assigned).await;
    let mut due = f.store.claim_followups(LEASE, 8, true).await.unwrap();
    assert_eq!(due.len(), 1, "round {chat}: the follow-up is claimed");
    f.store.enqueue(&[item(chat)]).await.unwrap();
    let row = f.store.claim(&key("b", chat), LEASE, 1).await.unwrap();
    assert_eq!(row.len(), 1, "round {chat}: the row is claimed");
    (due.remove(0), row.into_iter().next().unwrap())
}

/// A follow-up's hop (to bob) and a queue row's call (to cy) for one chat
/// begin at the same moment: exactly one may be sent, and the intent that
/// stands is its own. The row, once its own intent stands, may replace it
/// (its next call after resolving it); once the hop's stands, it may not.
async fn a_chat_has_one_call_in_doubt_at_a_time(f: Fixture) {
    for chat in 1..=ROUNDS {
        let (followup, row) = two_claims(&f, chat).await;
        let row_key = key("b", chat);
        let (hop, call) = (intent(chat, "bob", None), intent(chat, "cy", Some(row.id)));
        let hop_claim = CallClaim::Followup {
            chat_id: ChatId(chat),
            until_ms: followup.due_at_ms,
            lease: LEASE,
        };
        let row_claim = CallClaim::Row {
            queue_id: row.id,
            key: &row_key,
            lease: LEASE,
        };
        let (hopped, called) = tokio::join!(
            f.store.begin_call(hop_claim, &hop),
            f.store.begin_call(row_claim, &call)
        );
        let (hopped, called) = (hopped.unwrap(), called.unwrap());
        let standing = f.store.intent_for(ChatId(chat)).await.unwrap().unwrap();
        let next = intent(chat, "dee", Some(row.id));
        let again = f.store.begin_call(row_claim, &next);
        match (hopped, called) {
            (Began::Confirmed, Began::Busy(other)) => {
                assert_eq!(
                    (other.agent.as_str(), standing.agent.as_str()),
                    ("bob", "bob")
                );
                assert!(
                    matches!(again.await.unwrap(), Began::Busy(_)),
                    "round {chat}"
                );
            }
            (Began::Busy(other), Began::Confirmed) => {
                assert_eq!(
                    (other.agent.as_str(), standing.agent.as_str()),
                    ("cy", "cy")
                );
                assert_eq!(again.await.unwrap(), Began::Confirmed, "round {chat}");
            }
            both => panic!("round {chat}: one call must go, and only one: {both:?}"),
        }
    }
}

/// A settlement whose commit went through but whose answer was lost (the
/// connection dropped at COMMIT: a failover) is retried; the retry finds
/// the row no longer leased, and must not record the outcomes a second
/// time (found by tests/failover.rs, three daemons through a VIP move:
/// one `assigned` outcome more than applied PUTs). Another claim's late
/// settlement is still recorded, and still told it lost the row.
async fn a_settlement_retried_after_its_commit_is_recorded_once(f: Fixture) {
    f.store.enqueue(&[item(7)]).await.unwrap();
    let (row, claim) = claim_one(&f).await;
    let s = settlement(row.id, &claim, Next::Done);
    assert!(f.store.settle(&s).await.unwrap());
    assert!(
        f.store.settle(&s).await.unwrap(),
        "the retry is the same write"
    );
    let outcomes = "SELECT COUNT(*) FROM outcomes WHERE chat_id = 7";
    assert_eq!(f.count(outcomes).await, 1, "the outcome recorded once");
    let late = key("b", 9);
    let other = settlement(row.id, &late, Next::Done);
    assert!(!f.store.settle(&other).await.unwrap(), "another claim's");
    assert_eq!(f.count(outcomes).await, 2, "what it did is recorded");
}

both!(
    a_close_is_never_undone_by_a_reconciliation_under_way,
    a_chat_has_one_call_in_doubt_at_a_time,
    a_settlement_retried_after_its_commit_is_recorded_once
);

/// The shared budget (PostgreSQL): calls are spaced by the period, a slot
/// is handed out up to `ahead` before it is due (and moves the schedule as
/// if taken when due), a 429 pause holds every caller, and background
/// calls stand back while an assignment call waits.
#[tokio::test]
async fn postgres_budget_spaces_calls_and_shares_a_pause() {
    let Some(f) = Fixture::postgres().await else {
        return;
    };
    let period = Duration::from_millis(200);
    let take = |assignment, ahead| {
        f.store
            .take_budget(period, Duration::ZERO, assignment, ahead)
    };
    let (admitted, send_in) = take(true, Duration::ZERO).await.unwrap();
    assert!(
        admitted && send_in.is_zero(),
        "an idle budget admits at once"
    );
    let (admitted, wait) = take(true, Duration::ZERO).await.unwrap();
    assert!(
        !admitted && wait > Duration::from_millis(150),
        "the next call waits: {wait:?}"
    );
    let (admitted, background) = take(false, Duration::ZERO).await.unwrap();
    assert!(
        !admitted && background >= wait,
        "background stands back: {background:?} < {wait:?}"
    );
    // Within a lead of its time the next slot is handed out, to go when
    // due: two periods after the first, as that one followed an idle spell.
    let (admitted, send_in) = take(true, period * 5).await.unwrap();
    assert!(admitted, "a slot due within the lead is handed out");
    assert!(
        send_in > Duration::from_millis(300) && send_in <= period * 2,
        "{send_in:?}"
    );
    let (admitted, wait) = take(true, Duration::ZERO).await.unwrap();
    assert!(!admitted, "the slot handed out early is taken");
    assert!(
        wait > send_in + Duration::from_millis(150),
        "one period after it: {wait:?}"
    );
    f.store.pause_budget(Duration::from_secs(30)).await.unwrap();
    let (admitted, paused) = take(true, period * 5).await.unwrap();
    assert!(
        !admitted && paused > Duration::from_secs(25),
        "paused: {paused:?}"
    );
}
