//! Shadow mode (SPEC §14): every feature runs, nothing is written to
//! HelpCrunch. The sandbox acts as a live account (its own routing takes
//! some chats, agents reply, chats close, all as signed webhooks to the
//! daemon's listener); the daemon decides every chat as it would, and the
//! sandbox counts every write a client made: there must be none.

#[path = "support/backend.rs"]
mod backend;
mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use backend::{Backend, Db};

use assignd::sandbox::{People, Sandbox};
use assignd::secrets::Secret;
use common::*;

const WEBHOOK_KEY: &str = "whk-shadow-key";
const SECS_20: Duration = Duration::from_secs(20);

/// Caps of two, a note and a reply on each assignment, a busy reply, a
/// reassignment when nobody answers, hand-back when an agent leaves, and
/// escalation to dave's overflow pool for a chat that waits 2 s.
const RULES: &str = r#"
[agents]
alice = { id = 4188, max_open = 2 }
bob   = { id = 4761, max_open = 2 }
carol = { id = 6694, max_open = 2 }
dave  = { id = 2533, max_open = 2 }

[pools.support]
agents = ["alice", "bob", "carol"]
strategy = "round-robin"
reassign_after = "1s"
max_reassign = 1
handback = "unanswered"
busy_reply = { from = "carol", text = "All busy: you are number {position} in line.", after = "1s" }
escalate = [{ after = "2s", assign = "pool:overflow" }]

[pools.overflow]
agents = ["dave"]

[[rule]]
name = "all"
assign = "pool:support"
note = "routed to {agent} by {rule}"
reply = { from = "carol", text = "Hello! {agent} will answer shortly." }
"#;

/// The sandbox's team: the rules' four agents.
const TEAM: [(&str, i64); 4] = [ABC[0], ABC[1], ABC[2], ("dave", 2533)];

/// The account's own routing gives half the chats to carol after 300 ms,
/// and she answers within about half a second; nobody else answers, and
/// chats close only when the test closes them.
fn people() -> People {
    People {
        seed: 7,
        assign_share: 0.5,
        assign_after: Duration::from_millis(300),
        agents: vec![6694],
        reply_after: Some(Duration::from_millis(500)),
        ..People::default()
    }
}

/// The account's routing gives every chat to carol at once, and she
/// answers within about 0.1 s.
fn carol_takes_all(seed: u64) -> People {
    People {
        seed,
        assign_share: 1.0,
        assign_after: Duration::from_millis(50),
        agents: vec![6694],
        reply_after: Some(Duration::from_millis(100)),
        ..People::default()
    }
}

/// The daemon in this process, in shadow mode, its listener taking the
/// sandbox's webhooks.
async fn shadow_daemon(app: &TestApp) -> InProcess {
    app.edit_config(|c| c.replace("[worker]\n", "[worker]\nmode = \"shadow\"\n"));
    let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(WEBHOOK_KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let addr = daemon.http_addr.expect("the listener runs");
    app.sandbox
        .send_webhooks_to(format!("http://{addr}/webhooks/helpcrunch"), WEBHOOK_KEY);
    app.sandbox.set_people(Some(people())).unwrap();
    daemon
}

fn new_chats(sandbox: &Sandbox, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        sandbox.create_chat(id, |c| {
            c.assignee = None;
            c.status = "new".into();
        });
    }
}

const LONG: Duration = Duration::from_secs(30);

