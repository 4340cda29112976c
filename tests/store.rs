//! One store test suite, run against both backends: a real SQLite file and
//! a real PostgreSQL server (`support/postgres.rs`). Each case is written
//! once against the `Store` API and instantiated per backend by `both!`.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use std::collections::HashSet;
use std::time::Duration;

use assignd::domain::{AgentId, ChatId};
use assignd::store::{
    Assigned, Followup, NewOutcome, Next, OutboxKind, OutboxMessage, OutcomeResult, WebhookEffect,
    now_ms,
};

use store_fixture::*;

/// A hop in doubt (carol's seat reserved for a chat open with bob, its
/// call's answer unknown) keeps both seats through a reconciliation of
/// carol, however old: her search cannot see the chat, which is bob's until
/// the hop is read. Without the call in doubt, the stale hop goes back to
/// bob.
async fn a_hop_in_doubt_keeps_its_seats_through_a_reconciliation(f: Fixture) {
    let bob = WebhookEffect::Assigned {
        chat_id: ChatId(7),
        agent: Some("bob".into()),
    };
    f.store
        .apply_webhook("o7", "chat.assigned", &bob)
        .await
        .unwrap();
    let (held, _) = f.store.lock_routing().await.unwrap();
    let hop = Assigned {
        opened: Some((ChatId(7), "carol".into())),
        ..Assigned::default()
    };
    held.reserve(&hop).await.unwrap();
    f.producer(
        "INSERT INTO assign_intents (chat_id, agent, agent_id, owner, at)
         VALUES (7, 'carol', 6694, 'gone-daemon', 1)",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = now_ms();
    let seats = |r: &assignd::store::StoredRouting| {
        (r.open.get("bob").copied(), r.open.get("carol").copied())
    };
    f.store
        .reconcile_open_chats("carol", &[], later, later)
        .await
        .unwrap();
    let routing = f.store.load_routing().await.unwrap();
    assert_eq!(seats(&routing), (Some(1), Some(1)), "both kept in doubt");
    f.store.clear_intent(ChatId(7)).await.unwrap();
    f.store
        .reconcile_open_chats("carol", &[], later, later)
        .await
        .unwrap();
    let routing = f.store.load_routing().await.unwrap();
    assert_eq!(seats(&routing), (Some(1), None), "the stale hop goes back");
}

both!(
    a_hop_in_doubt_keeps_its_seats_through_a_reconciliation,
    a_producers_plain_insert_gets_defaults_and_duplicates_are_ignored,
    claims_are_exclusive_between_claimers,
    settle_is_fenced_by_the_claim,
    release_gives_rows_and_messages_back,
    dead_letters_come_back_with_retry,
    an_assignment_moves_routing_state_and_queues_messages,
    webhook_events_apply_once,
    follow_ups_are_claimed_and_settled,
    listings_and_pruning,
    reconciliation_merges_what_its_search_cannot_know,
    hourly_counts_come_from_outcomes_and_reservations,
    customers_past_sticky_for_are_forgotten,
    absent_agents_chats_come_in_one_read,
    a_call_in_doubt_counts_for_the_hour_after_a_webhook_confirms_it,
);

/// A call in doubt (its intent recorded, its answer lost) counts toward its
/// agent's hour while reserved, and still after HelpCrunch's own
/// `chat.assigned` confirms the seat and before the call is settled; once.
async fn a_call_in_doubt_counts_for_the_hour_after_a_webhook_confirms_it(f: Fixture) {
    let (held, _) = f.store.lock_routing().await.unwrap();
    let seat = Assigned {
        opened: Some((ChatId(9), "alice".into())),
        ..Assigned::default()
    };
    held.reserve(&seat).await.unwrap();
    let intent = format!(
        "INSERT INTO assign_intents (chat_id, agent, agent_id, owner, at)
         VALUES (9, 'alice', 4188, 'd1', {})",
        now_ms()
    );
    f.producer(Box::leak(intent.into_boxed_str()))
        .await
        .unwrap();
    let since = jiff::Timestamp::from_millisecond(now_ms() - 3_600_000).unwrap();
    let count = |r: std::collections::HashMap<String, Vec<jiff::Timestamp>>| {
        r.get("alice").map_or(0, Vec::len)
    };
    assert_eq!(count(f.store.recent_assignments(since).await.unwrap()), 1);
    let confirmed = WebhookEffect::Assigned {
        chat_id: ChatId(9),
        agent: Some("alice".into()),
    };
    f.store
        .apply_webhook("a9", "chat.assigned", &confirmed)
        .await
        .unwrap();
    assert_eq!(
        count(f.store.recent_assignments(since).await.unwrap()),
        1,
        "the confirmed call in doubt still counts, once"
    );
}

/// The open chats of several absent agents come in one read, by agent then
/// chat, with each chat's answer; an agent not named, and none, read none.
async fn absent_agents_chats_come_in_one_read(f: Fixture) {
    for (n, (chat, agent)) in [(3, "bob"), (1, "alice"), (2, "bob"), (4, "carol")]
        .iter()
        .enumerate()
    {
        let open = WebhookEffect::Assigned {
            chat_id: ChatId(*chat),
            agent: Some(agent.to_string()),
        };
        let id = format!("open-{n}");
        f.store
            .apply_webhook(&id, "chat.assigned", &open)
            .await
            .unwrap();
    }
    f.store.note_answer(ChatId(2), "bob").await.unwrap();
    let chats = f
        .store
        .handback_chats(&["bob", "alice"], false)
        .await
        .unwrap();
    let seen: Vec<(&str, i64, bool)> = chats
        .iter()
        .map(|c| (c.agent.as_str(), c.chat_id.0, c.answered_at.is_some()))
        .collect();
    assert_eq!(
        seen,
        [("alice", 1, false), ("bob", 2, true), ("bob", 3, false)]
    );
    assert!(f.store.handback_chats(&[], false).await.unwrap().is_empty());
    assert!(
        f.store
            .handback_chats(&["dana"], false)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_producers_plain_insert_gets_defaults_and_duplicates_are_ignored(f: Fixture) {
    assert_eq!(
        f.producer("INSERT INTO queue (chat_id) VALUES (123)")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.producer("INSERT INTO queue (chat_id) VALUES (123)")
            .await
            .unwrap(),
        0,
        "a second active row for a chat is ignored"
    );
    assert_eq!(f.store.enqueue(&[item(123), item(124)]).await.unwrap(), 1);
    let rows = f.store.claim(&key("a", 1), LEASE, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    let first = rows.iter().find(|r| r.chat_id == ChatId(123)).unwrap();
    assert_eq!((first.priority, first.attempts), (0, 1));
    assert!(first.enqueued_at_ms > now_ms() - 60_000 && first.enqueued_at_ms <= now_ms());
}

async fn claims_are_exclusive_between_claimers(f: Fixture) {
    let items: Vec<_> = (1..=60).map(item).collect();
    assert_eq!(f.store.enqueue(&items).await.unwrap(), 60);
    let mut tasks = Vec::new();
    for owner in ["a", "b", "c"] {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for epoch in 0.. {
                let rows = store.claim(&key(owner, epoch), LEASE, 4).await.unwrap();
                if rows.is_empty() {
                    break;
                }
                got.extend(rows.into_iter().map(|r| r.chat_id));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for chat in t.await.unwrap() {
            assert!(seen.insert(chat), "chat {chat} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 60);
}

async fn settle_is_fenced_by_the_claim(f: Fixture) {
    f.store.enqueue(&[item(7)]).await.unwrap();
    let (row, claim) = claim_one(&f).await;
    let stale = key("a", 2);
    assert!(
        !f.store
            .settle(&settlement(row.id, &stale, Next::Done))
            .await
            .unwrap()
    );
    assert!(
        f.store
            .settle(&settlement(row.id, &claim, Next::Done))
            .await
            .unwrap()
    );
    let depth = f.store.queue_depth().await.unwrap();
    assert!(depth.contains(&("done".into(), 1)), "{depth:?}");
    let outcomes = f.store.recent_outcomes(10).await.unwrap();
    assert_eq!(outcomes[0].result, "assigned");
}

async fn release_gives_rows_and_messages_back(f: Fixture) {
    f.store.enqueue(&[item(1), item(2)]).await.unwrap();
    let rows = f.store.claim(&key("me", 1), LEASE, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(f.store.release_all("other").await.unwrap(), (0, 0));
    assert_eq!(f.store.release_all("me").await.unwrap(), (2, 0));
    let again = f.store.claim(&key("you", 1), LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|r| r.attempts == 1),
        "the released attempt is given back"
    );
}

async fn dead_letters_come_back_with_retry(f: Fixture) {
    f.store.enqueue(&[item(5), item(6)]).await.unwrap();
    let claim = key("a", 1);
    for row in f.store.claim(&claim, LEASE, 10).await.unwrap() {
        let mut s = settlement(row.id, &claim, Next::Dead);
        s.last_error = Some("404".into());
        s.outcomes = vec![NewOutcome::new(row.chat_id, OutcomeResult::Failed)];
        assert!(f.store.settle(&s).await.unwrap());
    }
    let dead = f.store.list_queue(Some("dead"), 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("404"));
    assert_eq!(
        f.store
            .retry_dead(Some(&[dead[0].id]), "test")
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.store.retry_dead(None, "test").await.unwrap(), 1);
    assert_eq!(f.store.active_count().await.unwrap(), 2);
    assert_eq!(f.store.retry_no_match("test").await.unwrap(), 0);
}

async fn an_assignment_moves_routing_state_and_queues_messages(f: Fixture) {
    settle_assigned(
        &f,
        9,
        Assigned {
            round_robin: Some(("support".into(), "bob".into())),
            weights: Some((
                "support".into(),
                vec![("bob".into(), -2), ("amy".into(), 2)],
            )),
            opened: Some((ChatId(9), "bob".into())),
            customer: Some(("id:c1".into(), "bob".into())),
            messages: vec![OutboxMessage {
                chat_id: ChatId(9),
                kind: OutboxKind::Private,
                agent_id: Some(AgentId(2)),
                text: "routed by assignd".into(),
            }],
            followup: None,
        },
    )
    .await;
    let routing = f.store.load_routing().await.unwrap();
    assert_eq!(routing.last_pick["support"], "bob");
    assert_eq!(routing.weights["support"]["amy"], 2);
    assert_eq!(routing.open["bob"], 1);
    assert_eq!(
        f.store
            .customer_last_agent("id:c1")
            .await
            .unwrap()
            .map(|l| (l.name, l.at.is_some())),
        Some(("bob".to_string(), true))
    );
    let sent = f.store.claim_outbox("a", LEASE, 8).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, OutboxKind::Private);
    assert!(
        f.store
            .settle_outbox("a", sent[0].id, "done", 0, false, None)
            .await
            .unwrap()
    );
    assert_eq!(f.store.outbox_pending().await.unwrap(), 0);
    f.store
        .reconcile_open_chats("bob", &[], now_ms() + 1, 0)
        .await
        .unwrap();
    assert!(f.store.open_chats().await.unwrap().is_empty());
    f.store
        .set_away("amy", Some(now_ms() + 1000), "test")
        .await
        .unwrap();
    assert!(f.store.load_away().await.unwrap()["amy"].is_some());
    assert!(f.store.set_back("amy", "test").await.unwrap());
    assert!(!f.store.set_back("amy", "test").await.unwrap());
}

/// Issue 14: a reconciliation keeps the seats reserved by decisions in
/// flight and the chats opened after its search started, and does not count
/// again a chat closed since; a stale reservation goes.
async fn reconciliation_merges_what_its_search_cannot_know(f: Fixture) {
    let opened = |chat: i64| WebhookEffect::Assigned {
        chat_id: ChatId(chat),
        agent: Some("amy".into()),
    };
    f.store
        .apply_webhook("o1", "chat.assigned", &opened(1))
        .await
        .unwrap();
    f.store
        .apply_webhook("o4", "chat.assigned", &opened(4))
        .await
        .unwrap();
    let (held, _) = f.store.lock_routing().await.unwrap();
    let seat = Assigned {
        opened: Some((ChatId(2), "amy".into())),
        ..Assigned::default()
    };
    held.reserve(&seat).await.unwrap();
    let since = now_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // After the search started: chat 3 opened, chat 4 closed.
    f.store
        .apply_webhook("o3", "chat.assigned", &opened(3))
        .await
        .unwrap();
    let closed = WebhookEffect::Closed { chat_id: ChatId(4) };
    f.store
        .apply_webhook("c4", "chat.closed", &closed)
        .await
        .unwrap();
    // The search saw 1 and 4 open, and 5, which amy took outside us.
    let found = [ChatId(1), ChatId(4), ChatId(5)];
    f.store
        .reconcile_open_chats("amy", &found, since, since - 60_000)
        .await
        .unwrap();
    let mut open: Vec<i64> = f
        .store
        .open_chats()
        .await
        .unwrap()
        .into_keys()
        .map(|c| c.0)
        .collect();
    open.sort();
    assert_eq!(open, vec![1, 2, 3, 5]);
    assert_eq!(f.store.load_routing().await.unwrap().open["amy"], 4);
    // Later, the search finds nothing: all forgotten, the stale seat too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = now_ms();
    f.store
        .reconcile_open_chats("amy", &[], later, later)
        .await
        .unwrap();
    assert!(f.store.open_chats().await.unwrap().is_empty());
}

async fn webhook_events_apply_once(f: Fixture) {
    let opened = WebhookEffect::Assigned {
        chat_id: ChatId(11),
        agent: Some("amy".into()),
    };
    assert!(
        f.store
            .apply_webhook("e1", "chat.assigned", &opened)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .apply_webhook("e1", "chat.assigned", &opened)
            .await
            .unwrap()
    );
    assert_eq!(f.store.open_chats().await.unwrap()[&ChatId(11)], "amy");
    let closed = WebhookEffect::Closed {
        chat_id: ChatId(11),
    };
    assert!(
        f.store
            .apply_webhook("e2", "chat.closed", &closed)
            .await
            .unwrap()
    );
    assert!(f.store.open_chats().await.unwrap().is_empty());
    let new = WebhookEffect::Enqueue(assignd::store::NewQueueItemJson {
        chat_id: ChatId(12),
        snapshot: "{\"id\": 12}".into(),
        priority: 0,
        ranked: false,
    });
    assert!(f.store.apply_webhook("e3", "chat.new", &new).await.unwrap());
    assert_eq!(f.store.active_count().await.unwrap(), 1);
}

async fn follow_ups_are_claimed_and_settled(f: Fixture) {
    settle_assigned(
        &f,
        21,
        Assigned {
            followup: Some(Followup {
                chat_id: ChatId(21),
                pool: "support".into(),
                rule: Some("all".into()),
                agent: "amy".into(),
                hops: 0,
                tried: vec!["amy".into()],
                due_at_ms: now_ms() - 1,
            }),
            ..Assigned::default()
        },
    )
    .await;
    let due = f.store.claim_followups(LEASE, 8, true).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].tried, vec!["amy".to_string()]);
    assert!(
        f.store
            .claim_followups(LEASE, 8, true)
            .await
            .unwrap()
            .is_empty()
    );
    f.store
        .settle_followup(
            ChatId(21),
            &[],
            None,
            None,
            assignd::store::Doubt::Resolved { queue_id: None },
        )
        .await
        .unwrap();
    assert_eq!(f.store.followup_next_due_ms().await.unwrap(), None);
}

async fn listings_and_pruning(f: Fixture) {
    f.store.enqueue(&[item(31), item(32)]).await.unwrap();
    assert!(f.store.next_due_ms().await.unwrap().is_some());
    let claim = key("a", 1);
    let rows = f.store.claim(&claim, LEASE, 10).await.unwrap();
    let mut waiting = settlement(
        rows[0].id,
        &claim,
        Next::Retry {
            at_ms: now_ms() + 60_000,
            count_attempt: false,
        },
    );
    waiting.last_error = Some("waiting: no agent".into());
    assert!(f.store.settle(&waiting).await.unwrap());
    assert!(
        f.store
            .settle(&settlement(rows[1].id, &claim, Next::Done))
            .await
            .unwrap()
    );
    assert_eq!(f.store.waiting(10).await.unwrap().len(), 1);
    assert_eq!(f.store.list_queue(None, 10).await.unwrap().len(), 2);
    f.store.set_daemon_state("api", "ok").await.unwrap();
    assert_eq!(
        f.store.daemon_state_value("api").await.unwrap().as_deref(),
        Some("ok")
    );
    let (pruned, outcomes) = f.store.prune(now_ms() + 1).await.unwrap();
    assert_eq!((pruned, outcomes), (1, 2));
    assert_eq!(f.count("SELECT COUNT(*) FROM queue").await, 1);
    assert!(f.store.probe_write().await.is_ok());
    f.store.ping().await.unwrap();
}

/// PostgreSQL types its columns, so a producer's bad value is refused at
/// its INSERT, with PostgreSQL's own error, and nothing else is stored.
#[tokio::test]
async fn postgres_refuses_a_producers_bad_values_at_insert() {
    let Some(f) = Fixture::postgres().await else {
        return;
    };
    for (sql, says) in [
        (
            "INSERT INTO queue (chat_id) VALUES ('abc')",
            "invalid input syntax",
        ),
        ("INSERT INTO queue (chat_id) VALUES (0)", "check constraint"),
        (
            "INSERT INTO queue (chat_id, attrs) VALUES (1, '[1]')",
            "check constraint",
        ),
        (
            "INSERT INTO queue (chat_id, attrs) VALUES (1, 'nope')",
            "invalid input syntax",
        ),
    ] {
        let e = f.producer(sql).await.unwrap_err().to_string();
        assert!(e.contains(says), "{sql}: {e}");
    }
    assert_eq!(f.count("SELECT COUNT(*) FROM queue").await, 0);
}

/// Settles chat `chat` as assigned to `agent`, its outcome naming the agent.
async fn settle_to(f: &Fixture, chat: i64, agent: &str) {
    f.store.enqueue(&[item(chat)]).await.unwrap();
    let (row, claim) = claim_one(f).await;
    let mut s = settlement(row.id, &claim, Next::Done);
    let mut failed = NewOutcome::new(ChatId(chat), OutcomeResult::Failed);
    failed.agent = Some(agent.into());
    let mut assigned = NewOutcome::new(ChatId(chat), OutcomeResult::Assigned);
    assigned.agent = Some(agent.into());
    s.outcomes = vec![failed, assigned];
    s.assigned = Some(Assigned {
        opened: Some((ChatId(chat), agent.into())),
        ..Assigned::default()
    });
    assert!(f.store.settle(&s).await.unwrap());
}

/// `max_per_hour` counts the `assigned` outcomes after the instant asked,
/// and the seats reserved under the routing lock whose call has not
/// settled (another daemon's, in flight): each assignment once.
async fn hourly_counts_come_from_outcomes_and_reservations(f: Fixture) {
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    let counts = |recent: std::collections::HashMap<String, Vec<jiff::Timestamp>>| {
        let mut v: Vec<(String, usize)> = recent.into_iter().map(|(a, t)| (a, t.len())).collect();
        v.sort();
        v
    };
    settle_to(&f, 1, "bob").await;
    let (held, _) = f.store.lock_routing().await.unwrap();
    let reserved = Assigned {
        opened: Some((ChatId(2), "amy".into())),
        ..Assigned::default()
    };
    held.reserve(&reserved).await.unwrap();
    let expected = vec![("amy".to_string(), 1), ("bob".to_string(), 1)];
    assert_eq!(
        counts(f.store.recent_assignments(since).await.unwrap()),
        expected
    );
    let (mut held, _) = f.store.lock_routing().await.unwrap();
    let locked = held.recent_assignments(since).await.unwrap();
    held.release().await.unwrap();
    assert_eq!(counts(locked), expected, "the same under the lock");
    // The reserved call succeeds: its outcome replaces the reservation.
    settle_to(&f, 2, "amy").await;
    assert_eq!(
        counts(f.store.recent_assignments(since).await.unwrap()),
        expected
    );
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    assert!(f.store.recent_assignments(later).await.unwrap().is_empty());
}

/// The retention job forgets the customers' agents older than the longest
/// `sticky_for` it passes, and keeps the others.
async fn customers_past_sticky_for_are_forgotten(f: Fixture) {
    let customer = |key: &str| Assigned {
        customer: Some((key.into(), "bob".into())),
        ..Assigned::default()
    };
    settle_assigned(&f, 1, customer("id:old")).await;
    f.producer("UPDATE customer_agent SET at = at - 86400000 WHERE customer = 'id:old'")
        .await
        .unwrap();
    settle_assigned(&f, 2, customer("id:new")).await;
    let forgotten = f.store.prune_customers(now_ms() - 3_600_000).await.unwrap();
    assert_eq!(forgotten, 1);
    assert!(
        f.store
            .customer_last_agent("id:old")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .customer_last_agent("id:new")
            .await
            .unwrap()
            .is_some()
    );
}
