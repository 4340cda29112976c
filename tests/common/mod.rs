//! Test harness: a sandbox on 127.0.0.1, a temporary directory with a real
//! SQLite file, config and rules, and the daemon either in-process or as the
//! real `assignd` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use assignd::app::{Application, Runtime};
use assignd::http::ListenerSecrets;
use assignd::sandbox::{Sandbox, SandboxAgent, SandboxConfig, SandboxLimit};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const THREE_AGENTS: &str = r#"
timezone = "Europe/Kyiv"

[agents]
alice = { id = 4188 }
bob   = { id = 4761 }
carol = { id = 6694 }

[pools.support]
agents = ["alice", "bob", "carol"]
strategy = "round-robin"

[[rule]]
name = "everything"
assign = "pool:support"
"#;

pub struct TestApp {
    pub dir: TempDir,
    pub sandbox: Sandbox,
    pub config_path: PathBuf,
    pub db_path: PathBuf,
}

pub fn agents(list: &[(&str, i64)]) -> Vec<SandboxAgent> {
    list.iter()
        .map(|(n, id)| SandboxAgent {
            id: *id,
            name: n.to_string(),
        })
        .collect()
}

pub fn default_agents() -> Vec<SandboxAgent> {
    agents(&[("alice", 4188), ("bob", 4761), ("carol", 6694)])
}

/// How a [`TestApp`] is set up; every option has the common default: the
/// three agents and [`THREE_AGENTS`] rules, no sandbox rate limit, a fast
/// poll, and a rate far above anything a test sends.
pub struct TestAppBuilder {
    listen: bool,
    rules: String,
    agents: Vec<SandboxAgent>,
    limit: Option<SandboxLimit>,
    worker: String,
    rate: String,
    key: String,
}

/// `[worker]` lines: decide from the queue row alone, no `GET /chats/{id}`.
pub const NO_FETCH: &str = "fetch_chat = \"never\"";

impl TestAppBuilder {
    pub fn rules(mut self, rules: &str) -> Self {
        self.rules = rules.to_string();
        self
    }
    pub fn agents(mut self, agents: Vec<SandboxAgent>) -> Self {
        self.agents = agents;
        self
    }
    /// The sandbox's own rate limit (none by default).
    pub fn limit(mut self, limit: impl Into<Option<SandboxLimit>>) -> Self {
        self.limit = limit.into();
        self
    }
    /// Extra lines for the `[worker]` table; repeatable.
    pub fn worker(mut self, lines: &str) -> Self {
        self.worker.push_str(lines);
        self.worker.push('\n');
        self
    }
    /// The `[helpcrunch.rate_limit]` table's lines.
    pub fn rate(mut self, lines: &str) -> Self {
        self.rate = lines.to_string();
        self
    }
    /// The API key the sandbox accepts and the config hands the daemon.
    pub fn key(mut self, key: &str) -> Self {
        self.key = key.to_string();
        self
    }

    /// Adds `[http] listen` on a free loopback port.
    pub fn listen(mut self) -> Self {
        self.listen = true;
        self
    }

    /// Starts the sandbox and writes the config, rules and key files.
    pub async fn build(self) -> TestApp {
        TestApp::start(self).await
    }

