//! What the console reads and the audit it writes, on both backends (a real
//! SQLite file and a real PostgreSQL server): every change recorded in the
//! same transaction with who made it, the queue in claim order, dead
//! letters, a chat's decisions and stored snapshot, and the sessions of
//! signed-in team leads.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_fixture.rs"]
mod store_fixture;

use assignd::domain::{AuditAction, ChatId};
use assignd::store::{
    ConsoleSession, NewAudit, NewConsoleSession, NewOutcome, NewQueueItem, Next, OutcomeResult,
    now_ms,
};

use store_fixture::*;

both!(
    every_change_is_audited_with_who_made_it,
    the_console_sees_the_queue_dead_letters_and_a_chats_decisions,
    a_console_session_lives_while_used_and_ends_for_good,
);

async fn every_change_is_audited_with_who_made_it(f: Fixture) {
    let start = now_ms() - 1;
    let until = now_ms() + 3_600_000;
    f.store
        .set_away("amy", Some(until), "console:dana")
        .await
        .unwrap();
    f.store.set_away("bo", None, "cli:root@host").await.unwrap();
    assert!(f.store.set_back("amy", "console:dana").await.unwrap());
    // Nothing changed, nothing recorded.
    assert!(!f.store.set_back("amy", "console:dana").await.unwrap());
    f.store.enqueue(&[item(5)]).await.unwrap();
    let (row, claim) = claim_one(&f).await;
    assert!(
        f.store
            .settle(&settlement(row.id, &claim, Next::Dead))
            .await
            .unwrap()
    );
    assert_eq!(f.store.retry_dead(None, "console:dana").await.unwrap(), 1);
    assert_eq!(f.store.retry_dead(None, "console:dana").await.unwrap(), 0);
    let signin = NewAudit {
        actor: "console:dana",
        action: AuditAction::SignIn,
        subject: "dana",
        until_ms: None,
        detail: "",
    };
    f.store.record_audit(&signin).await.unwrap();

    let all = f.store.audit_since(start, 100).await.unwrap();
    let lines: Vec<(String, AuditAction, String)> = all
        .iter()
        .rev()
        .map(|r| (r.actor.clone(), r.action, r.subject.clone()))
        .collect();
    let line = |a: &str, act, s: &str| (a.to_string(), act, s.to_string());
    assert_eq!(
        lines,
        [
            line("console:dana", AuditAction::Away, "amy"),
            line("cli:root@host", AuditAction::Away, "bo"),
            line("console:dana", AuditAction::Back, "amy"),
            line("console:dana", AuditAction::Retry, "1 row(s)"),
            line("console:dana", AuditAction::SignIn, "dana"),
        ]
    );
    assert_eq!(all[4].until_ms, Some(until));
    assert_eq!(all[1].detail, format!("queue rows {}", row.id));
    assert_eq!(f.store.audit_since(start, 2).await.unwrap().len(), 2);

    let absences = f.store.absences_since(start).await.unwrap();
    let kinds: Vec<AuditAction> = absences.iter().map(|r| r.action).collect();
    assert_eq!(
        kinds,
        [AuditAction::Away, AuditAction::Away, AuditAction::Back]
    );
}

