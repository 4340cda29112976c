//! Test harness: a sandbox on 127.0.0.1, a temporary directory with a real
//! SQLite file, config and rules, and the daemon either in-process or as the
//! real `assignd` binary.
#![allow(dead_code)]

mod figures;
mod process;
#[allow(unused_imports)]
pub use figures::*;
pub use process::*;

use std::path::PathBuf;
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

/// The agents of [`THREE_AGENTS`], as (name, id).
pub const ABC: [(&str, i64); 3] = [("alice", 4188), ("bob", 4761), ("carol", 6694)];

/// One rule that sends every chat to the pool `support` of [`support_rules`].
pub const TO_SUPPORT: &str = "[[rule]]\nname = \"all\"\nassign = \"pool:support\"\n";

/// Rules with `agents`, all of them in one pool `support` (with the extra
/// `pool` lines), followed by `rules` (e.g. [`TO_SUPPORT`]).
pub fn support_rules(agents: &[(&str, i64)], pool: &str, rules: &str) -> String {
    let table: String = agents
        .iter()
        .map(|(name, id)| format!("{name} = {{ id = {id} }}\n"))
        .collect();
    let names: Vec<String> = agents
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    format!(
        "[agents]\n{table}\n[pools.support]\nagents = [{}]\n{pool}\n\n{rules}",
        names.join(", ")
    )
}

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
    agents(&ABC)
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
                ..SandboxConfig::default()
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

    /// Runs one statement on a producer's connection.
    pub async fn execute(&self, sql: &'static str) {
        let pool = self.producer().await;
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// Rewrites the config file with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let config = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(config)).unwrap();
    }

    /// Puts a private note (from alice) for each of `chats` in the outbox,
    /// as finished assignments would have.
    pub async fn queue_notes(&self, chats: impl IntoIterator<Item = i64>) {
        let pool = self.producer().await;
        for chat in chats {
            sqlx::query(
                "INSERT INTO outbox (chat_id, kind, agent_id, text, created_at) VALUES (?, 'private', 4188, 'note', ?)",
            )
            .bind(chat)
            // Created now: a note of 1970 is past retention, and the
            // prune a daemon runs at start could take it once it is sent.
            .bind(assignd::store::now_ms())
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

    /// `SELECT COUNT(*) FROM {from}`, e.g. `count("queue WHERE state = 'done'")`.
    pub async fn count(&self, from: &str) -> i64 {
        let pool = self.producer().await;
        let sql = format!("SELECT COUNT(*) FROM {from}");
        let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        v
    }

    /// Waits until [`Self::count`] of `from` is at least `at_least`; panics
    /// with `what` after `timeout`.
    pub async fn wait_count(&self, from: &str, at_least: i64, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(from).await;
            if n >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} ({from}: {n} < {at_least})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes the database's write lock from another connection (`begin` is
    /// `BEGIN IMMEDIATE` or `BEGIN EXCLUSIVE`), held until [`DbLock::release`].
    pub async fn lock_database(&self, begin: &'static str) -> DbLock {
        let pool = self.producer().await;
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query(begin).execute(&mut *conn).await.unwrap();
        DbLock { pool, conn }
    }

    pub async fn rows(&self, sql: &'static str) -> Vec<(i64, String, Option<String>)> {
        let pool = self.producer().await;
        let v: Vec<(i64, String, Option<String>)> =
            sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        v
    }

    /// The rows `sql` (with one `?`, bound to `chat`) selects, as `T`.
    pub async fn chat_rows<T>(&self, sql: &'static str, chat: i64) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let pool = self.producer().await;
        let rows = sqlx::query_as(sql)
            .bind(chat)
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
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
            if Instant::now() >= deadline {
                let stuck = self.active_rows().await;
                panic!("{active} rows still active after {timeout:?}:\n{stuck}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rows still pending or leased, one line each, with their
    /// outcomes: what a drain that did not end was waiting for.
    async fn active_rows(&self) -> String {
        type Row = (
            i64,
            String,
            i64,
            i64,
            Option<String>,
            Option<i64>,
            Option<String>,
        );
        let pool = self.producer().await;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT chat_id, state, attempts, next_attempt_at - ?1, lease_owner,
                    lease_until - ?1, last_error FROM queue
              WHERE state IN ('pending', 'leased') ORDER BY chat_id",
        )
        .bind(assignd::store::now_ms())
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut out = String::new();
        for (chat, state, attempts, due_in, owner, lease_in, error) in rows {
            out += &format!(
                "chat {chat}: {state}, {attempts} attempts, due in {due_in} ms, \
                 lease {owner:?} for {lease_in:?} ms, last error {error:?}\n"
            );
            let outcomes: Vec<(i64, String, Option<String>)> = sqlx::query_as(
                "SELECT at, result, reason FROM outcomes WHERE chat_id = ? ORDER BY id",
            )
            .bind(chat)
            .fetch_all(&pool)
            .await
            .unwrap();
            for (at, result, reason) in outcomes {
                out += &format!("  {at} {result} {}\n", reason.unwrap_or_default());
            }
        }
        pool.close().await;
        out
    }

    /// `insert_raw`, then wakes `daemon`'s worker.
    pub async fn feed(&self, daemon: &InProcess, chat_ids: impl IntoIterator<Item = i64>) {
        self.insert_raw(chat_ids).await;
        daemon.runtime.worker.wake();
    }

    /// Runs the daemon in this process, built as `assignd run` builds it,
    /// until the returned token is cancelled.
    pub async fn start_in_process(&self) -> InProcess {
        self.start_serving(ListenerSecrets::new(None, None)).await
    }

    /// [`Self::start_in_process`] with the listener's secrets (the listener
    /// runs if the builder asked for it with [`TestAppBuilder::listen`]).
    pub async fn start_serving(&self, secrets: Arc<ListenerSecrets>) -> InProcess {
        log_in_process();
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

    /// [`Self::start_serving`] with the webhook key `key` alone: the daemon
    /// and its listener's base URL.
    pub async fn serve_webhooks(&self, key: &str) -> (InProcess, String) {
        let secrets = ListenerSecrets::new(Some(assignd::secrets::Secret::new(key)), None);
        let daemon = self.start_serving(secrets).await;
        let base = format!("http://{}", daemon.http_addr.expect("the listener runs"));
        (daemon, base)
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
            .env_remove("ASSIGND_DATABASE_PASSWORD")
            .env_remove("ASSIGND_CONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Runs `assignd ARGS` for this app: (exit code, stdout, stderr).
    pub fn exec(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `assignd ARGS` for this app and asserts that it succeeds; its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        ok_stdout(
            &format!("assignd {args:?}"),
            &self.command(args).output().unwrap(),
        )
    }

    /// [`Self::run_ok`] off the runtime's thread: while a daemon runs in
    /// this process (the sandbox too), a command that waits on the
    /// database or the sandbox must not block the thread they run on.
    pub async fn cli_ok(&self, args: &[&str]) -> String {
        let mut command = self.command(args);
        let what = format!("assignd {args:?}");
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        ok_stdout(&what, &out)
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

/// Another connection's write lock on the database, from [`TestApp::lock_database`].
pub struct DbLock {
    pool: SqlitePool,
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
}

impl DbLock {
    /// Commits, and closes the connection.
    pub async fn release(mut self) {
        sqlx::query("COMMIT")
            .execute(&mut *self.conn)
            .await
            .unwrap();
        drop(self.conn);
        self.pool.close().await;
    }
}

/// With `ASSIGND_TEST_LOG=<file>`, a daemon run in the test's process logs
/// there at debug level (a stuck row is then seen in the daemon's own
/// words); without it, in-process daemons log nothing.
fn log_in_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Some(path) = std::env::var_os("ASSIGND_TEST_LOG") else {
        return;
    };
    ONCE.call_once(|| {
        let file = std::fs::File::create(path).expect("ASSIGND_TEST_LOG names a writable file");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("assignd=debug,info"))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
    });
}
