//! `assignd init` against the sandbox, as the real binary: the files it
//! writes pass `check --online` and drive `run`; it never writes over a
//! file, never copies the key, copes with an account without departments,
//! and says plainly when the key is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use assignd::sandbox::{Sandbox, SandboxConfig, SandboxDepartment};
use common::{Daemon, agents, assert_contains, terminate, wait_for};

const CANARY: &str = "canary-key-5e1f0a77";

/// The team, with the names people really have.
const TEAM: [(&str, i64); 3] = [("Alice Smith", 4188), ("Bob", 4761), ("Alice Jones", 6694)];

async fn sandbox(departments: Option<Vec<SandboxDepartment>>) -> Sandbox {
    let config = SandboxConfig {
        api_key: CANARY.into(),
        agents: agents(&TEAM),
        rate_limit: None,
        departments,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn billing() -> Vec<SandboxDepartment> {
    vec![
        SandboxDepartment {
            id: 2,
            name: "Billing".into(),
            agents: vec![4188, 4761],
        },
        SandboxDepartment {
            id: 3,
            name: "Sales".into(),
            agents: vec![],
        },
    ]
}

/// `assignd ARGS` with `env`, off the runtime's thread (the sandbox serves
/// on it); no secret from the test's own environment.
async fn assignd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_assignd"));
    c.args(args)
        .env_remove("HELPCRUNCH_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("ASSIGND_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `init --dir DIR --base-url URL` plus `extra`.
async fn init(dir: &Path, sandbox: &Sandbox, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let base_url = sandbox.base_url();
    let mut args = vec![
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--base-url",
        &base_url,
    ];
    args.extend_from_slice(extra);
    assignd(&args, env).await
}

/// Every file under `dir`, recursively, in name order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn init_writes_what_check_accepts_and_run_uses() {
    let sandbox = sandbox(Some(billing())).await;
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("secret").join("api-key");
    std::fs::create_dir(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, format!("{CANARY}\n")).unwrap();
    let dir = tmp.path().join("etc");
    let out = init(
        &dir,
        &sandbox,
        &["--api-key-file", key_file.to_str().unwrap()],
        &[],
    )
    .await;
    let (code, stdout, stderr) = text(&out);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_contains(
        &stdout,
        &[
            "<public_url>/webhooks/helpcrunch",
            "chat.new, chat.assigned, chat.closed, chat.status_updated, message.chat.agent, message.chat.customer",
            &format!("The API key is read from {}", key_file.display()),
            "sudo systemctl enable --now assignd",
            "assignd report --compare",
            "[worker] mode = \"live\"",
            "3 agents in pool `team`; 2 departments",
        ],
    );
    let written = files(&dir);
    assert_eq!(written.len(), 2, "{written:?}");
    for file in &written {
        assert!(
            !common::file_contains(file, CANARY.as_bytes()),
            "{}",
            file.display()
        );
    }
    assert!(!stdout.contains(CANARY) && !stderr.contains(CANARY));
    let config = dir.join("assignd.toml");
    let rules = std::fs::read_to_string(dir.join("rules/10-team.toml")).unwrap();
    assert_contains(
        &rules,
        &[
            "alice-jones = { id = 6694 }",
            "alice-smith = { id = 4188 }",
            "bob = { id = 4761 }",
            "# [pools.billing]\n# agents = [\"alice-smith\", \"bob\"]",
            "# match = { department = \"Sales\" }",
            "# match = { outside = \"office\" }",
        ],
    );
    let config_arg = config.to_str().unwrap();
    let (code, stdout, stderr) =
        text(&assignd(&["check", "--config", config_arg, "--online"], &[]).await);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_contains(
        &stdout,
        &["online: the account has 3 agents", "ok: 3 agents, 1 pools"],
    );

    // The generated config, with the test's own database and listener port.
    let db = tmp.path().join("assignd.db");
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "synchronous = \"full\"",
            &format!(
                "url = \"sqlite://{}\"\nsynchronous = \"full\"",
                db.display()
            ),
        )
        .replace("127.0.0.1:9187", "127.0.0.1:0");
    std::fs::write(&config, edited).unwrap();
    // As written, it starts in shadow mode: chat 42 is decided, nothing
    // is sent.
    let shadow = run_generated(config_arg, 42, tmp.path().join("shadow.log")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while outcome_of(&db, 42).await.as_deref() != Some("shadow") {
        assert!(
            std::time::Instant::now() < deadline,
            "chat 42 never decided in shadow"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(shadow);
    assert!(sandbox.writes().is_empty(), "{:?}", sandbox.writes());
    assert_eq!(sandbox.assignee(42), None);
    // Live, as the next steps say: chat 43 is assigned.
    let live = std::fs::read_to_string(&config)
        .unwrap()
        .replace("mode = \"shadow\"", "mode = \"live\"");
    std::fs::write(&config, live).unwrap();
    let daemon = run_generated(config_arg, 43, tmp.path().join("live.log")).await;
    wait_for("chat 43 assigned", Duration::from_secs(30), || {
        sandbox.assignee(43).is_some()
    })
    .await;
    let team: Vec<i64> = TEAM.iter().map(|(_, id)| *id).collect();
    assert!(team.contains(&sandbox.assignee(43).unwrap()));
    stop(daemon);
}

/// Enqueues `chat`, then runs the daemon on `config` as the unit would
/// (no key in the environment).
async fn run_generated(config: &str, chat: i64, log: PathBuf) -> Daemon {
    let chat = chat.to_string();
    let (code, _, stderr) = text(&assignd(&["enqueue", &chat, "--config", config], &[]).await);
    assert_eq!(code, 0, "{stderr}");
    let child = Command::new(env!("CARGO_BIN_EXE_assignd"))
        .args(["run", "--config", config])
        .env_remove("HELPCRUNCH_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("ASSIGND_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Daemon { child, log }
}

fn stop(mut daemon: Daemon) {
    assert!(terminate(&mut daemon.child, Duration::from_secs(15)).success());
    assert!(!daemon.log_text().contains(CANARY));
}

/// The result of the chat's last outcome, if any.
async fn outcome_of(db: &Path, chat: i64) -> Option<String> {
    let url = format!("sqlite://{}", db.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return None;
    };
    let result = sqlx::query_scalar(
        "SELECT result FROM outcomes WHERE chat_id = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(chat)
    .fetch_optional(&pool)
    .await
    .ok()
    .flatten();
    pool.close().await;
    result
}

#[tokio::test]
async fn check_online_names_departments_the_account_lacks() {
    let sandbox = sandbox(Some(billing())).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc");
    let (code, _, stderr) =
        text(&init(&dir, &sandbox, &[], &[("HELPCRUNCH_API_KEY", CANARY)]).await);
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(
        dir.join("rules/05-departments.toml"),
        "[[rule]]\nname = \"billing\"\nmatch = { department = [\"billing\", \"Refunds\", 3] }\nassign = \"pool:team\"\n",
    )
    .unwrap();
    // The key where the next steps put it.
    std::fs::create_dir(dir.join("credentials")).unwrap();
    std::fs::write(dir.join("credentials/helpcrunch-api-key"), CANARY).unwrap();
    let config = dir.join("assignd.toml");
    let args = ["check", "--config", config.to_str().unwrap(), "--online"];
    let (code, stdout, stderr) = text(&assignd(&args, &[]).await);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert_contains(&stdout, &["online: the account has 2 departments"]);
    assert_contains(
        &stderr,
        &["departments not in the HelpCrunch account: `refunds` (rule `billing`)"],
    );
    assert!(
        !stderr.contains("`3`") && !stderr.contains("`billing` (rule"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_account_without_departments_is_said_plainly() {
    let sandbox = sandbox(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc");
    let env = [("HELPCRUNCH_API_KEY", CANARY)];
    let (code, stdout, stderr) = text(&init(&dir, &sandbox, &[], &env).await);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_contains(
        &stdout,
        &["the account lists no departments: GET /departments answered 404"],
    );
    let rules = std::fs::read_to_string(dir.join("rules/10-team.toml")).unwrap();
    assert_contains(
        &rules,
        &["# The account lists no departments (GET /departments answered 404)."],
    );
    assert!(!rules.contains("department ="), "{rules}");
    // The config names the key file the next steps tell to write.
    assert_contains(
        &stdout,
        &[&format!(
            "> {}",
            dir.join("credentials/helpcrunch-api-key").display()
        )],
    );
    std::fs::write(
        dir.join("rules/05-departments.toml"),
        "[[rule]]\nname = \"billing\"\nmatch = { department = \"Billing\" }\nassign = \"pool:team\"\n",
    )
    .unwrap();
    let config = dir.join("assignd.toml");
    let args = ["check", "--config", config.to_str().unwrap(), "--online"];
    let (code, stdout, stderr) = text(&assignd(&args, &[]).await);
    // The key file is not there yet: check says so, and --online cannot go on.
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    std::fs::create_dir(dir.join("credentials")).unwrap();
    std::fs::write(dir.join("credentials/helpcrunch-api-key"), CANARY).unwrap();
    let (code, stdout, stderr) = text(&assignd(&args, &[]).await);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_contains(
        &stdout,
        &[
            "online: the account lists no departments (GET /departments answered 404); the departments the rules name are not checked",
        ],
    );
}

#[tokio::test]
async fn init_never_writes_over_a_file() {
    let sandbox = sandbox(Some(billing())).await;
    let env = [("HELPCRUNCH_API_KEY", CANARY)];
    for existing in ["assignd.toml", "rules/10-team.toml", "rules/20-mine.toml"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etc");
        let file = dir.join(existing);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "# mine\n").unwrap();
        let before = files(&dir);
        let (code, stdout, stderr) = text(&init(&dir, &sandbox, &[], &env).await);
        assert_eq!(code, 2, "{existing}: {stdout}\n{stderr}");
        assert_contains(&stderr, &[existing, "nothing was written"]);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(files(&dir), before, "{existing}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    }
    assert!(
        sandbox.requests().is_empty(),
        "a refusal asks the account nothing"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_one_clear_error() {
    let sandbox = sandbox(Some(billing())).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc");
    let wrong = [("HELPCRUNCH_API_KEY", "not-the-key")];
    let (code, stdout, stderr) = text(&init(&dir, &sandbox, &[], &wrong).await);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_contains(
        &stderr,
        &["GET /agents", "HTTP 401", "HelpCrunch rejects the API key"],
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("not-the-key"),
        "{stderr}"
    );
    assert!(!dir.exists(), "nothing written");

    let (code, _, stderr) = text(&init(&dir, &sandbox, &[], &[]).await);
    assert_eq!(code, 2, "{stderr}");
    assert_contains(&stderr, &["no HelpCrunch API key", "--api-key-file"]);
    let missing = tmp.path().join("no-such-key");
    let (code, _, stderr) = text(
        &init(
            &dir,
            &sandbox,
            &["--api-key-file", missing.to_str().unwrap()],
            &[],
        )
        .await,
    );
    assert_eq!(code, 2, "{stderr}");
    assert_contains(&stderr, &["no-such-key"]);
    assert!(!dir.exists(), "nothing written");
}
