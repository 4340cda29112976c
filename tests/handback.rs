//! Pool `handback`: when an agent is marked away or their shift ends, their
//! open chats from the pool (all, or those they have not answered) go back
//! through the rules and on to another agent; a customer message in a chat
//! whose assignee is away does the same. The real daemon, the built-in
//! sandbox (the daemon fetches each chat, so it sees the assignee a
//! hand-back must not skip), a real SQLite file.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use assignd::secrets::Secret;
use common::*;
use serde_json::json;

const WEBHOOK_KEY: &str = "whk-handback-key";
const ALICE: i64 = 4188;
const BOB: i64 = 4761;
const AB: [(&str, i64); 2] = [("alice", ALICE), ("bob", BOB)];

/// A running daemon with its listener, and the app.
struct Running {
    app: TestApp,
    daemon: InProcess,
    base: String,
}

impl Running {
    /// Starts the daemon on `rules` and gives alice chats `chats` (bob is
    /// away meanwhile, then back).
    async fn start(rules: &str, chats: &[i64]) -> Self {
        Self::start_on(None, rules, chats).await
    }

    /// [`Self::start`] on `database` (the SQLite file if `None`).
    async fn start_on(database: Option<String>, rules: &str, chats: &[i64]) -> Self {
        let app = TestApp::builder().rules(rules).listen().build().await;
        if let Some(url) = &database {
            app.use_database(url);
        }
        app.migrate().await;
        app.run_ok(&["agent", "away", "bob"]);
        let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
        let daemon = app.start_serving(secrets).await;
        let base = format!("http://{}", daemon.http_addr.expect("the listener runs"));
        // `assignd enqueue`, which either database takes.
        let ids: Vec<String> = chats.iter().map(i64::to_string).collect();
        let mut args = vec!["enqueue"];
        args.extend(ids.iter().map(String::as_str));
        app.run_ok(&args);
        daemon.runtime.worker.wake();
        let r = Self { app, daemon, base };
        for &c in chats {
            r.wait_assignee(c, ALICE, Duration::from_secs(10)).await;
        }
        r.app.run_ok(&["agent", "back", "bob"]);
        r
    }

    /// Posts a signed webhook event.
    async fn post(&self, id: &str, event: &str, data: serde_json::Value) {
        let body = serde_json::to_vec(&json!({"event": event, "eventData": data, "attempts": 0, "lastAttemptAt": common::now_secs(), "createdAt": common::now_secs(), "id": id})).unwrap();
        let http = reqwest::Client::new();
        let status = common::post_webhook(&http, &self.base, WEBHOOK_KEY, body).await;
        assert_eq!(status, 200, "{event}");
    }

    /// `message.chat.agent`: `agent` wrote in `chat`.
    async fn agent_wrote(&self, chat: i64, agent: i64) {
        let data = json!({"chat_id": chat, "agent": {"id": agent, "name": "x"}, "message": {"id": chat * 10, "text": "hi", "createdAt": "1607540767.414"}});
        self.post(&format!("a-{chat}"), "message.chat.agent", data)
            .await;
    }

    /// `message.chat.customer`: the customer wrote in `chat`.
    async fn customer_wrote(&self, chat: i64) {
        let data = json!({"chat_id": chat, "customer": {"id": 77}, "message": {"id": chat * 10 + 1, "text": "hello?", "createdAt": "1607540767.414"}});
        self.post(&format!("c-{chat}"), "message.chat.customer", data)
            .await;
    }

