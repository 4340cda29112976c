//! Experiments (SPEC §14): a canary share and an A/B split put each chat
//! in one arm for good (a stable hash of its id, then the arm recorded at
//! its first decision), every outcome records its arm, and `report
//! --compare` sets the arms side by side. (A shadow daemon replaying a live
//! one's traffic: tests/shadow_replay.rs; arms across a reload:
//! tests/arms_reload.rs.)

#[path = "support/arms.rs"]
mod arms;
#[path = "support/backend.rs"]
mod backend;
mod common;
#[path = "support/console_http.rs"]
mod console_http;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::time::Duration;

use arms::{RULES, RULES_B, expected, experiment_app, outcome_arms};
use assignd::experiment::Split;
use assignd::sandbox::People;
use assignd::secrets::Secret;
use backend::{Backend, Db};
use common::*;

const DRAIN: Duration = Duration::from_secs(30);

/// A 50% canary: the chats outside it are left alone (no call, an outcome
/// saying so); then the share grows to 90% and arm b starts, the daemon
/// restarts, and every chat decided before stays in its arm while new
/// chats follow the new split, arm b's with arm b's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_stays_in_its_arm_across_restarts_and_share_changes() {
    let app = experiment_app("share = 0.5\n").await;
    let db = Db::of(&app, Backend::Sqlite).await.unwrap();
    app.process_raw(1..=40, DRAIN).await;
    let canary = Split {
        share: 0.5,
        b_share: 0.0,
    };
    let first = outcome_arms(&db).await;
    assert_eq!(first, expected(canary, 1..=40));
    let left: Vec<i64> = first
        .iter()
        .filter(|(_, a)| *a == "left")
        .map(|(c, _)| *c)
        .collect();
    assert!((10..=30).contains(&left.len()), "{} of 40 left", left.len());
    for c in &left {
        assert_eq!(app.sandbox.assignee(*c), None, "left chat {c} was assigned");
    }
    let reasons = app
        .rows("SELECT chat_id, result, reason FROM outcomes WHERE arm = 'left'")
        .await;
    assert!(reasons.iter().all(|(_, r, why)| {
        r == "skipped"
            && why
                .as_deref()
                .is_some_and(|w| w.contains("outside the experiment's share"))
    }));
    // The share grows and arm b starts; the same chats come again.
    app.edit_config(|c| {
        c.replace(
            "share = 0.5",
            "share = 0.9\nb_rules = \"rules-b.toml\"\nb_share = 0.5",
        )
    });
    app.process_raw((1..=40).chain(41..=120), DRAIN).await;
    let after = outcome_arms(&db).await;
    for (c, arm) in &first {
        assert_eq!(&after[c], arm, "chat {c} changed arm");
    }
    let split = Split {
        share: 0.9,
        b_share: 0.5,
    };
    let new: BTreeMap<i64, String> = after.range(41..).map(|(c, a)| (*c, a.clone())).collect();
    assert_eq!(new, expected(split, 41..=120));
    for (c, arm) in &new {
        let who = app.sandbox.assignee(*c);
        match arm.as_str() {
            "b" => assert_eq!(who, Some(6694), "arm b chat {c}"),
            "a" => assert!(matches!(who, Some(4188 | 4761)), "arm a chat {c}: {who:?}"),
            _ => assert_eq!(who, None, "left chat {c}"),
        }
    }
    let stored = app.scalar("SELECT COUNT(*) FROM chat_arms").await;
    assert_eq!(stored, 120, "each decided chat's arm is kept");
    assert!(new.values().any(|a| a == "b") && new.values().any(|a| a == "a"));
}