/// SPEC §14: every feature runs in shadow mode, each seen to fire in the
/// outcomes, and not one write reaches HelpCrunch. SQLite, and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_writes_nothing_to_helpcrunch_through_every_feature() {
    writes_nothing_through_every_feature(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_writes_nothing_through_every_feature_on_postgres() {
    writes_nothing_through_every_feature(Backend::Postgres).await;
}

/// A hop of a reassignment, decided and not sent.
const REASSIGNED: &str = "outcomes WHERE route = 'reassigned' AND result = 'shadow'";
/// A chat that waited 2 s in a full pool, decided for dave by the step.
const ESCALATED: &str = "outcomes WHERE route = 'escalated' AND result = 'shadow'
    AND agent = 'dave' AND reason LIKE '%escalated after 2s (step 1 of 1)%'";
const HANDED_BACK: &str = "outcomes WHERE route = 'handed_back'";
const GAVE_UP: &str = "outcomes WHERE reason LIKE '%did not answer%' AND route IS NULL";

async fn writes_nothing_through_every_feature(backend: Backend) {
    let app = TestApp::builder()
        .agents(agents(&TEAM))
        .rules(RULES)
        .worker("fetch_chat = \"auto\"")
        .listen()
        .build()
        .await;
    let Some(db) = Db::of(&app, backend).await else {
        return;
    };
    let daemon = shadow_daemon(&app).await;
    // Three chats, six seats: the shadow's assignees never answer (they
    // were never asked), so after 1 s a chat moves to a free seat.
    new_chats(&app.sandbox, 1..=3);
    db.wait_count(REASSIGNED, 1, LONG, "a reassignment").await;
    // Twelve more: the seats fill, the others wait (a busy reply), and
    // after 2 s two of them go to dave's overflow pool; the assignments
    // nobody answers now have nowhere to move (a note says so).
    new_chats(&app.sandbox, 4..=15);
    db.wait_count(ESCALATED, 1, LONG, "an escalation").await;
    db.wait_count("busy_replies", 1, LONG, "busy replies").await;
    db.wait_count(GAVE_UP, 1, LONG, "a follow-up given up")
        .await;
    // alice leaves: her chats, unanswered, are handed back through the rules.
    app.cli_ok(&["agent", "away", "alice"]).await;
    daemon.runtime.worker.wake();
    db.wait_count(HANDED_BACK, 1, LONG, "hand-backs").await;
    // Chats close: seats free, and every waiting chat is settled.
    for chat in 1..=15 {
        app.sandbox.close_chat(chat);
    }
    let active = "queue WHERE state IN ('pending', 'leased')";
    db.wait_none(active, LONG, "the waiting chats settled")
        .await;
    let recorded = "outbox WHERE state = 'done'";
    db.wait_count(recorded, 6, LONG, "messages recorded, not posted")
        .await;
    daemon.stop().await;
    let writes = app.sandbox.writes();
    assert!(writes.is_empty(), "writes reached HelpCrunch: {writes:#?}");
    assert_eq!(db.count("outcomes WHERE arm <> 'shadow'").await, 0);
    assert_eq!(db.count("outcomes WHERE result = 'assigned'").await, 0);
    print_features(&db, backend, writes.len()).await;
    db.close().await;
}

/// The figures of a zero-write run: how often each feature fired.
async fn print_features(db: &Db, backend: Backend, writes: usize) {
    let mut figures = Vec::new();
    for (what, from) in [
        ("shadow decisions", "outcomes WHERE result = 'shadow'"),
        ("reassignments", REASSIGNED),
        ("escalations", ESCALATED),
        ("hand-backs", HANDED_BACK),
        ("follow-ups given up", GAVE_UP),
        ("busy replies", "busy_replies"),
        ("notes and replies recorded", "outbox WHERE state = 'done'"),
        ("webhooks taken", "webhook_events"),
    ] {
        figures.push(format!("{what} {}", db.count(from).await));
    }
    println!(
        "{backend:?}: writes to HelpCrunch = {writes}; {}",
        figures.join(", ")
    );
}

/// `assignd run --shadow`: the real binary, no config change; the chats
/// are decided as `shadow` outcomes and nothing reaches HelpCrunch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_shadow_decides_and_writes_nothing() {
    let app = TestApp::builder().migrated().await;
    let log = std::fs::File::create(app.dir.path().join("shadow.log")).unwrap();
    let mut child = app
        .command(&["run", "--shadow"])
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    app.insert_raw(1..=10).await;
    let shadowed = "outcomes WHERE result = 'shadow' AND arm = 'shadow'";
    app.wait_count(shadowed, 10, SECS_20, "shadow decisions")
        .await;
    let status = terminate(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}: {}", app.log("shadow.log"));
    assert!(
        app.sandbox.writes().is_empty(),
        "{:#?}",
        app.sandbox.writes()
    );
    assert_eq!(app.count("queue WHERE state = 'done'").await, 10);
}

