//! The binary's contract: exit codes, located errors, and secrets that never leak.

mod common;

use std::time::Duration;

use common::*;

fn check(app: &TestApp) -> (i32, String, String) {
    app.exec(&["check"])
}

async fn app_with_rules(rules: &str) -> TestApp {
    TestApp::builder().rules(rules).build().await
}

#[tokio::test]
async fn check_accepts_the_shipped_rules_and_warns() {
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/10-team.toml"))
        .unwrap();
    let app = app_with_rules(&rules).await;
    let (code, out, err) = check(&app);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok: 5 agents, 3 pools, 2 schedules, 4 rules"),
        "{out}"
    );
    assert!(out.contains("API key: found"), "{out}");

    let shadowed = format!(
        "{THREE_AGENTS}\n[agents.zed]\nid = 1\n\n[[rule]]\nname = \"never reached\"\nmatch = {{ department = \"Sales\" }}\nassign = \"alice\"\n"
    );
    let app = app_with_rules(&shadowed).await;
    let (code, out, _) = check(&app);
    assert_eq!(code, 0);
    assert!(
        out.contains(
            "rule `never reached` can never match: rule `everything` before it matches every chat"
        ),
        "{out}"
    );
    assert!(out.contains("agent `zed` is in no pool"), "{out}");
}