/// The console says what runs: shadow mode, or the experiment's shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_running_experiment() {
    const TOKEN: &str = "canary-console-5e0c11";
    for (edit, expected) in [
        (
            "[worker]\nmode = \"shadow\"\n",
            "Shadow mode: every chat is decided and recorded",
        ),
        (
            "[worker]\n",
            "assignd assigns 20% of chats (the rest are left to HelpCrunch); of those, 50% by rule set b",
        ),
    ] {
        let app = TestApp::builder().rules(RULES).listen().build().await;
        std::fs::write(app.dir.path().join("rules-b.toml"), RULES_B).unwrap();
        std::fs::write(app.dir.path().join("console-token"), format!("{TOKEN}\n")).unwrap();
        let experiment = match edit {
            "[worker]\n" => "\n[experiment]\nshare = 0.2\nb_rules = \"rules-b.toml\"\n",
            _ => "",
        };
        app.edit_config(|c| {
            c.replace("[worker]\n", edit).replace(
                "[http]\n",
                "[http]\nconsole_token_file = \"console-token\"\n",
            ) + experiment
        });
        let _daemon = app.spawn_guarded("run.log");
        let base = format!("http://{}", app.listener_addr("run.log").await);
        let cookie = console_http::sign_in(&base, TOKEN).await.unwrap();
        let page = console_http::get(&base, "/console/agents", &cookie).await;
        let text = page.text().await.unwrap();
        assert!(
            text.contains(expected),
            "{expected:?} not in the page: {text}"
        );
    }
}

/// The account as the sandbox plays it: people who answer what they are
/// given (alice fast, carol slowly), signed webhooks to the listener.
async fn serving_account(app: &TestApp, people: People) -> InProcess {
    const KEY: &str = "whk-experiments";
    let secrets = assignd::http::ListenerSecrets::new(Some(Secret::new(KEY)), None);
    let daemon = app.start_serving(secrets).await;
    let addr = daemon.http_addr.expect("the listener runs");
    app.sandbox
        .send_webhooks_to(format!("http://{addr}/webhooks/helpcrunch"), KEY);
    app.sandbox.set_people(Some(people)).unwrap();
    daemon
}

/// Creates `n` new chats (each a `chat.new` webhook) and waits until
/// `at_least` of them have their fact `column` in `chat_history`.
async fn traffic(app: &TestApp, n: i64, column: &'static str, at_least: i64) {
    for id in 1..=n {
        app.sandbox.create_chat(id, |c| {
            c.assignee = None;
            c.status = "new".into();
        });
    }
    let from = match column {
        "first_reply_at" => "chat_history WHERE first_reply_at IS NOT NULL",
        _ => "chat_history WHERE assigned_at IS NOT NULL",
    };
    app.wait_count(from, at_least, Duration::from_secs(60), column)
        .await;
}

fn compared(app: &TestApp) -> serde_json::Value {
    let out = app.run_ok(&["report", "--compare", "--json", "--since", "1h"]);
    serde_json::from_str(&out).unwrap()
}

fn measure<'a>(c: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    c["measures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["measure"] == name)
        .unwrap()
}

/// Every field docs/experiments.md ("In `--json`") names, in each place.
fn assert_documented_fields(c: &serde_json::Value) {
    let has = |v: &serde_json::Value, keys: &[&str]| {
        for k in keys {
            assert!(v.get(k).is_some(), "no `{k}` in {v:#}");
        }
    };
    has(c, &["a", "b", "a_chats", "b_chats", "options", "headline"]);
    has(
        &c["options"],
        &["resamples", "seed", "confidence", "min_chats"],
    );
    let measures = c["measures"].as_array().expect("measures");
    let names: Vec<&str> = measures
        .iter()
        .filter_map(|m| m["measure"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "first_reply",
            "assignment",
            "reassignments",
            "handbacks",
            "after_hours_reply_rate",
            "load_spread"
        ]
    );
    for m in measures {
        has(
            m,
            &[
                "statistic",
                "a",
                "b",
                "difference",
                "interval",
                "finding",
                "better",
                "verdict",
            ],
        );
        for arm in [&m["a"], &m["b"]] {
            has(arm, &["n", "value"]);
        }
        let times = ["first_reply", "assignment"].contains(&m["measure"].as_str().unwrap());
        if times && m["a"]["n"].as_u64() > Some(0) {
            has(&m["a"], &["mean"]);
        }
        if !m["interval"].is_null() {
            has(&m["interval"], &["low", "high"]);
        }
        let finding = m["finding"].as_str().unwrap();
        assert!(["clear", "no_clear_difference", "too_few_chats"].contains(&finding));
        assert_eq!(m["better"].is_null(), finding != "clear", "{m:#}");
    }
}

