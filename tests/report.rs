//! Issue 15, item 5: `assignd report` on a seeded week of known history,
//! through the real binary, on a real SQLite file and on PostgreSQL: exact
//! figures in the text, `--json` and `--html` forms, escaped text, and no
//! secret in any of them.

#[path = "support/postgres.rs"]
mod postgres;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const CANARY: &str = "canary-api-key-7f3a9c";

const RULES: &str = r#"timezone = "UTC"

[agents]
ann = { id = 1 }
bob = { id = 2 }
cy  = { id = 3 }

[schedules.office]
hours = { all = "09:00-17:00" }

[pools.support]
agents = ["ann", "bob"]
escalate = [{ after = "5m", assign = "pool:overflow" }]

[pools.overflow]
agents = ["cy"]

[[rule]]
name = "night"
match = { outside = "office" }
assign = "pool:overflow"

[[rule]]
name = "all"
assign = "pool:support"
"#;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The SQL that writes a week of history, and the ids it uses.
#[derive(Default)]
struct Seed {
    sql: Vec<String>,
    next_id: i64,
    /// Time in queue of the next row, in seconds (1, 2, 3, ...).
    next_wait: i64,
}

impl Seed {
    /// A done queue row enqueued `wait` before `at`, and its outcome.
    fn assigned(&mut self, at: i64, rule: &str, pool: &str, agent: &str, reason: &str) -> i64 {
        self.next_id += 1;
        self.next_wait += 1;
        let id = self.next_id;
        let enqueued = at - self.next_wait * 1000;
        self.sql.push(format!(
            "INSERT INTO queue (id, chat_id, state, enqueued_at, updated_at)
             VALUES ({id}, {}, 'done', {enqueued}, {at})",
            1000 + id
        ));
        self.outcome(
            id,
            Some(id),
            at,
            "assigned",
            Some((rule, pool)),
            agent,
            reason,
        );
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &mut self,
        chat: i64,
        queue_id: Option<i64>,
        at: i64,
        result: &str,
        rule: Option<(&str, &str)>,
        agent: &str,
        reason: &str,
    ) {
        let queue = queue_id.map_or("NULL".into(), |q| q.to_string());
        let (rule, pool) = rule.map_or(("NULL".into(), "NULL".into()), |(r, p)| {
            (format!("'{r}'"), format!("'{p}'"))
        });
        let reason = reason.replace('\'', "''");
        self.sql.push(format!(
            "INSERT INTO outcomes (chat_id, queue_id, at, rule, pool, agent, result, reason)
             VALUES ({}, {queue}, {at}, {rule}, {pool}, '{agent}', '{result}', '{reason}')",
            1000 + chat
        ));
    }

    /// Marks the `result` outcome of `chat` as an escalation, hand-back or
    /// hop, as the worker records it.
    fn route(&mut self, chat: i64, result: &str, route: &str) {
        self.sql.push(format!(
            "UPDATE outcomes SET route = '{route}' WHERE chat_id = {} AND result = '{result}'",
            1000 + chat
        ));
    }

    /// The history row of `chat` (as [`Seed::assigned`] numbers chats):
    /// arrived at `arrived`, assigned `assigned` later by `by`, and
    /// replied `reply` after arriving.
    fn chat(&mut self, chat: i64, arrived: i64, assigned: (i64, &str), reply: Option<i64>) {
        let (after, by) = assigned;
        let reply = reply.map_or("NULL".into(), |r| (arrived + r).to_string());
        self.sql.push(format!(
            "INSERT INTO chat_history (chat_id, arrived_at, assigned_at, assigned_by, first_reply_at)
             VALUES ({}, {arrived}, {}, '{by}', {reply})",
            1000 + chat,
            arrived + after
        ));
    }

    fn dead(&mut self, at: i64, reason: &str) {
        self.next_id += 1;
        let id = self.next_id;
        self.sql.push(format!(
            "INSERT INTO queue (id, chat_id, state, last_error, enqueued_at, updated_at)
             VALUES ({id}, {}, 'dead', '{reason}', {at}, {at})",
            1000 + id
        ));
    }
}

