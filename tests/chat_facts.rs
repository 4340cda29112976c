//! Issue 24, item 4, on both backends: each chat's first assignment (by
//! assignd or by someone else) and first agent reply are recorded on its
//! `chat_history` row once, never overwritten, survive its close, and go
//! with the row when retention prunes it.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::time::Duration;

use assignd::domain::{AgentId, ChatId};
use assignd::store::{
    Applied, Assigned, FirstFact, NewOutcome, Next, OutboxKind, OutboxMessage, OutcomeResult,
    WebhookEffect, now_ms,
};

use store_fixture::*;

both!(
    assignd_assignment_then_others_change_nothing,
    an_assignment_by_someone_else_is_other_until_assignd_called,
    a_reply_before_any_assignment_is_kept,
    assignd_own_reply_is_not_an_agent_reply,
    a_chat_never_seen_arriving_is_neither_reported_nor_replayed,
    reconciliation_tells_an_assignment_once,
    retention_prunes_the_facts_with_their_row,
);

/// A chat's history row: (arrival, arrived_at, assigned_at,
/// assigned_agent, assigned_by, first_reply_at, first_reply_agent,
/// closed_at).
type Row = (
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

const ROW: &str = "SELECT arrival, arrived_at, assigned_at, assigned_agent, assigned_by,
        first_reply_at, first_reply_agent, closed_at FROM chat_history WHERE chat_id = $1";

async fn row(f: &Fixture, chat: i64) -> Option<Row> {
    match &f.raw {
        Raw::Sqlite(p) => sqlx::query_as(ROW).bind(chat).fetch_optional(p).await,
        Raw::Postgres(p) => sqlx::query_as(ROW).bind(chat).fetch_optional(p).await,
    }
    .unwrap()
}

/// The facts of a row: (assigned_agent, assigned_by, first_reply_agent).
fn facts(r: &Row) -> (Option<&str>, Option<&str>, Option<&str>) {
    (r.3.as_deref(), r.4.as_deref(), r.6.as_deref())
}

fn assigned(chat: i64, agent: &str) -> WebhookEffect {
    WebhookEffect::Assigned {
        chat_id: ChatId(chat),
        agent: Some(agent.into()),
    }
}

fn answered(chat: i64, agent: Option<&str>, text: &str) -> WebhookEffect {
    WebhookEffect::Answered {
        chat_id: ChatId(chat),
        agent: agent.map(str::to_string),
        text: Some(text.into()),
    }
}

async fn apply(f: &Fixture, id: &str, effect: WebhookEffect) -> Applied {
    let event = match effect {
        WebhookEffect::Assigned { .. } => "chat.assigned",
        WebhookEffect::Answered { .. } => "message.chat.agent",
        _ => "chat.closed",
    };
    f.store
        .apply_webhook_event(id, event, &effect)
        .await
        .unwrap()
}

/// Enqueues `chat`, claims it and settles it done with `outcome` (and
/// what an assignment moves); returns when it was enqueued.
async fn settle(f: &Fixture, chat: i64, outcome: NewOutcome, moved: Option<Assigned>) -> i64 {
    let before = now_ms();
    f.store.enqueue(&[item(chat)]).await.unwrap();
    let (r, claim) = claim_one(f).await;
    let mut s = settlement(r.id, &claim, Next::Done);
    s.chat_id = ChatId(chat);
    s.outcomes = vec![outcome];
    s.assigned = moved;
    assert!(f.store.settle(&s).await.unwrap());
    assert!(r.enqueued_at_ms >= before);
    r.enqueued_at_ms
}

fn assigned_to(chat: i64, agent: &str) -> NewOutcome {
    NewOutcome {
        agent: Some(agent.into()),
        agent_id: Some(AgentId(4188)),
        rule: Some("all".into()),
        ..NewOutcome::new(ChatId(chat), OutcomeResult::Assigned)
    }
}

fn is_reply(a: Applied) -> bool {
    matches!(a, Applied::New(Some(FirstFact::Reply(_))))
}

/// Whether `a` recorded a first assignment by assignd (`Some(true)`) or by
/// someone else (`Some(false)`).
fn assignment_by_assignd(a: Applied) -> Option<bool> {
    match a {
        Applied::New(Some(FirstFact::Assignment { by_assignd, .. })) => Some(by_assignd),
        _ => None,
    }
}

/// assignd's assignment is recorded as its own with the outcome; the
/// `chat.assigned` for it, a later assignment, a second reply and the
/// close change none of the facts.
async fn assignd_assignment_then_others_change_nothing(f: Fixture) {
    let enqueued = settle(&f, 11, assigned_to(11, "alice"), None).await;
    let first = row(&f, 11).await.unwrap();
    assert_eq!(first.0, "decided");
    assert_eq!(first.1, enqueued);
    assert!(first.2.is_some_and(|at| at >= enqueued));
    assert_eq!(facts(&first), (Some("alice"), Some("assignd"), None));

    let own = apply(&f, "a1", assigned(11, "alice")).await;
    assert_eq!(own, Applied::New(None), "assignd's own, already known");
    apply(&f, "a2", assigned(11, "bob")).await;
    assert!(is_reply(
        apply(&f, "m1", answered(11, Some("#99"), "hi")).await
    ));
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert_eq!(
        apply(&f, "m2", answered(11, Some("alice"), "hello")).await,
        Applied::New(None)
    );
    let replied = row(&f, 11).await.unwrap();
    assert_eq!(
        facts(&replied),
        (Some("alice"), Some("assignd"), Some("#99"))
    );
    assert_eq!(replied.2, first.2);

    apply(
        &f,
        "c1",
        WebhookEffect::Closed {
            chat_id: ChatId(11),
        },
    )
    .await;
    let closed = row(&f, 11).await.unwrap();
    assert!(closed.7.is_some(), "the close is recorded");
    assert_eq!(
        (closed.2, closed.5),
        (replied.2, replied.5),
        "and erases nothing"
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM chat_answers").await, 0);
    // A repeated event id is applied once.
    assert_eq!(
        apply(&f, "m1", answered(11, None, "x")).await,
        Applied::Duplicate
    );
}

/// A person's assignment of a chat that waits in the queue is 'other',
/// from the row's arrival; assignd's decision later keeps it and fills in
/// the rest. A `chat.assigned` for assignd's call in doubt is assignd's.
async fn an_assignment_by_someone_else_is_other_until_assignd_called(f: Fixture) {
    f.store.enqueue(&[item(21)]).await.unwrap();
    let applied = apply(&f, "a1", assigned(21, "bob")).await;
    assert_eq!(assignment_by_assignd(applied), Some(false));
    let queued = row(&f, 21).await.unwrap();
    assert_eq!(queued.0, "queued");
    assert_eq!(facts(&queued), (Some("bob"), Some("other"), None));
    let skipped = NewOutcome::new(ChatId(21), OutcomeResult::Skipped);
    let (r, claim) = claim_one(&f).await;
    let mut s = settlement(r.id, &claim, Next::Done);
    s.chat_id = ChatId(21);
    s.outcomes = vec![skipped];
    assert!(f.store.settle(&s).await.unwrap());
    let decided = row(&f, 21).await.unwrap();
    assert_eq!(
        (decided.0.as_str(), decided.1),
        ("decided", r.enqueued_at_ms)
    );
    assert_eq!((decided.2, facts(&decided)), (queued.2, facts(&queued)));

    f.store.enqueue(&[item(22)]).await.unwrap();
    f.producer(
        "INSERT INTO assign_intents (chat_id, agent, agent_id, owner, at)
         VALUES (22, 'carol', 6694, 'a', 1)",
    )
    .await
    .unwrap();
    let applied = apply(&f, "a2", assigned(22, "carol")).await;
    assert_eq!(assignment_by_assignd(applied), Some(true));
    let in_doubt = row(&f, 22).await.unwrap();
    assert_eq!(facts(&in_doubt), (Some("carol"), Some("assignd"), None));
}

/// An agent answers a waiting chat before anyone assigns it: the reply is
/// kept through assignd's assignment, which is recorded after it.
async fn a_reply_before_any_assignment_is_kept(f: Fixture) {
    f.store.enqueue(&[item(31)]).await.unwrap();
    assert!(is_reply(
        apply(&f, "m1", answered(31, Some("bob"), "hi")).await
    ));
    let replied = row(&f, 31).await.unwrap();
    assert_eq!(facts(&replied), (None, None, Some("bob")));
    let (r, claim) = claim_one(&f).await;
    let mut s = settlement(r.id, &claim, Next::Done);
    s.chat_id = ChatId(31);
    s.outcomes = vec![assigned_to(31, "alice")];
    assert!(f.store.settle(&s).await.unwrap());
    let both = row(&f, 31).await.unwrap();
    assert_eq!(facts(&both), (Some("alice"), Some("assignd"), Some("bob")));
    assert_eq!(both.5, replied.5);
    assert!(both.2 >= both.5, "assigned after the reply");
}

/// The reply assignd itself posted (a rule's `reply`), reported as the
/// agent's message, is not the chat's first reply; the agent's own is.
async fn assignd_own_reply_is_not_an_agent_reply(f: Fixture) {
    let reply = OutboxMessage {
        chat_id: ChatId(41),
        kind: OutboxKind::Message,
        agent_id: Some(AgentId(4188)),
        text: "We are back at 09:00.".into(),
    };
    let moved = Assigned {
        messages: vec![reply],
        ..Assigned::default()
    };
    settle(&f, 41, assigned_to(41, "alice"), Some(moved)).await;
    let own = answered(41, Some("alice"), "We are back at 09:00.");
    assert_eq!(apply(&f, "m1", own).await, Applied::New(None));
    assert_eq!(row(&f, 41).await.unwrap().5, None);
    assert!(is_reply(
        apply(&f, "m2", answered(41, Some("alice"), "Hi!")).await
    ));
    assert!(row(&f, 41).await.unwrap().5.is_some());
}

/// Facts of a chat that arrived before assignd saw it are kept, from when
/// they were seen, but such a chat counts in no report and no replay; a
/// later decision of it makes it an arrival like any.
async fn a_chat_never_seen_arriving_is_neither_reported_nor_replayed(f: Fixture) {
    let since = now_ms() - 1000;
    assert_eq!(
        apply(&f, "m1", answered(51, Some("bob"), "hi")).await,
        Applied::New(None),
        "no arrival, no measure"
    );
    assert_eq!(
        apply(&f, "a1", assigned(51, "bob")).await,
        Applied::New(None)
    );
    let seen = row(&f, 51).await.unwrap();
    assert_eq!(seen.0, "seen");
    assert_eq!(facts(&seen), (Some("bob"), Some("other"), Some("bob")));
    let mut chats = Vec::new();
    let until = now_ms() + 1000;
    f.store
        .report_chats(since, until, |c| chats.push(c))
        .await
        .unwrap();
    assert!(chats.is_empty(), "{chats:?}");
    assert!(f.store.history_since(since).await.unwrap().chats.is_empty());

    settle(&f, 51, assigned_to(51, "alice"), None).await;
    let decided = row(&f, 51).await.unwrap();
    assert_eq!(decided.0, "decided");
    assert!(decided.1 <= seen.1, "the earlier arrival");
    assert_eq!(facts(&decided), facts(&seen), "the facts stay");
    f.store
        .report_chats(since, until, |c| chats.push(c))
        .await
        .unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].assigned_by.as_deref(), Some("other"));
    assert_eq!(chats[0].first_reply_at_ms, seen.5);
    assert_eq!(f.store.history_since(since).await.unwrap().chats.len(), 1);
}

