//! Truncated and empty rules files. A rule set that can assign nothing is
//! refused at start and on reload (the old rules keep assigning, the reason
//! shows in `assignd status` and the log), and chats that did end
//! `no_match` can be put back with `assignd queue retry` once the rules are
//! fixed. All against the real `assignd run` and the sandbox.

use std::time::{Duration, Instant};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// Routes only chats enqueued with `--attr team=support`; the rest end `no_match`.
fn support_only() -> String {
    let rule = "[[rule]]\nname = \"support team\"\nmatch = { attr.team = \"support\" }\nassign = \"pool:support\"\n";
    support_rules(&ABC, "", rule)
}

/// The value of a `daemon_state` key ("" when unset).
async fn daemon_state(app: &TestApp, key: &str) -> String {
    let pool = app.producer().await;
    let v: Option<String> = sqlx::query_scalar("SELECT value FROM daemon_state WHERE key = ?")
        .bind(key)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    v.unwrap_or_default()
}

/// Waits until `key` in `daemon_state` satisfies `want`; returns its value.
async fn wait_state(app: &TestApp, key: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = daemon_state(app, key).await;
        if want(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{key} is still `{v}`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The queue row id of `chat`'s newest row.
async fn row_of(app: &TestApp, chat: i64) -> i64 {
    let pool = app.producer().await;
    let id = sqlx::query_scalar("SELECT MAX(id) FROM queue WHERE chat_id = ?")
        .bind(chat)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    id
}

fn enqueue(app: &TestApp, args: &[&str]) {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    let (code, out, err) = app.exec(&all);
    assert_eq!(code, 0, "enqueue {args:?}: {out}{err}");
}

fn assignees(app: &TestApp, chats: impl IntoIterator<Item = i64>) -> Vec<Option<i64>> {
    chats.into_iter().map(|c| app.sandbox.assignee(c)).collect()
}

/// Good rules assign chats 1-3; the rules file is replaced by `broken`;
/// after SIGHUP the reload fails with `reason`, and chats 4-6 are still
/// assigned by the old rules (the rotation goes on), none `no_match`.
async fn a_broken_reload_keeps_the_old_rules(broken: &str, reason: &str) {
    // One row at a time, so the rotation order is the queue's order.
    let app = TestApp::builder()
        .worker(NO_FETCH)
        .worker("concurrency = 1")
        .migrated()
        .await;
    let mut daemon = app.spawn_daemon("run.log");
    app.insert_raw(1..=3).await;
    app.wait_drained(WAIT).await;
    let (alice, bob, carol) = (Some(4188), Some(4761), Some(6694));
    assert_eq!(assignees(&app, 1..=3), [alice, bob, carol]);

    std::fs::write(app.dir.path().join("rules.toml"), broken).unwrap();
    hup(daemon.id());
    let error = wait_state(&app, "rules_reload_error", |v| !v.is_empty()).await;
    assert!(error.contains(reason), "`{reason}` in {error}");

    app.insert_raw(4..=6).await;
    app.wait_drained(WAIT).await;
    assert_eq!(
        assignees(&app, 4..=6),
        [alice, bob, carol],
        "the old rules, rotation and all"
    );
    let no_match = app.count("outcomes WHERE result = 'no_match'").await;
    assert_eq!(no_match, 0);

    let (code, status, err) = app.exec(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains("rules_reload_error: ") && status.contains(reason),
        "{status}"
    );
    assert!(terminate(&mut daemon, WAIT).success());
    let log = app.log("run.log");
    assert!(
        log.contains("reload failed; keeping the old config and rules") && log.contains(reason),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_an_emptied_rules_file_keeps_the_old_rules() {
    a_broken_reload_keeps_the_old_rules("", "rules.toml:1:1: no rules: ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_file_cut_before_its_rules_keeps_the_old_rules() {
    let cut = &THREE_AGENTS[..THREE_AGENTS.find("[[rule]]").unwrap()];
    a_broken_reload_keeps_the_old_rules(
        cut,
        "defines no [[rule]], so every chat would end no_match",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_file_cut_mid_token_keeps_the_old_rules() {
    // `assign = "pool:sup`: an unterminated string, on the last line.
    let cut = &THREE_AGENTS[..THREE_AGENTS.find("pool:support").unwrap() + 8];
    let line = cut.matches('\n').count() + 1;
    a_broken_reload_keeps_the_old_rules(cut, &format!("rules.toml:{line}:")).await;
}

/// `assignd run` with rules that can assign nothing refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_to_start_on_an_empty_rules_file() {
    let app = TestApp::builder().rules("").migrated().await;
    let (code, _, err) = app.exec(&["run"]);
    assert_eq!(code, 2, "{err}");
    let file = app.dir.path().join("rules.toml");
    assert!(
        err.contains(&format!(
            "{}:1:1: no rules: {} defines no [[rule]], so every chat would end no_match",
            file.display(),
            file.display()
        )),
        "{err}"
    );
}

/// Chats that ended `no_match` under rules that matched only some of them
/// are put back by id and by `--no-match`, and the fixed rules assign them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_chats_are_put_back_and_assigned_by_the_fixed_rules() {
    let app = TestApp::builder()
        .rules(&support_only())
        .worker(NO_FETCH)
        .worker("concurrency = 1")
        .migrated()
        .await;
    let mut daemon = app.spawn_daemon("run.log");
    enqueue(&app, &["1", "2", "--attr", "team=support"]);
    enqueue(&app, &["3", "4", "5"]);
    app.wait_drained(WAIT).await;
    let no_match = app.count("outcomes WHERE result = 'no_match'").await;
    assert_eq!(no_match, 3);
    assert_eq!(
        assignees(&app, 1..=5),
        [Some(4188), Some(4761), None, None, None]
    );

    // Fix the rules: a catch-all after the attribute rule.
    let fixed = support_only() + "\n[[rule]]\nname = \"the rest\"\nassign = \"pool:support\"\n";
    std::fs::write(app.dir.path().join("rules.toml"), fixed).unwrap();
    hup(daemon.id());
    wait_state(&app, "rules", |v| v.contains("(2 rules")).await;

    // By id: chat 3's row comes back and is assigned.
    let row3 = row_of(&app, 3).await.to_string();
    let (code, out, err) = app.exec(&["queue", "retry", &row3]);
    assert_eq!(
        (code, out.trim()),
        (0, "1 of 1 row(s) put back on the queue"),
        "{err}"
    );
    app.wait_drained(WAIT).await;
    assert_eq!(
        app.sandbox.assignee(3),
        Some(6694),
        "carol, next in the rotation"
    );
    assert!(terminate(&mut daemon, WAIT).success());

    // Chat 4 is enqueued again: its old row stays (an active row exists),
    // by id and by --no-match; chat 5's row comes back, reset.
    let old4 = row_of(&app, 4).await;
    enqueue(&app, &["4"]);
    let (_, out, _) = app.exec(&["queue", "retry", &old4.to_string()]);
    assert_eq!(out.trim(), "0 of 1 row(s) put back on the queue");
    let (code, out, err) = app.exec(&["queue", "retry", "--no-match"]);
    assert_eq!(
        (code, out.trim()),
        (0, "1 no_match row(s) put back on the queue"),
        "{err}"
    );
    let reset = app
        .scalar(
            "SELECT COUNT(*) FROM queue WHERE chat_id = 5 AND state = 'pending' AND attempts = 0
                AND next_attempt_at = 0 AND lease_owner IS NULL AND last_error IS NULL",
        )
        .await;
    assert_eq!(reset, 1);
    // A done row that was assigned is not a no_match row: it stays done.
    let row1 = row_of(&app, 1).await.to_string();
    let (_, out, _) = app.exec(&["queue", "retry", &row1]);
    assert_eq!(out.trim(), "0 of 1 row(s) put back on the queue");

    let mut daemon = app.spawn_daemon("run2.log");
    app.wait_drained(WAIT).await;
    assert!(terminate(&mut daemon, WAIT).success());
    assert!(
        assignees(&app, 1..=5).iter().all(Option::is_some),
        "{:?}",
        assignees(&app, 1..=5)
    );
    let (_, out, _) = app.exec(&["queue", "retry", "--no-match"]);
    assert_eq!(
        out.trim(),
        "0 no_match row(s) put back on the queue",
        "chat 4's old row is not its newest"
    );
}
