//! Test harness: a sandbox on 127.0.0.1, a temporary directory with a real
//! SQLite file, config and rules, and the daemon either in-process or as the
//! real `assignd` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
                "INSERT INTO outbox (chat_id, kind, agent_id, text, created_at) VALUES (?, 'private', 4188, 'note', 0)",
            )
            .bind(chat)
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
            assert!(
                Instant::now() < deadline,
                "{active} rows still active after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// Asserts that a finished command (`what`) exited 0, showing what it
/// printed if not; its stdout.
/// Posts the webhook event `body` to the listener at `base`, signed with
/// `key`; returns the status.
/// A webhook body as HelpCrunch sends it: `event` with `data`, under `id`.
pub fn webhook_event(id: &str, event: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"event": event, "eventData": data, "attempts": 0,
        "lastAttemptAt": 1638953588, "createdAt": 1638953588, "id": id}),
    )
    .unwrap()
}

pub async fn post_webhook(http: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> u16 {
    http.post(format!("{base}/webhooks/helpcrunch"))
        .header(
            "X-HelpCrunch-Signature",
            assignd::http::webhook_signature(key.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub fn ok_stdout(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Asserts that `text` contains every one of `needles`.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` in: {text}");
    }
}

/// `kill SIG PID` (e.g. `-HUP`), which must succeed.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// SIGHUP: reload the config and rules.
pub fn hup(pid: u32) {
    signal(pid, "-HUP");
}

/// Polls `done` every 50 ms until it holds; after `timeout`, panics with `why()`.
pub async fn wait_until(
    timeout: Duration,
    why: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_until`], saying `what` it waited for.
pub async fn wait_for(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    wait_until(timeout, || format!("timed out waiting for {what}"), done).await;
}

/// Sends SIGTERM and waits for the exit status, at most `timeout`.
pub fn terminate(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    signal(child.id(), "-TERM");
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
            .output();
        ok_stdout(&format!("remount {option}"), &out.unwrap());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A daemon started with [`TestApp::spawn_guarded`]: killed (SIGKILL) when
/// dropped, so that a failing test leaves no process behind.
pub struct Daemon {
    pub child: Child,
    /// Its log file (stderr), in the app's temp dir.
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        signal(self.pid(), "-KILL");
        let _ = self.child.wait();
    }

    /// Panics with its log if it has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{what}: assignd (pid {}) exited with {status}; its log:\n{}",
                self.pid(),
                self.log_text()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl TestApp {
    /// Starts `assignd run` with `RUST_LOG=info`, logging to `log_name` in
    /// the temp dir, killed when the returned [`Daemon`] is dropped.
    pub fn spawn_guarded(&self, log_name: &str) -> Daemon {
        let log = self.dir.path().join(log_name);
        let child = self
            .command(&["run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// Points `[database] url` at `url` (e.g. a PostgreSQL database)
    /// instead of the SQLite file.
    pub fn use_database(&self, url: &str) {
        self.edit_config(|c| {
            c.replace("url = \"sqlite://assignd.db\"", &format!("url = \"{url}\""))
        });
    }
}

/// The most of `times` (sorted) that fall in one window `[t, t + per)`:
/// the busiest sliding window (the busiest one always starts at a call).
pub fn busiest_window(times: &[Duration], per: Duration) -> usize {
    busiest_window_at(times, per).0
}

/// [`busiest_window`], and the index of the first call in it; `times` are
/// offsets or instants.
pub fn busiest_window_at<T>(times: &[T], per: Duration) -> (usize, usize)
where
    T: Copy + Ord + std::ops::Add<Duration, Output = T>,
{
    let mut end = 0;
    let mut most = (0, 0);
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] < *t + per {
            end += 1;
        }
        if end - start > most.0 {
            most = (end - start, start);
        }
    }
    most
}

/// The longest time between two consecutive `times` (sorted), and when it began.
pub fn longest_gap(times: &[Duration]) -> (Duration, Duration) {
    times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default()
}

/// One `PUT /chats/assignee` as the sandbox saw it.
pub struct Put {
    pub chat: i64,
    /// When it arrived, since the sandbox started.
    pub at: Duration,
    /// When it arrived, on this process's monotonic clock.
    pub received: Instant,
}

/// Every `PUT /chats/assignee` so far, by arrival.
pub fn puts(sandbox: &Sandbox) -> Vec<Put> {
    let mut puts: Vec<Put> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == "/v1/chats/assignee")
        .map(|r| Put {
            chat: r.body.as_ref().and_then(|b| b["id"].as_i64()).unwrap_or(-1),
            at: r.at,
            received: r.received,
        })
        .collect();
    puts.sort_by_key(|p| p.at);
    puts
}

/// What a drain looked like from the sandbox, for an account limit of
/// `requests` per `per`:
/// - `busiest`: the most requests (any endpoint, any answer) that arrived
///   in one interval `[t, t + per)`, over every `t` that is an arrival (the
///   busiest sliding window always starts at one); when it holds more than
///   `requests`, `over` lists its calls (offset, chat or endpoint, status);
/// - `steady_share`: the PUTs by arrival less the first and the last `edge`
///   (start-up and tail): their `n - 1` intervals over the span from the
///   first to the last of them, as a share of `requests / per`;
/// - `repeats`: PUTs beyond the first for each chat, `worst` the most PUTs
///   for one chat;
/// - `gap`: the longest time between two consecutive PUTs, `gap_at` when
///   it began (since the sandbox started).
#[derive(Debug)]
pub struct Figures {
    pub requests: usize,
    pub puts: usize,
    pub chats_put: usize,
    pub repeats: usize,
    pub worst: usize,
    pub rejected: usize,
    pub busiest: usize,
    pub over: Option<String>,
    pub steady_share: f64,
    pub gap: Duration,
    pub gap_at: Duration,
}

/// [`Figures`] of what `sandbox` saw, for `requests` per `per`.
pub fn figures(sandbox: &Sandbox, requests: u32, per: Duration, edge: usize) -> Figures {
    let mut recorded = sandbox.requests();
    recorded.sort_by_key(|r| r.at);
    let all: Vec<Duration> = recorded.iter().map(|r| r.at).collect();
    let (busiest, first) = busiest_window_at(&all, per);
    let over = (busiest > requests as usize).then(|| {
        let calls: Vec<String> = recorded[first..first + busiest]
            .iter()
            .map(|r| {
                let what = match r.body.as_ref().and_then(|b| b["id"].as_i64()) {
                    Some(chat) if r.method == "PUT" => format!("chat {chat}"),
                    _ => format!("{} {}", r.method, r.path),
                };
                let offset = (r.at - all[first]).as_secs_f64() * 1000.0;
                format!("+{offset:.0}ms {what} {}", r.status)
            })
            .collect();
        format!(
            "from {:.3}s: {}",
            all[first].as_secs_f64(),
            calls.join(", ")
        )
    });
    let puts = puts(sandbox);
    let mut per_chat = std::collections::HashMap::<i64, usize>::new();
    for p in &puts {
        *per_chat.entry(p.chat).or_default() += 1;
    }
    let times: Vec<Duration> = puts.iter().map(|p| p.at).collect();
    let steady_share = if times.len() > 2 * edge + 1 {
        let steady = &times[edge..times.len() - edge];
        let span = (steady[steady.len() - 1] - steady[0]).as_secs_f64();
        (steady.len() - 1) as f64 / span / (requests as f64 / per.as_secs_f64())
    } else {
        0.0
    };
    let (gap, gap_at) = longest_gap(&times);
    Figures {
        requests: all.len(),
        puts: puts.len(),
        chats_put: per_chat.len(),
        repeats: per_chat.values().map(|n| n - 1).sum(),
        worst: per_chat.values().copied().max().unwrap_or(0),
        rejected: sandbox.rejected_429(),
        busiest,
        over,
        steady_share,
        gap,
        gap_at,
    }
}

impl Figures {
    /// Prints the figures under the label `what`.
    pub fn print(&self, what: &str, requests: u32, per: Duration) {
        println!(
            "{what}: {} requests ({} PUTs for {} chats, {} repeated, at most {} for one chat), \
             {} answered 429, busiest {per:?} window {} (limit {requests}), steady share {:.1}% of \
             the limit, longest gap between PUTs {:.2}s (at {:.2}s)",
            self.requests,
            self.puts,
            self.chats_put,
            self.repeats,
            self.worst,
            self.rejected,
            self.busiest,
            self.steady_share * 100.0,
            self.gap.as_secs_f64(),
            self.gap_at.as_secs_f64(),
        );
        if let Some(over) = &self.over {
            println!("  the window over the limit: {over}");
        }
    }
}

/// How many chats each daemon assigned, from its `outcome` log lines.
pub fn assigned_in_log(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("outcome") && l.contains("assigned"))
        .count()
}

/// The `daemons:` section of `assignd status`: (pid, marked with `word`)
/// per line; None without the section.
pub fn status_daemons(status: &str, word: &str) -> Option<Vec<(u32, bool)>> {
    let mut lines = status.lines().skip_while(|l| !l.starts_with("daemons:"));
    lines.next()?;
    let entries = lines
        .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
        .map(|l| {
            let pid = l
                .split("pid ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let marked = l.split(|c: char| !c.is_alphanumeric()).any(|w| w == word);
            (pid, marked)
        })
        .collect();
    Some(entries)
}

/// Waits until `assignd status` lists exactly `pids` as the live daemons
/// with `holder` alone marked `word`; the time it took.
pub async fn wait_status(app: &TestApp, pids: &[u32], holder: u32, word: &str) -> Duration {
    let since = Instant::now();
    let mut want: Vec<(u32, bool)> = pids.iter().map(|&p| (p, p == holder)).collect();
    want.sort();
    loop {
        let (code, out, err) = app.exec(&["status"]);
        let mut seen = status_daemons(&out, word).unwrap_or_default();
        seen.sort();
        if code == 0 && seen == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "`assignd status` should list the live daemons {want:?} as (pid, {word}) within 10 s \
             (a `daemons:` section, one indented line per daemon with `pid N` and `{word}` on \
             the holder); it printed (exit {code}):\n{out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