/// Without webhooks, a reconciliation that finds a chat open with an agent
/// is the first sign of its assignment, as of the search; a later one
/// changes nothing.
async fn reconciliation_tells_an_assignment_once(f: Fixture) {
    f.store.enqueue(&[item(61)]).await.unwrap();
    let search = now_ms();
    let stale = search - 60_000;
    f.store
        .reconcile_open_chats("bob", &[ChatId(61)], search, stale)
        .await
        .unwrap();
    let found = row(&f, 61).await.unwrap();
    assert_eq!(found.2, Some(search));
    assert_eq!(facts(&found), (Some("bob"), Some("other"), None));
    f.store
        .reconcile_open_chats("carol", &[ChatId(61)], search + 5, stale)
        .await
        .unwrap();
    let again = row(&f, 61).await.unwrap();
    assert_eq!((again.2, facts(&again)), (found.2, facts(&found)));
}

/// Retention deletes a row with its facts, and keeps a newer one whole.
async fn retention_prunes_the_facts_with_their_row(f: Fixture) {
    settle(&f, 71, assigned_to(71, "alice"), None).await;
    apply(&f, "m1", answered(71, Some("alice"), "hi")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let horizon = now_ms();
    settle(&f, 72, assigned_to(72, "bob"), None).await;
    apply(&f, "m2", answered(72, Some("bob"), "hi")).await;
    f.store.prune(horizon).await.unwrap();
    assert_eq!(row(&f, 71).await, None);
    let kept = row(&f, 72).await.unwrap();
    assert_eq!(facts(&kept), (Some("bob"), Some("assignd"), Some("bob")));
}
