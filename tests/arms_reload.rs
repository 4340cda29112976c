//! SPEC §14: a chat stays in its arm for good, across a reload too. The
//! real `assignd run` gets a real SIGHUP with other rules, other arm-b
//! rules and other shares; every chat decided before keeps its arm (in
//! `chat_arms` and on every outcome of its later decisions), the new rules
//! decide the new chats, and the shares, which take a restart, do not move.
//! SQLite, and PostgreSQL.

#[path = "support/arms.rs"]
mod arms;
#[path = "support/backend.rs"]
mod backend;
mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::time::Duration;

use arms::{RULES, RULES_B, expected, experiment_app, outcome_arms, stored_arms};
use assignd::experiment::Split;
use backend::{Backend, Db};
use common::*;

const LONG: Duration = Duration::from_secs(30);

/// The shares the daemon starts with.
const SPLIT: Split = Split {
    share: 0.5,
    b_share: 0.5,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_keeps_its_arm_across_a_reload() {
    keeps_its_arm_across_a_reload(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_keeps_its_arm_across_a_reload_on_postgres() {
    keeps_its_arm_across_a_reload(Backend::Postgres).await;
}

/// `assignd enqueue` of `chats` (either database takes it).
async fn enqueue(app: &TestApp, chats: impl Iterator<Item = i64>) {
    let ids: Vec<String> = chats.map(|c| c.to_string()).collect();
    let mut args = vec!["enqueue"];
    args.extend(ids.iter().map(String::as_str));
    app.cli_ok(&args).await;
}

/// Arm a's pool to bob alone, arm b's chats to alice, and other shares.
fn change_everything(app: &TestApp) {
    let a = RULES.replace("agents = [\"alice\", \"bob\"]", "agents = [\"bob\"]");
    std::fs::write(app.dir.path().join("rules.toml"), a).unwrap();
    let b = RULES_B.replace("carol = { id = 6694 }", "alice = { id = 4188 }");
    let b = b.replace("\"all to carol\"", "\"all to alice\"");
    let b = b.replace("assign = \"carol\"", "assign = \"alice\"");
    std::fs::write(app.dir.path().join("rules-b.toml"), b).unwrap();
    app.edit_config(|c| {
        c.replace("share = 0.5\nb_rules", "share = 0.9\nb_rules")
            .replace("b_share = 0.5", "b_share = 0.2")
    });
}

async fn keeps_its_arm_across_a_reload(backend: Backend) {
    let app = experiment_app("share = 0.5\nb_rules = \"rules-b.toml\"\nb_share = 0.5\n").await;
    let Some(db) = Db::of(&app, backend).await else {
        return;
    };
    let mut daemon = app.spawn_guarded("run.log");
    enqueue(&app, 1..=40).await;
    db.wait_count(
        "queue WHERE state = 'done'",
        40,
        LONG,
        "the first decisions",
    )
    .await;
    let first = stored_arms(&db).await;
    assert_eq!(first, expected(SPLIT, 1..=40));
    assert_eq!(outcome_arms(&db).await, first);
    change_everything(&app);
    hup(daemon.pid());
    let reloaded = || daemon.log_text().contains("reloaded config and rules");
    wait_until(LONG, || daemon.log_text(), reloaded).await;
    // The same chats again, and new ones.
    enqueue(&app, 1..=100).await;
    db.wait_count(
        "queue WHERE state = 'done'",
        140,
        LONG,
        "the decisions after the reload",
    )
    .await;
    daemon.assert_running("after the reload");
    let stored = stored_arms(&db).await;
    let decided = outcome_arms(&db).await;
    assert_eq!(stored, decided, "chat_arms and the outcomes' arms");
    for (chat, arm) in &first {
        assert_eq!(&stored[chat], arm, "chat {chat} changed arm");
    }
    let twice = "(SELECT chat_id FROM outcomes WHERE chat_id <= 40
                   GROUP BY chat_id HAVING COUNT(*) >= 2) AS t";
    assert_eq!(db.count(twice).await, 40, "each old chat decided again");
    // The shares take a restart: the new chats follow the daemon's.
    let new: Vec<(i64, String)> = stored.range(41..).map(|(c, a)| (*c, a.clone())).collect();
    assert_eq!(
        new,
        expected(SPLIT, 41..=100).into_iter().collect::<Vec<_>>()
    );
    assert_new_rules(&app, &new);
    print_arms(backend, &first, &new);
    db.close().await;
}

/// The reloaded rules decided the new chats: arm a's to bob, arm b's to
/// alice, the left ones to nobody.
fn assert_new_rules(app: &TestApp, new: &[(i64, String)]) {
    for (chat, arm) in new {
        let who = app.sandbox.assignee(*chat);
        match arm.as_str() {
            "a" => assert_eq!(who, Some(4761), "arm a chat {chat}"),
            "b" => assert_eq!(who, Some(4188), "arm b chat {chat}"),
            _ => assert_eq!(who, None, "left chat {chat}"),
        }
    }
    for arm in ["a", "b", "left"] {
        assert!(
            new.iter().any(|(_, a)| a == arm),
            "no new chat in arm {arm}"
        );
    }
}

fn print_arms(backend: Backend, first: &BTreeMap<i64, String>, new: &[(i64, String)]) {
    let count = |arms: &mut dyn Iterator<Item = &String>| {
        let mut n = BTreeMap::new();
        arms.for_each(|a| *n.entry(a.as_str()).or_insert(0) += 1);
        format!("{n:?}")
    };
    println!(
        "{backend:?}: {} chats decided before the reload kept their arms {}; {} new chats in the start's split {}",
        first.len(),
        count(&mut first.values()),
        new.len(),
        count(&mut new.iter().map(|(_, a)| a))
    );
}