/// A week before today (UTC): on each of the 6 days before today, ann gets
/// 2 chats and bob 1 at office hours; on 3 of them cy gets one at night;
/// one escalation to cy, one reassignment hop to bob, one hand-back from
/// ann whose chat then goes to bob; two dead letters; and rows outside
/// the window that must not count. Some chats have their history: when
/// they arrived, were assigned and first replied.
fn week(today: i64) -> Seed {
    let mut s = Seed::default();
    for d in 1..=6 {
        let day = today - d * DAY;
        for h in [10, 11] {
            let id = s.assigned(
                day + h * HOUR,
                "all",
                "support",
                "ann",
                "rule `all`: round-robin: last was bob -> ann",
            );
            // Replied d minutes after arriving, assigned after 10 s.
            if h == 10 {
                let arrived = day + h * HOUR - 10_000;
                s.chat(id, arrived, (10_000, "assignd"), Some(d * 60_000));
            }
        }
        s.assigned(
            day + 12 * HOUR,
            "all",
            "support",
            "bob",
            "rule `all`: round-robin: last was ann -> bob",
        );
        if d <= 3 {
            let id = s.assigned(
                day + 20 * HOUR,
                "night",
                "overflow",
                "cy",
                "rule `night`: pool `overflow` round-robin -> cy",
            );
            // Two of the three replied, after 2 and 4 minutes.
            let reply = (d < 3).then_some(d * 120_000);
            s.chat(id, day + 20 * HOUR - 20_000, (20_000, "assignd"), reply);
        }
    }
    unusual_days(&mut s, today);
    others(&mut s, today);
    s
}

/// Chats assignd did not assign or saw no arrival of: one a person
/// assigned, one whose arrival is not known, and one before the window.
fn others(s: &mut Seed, today: i64) {
    let yesterday = today - DAY + 9 * HOUR;
    s.chat(950, yesterday, (30_000, "other"), Some(90_000));
    s.chat(951, yesterday, (1_000, "other"), Some(5_000));
    s.sql
        .push("UPDATE chat_history SET arrival = 'seen' WHERE chat_id = 1951".into());
    s.chat(952, today - 8 * DAY, (1_000, "assignd"), Some(5_000));
}

/// The escalation, the hop, the hand-back, what is no assignment, and
/// what lies outside the window.
fn unusual_days(s: &mut Seed, today: i64) {
    let day4 = today - 4 * DAY;
    let escalated = s.assigned(
        day4 + 14 * HOUR,
        "all",
        "overflow",
        "cy",
        "rule `all`: pool `support` had no available agent; escalated after 5m (step 1 of 1) to pool `overflow`: round-robin: first pick -> cy",
    );
    s.route(escalated, "assigned", "escalated");
    // A reassignment hop: no queue row.
    let day2 = today - 2 * DAY;
    s.outcome(
        900,
        None,
        day2 + 13 * HOUR,
        "assigned",
        Some(("all", "support")),
        "bob",
        "reassigned: ann did not answer within 2m -> bob (hop 1 of 1)",
    );
    s.route(900, "assigned", "reassigned");
    // A hand-back: the skipped outcome on the new row, then its assignment.
    let at = day2 + 15 * HOUR;
    let id = s.assigned(
        at + 60_000,
        "all",
        "support",
        "bob",
        "hand-back (ann is away): rule `all`: round-robin: last was ann -> bob",
    );
    s.outcome(
        id,
        Some(id),
        at,
        "skipped",
        Some(("all", "support")),
        "ann",
        "handed back from ann (away since 14:00)",
    );
    s.route(id, "skipped", "handed_back");
    // Not assignments: a failure and a wait.
    s.outcome(
        901,
        None,
        day2 + 16 * HOUR,
        "failed",
        Some(("all", "support")),
        "ann",
        "HelpCrunch answered 500",
    );
    s.outcome(
        902,
        None,
        day2 + 16 * HOUR,
        "no_agent",
        Some(("all", "support")),
        "",
        "rule `all`: pool `support` has no available agent (when_full = wait)",
    );
    // Outside the window: eight days back.
    s.assigned(today - 8 * DAY, "all", "support", "ann", "rule `all`: old");
    s.dead(today - 9 * DAY, "too old to show");
    s.dead(today - 3 * DAY, "HelpCrunch answered 404 (chat_not_found)");
    s.dead(today - DAY + 20 * HOUR, "agent rejected: <b>bob</b> & co");
}

fn today_utc_ms() -> i64 {
    let now = jiff::Timestamp::now().as_millisecond();
    now - now.rem_euclid(DAY)
}

fn write_config(dir: &Path, database_url: &str) -> PathBuf {
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let key = dir.join("api-key");
    std::fs::write(&key, CANARY).unwrap();
    let config = dir.join("assignd.toml");
    std::fs::write(
        &config,
        format!(
            "[helpcrunch]\napi_key_file = \"{}\"\n[rules]\npath = \"{}\"\n[database]\nurl = \"{database_url}\"\n",
            key.display(),
            rules.display()
        ),
    )
    .unwrap();
    config
}

fn assignd(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("ASSIGND_CONFIG")
        .env("HELPCRUNCH_API_KEY", CANARY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "assignd {args:?}: {stdout}{stderr}");
    assert!(!stdout.contains(CANARY) && !stderr.contains(CANARY));
    stdout
}

