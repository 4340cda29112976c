//! `explain`, `simulate` and `check` on a fixture rule set that uses every feature.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A config pointing at the fixture rules and a database that does not exist.
fn config(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("assignd.toml");
    let text = format!(
        "[rules]\npath = \"{}\"\n[database]\nurl = \"sqlite://{}\"\n",
        fixture("rules").display(),
        dir.path().join("none.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn assignd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(args)
        .env_remove("ASSIGND_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chat_line(id: i64) -> String {
    let text = std::fs::read_to_string(fixture("chats.jsonl")).unwrap();
    text.lines()
        .find(|l| serde_json::from_str::<Value>(l).unwrap()["id"] == id)
        .unwrap()
        .to_string()
}

/// `assignd COMMAND`, each of `paths` as `--FLAG PATH`, then `extra`: its
/// output, which must be a success.
fn assignd_ok(command: &str, paths: &[(&str, &Path)], extra: &[&str]) -> String {
    let mut args = vec![command.to_string()];
    for (flag, path) in paths {
        args.push(format!("--{flag}"));
        args.push(path.to_str().unwrap().to_string());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = assignd(&args);
    assert_eq!(code, 0, "{err}");
    out
}

/// `assignd explain` of fixture chat `id` at `at`, with `extra` arguments.
fn explain_output(id: i64, at: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let file = dir.path().join("chat.json");
    std::fs::write(&file, chat_line(id)).unwrap();
    let paths = [("config", cfg.as_path()), ("chat", file.as_path())];
    assignd_ok("explain", &paths, &[&["--at", at], extra].concat())
}

fn explain(id: i64, at: &str, extra: &[&str]) -> Value {
    let out = explain_output(id, at, &[&["--json"], extra].concat());
    serde_json::from_str(&out).unwrap()
}

/// `assignd simulate` of `chats` over `rules`, with `extra` arguments.
fn simulate(rules: &Path, chats: &Path, extra: &[&str]) -> String {
    assignd_ok("simulate", &[("rules", rules), ("chats", chats)], extra)
}

/// `assignd simulate --json` of chat `lines` over the rules `text`: the
/// replay's outcomes.
fn simulate_json(text: &str, lines: &[String]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, text).unwrap();
    let file = dir.path().join("chats.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = simulate(&rules, &file, &["--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["result"]["outcomes"].as_array().unwrap().clone()
}

/// The element of the JSON array `list` whose `key` is `value`.
fn element<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    let list = list.as_array().unwrap();
    list.iter().find(|e| e[key] == value).unwrap()
}

const NOON_KYIV: &str = "2026-06-03T09:00:00Z"; // Wednesday 12:00 in Kyiv
const NIGHT_KYIV: &str = "2026-06-03T20:00:00Z"; // Wednesday 23:00

#[test]
fn explain_says_which_key_failed_and_what_it_saw() {
    let e = explain(9, NIGHT_KYIV, &[]);
    assert_eq!(e["chat_id"], 9);
    assert_eq!(e["at"], NIGHT_KYIV);
    let rules = e["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 8);
    assert_eq!(rules[0]["name"], "vip");
    assert_eq!(rules[0]["status"], "failed");
    assert_eq!(rules[0]["failed_key"], "customer.email");
    assert_eq!(rules[0]["seen"], "\"h@example.com\"");
    assert!(
        rules[0]["location"]
            .as_str()
            .unwrap()
            .ends_with("20-routes.toml:2:8"),
        "{}",
        rules[0]["location"]
    );
    // Conditions are tried in the order written: `department` comes first.
    assert_eq!(rules[2]["failed_key"], "department");
    assert_eq!(rules[2]["seen"], "\"Support\" / \"1\"");
    assert_eq!(rules[3]["failed_key"], "department");
    assert_eq!(rules[6]["name"], "after-hours");
    assert_eq!(rules[6]["status"], "matched");
    assert_eq!(rules[6]["candidates"][0]["agent"], "dave");
    assert_eq!(rules[6]["candidates"][0]["kept"], true);
    assert!(
        rules[6]["pick"]
            .as_str()
            .unwrap()
            .starts_with("sticky: no earlier agent")
    );
    assert_eq!(rules[7]["status"], "not evaluated");
    let d = &e["decision"];
    assert_eq!(d["result"], "assigned");
    assert_eq!(d["rule"], "after-hours");
    assert_eq!(d["pool"], "night");
    assert_eq!(d["agent"], "dave");
    assert_eq!(d["agent_id"], 2533);
    assert_eq!(e["skip"], Value::Null);
}

#[test]
fn explain_shows_dropped_candidates_and_the_strategy() {
    // Billing in Ukrainian at noon: least-open between alice and bob.
    let e = explain(3, NOON_KYIV, &[]);
    let billing = &e["rules"][2];
    assert_eq!(billing["status"], "matched");
    assert_eq!(billing["target"], "pool:billing (least-open)");
    assert!(
        billing["pick"]
            .as_str()
            .unwrap()
            .starts_with("least-open: open chats alice 0, bob 0"),
        "{}",
        billing["pick"]
    );
    assert_eq!(e["decision"]["agent"], "alice");

    // At night carol is off shift: the executives rule keeps only alice and bob.
    let e = explain(6, NIGHT_KYIV, &[]);
    let exec = &e["rules"][4];
    let carol = element(&exec["candidates"], "agent", "carol");
    assert_eq!(carol["kept"], false);
    assert_eq!(carol["why"], "off shift");
    assert!(
        exec["pick"]
            .as_str()
            .unwrap()
            .starts_with("round-robin: last was nobody yet -> alice")
    );

    // Spam is recorded, not assigned.
    let e = explain(2, NOON_KYIV, &[]);
    assert_eq!(e["decision"]["result"], "skipped");
    assert_eq!(e["decision"]["reason"], "rule `spam` assigns none");

    // An attribute given on the command line.
    let e = explain(11, NIGHT_KYIV, &["--attr", "tier=gold"]);
    assert_eq!(e["decision"]["rule"], "after-hours");
    let e = explain(11, NIGHT_KYIV, &[]);
    assert_eq!(e["decision"]["rule"], "everything else");
    assert_eq!(e["rules"][6]["failed_key"], "any");
}

#[test]
fn explain_text_reads_like_a_story() {
    let out = explain_output(1, NOON_KYIV, &[]);
    common::assert_contains(
        &out,
        &[
            "1. vip -> alice: MATCH",
            "2. spam -> none: not evaluated",
            "decision: assigned alice (id 4188): rule `vip` assigns alice",
        ],
    );
}

#[test]
fn simulate_counts_rules_agents_and_fairness() {
    let out = simulate(
        &fixture("rules"),
        &fixture("chats.jsonl"),
        &["--at", NOON_KYIV, "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["result"];
    assert_eq!(r["chats"], 12);
    assert_eq!(r["per_result"]["assigned"], 11);
    assert_eq!(r["per_result"]["skipped"], 1);
    assert_eq!(r["per_rule"]["vip"], 1);
    assert_eq!(r["per_rule"]["billing in Ukrainian"], 2);
    assert_eq!(r["per_rule"]["sales on weekdays"], 2);
    assert_eq!(r["per_rule"]["after-hours"], 2);
    assert_eq!(r["per_rule"]["everything else"], 2);
    assert_eq!(
        r["per_agent"]["dave"].as_u64().unwrap() + r["per_agent"]["erin"].as_u64().unwrap(),
        4
    );
    let outcomes = r["outcomes"].as_array().unwrap();
    assert_eq!(outcomes[0]["agent"], "alice", "vip");
    assert_eq!(
        outcomes[2]["agent"], "bob",
        "least-open: alice already has the VIP chat open"
    );
    assert_eq!(
        outcomes[3]["agent"], "alice",
        "least-open: one each, a tie goes to the next in rotation after bob"
    );
    assert_eq!(
        outcomes[4]["agent"], "carol",
        "weighted, equal weights: the first in name order"
    );
    assert_eq!(outcomes[11]["agent"], "erin", "weighted: then the other");
    let sales = element(&r["fairness"], "pool", "sales");
    assert_eq!(sales["max"], 1);
    assert_eq!(sales["min"], 1);
    assert_eq!(sales["jain"], 1.0);
}

#[test]
fn simulate_compares_two_rule_sets() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, common::THREE_AGENTS).unwrap();
    let against = ["--against", other.to_str().unwrap(), "--at", NOON_KYIV];
    let out = simulate(&fixture("rules"), &fixture("chats.jsonl"), &against);
    common::assert_contains(
        &out,
        &[
            "(A) against",
            "chats decided differently:",
            "  vip                       1      0  *",
        ],
    );
}

#[test]
fn check_summarises_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let (code, out, err) = assignd(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    common::assert_contains(
        &out,
        &[
            "ok: 5 agents, 5 pools, 3 schedules, 8 rules",
            "schedule `night` is used by no rule or agent",
        ],
    );
}

/// The worker and `simulate` make the same choices for the same chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_reproduces_the_workers_choices() {
    let rules = std::fs::read_to_string(fixture("rules/10-team.toml")).unwrap()
        + &std::fs::read_to_string(fixture("rules/20-routes.toml")).unwrap();
    let agents = common::agents(&[
        ("alice", 4188),
        ("bob", 4761),
        ("carol", 6694),
        ("dave", 2533),
        ("erin", 7012),
    ]);
    let app = common::TestApp::builder()
        .rules(&rules)
        .agents(agents)
        .worker("concurrency = 1")
        .build()
        .await;
    // Chats without a fixed time, so that both decide at (about) now.
    let lines: Vec<String> = std::fs::read_to_string(fixture("chats.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"at\""))
        .map(String::from)
        .collect();
    let daemon = app.start_in_process().await;
    let items: Vec<assignd::store::NewQueueItem> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assignd::store::NewQueueItem {
                chat_id: assignd::domain::ChatId(v["id"].as_i64().unwrap()),
                attrs: v.get("attrs").and_then(|a| a.as_object().cloned()),
                snapshot: Some(v),
                priority: 0,
                ranked: false,
            }
        })
        .collect();
    daemon.runtime.store.enqueue(&items).await.unwrap();
    daemon.runtime.worker.wake();
    app.wait_drained(Duration::from_secs(20)).await;
    daemon.stop().await;

    let chats_file = app.dir.path().join("chats.jsonl");
    std::fs::write(&chats_file, lines.join("\n")).unwrap();
    let out = simulate(&app.dir.path().join("rules.toml"), &chats_file, &["--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let pool = app.producer().await;
    let mut compared = 0;
    for o in v["result"]["outcomes"].as_array().unwrap() {
        if o["rule"] == "api chats" {
            continue; // `random`: the worker draws its own randomness
        }
        let chat = o["chat_id"].as_i64().unwrap();
        let (result, agent): (String, Option<String>) = sqlx::query_as(
            "SELECT result, agent FROM outcomes WHERE chat_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(chat)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(o["result"].as_str().unwrap(), result, "chat {chat}");
        assert_eq!(o["agent"].as_str().map(String::from), agent, "chat {chat}");
        compared += 1;
    }
    assert!(compared >= 8, "{compared}");
}

/// Each of the dozen fixture chats, at its own time (or noon in Kyiv):
/// where it goes and the rule that sends it there. Run on a fresh state, so
/// each decision stands alone.
#[test]
fn explain_sends_every_fixture_chat_where_it_should() {
    let expected: [(i64, &str, &str, Option<&str>); 12] = [
        (1, "assigned", "vip", Some("alice")),
        (2, "skipped", "spam", None),
        (3, "assigned", "billing in Ukrainian", Some("alice")),
        (4, "assigned", "billing in Ukrainian", Some("alice")),
        (5, "assigned", "sales on weekdays", Some("carol")),
        (6, "assigned", "executives", Some("alice")),
        (7, "assigned", "api chats", None), // random: dave or erin
        (8, "assigned", "everything else", Some("alice")),
        (9, "assigned", "after-hours", Some("dave")),
        (10, "assigned", "after-hours", Some("dave")),
        (11, "assigned", "everything else", Some("alice")),
        (12, "assigned", "sales on weekdays", Some("carol")),
    ];
    for (chat, result, rule, agent) in expected {
        let e = explain(chat, NOON_KYIV, &[]);
        let at = serde_json::from_str::<Value>(&chat_line(chat)).unwrap()["at"]
            .as_str()
            .map(String::from);
        let e = match at {
            Some(at) => explain(chat, &at, &[]),
            None => e,
        };
        let d = &e["decision"];
        assert_eq!(d["result"], result, "chat {chat}: {e:#}");
        assert_eq!(d["rule"], rule, "chat {chat}");
        match agent {
            Some(a) => assert_eq!(d["agent"], a, "chat {chat}"),
            None if result == "assigned" => assert!(
                d["agent"] == "dave" || d["agent"] == "erin",
                "chat {chat}: {d}"
            ),
            None => assert_eq!(d["agent"], Value::Null),
        }
        // Every rule before the deciding one says why it failed.
        let rules = e["rules"].as_array().unwrap();
        let decided = rules.iter().position(|r| r["name"] == rule).unwrap();
        for r in &rules[..decided] {
            assert_eq!(r["status"], "failed", "chat {chat}: {r}");
            assert!(
                r["failed_key"].is_string() && r["seen"].is_string(),
                "chat {chat}: {r}"
            );
        }
    }
}

/// `simulate` moves its state as the worker does, on the chats' own clock:
/// `max_per_hour` counts the replayed assignments of the sliding hour, and
/// `sticky` forgets a customer's agent after `sticky_for`.
#[test]
fn simulate_honours_hourly_caps_and_sticky_for_on_its_clock() {
    let rules = "[agents]\nalice = { id = 1, max_per_hour = 2 }\nbob = { id = 2 }\n\
         [pools.capped]\nagents = [\"alice\"]\n\
         [pools.sticky]\nagents = [\"alice\", \"bob\"]\nstrategy = \"sticky\"\nsticky_for = \"1d\"\n\
         [[rule]]\nname = \"sticky\"\nmatch = { attr.kind = \"sticky\" }\nassign = \"pool:sticky\"\n\
         [[rule]]\nname = \"capped\"\nassign = \"pool:capped\"\n";
    let line = |id: i64, at: &str, customer: i64, kind: &str| {
        format!(
            r#"{{"id": {id}, "status": "new", "assignee": null, "customer": {{"id": {customer}}}, "at": "{at}", "attrs": {{"kind": "{kind}"}}}}"#
        )
    };
    let chats = [
        line(1, "2026-06-03T10:00:00Z", 7, "capped"),
        line(2, "2026-06-03T10:10:00Z", 7, "capped"),
        line(3, "2026-06-03T10:20:00Z", 7, "capped"),
        line(4, "2026-06-03T11:05:00Z", 7, "capped"),
        // Customer 8: alice first, alice again by sticky, then, three
        // days on, round-robin after alice.
        line(5, "2026-06-03T12:00:00Z", 8, "sticky"),
        line(6, "2026-06-03T13:00:00Z", 8, "sticky"),
        line(7, "2026-06-06T13:00:00Z", 8, "sticky"),
    ];
    let outcomes = simulate_json(rules, &chats);
    let agents: Vec<Option<&str>> = outcomes.iter().map(|o| o["agent"].as_str()).collect();
    let alice = Some("alice");
    assert_eq!(
        agents,
        [alice, alice, None, alice, alice, alice, Some("bob")],
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[2]["reason"],
        "rule `capped`: pool `capped` has no available agent (when_full = wait); \
         at hourly cap: alice (2/2 this hour)"
    );
}

/// `simulate` applies `escalate` through the same decision: a chat's wait
/// runs from its `enqueued_at` to its `at`.
#[test]
fn simulate_escalates_a_chat_by_how_long_it_has_waited() {
    let rules = "[agents]\nalice = { id = 1, max_open = 1 }\nbob = { id = 2 }\n\
         [pools.support]\nagents = [\"alice\"]\nescalate = [{ after = \"2m\", assign = \"pool:overflow\" }]\n\
         [pools.overflow]\nagents = [\"bob\"]\n\
         [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n";
    let line = |id: i64, enqueued: &str, at: &str| {
        format!(
            r#"{{"id": {id}, "status": "new", "assignee": null, "enqueued_at": "{enqueued}", "at": "{at}"}}"#
        )
    };
    let chats = [
        line(1, "2026-06-03T10:00:00Z", "2026-06-03T10:00:00Z"),
        line(2, "2026-06-03T10:00:30Z", "2026-06-03T10:01:00Z"),
        line(3, "2026-06-03T10:00:30Z", "2026-06-03T10:02:30Z"),
    ];
    let outcomes = simulate_json(rules, &chats);
    let agents: Vec<Option<&str>> = outcomes.iter().map(|o| o["agent"].as_str()).collect();
    assert_eq!(agents, [Some("alice"), None, Some("bob")], "{outcomes:?}");
    assert_eq!(
        outcomes[2]["reason"],
        "rule `all`: pool `support` had no available agent; escalated after 2m \
         (step 1 of 1) to pool `overflow`: round-robin: first pick -> bob"
    );
}