    /// Waits until HelpCrunch has `chat` with `agent`.
    async fn wait_assignee(&self, chat: i64, agent: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.app.sandbox.assignee(chat) != Some(agent) {
            assert!(
                Instant::now() < deadline,
                "chat {chat} is with {:?}, not {agent}, after {timeout:?}",
                self.app.sandbox.assignee(chat)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts for `d` that `chats` stay with alice.
    async fn stay_with_alice(&self, chats: &[i64], d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            for &c in chats {
                assert_eq!(self.app.sandbox.assignee(c), Some(ALICE), "chat {c} moved");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The outcome rows of `chat`: (result, agent, reason), oldest first.
    async fn outcomes(&self, chat: i64) -> Vec<(String, String, String)> {
        let sql = "SELECT result, COALESCE(agent, ''), COALESCE(reason, '') FROM outcomes
                    WHERE chat_id = ? ORDER BY id";
        self.app.chat_rows(sql, chat).await
    }

    /// Asserts that `chat` was handed back from alice for `why` and then
    /// assigned to bob, saying it was a hand-back (the outcome commits just
    /// after HelpCrunch's answer: it is waited for).
    async fn assert_handed_back(&self, chat: i64, why: &str) {
        let reason = format!("handed back from alice ({why})");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let outcomes = self.outcomes(chat).await;
            let moved = outcomes
                .iter()
                .position(|(r, a, text)| r == "skipped" && a == "alice" && *text == reason);
            let reassigned = moved.is_some_and(|m| {
                outcomes[m + 1..].iter().any(|(r, a, text)| {
                    r == "assigned"
                        && a == "bob"
                        && text.starts_with(&format!("hand-back ({reason}): "))
                })
            });
            if reassigned {
                let route = "SELECT COUNT(*) FROM outcomes
                              WHERE chat_id = ? AND result = 'skipped' AND route = 'handed_back'";
                let rows: Vec<(i64,)> = self.app.chat_rows(route, chat).await;
                assert_eq!(rows[0].0, 1, "the hand-back is recorded as one");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no hand-back `{reason}` then a reassignment that says so: {outcomes:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.daemon.stop().await;
    }
}

fn rules(pool: &str) -> String {
    support_rules(&AB, pool, TO_SUPPORT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_hands_back_every_chat_when_the_agent_is_away() {
    let r = Running::start(&rules("handback = \"all\""), &[101, 102]).await;
    r.agent_wrote(101, ALICE).await;
    let away = Instant::now();
    r.app.run_ok(&["agent", "away", "alice"]);
    for chat in [101, 102] {
        r.wait_assignee(chat, BOB, Duration::from_secs(5)).await;
    }
    eprintln!(
        "handed back 2 chats {:?} after `agent away`",
        away.elapsed()
    );
    for chat in [101, 102] {
        r.assert_handed_back(chat, "away").await;
    }
    // Once each: the chats stay with bob, and nothing more is queued.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.app.count("queue WHERE handback IS NOT NULL").await, 2);
    assert_eq!(r.app.count("queue WHERE state <> 'done'").await, 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_hands_back_on_postgres() {
    let Some(server) = postgres::server() else {
        return;
    };
    let database = Some(server.database().await);
    let r = Running::start_on(database, &rules("handback = \"all\""), &[151, 152]).await;
    r.agent_wrote(151, ALICE).await;
    r.customer_wrote(152).await;
    r.app.run_ok(&["agent", "away", "alice"]);
    for chat in [151, 152] {
        r.wait_assignee(chat, BOB, Duration::from_secs(5)).await;
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_hands_back_only_the_chats_the_agent_has_not_answered() {
    let r = Running::start(&rules("handback = \"unanswered\""), &[201, 202]).await;
    r.agent_wrote(201, ALICE).await;
    r.app.run_ok(&["agent", "away", "alice"]);
    r.wait_assignee(202, BOB, Duration::from_secs(5)).await;
    r.assert_handed_back(202, "away").await;
    r.stay_with_alice(&[201], Duration::from_millis(1500)).await;
    assert!(
        r.outcomes(201)
            .await
            .iter()
            .all(|(_, _, why)| !why.contains("handed back")),
        "the answered chat stays"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_asks_helpcrunch_when_no_webhook_said() {
    let r = Running::start(&rules("handback = \"unanswered\""), &[251, 252]).await;
    // Alice wrote in 251, but no `message.chat.agent` came.
    r.app.sandbox.update_chat(251, |c| c.agents.push(ALICE));
    r.app.run_ok(&["agent", "away", "alice"]);
    r.wait_assignee(252, BOB, Duration::from_secs(5)).await;
    r.assert_handed_back(252, "away").await;
    r.stay_with_alice(&[251], Duration::from_millis(1500)).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_hands_back_nothing() {
    let r = Running::start(&rules(""), &[301, 302]).await;
    r.app.run_ok(&["agent", "away", "alice"]);
    r.stay_with_alice(&[301, 302], Duration::from_millis(2500))
        .await;
    assert_eq!(r.app.count("queue").await, 2, "no row was added");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_message_hands_back_a_chat_whose_assignee_is_away() {
    let r = Running::start(&rules("handback = \"unanswered\""), &[401, 402]).await;
    r.agent_wrote(401, ALICE).await;
    r.agent_wrote(402, ALICE).await;
    r.app.run_ok(&["agent", "away", "alice"]);
    // Both answered: they stay, until the customer of one writes.
    r.stay_with_alice(&[401, 402], Duration::from_millis(1500))
        .await;
    r.customer_wrote(401).await;
    r.wait_assignee(401, BOB, Duration::from_secs(5)).await;
    r.assert_handed_back(401, "customer wrote while alice is away")
        .await;
    r.stay_with_alice(&[402], Duration::from_millis(1000)).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_handed_back_waits_while_nobody_can_take_it() {
    let r = Running::start(&rules("handback = \"all\""), &[501]).await;
    r.app.run_ok(&["agent", "away", "bob"]);
    r.app.run_ok(&["agent", "away", "alice"]);
    r.app
        .wait_count(
            "outcomes WHERE chat_id = 501 AND result = 'no_agent' AND reason LIKE 'hand-back (handed back from alice (away)): %'",
            1,
            Duration::from_secs(5),
            "the hand-back waits for a candidate",
        )
        .await;
    r.stay_with_alice(&[501], Duration::from_millis(1000)).await;
    assert_eq!(
        r.app
            .count("queue WHERE state = 'pending' AND handback IS NOT NULL")
            .await,
        1
    );
    r.app.run_ok(&["agent", "back", "bob"]);
    r.wait_assignee(501, BOB, Duration::from_secs(5)).await;
    r.assert_handed_back(501, "away").await;
    r.stop().await;
}

/// "HH:MM" for minutes after midnight (1440 is "24:00").
fn clock(minutes: i64) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_go_back_when_the_shift_ends_and_not_before() {
    // Schedules have minutes: the shift ends at the next minute boundary
    // (the one after, if that is too close to set up in time).
    let now = jiff::Timestamp::now();
    let secs = now.as_second().rem_euclid(86_400);
    let mut end = secs / 60 + 1;
    if end * 60 - secs < 6 {
        end += 1;
    }
    let start = (end - 120).rem_euclid(1440);
    let shift = format!(
        "[schedules.shift]\nhours = {{ all = \"{}-{}\" }}\n\n",
        clock(start),
        clock(if end % 1440 == 0 { 1440 } else { end % 1440 })
    );
    let rules = rules("handback = \"all\"").replace(
        "alice = { id = 4188 }",
        "alice = { id = 4188, schedule = \"shift\" }",
    );
    let r = Running::start(&format!("{shift}{rules}"), &[601, 602]).await;
    let ends_at = jiff::Timestamp::from_second(now.as_second() - secs + end * 60).unwrap();
    let before_end =
        (ends_at.as_millisecond() - jiff::Timestamp::now().as_millisecond()) as f64 / 1000.0 - 0.3;
    r.stay_with_alice(&[601, 602], Duration::from_secs_f64(before_end.max(0.0)))
        .await;
    for chat in [601, 602] {
        r.wait_assignee(chat, BOB, Duration::from_secs(6)).await;
    }
    assert!(
        jiff::Timestamp::now() >= ends_at,
        "moved before the shift ended"
    );
    for chat in [601, 602] {
        r.assert_handed_back(chat, "shift ended").await;
    }
    r.stop().await;
}

/// A chat handed back that waits (nobody can take it) is still its agent's
/// in HelpCrunch, so it still takes one of their seats: when they are back,
/// they get no chat beyond `max_open` (the nemesis saw 4 of 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_hand_back_still_counts_against_its_agent() {
    let rules = "[agents]\nalice = { id = 4188, max_open = 1 }\nbob = { id = 4761, max_open = 1 }\n\n\
                 [pools.support]\nagents = [\"alice\", \"bob\"]\nhandback = \"all\"\n\n\
                 [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n";
    let r = Running::start(rules, &[601]).await;
    r.app.run_ok(&["agent", "away", "bob"]);
    r.app.run_ok(&["agent", "away", "alice"]);
    r.app
        .wait_count(
            "outcomes WHERE chat_id = 601 AND result = 'no_agent'",
            1,
            Duration::from_secs(5),
            "the hand-back waits for a candidate",
        )
        .await;
    r.app.run_ok(&["agent", "back", "alice"]);
    r.app.run_ok(&["enqueue", "602"]);
    r.daemon.runtime.worker.wake();
    r.app
        .wait_count(
            "outcomes WHERE chat_id = 602 AND result = 'no_agent'",
            1,
            Duration::from_secs(5),
            "the new chat decided",
        )
        .await;
    // Hand-back and new chat alike are woken and decided again meanwhile.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(r.app.sandbox.assignee(601), Some(ALICE));
        assert_eq!(
            r.app.sandbox.assignee(602),
            None,
            "alice is over her cap of 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.app.run_ok(&["agent", "back", "bob"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.app.sandbox.assignee(602).is_none() {
        assert!(
            Instant::now() < deadline,
            "602 never assigned once bob was back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(
        r.app.sandbox.assignee(601),
        r.app.sandbox.assignee(602),
        "one chat each: both caps are 1"
    );
    r.stop().await;
}