async fn the_console_sees_the_queue_dead_letters_and_a_chats_decisions(f: Fixture) {
    let snapshot = serde_json::json!({"id": 9, "status": "new"});
    let urgent = NewQueueItem {
        chat_id: ChatId(9),
        snapshot: Some(snapshot.clone()),
        priority: 5,
        ..NewQueueItem::default()
    };
    f.store.enqueue(&[item(8), urgent, item(10)]).await.unwrap();
    let active = f.store.active_rows(None, 10).await.unwrap();
    let chats: Vec<&str> = active.iter().map(|r| r.chat_id.as_str()).collect();
    assert_eq!(
        chats,
        ["9", "8", "10"],
        "claim order: priority, then oldest"
    );
    assert!(
        active
            .iter()
            .all(|r| r.state == "pending" && r.last_error.is_none())
    );

    let claim = key("a", 1);
    let rows = f.store.claim(&claim, LEASE, 1).await.unwrap();
    assert_eq!(rows[0].chat_id, ChatId(9));
    let mut s = settlement(rows[0].id, &claim, Next::Dead);
    s.last_error = Some("chat 9 does not exist (404)".into());
    let mut o = NewOutcome::new(ChatId(9), OutcomeResult::Failed);
    o.reason = Some("GET /chats/9: 404".into());
    s.outcomes = vec![o];
    assert!(f.store.settle(&s).await.unwrap());

    let dead = f.store.dead_rows(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].chat_id, "9");
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("chat 9 does not exist (404)")
    );
    assert_eq!(f.store.active_rows(None, 10).await.unwrap().len(), 2);

    let decisions = f.store.chat_outcomes(ChatId(9), 10).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].reason.as_deref(), Some("GET /chats/9: 404"));
    assert!(
        f.store
            .chat_outcomes(ChatId(8), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let input = f.store.chat_input(ChatId(9)).await.unwrap().unwrap();
    assert_eq!(input.active, 0, "a dead row waits for nothing");
    assert_eq!(
        f.store.chat_input(ChatId(8)).await.unwrap().unwrap().active,
        1
    );
    let stored: serde_json::Value = serde_json::from_str(&input.snapshot.unwrap()).unwrap();
    assert_eq!(stored, snapshot);
    assert!(
        f.store
            .chat_input(ChatId(8))
            .await
            .unwrap()
            .unwrap()
            .snapshot
            .is_none()
    );
    assert!(f.store.chat_input(ChatId(77)).await.unwrap().is_none());
}

const MINUTE: i64 = 60_000;

fn sign_in_audit() -> NewAudit<'static> {
    NewAudit {
        actor: "console:dana",
        action: AuditAction::SignIn,
        subject: "dana",
        until_ms: None,
        detail: "",
    }
}

/// The store's part of a session, on an injected clock: live while its
/// `ends_at` is ahead, kept alive only while live, ended by a sign-out for
/// good, and pruned once ended.
async fn a_console_session_lives_while_used_and_ends_for_good(f: Fixture) {
    let t0 = now_ms();
    let session = |key, ends_ms| NewConsoleSession {
        key,
        name: "dana",
        now_ms: t0,
        expires_ms: t0 + 720 * MINUTE,
        ends_ms,
    };
    let audit = sign_in_audit();
    f.store
        .open_console_session(&session("k1", t0 + 30 * MINUTE), &audit)
        .await
        .unwrap();
    f.store
        .open_console_session(&session("k2", t0 - 1), &audit)
        .await
        .unwrap();
    assert_eq!(f.store.audit_since(t0 - 1, 10).await.unwrap().len(), 2);
    let live = f.store.console_session("k1", t0 + 29 * MINUTE).await;
    let want = ConsoleSession {
        name: "dana".into(),
        last_seen_ms: t0,
        expires_at_ms: t0 + 720 * MINUTE,
    };
    assert_eq!(live.unwrap(), Some(want));
    assert!(
        f.store
            .console_session("k1", t0 + 30 * MINUTE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.store.console_session("nope", t0).await.unwrap().is_none());

    // Used at 29 minutes: it now ends at 59.
    let at = t0 + 29 * MINUTE;
    assert!(
        f.store
            .touch_console_session("k1", at, at + 30 * MINUTE)
            .await
            .unwrap()
    );
    let row = f
        .store
        .console_session("k1", t0 + 58 * MINUTE)
        .await
        .unwrap();
    assert_eq!(row.map(|r| r.last_seen_ms), Some(at));
    // An ended session is not brought back by a late use.
    assert!(
        !f.store
            .touch_console_session("k2", t0, t0 + 30 * MINUTE)
            .await
            .unwrap()
    );
    assert!(f.store.console_session("k2", t0).await.unwrap().is_none());

    // Retention prunes the ended one only; a sign-out ends the other.
    f.store.prune(0).await.unwrap();
    let k1 = f.count("SELECT COUNT(*) FROM console_sessions WHERE id = 'k1'");
    let k2 = f.count("SELECT COUNT(*) FROM console_sessions WHERE id = 'k2'");
    assert_eq!((k1.await, k2.await), (1, 0));
    assert!(f.store.end_console_session("k1").await.unwrap());
    assert!(!f.store.end_console_session("k1").await.unwrap());
    assert!(f.store.console_session("k1", at).await.unwrap().is_none());
}