/// `report --compare --html FILE` through the binary: the page is written,
/// with a chart (a dot and a line for each measure with an interval) and
/// the verdicts `--json` gave.
fn assert_html_page(app: &TestApp, c: &serde_json::Value) {
    let path = app.dir.path().join("compare.html");
    let path_arg = path.to_str().unwrap();
    let out = app.run_ok(&["report", "--compare", "--since", "1h", "--html", path_arg]);
    assert_eq!(out.trim(), format!("wrote {path_arg}"));
    let page = std::fs::read_to_string(&path).expect("the page is written");
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("</svg>"));
    let measures = c["measures"].as_array().unwrap();
    let charted = measures.iter().filter(|m| !m["interval"].is_null()).count();
    assert!(charted > 0, "{c:#}");
    assert_eq!(page.matches("<circle").count(), charted, "{page}");
    let escape = assignd::report::html::escape;
    let headline = escape(c["headline"].as_str().unwrap());
    assert!(
        page.contains(&format!("<p class=\"headline\">{headline}</p>")),
        "{page}"
    );
    for m in measures {
        let verdict = escape(m["verdict"].as_str().unwrap());
        assert!(page.contains(&verdict), "{verdict} not in {page}");
    }
}

/// A/B, both arms live: arm a's rules give chats to alice, who answers in
/// about 0.2 s; arm b's to carol, who takes about 2 s. `report --compare`
/// finds arm a answering faster, with an interval that excludes zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_compare_finds_the_faster_arm() {
    let a_rules = RULES.replace("agents = [\"alice\", \"bob\"]", "agents = [\"alice\"]");
    let app = TestApp::builder().rules(&a_rules).listen().build().await;
    std::fs::write(app.dir.path().join("rules-b.toml"), RULES_B).unwrap();
    app.edit_config(|c| c + "\n[experiment]\nb_rules = \"rules-b.toml\"\n");
    let people = People {
        seed: 3,
        reply_after_by_agent: vec![
            (4188, Duration::from_millis(200)),
            (6694, Duration::from_secs(2)),
        ],
        ..People::default()
    };
    let daemon = serving_account(&app, people).await;
    traffic(&app, 80, "first_reply_at", 80).await;
    daemon.stop().await;
    let c = compared(&app);
    assert_eq!((c["a"].as_str(), c["b"].as_str()), (Some("a"), Some("b")));
    let reply = measure(&c, "first_reply");
    assert_eq!(reply["finding"], "clear", "{reply:#}");
    assert_eq!(reply["better"], "a", "{reply:#}");
    let (low, high) = (
        reply["interval"]["low"].as_f64().unwrap(),
        reply["interval"]["high"].as_f64().unwrap(),
    );
    assert!(
        low > 0.5 && high < 3.0,
        "b − a between 0.5 and 3 s: {reply:#}"
    );
    let text = app.run_ok(&["report", "--compare", "--since", "1h"]);
    assert!(text.contains("a answers faster by"), "{text}");
    println!("{text}");
    assert_documented_fields(&c);
    assert_html_page(&app, &c);
    assert!(
        c["headline"]
            .as_str()
            .unwrap()
            .starts_with("a answers faster by")
    );
}