    /// [`Self::build`], then creates the schema (as `assignd migrate` does).
    pub async fn migrated(self) -> TestApp {
        let app = self.build().await;
        app.migrate().await;
        app
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            listen: false,
            rules: THREE_AGENTS.to_string(),
            agents: default_agents(),
            limit: None,
            worker: String::new(),
            rate: String::new(),
            key: "test-key".into(),
        }
    }

    async fn start(b: TestAppBuilder) -> Self {
        let sandbox = Sandbox::start(
            SandboxConfig {
                api_key: b.key.clone(),
                agents: b.agents,
                chats: 1..=100_000,
                rate_limit: b.limit,
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.toml"), &b.rules).unwrap();
        std::fs::write(dir.path().join("api-key"), format!("{}\n", b.key)).unwrap();
        let db_path = dir.path().join("assignd.db");
        let rate = if b.rate.is_empty() {
            "requests = 6000\nper = \"1m\""
        } else {
            &b.rate
        };
        let config = format!(
            "[helpcrunch]\nbase_url = \"{}\"\napi_key_file = \"api-key\"\ntimeout = \"5s\"\n\n[helpcrunch.rate_limit]\n{rate}\n\n[database]\nurl = \"sqlite://assignd.db\"\nsynchronous = \"normal\"\n\n[rules]\npath = \"rules.toml\"\n\n[worker]\npoll_interval = \"100ms\"\n{}\n",
            sandbox.base_url(),
            b.worker
        );
        let config = if b.listen {
            config + "\n[http]\nlisten = \"127.0.0.1:0\"\n"
        } else {
            config
        };
        let config_path = dir.path().join("assignd.toml");
        std::fs::write(&config_path, config).unwrap();
        Self {
            dir,
            sandbox,
            config_path,
            db_path,
        }
    }

    /// A plain connection to the database, as a producer would open it.
    pub async fn producer(&self) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(&self.db_path)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(5));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// Creates the schema (as `assignd migrate` does).
    pub async fn migrate(&self) {
        let out = self.command(&["migrate"]).output().unwrap();
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `INSERT INTO queue (chat_id) VALUES (...)`, the producer contract.
    pub async fn insert_raw(&self, chat_ids: impl IntoIterator<Item = i64>) {
        let pool = self.producer().await;
        for id in chat_ids {
            sqlx::query("INSERT INTO queue (chat_id) VALUES (?)")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }

    pub async fn scalar(&self, sql: &'static str) -> i64 {
        let pool = self.producer().await;
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        v
    }

    pub async fn rows(&self, sql: &'static str) -> Vec<(i64, String, Option<String>)> {
        let pool = self.producer().await;
        let v: Vec<(i64, String, Option<String>)> =
            sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        v
    }

    /// Waits until no row is pending or leased.
    pub async fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let active = self
                .scalar("SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'leased')")
                .await;
            if active == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{active} rows still active after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the daemon in this process, built as `assignd run` builds it,
    /// until the returned token is cancelled.
    pub async fn start_in_process(&self) -> InProcess {
        self.start_serving(ListenerSecrets::new(None, None)).await
    }

    /// [`Self::start_in_process`] with the listener's secrets (the listener
    /// runs if the builder asked for it with [`TestAppBuilder::listen`]).
    pub async fn start_serving(&self, secrets: Arc<ListenerSecrets>) -> InProcess {
        let (config, rules, key) = assignd::daemon::load(&self.config_path).unwrap();
        let app = Application::build(&config, Arc::new(rules), &key, secrets)
            .await
            .unwrap();
        let runtime = app.runtime.clone();
        let http_addr = app.http_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
        InProcess {
            runtime,
            shutdown,
            task,
            http_addr,
        }
    }

    /// Inserts `chat_ids` with plain SQL, runs the daemon in this process
    /// until the queue is drained, and stops it.
    pub async fn process_raw(&self, chat_ids: impl IntoIterator<Item = i64>, timeout: Duration) {
        let daemon = self.start_in_process().await;
        self.insert_raw(chat_ids).await;
        daemon.runtime.worker.wake();
        self.wait_drained(timeout).await;
        daemon.stop().await;
    }

    /// The `assignd` binary with this app's config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_assignd"));
        c.args(args)
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("HELPCRUNCH_API_KEY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("ASSIGND_CONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Starts `assignd run`, logging to a file in the temp dir.
    pub fn spawn_daemon(&self, log_name: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log_name)).unwrap();
        self.command(&["run"])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Moves the database onto a fresh tmpfs of `size` (as `mount -o
    /// size=`), so a test can fill it or make it read-only. None where
    /// mounting is not allowed (not root): the caller skips.
    pub fn database_on_tmpfs(&mut self, size: &str) -> Option<Tmpfs> {
        let disk = self.dir.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&disk)
            .output();
        if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
            println!("skipped: cannot mount a tmpfs here ({mounted:?})");
            return None;
        }
        let config = std::fs::read_to_string(&self.config_path)
            .unwrap()
            .replace("sqlite://assignd.db", "sqlite://disk/assignd.db");
        std::fs::write(&self.config_path, config).unwrap();
        self.db_path = disk.join("assignd.db");
        Some(Tmpfs(disk))
    }

    /// The address a daemon started with [`Self::spawn_daemon`] listens
    /// on, read from its log line `HTTP listener ready bound=…`.
    pub async fn listener_addr(&self, log_name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log(log_name);
            if let Some(rest) = text.split("HTTP listener ready bound=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no listener: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self, log_name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log_name)).unwrap_or_default()
    }
}

pub struct InProcess {
    pub runtime: Runtime,
    pub shutdown: CancellationToken,
    /// Where the listener listens, if the app has one.
    pub http_addr: Option<std::net::SocketAddr>,
    pub task: tokio::task::JoinHandle<Result<(), assignd::worker::JobFailed>>,
}

impl InProcess {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.runtime.store.close().await;
    }
}

/// Sends SIGTERM and waits for the exit status, at most `timeout`.
pub fn terminate(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("assignd did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

/// A tmpfs mounted for one test; unmounted however the test ends.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// `mount -o remount,OPTION`: `ro` fails while a file on it is open
    /// for writing, so a read-only fault is made while the daemon is down.
    pub fn remount(&self, option: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {option}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