async fn seed_sqlite(path: &Path, seed: &Seed) {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in &seed.sql {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

async fn seed_postgres(url: &str, seed: &Seed) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    for sql in &seed.sql {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// Migrates a fresh SQLite file, seeds it with `seed(today)` and checks
/// the report's figures.
async fn check_on_sqlite(seed: impl Fn(i64) -> Seed) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let config = write_config(dir.path(), &format!("sqlite://{}", db.display()));
    assignd(&config, &["migrate"]);
    let today = today_utc_ms();
    seed_sqlite(&db, &seed(today)).await;
    check_report(&config, dir.path(), today);
}

/// [`check_on_sqlite`] on a fresh PostgreSQL database.
async fn check_on_postgres(seed: impl Fn(i64) -> Seed) {
    let Some(server) = postgres::server() else {
        return;
    };
    let url = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &url);
    assignd(&config, &["migrate"]);
    let today = today_utc_ms();
    seed_postgres(&url, &seed(today)).await;
    check_report(&config, dir.path(), today);
}

#[tokio::test]
async fn a_seeded_week_gives_known_figures_on_sqlite() {
    check_on_sqlite(week).await;
}

#[tokio::test]
async fn a_seeded_week_gives_known_figures_on_postgres() {
    check_on_postgres(week).await;
}

/// The week as versions before the `route` column wrote it (no route),
/// then the statements of the route migration that classify such rows.
fn week_before_routes(today: i64, migration: &str) -> Seed {
    let mut seed = week(today);
    seed.sql
        .retain(|s| !s.starts_with("UPDATE outcomes SET route"));
    // Each statement ends a line (a pattern holds "; " itself).
    let backfill = migration
        .split(";\n")
        .map(str::trim)
        .filter(|s| s.starts_with("UPDATE outcomes SET route"))
        .map(str::to_string);
    seed.sql.extend(backfill);
    seed
}

/// Outcomes written before escalations, hand-backs and hops had their own
/// column are classified by its migration as the worker now records them:
/// the same figures.
#[tokio::test]
async fn older_rows_get_their_route_from_the_migration() {
    let sqlite = include_str!("../migrations/sqlite/0012_outcome_route.sql");
    check_on_sqlite(|today| week_before_routes(today, sqlite)).await;
    let pg = include_str!("../migrations/postgres/0008_outcome_route.sql");
    check_on_postgres(|today| week_before_routes(today, pg)).await;
}

fn agent<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == name)
        .unwrap_or_else(|| panic!("no agent {name} in {report}"))
}

fn pool<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {report}"))
}