/// Shadow mode: the account's own routing assigns every chat after 3 s
/// and its people answer; the shadow decides at once. The comparison is
/// reality against shadow: the shadow assigns sooner; no reply is known
/// for the shadow's assignees (they were never asked). (With reality at
/// 0.4 s the shadow, deciding 40 chats that came at once on a machine
/// loaded to 10 on 2 cores, was at times the slower: what is under test is
/// the comparison, so reality's routing takes clearly longer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_compare_sets_the_shadow_against_what_really_happened() {
    let app = TestApp::builder().rules(RULES).listen().build().await;
    app.edit_config(|c| c.replace("[worker]\n", "[worker]\nmode = \"shadow\"\n"));
    let people = People {
        seed: 5,
        assign_share: 1.0,
        assign_after: Duration::from_secs(3),
        reply_after: Some(Duration::from_millis(300)),
        ..People::default()
    };
    let daemon = serving_account(&app, people).await;
    traffic(&app, 40, "first_reply_at", 40).await;
    // Reality may answer before the shadow has decided every chat (a busy
    // machine): the comparison is of chats both have seen through.
    let shadowed = "outcomes WHERE result = 'shadow'";
    app.wait_count(shadowed, 40, Duration::from_secs(60), "shadow decisions")
        .await;
    daemon.stop().await;
    assert!(app.sandbox.writes().is_empty());
    let c = compared(&app);
    assert_eq!(
        (c["a"].as_str(), c["b"].as_str()),
        (Some("reality"), Some("shadow"))
    );
    let assignment = measure(&c, "assignment");
    assert_eq!(assignment["better"], "shadow", "{assignment:#}");
    assert_eq!(measure(&c, "first_reply")["finding"], "too_few_chats");
}

/// Both arms decide on one set of hourly counts: arm a (no hourly cap)
/// must not trim away the assignments arm b's cap counts (carol, two an
/// hour), whatever order the arms' decisions come in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_bs_hourly_cap_holds_beside_arm_a() {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("concurrency = 1\nfetch_chat = \"never\"")
        .build()
        .await;
    let capped = RULES_B.replace(
        "carol = { id = 6694 }",
        "carol = { id = 6694, max_per_hour = 2 }",
    );
    std::fs::write(app.dir.path().join("rules-b.toml"), capped).unwrap();
    app.edit_config(|c| c + "\n[experiment]\nb_rules = \"rules-b.toml\"\n");
    let daemon = app.start_in_process().await;
    app.insert_raw(1..=40).await;
    daemon.runtime.worker.wake();
    let decided = "(SELECT DISTINCT chat_id FROM outcomes)";
    app.wait_count(decided, 40, DRAIN, "a decision for each chat")
        .await;
    daemon.stop().await;
    let to_carol = app
        .sandbox
        .assign_calls()
        .iter()
        .filter(|c| c.1 == 6694)
        .count();
    let b = expected(
        Split {
            share: 1.0,
            b_share: 0.5,
        },
        1..=40,
    )
    .values()
    .filter(|a| *a == "b")
    .count();
    assert!(b > 4, "{b} chats in arm b");
    assert_eq!(
        to_carol, 2,
        "carol's cap of 2 an hour, with {b} chats in arm b"
    );
}

/// Both arms route one team: arm b may name only arm a's agents, with
/// their ids; `check` and `run` refuse anything else, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_b_names_only_arm_as_agents() {
    let app = TestApp::builder().rules(RULES).build().await;
    app.edit_config(|c| c + "\n[experiment]\nb_rules = \"rules-b.toml\"\n");
    for (b, why) in [
        (
            RULES_B.replace("carol", "dave"),
            "agent `dave` is not in [rules] path",
        ),
        (
            RULES_B.replace("6694", "7777"),
            "agent `carol` has id 7777 there but 6694",
        ),
    ] {
        std::fs::write(app.dir.path().join("rules-b.toml"), b).unwrap();
        for args in [&["check"][..], &["run"][..]] {
            let (code, _, stderr) = app.exec(args);
            assert_ne!(code, 0, "{args:?}: {stderr}");
            assert_contains(&stderr, &[why]);
        }
    }
    std::fs::write(app.dir.path().join("rules-b.toml"), RULES_B).unwrap();
    app.run_ok(&["check"]);
}