/// Without webhooks, a shadow daemon learns who really took each chat, and
/// who answered it, from reconciliation's searches; its seats stay its own
/// (and the rule's reply it recorded, never posted, does not hide carol's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhooks_reality_is_learned_from_reconciliation() {
    let app = TestApp::builder().rules(RULES).build().await;
    app.edit_config(|c| {
        c.replace("[worker]\n", "[worker]\nmode = \"shadow\"\n") + "\n[load]\nrefresh = \"1s\"\n"
    });
    app.sandbox.set_people(Some(carol_takes_all(11))).unwrap();
    new_chats(&app.sandbox, 1..=4);
    let daemon = app.start_in_process().await;
    app.insert_raw(1..=4).await;
    daemon.runtime.worker.wake();
    let learned = "chat_history WHERE assigned_by = 'other' AND assigned_agent = 'carol'";
    app.wait_count(learned, 4, SECS_20, "assignments learned by reconciliation")
        .await;
    let replied = "chat_history WHERE first_reply_agent = 'carol' AND first_reply_at IS NOT NULL";
    app.wait_count(replied, 4, SECS_20, "replies learned by reconciliation")
        .await;
    daemon.stop().await;
    // Each seat is where the shadow's last decision for the chat put it
    // (hops included), never carol's because reality gave her the chat.
    let seats = app
        .rows("SELECT chat_id, agent, NULL FROM open_chats ORDER BY chat_id")
        .await;
    let decided = app
        .rows(
            "SELECT o.chat_id, o.agent, NULL FROM outcomes o WHERE o.result = 'shadow'
                AND o.id = (SELECT MAX(x.id) FROM outcomes x
                             WHERE x.chat_id = o.chat_id AND x.result = 'shadow')
              ORDER BY o.chat_id",
        )
        .await;
    assert_eq!(seats.len(), 4, "{seats:?}");
    assert_eq!(seats, decided, "the shadow's own seats");
    assert!(app.sandbox.writes().is_empty());
}

/// HelpCrunch's routing takes half the chats, each 2 s after it starts;
/// carol answers and closes it after 4 s: long enough for reconciliation,
/// every second, to see it open with her.
fn carol_takes_half(seed: u64) -> People {
    People {
        assign_share: 0.5,
        assign_after: Duration::from_secs(2),
        close_after: Some(Duration::from_secs(4)),
        ..carol_takes_all(seed)
    }
}

/// Webhooks off, the poller on: the poller brings the shadow each new
/// chat, and reconciliation tells it what really happened to the chats
/// HelpCrunch's routing gave carol (who has them, who answered, when they
/// closed): the reality rows of `chat_history`, as the sandbox did it,
/// none of the shadow's own decisions among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhooks_the_poller_and_reconciliation_learn_what_really_happened() {
    let app = TestApp::builder().rules(RULES).build().await;
    app.edit_config(|c| {
        c.replace("[worker]\n", "[worker]\nmode = \"shadow\"\n")
            + "\n[load]\nrefresh = \"1s\"\n\n[poller]\nenabled = true\ninterval = \"1s\"\n"
    });
    app.sandbox.set_people(Some(carol_takes_half(17))).unwrap();
    let daemon = app.start_in_process().await;
    new_chats(&app.sandbox, 1..=8);
    let (routed, unrouted): (Vec<i64>, Vec<i64>) =
        (1..=8).partition(|c| app.sandbox.routing_pick(*c).is_some());
    assert!(!routed.is_empty() && !unrouted.is_empty(), "{routed:?}");
    let list = |chats: &[i64]| {
        chats
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (routed_in, unrouted_in) = (list(&routed), list(&unrouted));
    let reality = format!(
        "chat_history WHERE chat_id IN ({routed_in}) AND assigned_by = 'other'
            AND assigned_agent = 'carol' AND first_reply_agent = 'carol' AND closed_at IS NOT NULL"
    );
    let n = routed.len() as i64;
    app.wait_count(&reality, n, LONG, "reality learned without webhooks")
        .await;
    let decided = format!(
        "(SELECT DISTINCT chat_id FROM outcomes WHERE result = 'shadow' AND chat_id IN ({unrouted_in})) AS d"
    );
    let m = unrouted.len() as i64;
    app.wait_count(&decided, m, LONG, "the chats the poller found, decided")
        .await;
    daemon.stop().await;
    // Nobody really took the others: the shadow's decisions are no fact.
    let untaken = format!(
        "chat_history WHERE chat_id IN ({unrouted_in}) AND assigned_agent IS NULL
            AND first_reply_at IS NULL AND arrival = 'decided'"
    );
    assert_eq!(app.count(&untaken).await, m);
    assert_eq!(app.count("webhook_events").await, 0, "no webhook came");
    assert!(app.sandbox.writes().is_empty());
    println!("reality learned for {n} routed chats; {m} others decided by the shadow alone");
}