fn check_report(config: &Path, dir: &Path, today: i64) {
    let json: Value = serde_json::from_str(&assignd(config, &["report", "--json"])).unwrap();
    check_json(&json, today);
    let text = assignd(config, &["report"]);
    check_text(&text);
    let html_path = dir.join("report.html");
    assignd(config, &["report", "--html", html_path.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    check_html(&html);
    // A short window, from yesterday 13:00 UTC whatever the time of day,
    // holds only yesterday's dead letter and cy's night chat.
    let since_ms = today - DAY + 13 * HOUR;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let since = format!("{}s", (now_ms - since_ms) / 1000);
    let json: Value =
        serde_json::from_str(&assignd(config, &["report", "--since", &since, "--json"])).unwrap();
    assert_eq!(json["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(json["totals"]["assignments"], 1, "{json}");
    let chats = &json["chats"];
    assert_eq!(
        (&chats["arrived"], &chats["replied"]),
        (&1.into(), &1.into())
    );
    assert_eq!(chats["after_hours"]["reply_rate"], 1.0, "{json}");
}

fn check_json(r: &Value, today: i64) {
    let t = &r["totals"];
    assert_eq!(t["assignments"], 24, "{r}");
    assert_eq!(t["reassignments"], 1);
    assert_eq!(t["escalations"], 1);
    assert_eq!(t["handbacks"], 1);
    assert_eq!(t["after_hours"], 3);
    assert_eq!(t["after_hours_share"], 0.125);
    // 23 rows waited 1 s, 2 s, ... 23 s: nearest rank 12 and 22.
    assert_eq!(r["queue_wait"]["count"], 23);
    assert_eq!(r["queue_wait"]["p50_ms"], 12_000);
    assert_eq!(r["queue_wait"]["p95_ms"], 22_000);
    let (ann, bob, cy) = (agent(r, "ann"), agent(r, "bob"), agent(r, "cy"));
    assert_eq!(ann["assignments"], 12);
    assert_eq!(ann["handbacks"], 1);
    assert_eq!(bob["assignments"], 8);
    assert_eq!(bob["reassignments"], 1);
    assert_eq!(cy["assignments"], 4);
    assert_eq!(cy["escalations"], 1);
    assert_eq!(cy["after_hours"], 3);
    let support = pool(r, "support");
    assert_eq!(support["assignments"], 20);
    assert_eq!(
        (support["max"].clone(), support["min"].clone()),
        (12.into(), 8.into())
    );
    // (12 + 8)² / (2 · (12² + 8²)) = 400 / 416
    let jain = support["jain"].as_f64().unwrap();
    assert!((jain - 400.0 / 416.0).abs() < 1e-9, "{jain}");
    assert_eq!(support["escalations"], 1);
    let overflow = pool(r, "overflow");
    assert_eq!(overflow["assignments"], 4);
    assert_eq!(overflow["jain"], 1.0);
    check_days(r, today);
    check_chats(&r["chats"]);
    let dead = r["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["reason"], "agent rejected: <b>bob</b> & co");
    assert_eq!(
        dead[1]["reason"],
        "HelpCrunch answered 404 (chat_not_found)"
    );
}

/// Ten chats arrived in the window (six of ann's, cy's three at night,
/// one a person assigned); nine replied, after 1–6 min (ann's), 2 and 4
/// min (cy's) and 90 s.
fn check_chats(c: &Value) {
    assert_eq!(
        (&c["arrived"], &c["replied"]),
        (&10.into(), &9.into()),
        "{c}"
    );
    assert_eq!(c["reply_share"], 0.9);
    // 60 90 120 120 180 240 240 300 360 (s): nearest rank 5 and 9.
    let first = &c["first_reply"];
    assert_eq!(
        (&first["count"], &first["p50_ms"]),
        (&9.into(), &180_000.into())
    );
    assert_eq!(first["p95_ms"], 360_000);
    let by = &c["time_to_assignment"];
    assert_eq!(by["assignd"]["count"], 9);
    assert_eq!(by["assignd"]["p50_ms"], 10_000);
    assert_eq!(by["assignd"]["p95_ms"], 20_000);
    assert_eq!(
        by["other"],
        serde_json::json!({"count": 1, "p50_ms": 30_000, "p95_ms": 30_000})
    );
    let night = &c["after_hours"];
    assert_eq!((&night["chats"], &night["replied"]), (&3.into(), &2.into()));
    assert!((night["reply_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
}

fn check_days(r: &Value, today: i64) {
    let days = r["days"].as_array().unwrap();
    // The window (7 days back from now) touches 8 local dates.
    assert_eq!(days.len(), 8);
    let date = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .to_string()
    };
    let day = |d: i64| {
        days.iter()
            .find(|x| x["date"] == date(today - d * DAY))
            .unwrap()
    };
    // Six days back: ann 2, bob 1, no night chat.
    assert_eq!(
        day(6)["assignments"],
        serde_json::json!({"ann": 2, "bob": 1})
    );
    // Two days back: plus cy's night chat, the hop and the hand-back to bob.
    assert_eq!(
        day(2)["assignments"],
        serde_json::json!({"ann": 2, "bob": 3, "cy": 1})
    );
    assert_eq!(day(0)["assignments"], serde_json::json!({}));
}

fn check_text(text: &str) {
    assert!(
        text.contains("assignments: 24  reassignments: 1  escalations: 1  hand-backs: 1"),
        "{text}"
    );
    assert!(text.contains("after hours: 3 (12.5%)"), "{text}");
    assert!(
        text.contains("time in queue: p50 12s p95 22s (23 chats)"),
        "{text}"
    );
    assert!(text.contains("jain 0.962"), "{text}");
    assert!(text.contains("dead letters: 2"), "{text}");
    assert!(
        text.contains("first agent reply: p50 3m 0s p95 6m 0s (9 of 10 chats replied, 90.0%)"),
        "{text}"
    );
    assert!(
        text.contains(
            "time to assignment: by assignd p50 10s p95 20s (9 chats), by others p50 30s p95 30s (1 chat)"
        ),
        "{text}"
    );
    assert!(
        text.contains("after-hours reply rate: 2 of 3 chats (66.7%)"),
        "{text}"
    );
}

fn check_html(html: &str) {
    assert!(html.contains("<svg"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains("<script"));
    assert!(!html.contains("<b>bob</b>"));
    assert!(html.contains("agent rejected: &lt;b&gt;bob&lt;/b&gt; &amp; co"));
    assert!(html.contains("<polyline"), "queue wait lines");
    assert!(html.contains("<rect"), "assignment bars");
    assert!(
        html.contains("<th>First reply p50</th><td class=\"n\">3m 0s</td>"),
        "{html}"
    );
    assert!(html.contains("2 of 3 (66.7%)"), "{html}");
    assert!(!html.contains(CANARY));
}

#[test]
fn a_bad_window_is_bad_usage_and_a_missing_database_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("none.db").display()),
    );
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_assignd"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("ASSIGND_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["report", "--since", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["report", "--since", "0s"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["report"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no database at"), "{err}");
    assert!(!dir.path().join("none.db").exists());
}