/// Each invalid rules file makes `check` exit 2 with file:line:column.
#[tokio::test]
async fn check_rejects_bad_rules_with_file_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[agents]\nalice = { id = 1 }\n\n[[rule]]\nname = \"r\"\nassign = \"pool:suport\"\n",
            ":6:10:",
            "unknown pool `suport`",
        ),
        (
            "timezone = \"Europe/Kiev-ish\"\n[agents]\nalice = { id = 1 }\n",
            ":1:12:",
            "unknown time zone `Europe/Kiev-ish`",
        ),
        (
            "[agents]\nalice = { id = 1, skils = [\"uk\"] }\n",
            ":2:19:",
            "unknown field `skils`",
        ),
        (
            "[agents]\nalice = { id = 1 }\nbob = { id = 1 }\n",
            ":3:",
            "agent id 1 of `bob` is also the id of `alice`",
        ),
        (
            "[schedules.office]\nhours = { mon-fri = \"09:00-25:00\" }\n",
            ":2:21:",
            "not a valid time of day",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nmatch = { customer.email = { regex = \"(\" } }\nassign = \"alice\"\n",
            ":5:38:",
            "bad regex",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[pools.p]\nagents = []\n",
            ":4:10:",
            "pool `p` has no agents",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nmatch = { departmnt = \"x\" }\nassign = \"alice\"\n",
            ":5:11:",
            "unknown match key `departmnt`; did you mean `department`?",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nassign = \"alice\"\n[[rule]]\nname = \"R\"\nassign = \"alice\"\n",
            ":7:8:",
            "rule name `R` is already used",
        ),
        ("[agents\nalice = 1", ":1:8:", "unclosed table"),
        (
            "[agents]\nalice = { id = 1 }\n[pools.p]\nagents = [\"alice\", \"zed\"]",
            ":4:20:",
            "unknown agent `zed`",
        ),
        (
            "[agents]\nalice = { id = 1, schedule = \"nite\" }",
            ":2:30:",
            "unknown schedule `nite`",
        ),
        (
            "[schedules.s]\nhours = { mon = \"09:00-10:00\" }\nholidays = [\"2026-13-01\"]",
            ":3:13:",
            "holiday `2026-13-01` is not a date",
        ),
        (
            "[schedules.s]\nhours = { funday = \"09:00-10:00\" }",
            ":2:11:",
            "`funday` is not a day",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nassign = \"alice\"\nnote = \"Hi {agnet}\"",
            ":6:12:",
            "unknown placeholder `{agnet}`",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nassign = \"alice\"\nreply = { from = \"bobo\", text = \"hi\" }",
            ":6:18:",
            "unknown agent `bobo`",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nassign = \"alice\"\nnote = \"back at {next_open}\"",
            ":6:8:",
            "`{next_open}` needs the rule to match `within` or `outside`",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[pools.p]\nagents = [\"alice\"]\nmax_reassign = 2",
            ":5:16:",
            "`max_reassign` needs `reassign_after`",
        ),
        (
            "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"r\"\nmatch = { weekday = \"someday\" }\nassign = \"alice\"",
            ":5:21:",
            "`someday` is not a day",
        ),
    ];
    for (rules, place, message) in cases {
        let app = app_with_rules(rules).await;
        let (code, out, err) = check(&app);
        assert_eq!(code, 2, "{rules}\n{out}{err}");
        let expected_file = app.dir.path().join("rules.toml");
        let prefix = format!("assignd: {}{place}", expected_file.display());
        assert!(err.starts_with(&prefix), "expected `{prefix}`, got: {err}");
        assert!(err.contains(message), "expected `{message}` in: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    }
}

#[tokio::test]
async fn check_rejects_a_bad_config_with_a_suggestion() {
    let app = app_with_rules(THREE_AGENTS).await;
    let text = std::fs::read_to_string(&app.config_path).unwrap() + "\n[log]\nformt = \"json\"\n";
    std::fs::write(&app.config_path, text).unwrap();
    let (code, _, err) = check(&app);
    assert_eq!(code, 2);
    assert!(
        err.contains("assignd.toml:") && err.contains("did you mean `format`?"),
        "{err}"
    );

    let missing = app
        .command(&["check", "--config", "/nonexistent/assignd.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

/// `check` prints the webhook address to paste into HelpCrunch from
/// `[http] public_url`, says how to get it when only `listen` is set, and
/// refuses a public_url that is not an absolute http(s) url.
#[tokio::test]
async fn check_prints_the_webhook_address() {
    let app = TestApp::builder().listen().build().await;
    let (code, out, err) = check(&app);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("webhook address: set [http] public_url"),
        "{out}"
    );
    app.edit_config(|c| c + "public_url = \"https://assignd.example.com/\"\n");
    let (code, out, err) = check(&app);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "webhook address (paste into HelpCrunch): https://assignd.example.com/webhooks/helpcrunch\nwebhook events: chat.new, chat.assigned, chat.closed, chat.status_updated, message.chat.agent, message.chat.customer\n"
        ),
        "{out}"
    );
    app.edit_config(|c| c.replace("https://assignd.example.com/", "assignd.example.com"));
    let (code, _, err) = check(&app);
    assert_eq!(code, 2);
    assert!(
        err.contains("http.public_url must be an absolute http:// or https:// url"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_usage_exits_2() {
    let app = app_with_rules(THREE_AGENTS).await;
    let out = app.command(&["enqueue"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = app.command(&["no-such-command"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The API key, a canary value, appears in no log line (even at trace
/// level, even on a 401), in no database file, and not in `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_leaks() {
    const CANARY: &str = "canary-3f9a1c7e-never-print-me";
    let app = TestApp::builder().key(CANARY).build().await;
    app.migrate().await;
    app.insert_raw(1..=3).await;
    let log = std::fs::File::create(app.dir.path().join("trace.log")).unwrap();
    let mut daemon = app
        .command(&["run"])
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    app.wait_drained(Duration::from_secs(20)).await;
    // Now make the key fail, so the error paths log too.
    app.sandbox.set_key_valid(false);
    app.insert_raw([4]).await;
    let unauthorized = "outcomes WHERE http_status = 401";
    app.wait_count(unauthorized, 1, Duration::from_secs(10), "no 401 seen")
        .await;
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());

    let log = app.log("trace.log");
    assert!(
        log.contains("outcome"),
        "the log is really there: {}",
        &log[..log.len().min(500)]
    );
    assert!(!log.contains(CANARY), "the key is in the log");
    for f in ["assignd.db", "assignd.db-wal", "assignd.db-shm"] {
        assert!(
            !file_contains(&app.dir.path().join(f), CANARY.as_bytes()),
            "the key is in {f}"
        );
    }
    let status = app.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout).into_owned()
        + &String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("queue: pending 1"), "{text}");
    assert!(!text.contains(CANARY));
}

/// `check --online` finds agent ids the account does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_reports_unknown_agent_ids() {
    let app = TestApp::builder().build().await;
    let text = app.run_ok(&["check", "--online"]);
    assert!(text.contains("online: the account has 3 agents"), "{text}");

    let app = TestApp::builder()
        .agents(agents(&[("alice", 4188), ("bob", 4761)]))
        .build()
        .await;
    let out = app.command(&["check", "--online"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent ids not in the HelpCrunch account: `carol` (id 6694)"),
        "{err}"
    );
}

/// A database that cannot be opened: exit 1, with the path and SQLite's
/// reason said once, not once per layer of error.
#[tokio::test]
async fn an_unopenable_database_is_one_clear_line() {
    let app = app_with_rules(THREE_AGENTS).await;
    // A directory where the database file should be.
    std::fs::create_dir(&app.db_path).unwrap();
    let out = app.command(&["migrate"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&app.db_path.display().to_string()), "{err}");
    assert_eq!(
        err.matches("unable to open database file").count(),
        1,
        "{err}"
    );
}

/// A rule set that can assign nothing is an invalid configuration: an empty
/// file, a directory without `*.toml`, rules that all assign `none`.
#[tokio::test]
async fn check_rejects_rules_that_can_assign_nothing() {
    let app = app_with_rules("").await;
    let file = app.dir.path().join("rules.toml");
    let (code, out, err) = check(&app);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "assignd: {}:1:1: no rules: {} defines no [[rule]], so every chat would end no_match; add at least one [[rule]] that assigns an agent or a pool",
            file.display(),
            file.display()
        )
    );
    assert!(!out.contains("ok:"), "{out}");

    // Cut at a line boundary before its first rule: valid TOML, no rules.
    let cut = &THREE_AGENTS[..THREE_AGENTS.find("[[rule]]").unwrap()];
    std::fs::write(&file, cut).unwrap();
    let (code, _, err) = check(&app);
    assert_eq!(code, 2);
    assert!(err.contains(":13:1: no rules: "), "{err}");
    // Cut mid-token: the TOML error, located.
    let cut = &THREE_AGENTS[..THREE_AGENTS.find("pool:support").unwrap() + 3];
    std::fs::write(&file, cut).unwrap();
    let (code, _, err) = check(&app);
    assert_eq!(code, 2);
    let line = cut.matches('\n').count() + 1;
    let prefix = format!("assignd: {}:{line}:", file.display());
    assert!(
        err.starts_with(&prefix) && !err.contains("no rules"),
        "{err}"
    );

    std::fs::write(
        &file,
        "[agents]\nalice = { id = 1 }\n[[rule]]\nname = \"spam\"\nassign = \"none\"\n",
    )
    .unwrap();
    let (code, _, err) = check(&app);
    assert_eq!(code, 2);
    assert!(
        err.contains(":4:8: no rule can assign a chat (rule `spam` assigns none), so every chat would end unassigned"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");

    // A directory with no *.toml file.
    let dir = app.dir.path().join("rules.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("README"), "not rules").unwrap();
    let config = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("path = \"rules.toml\"", "path = \"rules.d\"");
    std::fs::write(&app.config_path, config).unwrap();
    let (code, _, err) = check(&app);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim_end(),
        format!(
            "assignd: no rules: rules directory {} has no *.toml file, so every chat would end no_match; add a file with at least one [[rule]] that assigns an agent or a pool",
            dir.display()
        )
    );
}

/// `queue retry` takes ids, or `--dead` and/or `--no-match`, not both kinds.
#[tokio::test]
async fn queue_retry_takes_ids_or_flags() {
    let app = app_with_rules(THREE_AGENTS).await;
    app.migrate().await;
    let out = app
        .command(&["queue", "retry", "1", "--no-match"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = app.command(&["queue", "retry"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        app.run_ok(&["queue", "retry", "--dead", "--no-match"]),
        "0 dead row(s) put back on the queue\n0 no_match row(s) put back on the queue\n"
    );
}

/// The binary alone, with no config anywhere it could find one.
fn bare(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(args)
        .env("ASSIGND_CONFIG", "/nonexistent/assignd.toml")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// `completions SHELL` and `man` come from the clap definition and need no
/// config file.
#[test]
fn completions_and_the_man_page_need_no_config() {
    let text = |args: &[&str]| ok_stdout(&format!("assignd {args:?}"), &bare(args));
    let bash = text(&["completions", "bash"]);
    assert_contains(
        &bash,
        &["_assignd()", "complete -F _assignd", "queue", "--json"],
    );
    for cmd in ["run", "status", "enqueue", "explain", "completions", "man"] {
        assert!(bash.contains(cmd), "`{cmd}` in the bash completions");
    }
    if let Ok(out) = std::process::Command::new("bash")
        .args(["-n", "-c", &bash])
        .output()
    {
        assert!(out.status.success(), "bash -n: {out:?}");
    }
    assert!(text(&["completions", "zsh"]).starts_with("#compdef assignd"));
    assert_contains(&text(&["completions", "fish"]), &["complete -c assignd"]);
    assert_eq!(bare(&["completions", "tcsh"]).status.code(), Some(2));

    let man = text(&["man"]);
    assert!(
        man.lines().take(5).any(|l| l.starts_with(".TH ASSIGND 1 ")),
        "{}",
        &man[..man.len().min(200)]
    );
    // Every command, with its own options, in the one page.
    assert_contains(
        &man,
        &[
            ".SH SYNOPSIS",
            ".SH COMMANDS",
            r#".SS "assignd queue list""#,
            r#".SS "assignd agent away""#,
            r#".SS "assignd status""#,
            r#".SS "assignd completions""#,
            r#".SS "assignd init""#,
            "/var/lib/assignd/assignd.db",
            "ASSIGND_CONFIG",
        ],
    );
    assert!(
        !man.contains("assignd-run(1)"),
        "no links to pages not shipped"
    );
    assert_eq!(man.matches(".el .ds Aq").count(), 1, "one prelude");
}

/// `--version` says the version and the commit it was built from.
#[test]
fn version_names_the_commit() {
    let out = ok_stdout("assignd --version", &bare(&["--version"]));
    let commit = env!("ASSIGND_COMMIT");
    assert!(!commit.is_empty());
    assert_eq!(
        out,
        format!("assignd {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

/// `status --json` and `queue list --json` are one JSON document each, with
/// the facts of the text output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_queue_list_speak_json() {
    let app = app_with_rules(THREE_AGENTS).await;
    app.migrate().await;
    app.process_raw(1..=3, Duration::from_secs(20)).await;
    app.insert_raw([4]).await;
    app.execute("INSERT INTO queue (chat_id, state, last_error) VALUES ('abc', 'dead', 'bad id')")
        .await;

    let text = app.run_ok(&["status"]);
    let status: serde_json::Value =
        serde_json::from_str(&app.run_ok(&["status", "--json"])).expect("status --json");
    let q = &status["queue"];
    let line = format!(
        "queue: pending {}, leased {}, done {}, dead {}",
        q["pending"], q["leased"], q["done"], q["dead"]
    );
    assert!(text.contains(&line), "`{line}` in: {text}");
    assert_eq!(
        (
            q["pending"].as_i64(),
            q["done"].as_i64(),
            q["dead"].as_i64()
        ),
        (Some(1), Some(3), Some(1)),
        "{status:#}"
    );
    assert_eq!(status["backend"], "sqlite");
    assert_eq!(status["dead_letters"][0]["chat_id"], "'abc'");
    assert_eq!(status["dead_letters"][0]["reason"], "bad id");
    let outcomes = status["last_outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 3, "{status:#}");
    assert!(outcomes.iter().all(|o| o["result"] == "assigned"));
    let today = &status["assigned_today"];
    assert_eq!(today["timezone"], "Europe/Kyiv");
    let assigned: i64 = today["agents"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(assigned, 3, "{status:#}");
    for (agent, n) in today["agents"].as_object().unwrap() {
        assert!(text.contains(&format!("{agent} {n}")), "{text}");
    }
    assert_eq!(status["daemons"], serde_json::json!([]));
    assert!(text.contains("daemons: none running"));

    let list: serde_json::Value =
        serde_json::from_str(&app.run_ok(&["queue", "list", "--json"])).expect("queue list");
    let rows = list["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{list:#}");
    assert_eq!(rows[0]["chat_id"], "'abc'", "newest first, as stored");
    assert_eq!(rows[0]["state"], "dead");
    assert_eq!(rows[1]["chat_id"], 4);
    assert_eq!(rows[1]["state"], "pending");
    let text = app.run_ok(&["queue", "list"]);
    assert_eq!(text.lines().count(), rows.len() + 1, "{text}");
    let dead: serde_json::Value =
        serde_json::from_str(&app.run_ok(&["queue", "list", "--state", "dead", "--json"])).unwrap();
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["rows"].as_array().unwrap().len(), 1);
}

/// Without `[database] url` the database is `$STATE_DIRECTORY/assignd.db`
/// under systemd, else /var/lib/assignd/assignd.db: never the working
/// directory. A missing default directory is one clear sentence.
#[tokio::test]
async fn the_database_defaults_to_the_state_directory_then_var_lib() {
    let app = app_with_rules(THREE_AGENTS).await;
    app.edit_config(|c| c.replace("url = \"sqlite://assignd.db\"\n", ""));
    let cwd = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = app
        .command(&["migrate"])
        .current_dir(cwd.path())
        .env(
            "STATE_DIRECTORY",
            format!("{}:/elsewhere", state.path().display()),
        )
        .output()
        .unwrap();
    let said = ok_stdout("migrate under systemd", &out);
    let db = state.path().join("assignd.db");
    assert!(db.exists(), "{said}");
    assert!(said.contains(&db.display().to_string()), "{said}");

    // Outside systemd: /var/lib/assignd. Only where it does not exist, so
    // that no test ever touches a real installation's database.
    let default_dir = std::path::Path::new("/var/lib/assignd");
    if default_dir.exists() {
        println!(
            "SKIPPED part: {} exists on this machine",
            default_dir.display()
        );
    } else {
        for args in [&["status"][..], &["migrate"], &["queue", "list"], &["run"]] {
            let out = app
                .command(args)
                .current_dir(cwd.path())
                .env_remove("STATE_DIRECTORY")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(
                err.trim_end(),
                format!(
                    "assignd: the database directory /var/lib/assignd does not exist (the assignd service creates it when it first starts): start the service, create the directory, or set `[database] url` in {}",
                    app.config_path.display()
                ),
                "{args:?}"
            );
        }
        assert!(!default_dir.exists());
    }
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing in the working directory"
    );
}

/// Output piped into a reader that stops early (`| head`) ends the command
/// quietly, never with a panic.
#[tokio::test]
async fn a_closed_pipe_ends_output_without_a_panic() {
    let app = TestApp::builder().build().await;
    let commands: [&[&str]; 3] = [&["check"], &["man"], &["completions", "bash"]];
    for args in commands {
        let mut child = app
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "assignd {args:?}: {stderr}");
    }
}