/// Arm b's rules, every chat to pool `pool` (alice and bob), which hands
/// back every chat of an absent agent.
fn handing_back_b(pool: &str) -> String {
    format!(
        r#"
[agents]
alice = {{ id = 4188 }}
bob   = {{ id = 4761 }}

[pools.{pool}]
agents = ["alice", "bob"]
handback = "all"

[[rule]]
name = "all in b"
assign = "pool:{pool}"
"#
    )
}

/// Arm a's pool hands nothing back; arm b's hands back every chat. Every
/// chat is in arm b and goes to alice (bob away); alice goes away: her
/// chats go back through arm b's rules, to bob. With a pool only arm b
/// has, and with arm a's pool's name, set up otherwise in arm b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_bs_pool_hands_back_the_chats_of_an_absent_agent() {
    const ALICE: i64 = 4188;
    const BOB: i64 = 4761;
    for pool in ["b_team", "support"] {
        let app = TestApp::builder().rules(RULES).migrated().await;
        std::fs::write(app.dir.path().join("rules-b.toml"), handing_back_b(pool)).unwrap();
        app.edit_config(|c| c + "\n[experiment]\nb_rules = \"rules-b.toml\"\nb_share = 1.0\n");
        app.run_ok(&["agent", "away", "bob"]);
        let daemon = app.start_in_process().await;
        app.feed(&daemon, 1..=3).await;
        let sandbox = &app.sandbox;
        let with = |agent| move || (1..=3).all(|c| sandbox.assignee(c) == Some(agent));
        wait_for("alice's three chats", DRAIN, with(ALICE)).await;
        app.cli_ok(&["agent", "back", "bob"]).await;
        app.cli_ok(&["agent", "away", "alice"]).await;
        let what = format!("pool {pool}: the chats handed back to bob");
        wait_for(&what, DRAIN, with(BOB)).await;
        let handed = "outcomes WHERE result = 'skipped' AND route = 'handed_back' AND arm = 'b'
                        AND reason = 'handed back from alice (away)'";
        assert_eq!(app.count(handed).await, 3, "pool {pool}");
        daemon.stop().await;
    }
}

/// A pool both arms name, set up otherwise in each: arm a's `support`
/// never reassigns, arm b's moves a chat nobody answered within 1 s. Every
/// chat is in arm b and nobody answers: the follow-ups use arm b's pool
/// and move each chat once, to the other agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_uses_its_own_arms_pool() {
    let b_rules = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }

[pools.support]
agents = ["alice", "bob"]
reassign_after = "1s"
max_reassign = 1

[[rule]]
name = "all in b"
assign = "pool:support"
"#;
    let app = TestApp::builder().rules(RULES).migrated().await;
    std::fs::write(app.dir.path().join("rules-b.toml"), b_rules).unwrap();
    app.edit_config(|c| c + "\n[experiment]\nb_rules = \"rules-b.toml\"\nb_share = 1.0\n");
    let daemon = app.start_in_process().await;
    app.feed(&daemon, 1..=3).await;
    let hops = "outcomes WHERE route = 'reassigned' AND arm = 'b'";
    app.wait_count(hops, 3, DRAIN, "arm b's reassignments")
        .await;
    daemon.stop().await;
    let first: Vec<(i64, String, Option<String>)> = app
        .rows("SELECT chat_id, agent, NULL FROM outcomes WHERE result = 'assigned' AND route IS NOT 'reassigned' ORDER BY chat_id")
        .await;
    let moved = app
        .rows(
            "SELECT chat_id, agent, NULL FROM outcomes WHERE route = 'reassigned' ORDER BY chat_id",
        )
        .await;
    assert_eq!(first.len(), 3, "{first:?}");
    for (a, b) in first.iter().zip(&moved) {
        assert_eq!(a.0, b.0);
        assert_ne!(a.1, b.1, "chat {} moved to the other agent", a.0);
    }
}