/// Going live on the shadow's database: the shadow's seats (made up: it
/// never assigned), follow-ups and hand-back marks are forgotten before
/// the first live decision, so none of them moves a real chat; and while
/// a daemon runs the database in one mode, another in the other is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_live_forgets_the_shadows_seats_and_modes_never_mix() {
    let app = TestApp::builder().rules(RULES).build().await;
    app.edit_config(|c| c.replace("[worker]\n", "[worker]\nmode = \"shadow\"\n"));
    app.process_raw(1..=4, SECS_20).await;
    let seats = "open_chats";
    assert_eq!(app.count(seats).await, 4, "the shadow's seats");
    assert!(app.count("followups").await > 0, "the shadow's follow-ups");
    // Live now, on the same file.
    app.edit_config(|c| c.replace("mode = \"shadow\"\n", ""));
    let mut live = app.spawn_guarded("live.log");
    let took = || app.log("live.log").contains("took over");
    wait_until(SECS_20, || app.log("live.log"), took).await;
    assert_contains(&app.log("live.log"), &["this database ran in another mode"]);
    assert_eq!(app.count("followups").await, 0);
    assert_eq!(app.count("handbacks").await, 0);
    // Reconciliation read the real open chats: nobody has them.
    assert_eq!(
        app.count(seats).await,
        0,
        "{:?}",
        app.rows("SELECT chat_id, agent, NULL FROM open_chats")
            .await
    );
    // A shadow daemon beside the live one is refused.
    let (code, _, stderr) = app.exec(&["run", "--shadow"]);
    assert_eq!(code, 1, "{stderr}");
    assert_contains(&stderr, &["another daemon runs this database in live mode"]);
    live.assert_running("the live daemon");
    let status = terminate(&mut live.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        app.sandbox.writes().is_empty(),
        "{:#?}",
        app.sandbox.writes()
    );
}

/// A reply by reality's agent (carol, whom HelpCrunch's routing gave every
/// chat) is not the shadow's assignee answering: each of the shadow's
/// follow-ups is still checked, and finds its own agent silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realitys_replies_do_not_answer_the_shadows_follow_ups() {
    const PAIR: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }
carol = { id = 6694 }

[pools.support]
agents = ["alice", "bob"]
reassign_after = "1s"
max_reassign = 1

[[rule]]
name = "all"
assign = "pool:support"
"#;
    let app = TestApp::builder().rules(PAIR).listen().build().await;
    let daemon = shadow_daemon(&app).await;
    app.sandbox.set_people(Some(carol_takes_all(13))).unwrap();
    new_chats(&app.sandbox, 1..=4);
    let replied = "chat_history WHERE first_reply_agent = 'carol'";
    app.wait_count(replied, 4, SECS_20, "carol's replies").await;
    let unanswered = "outcomes WHERE route = 'reassigned' OR reason LIKE '%did not answer%'";
    app.wait_count(unanswered, 4, SECS_20, "the shadow's follow-ups checked")
        .await;
    daemon.stop().await;
    assert!(app.sandbox.writes().is_empty());
}
