//! The harness of `tests/cluster.rs`: several `assignd run` processes on
//! one fresh PostgreSQL database (`support/postgres.rs`) in front of one
//! rate-limited sandbox, and what explains a failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use assignd::sandbox::{SandboxLimit, Window};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::common::*;
use crate::postgres;

/// The account's window: the sandbox's and the daemons' `per`. HelpCrunch
/// counts per minute; 3 s keeps the tests short while the limiter's 1.5%
/// margin (45 ms a window) still covers the scheduling jitter of a loaded
/// 2-core machine, which a 1-s window's 15 ms does not.
pub const PER: Duration = Duration::from_secs(3);
/// PUTs left out at each end of the drain for the steady share.
pub const EDGE: usize = 10;
/// Each daemon's `[worker]`: four rows in flight, no `GET /chats/{id}`
/// (one PUT per chat), the default row lease (60 s). A dead daemon's rows
/// come back once the `daemons` heartbeats say it is gone *and* their
/// leases have run out (a call decided under a lease may be sent until
/// just before it ends): a drain after a kill waits up to [`LEASE`].
/// The row lease of [`WORKER`] (the default).
pub const LEASE: Duration = Duration::from_secs(60);
pub const WORKER: &str = "concurrency = 4\nfetch_chat = \"never\"";

/// The sandbox enforcing `requests` per [`PER`] (sliding, with
/// `Retry-After`), the daemons configured with the same limit, and [`WORKER`].
pub fn limited(app: TestAppBuilder, requests: u32) -> TestAppBuilder {
    app.limit(SandboxLimit {
        requests,
        per: PER,
        window: Window::Sliding,
        retry_after: true,
    })
    .rate(&format!(
        "requests = {requests}\nper = \"{}s\"",
        PER.as_secs()
    ))
    .worker(WORKER)
}

/// Several daemons on one fresh PostgreSQL database, one sandbox.
pub struct Cluster {
    pub app: TestApp,
    pub db: PgPool,
    pub requests: u32,
    pub daemons: Vec<Daemon>,
    pub spawned: usize,
    /// Held to the end, after the daemons are gone: see [`ONE_AT_A_TIME`].
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Clusters run one at a time: each is a PostgreSQL server and three
/// daemons paced to a 1-s window, and several at once on two cores delay
/// the sandbox's own clock readings past the limiter's 1.5% margin.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    /// `n` daemons with the account limit `requests` per [`PER`], all
    /// registered and one of them leader; None where PostgreSQL is missing.
    pub async fn start(n: usize, requests: u32) -> Option<Cluster> {
        Self::start_with(n, requests, |app, url| app.use_database(url)).await
    }

    /// [`Cluster::start`] with the daemons' `[database]` set by
    /// `point(app, url)` (e.g. through a pooler); the test's own
    /// connections go to `url` itself.
    pub async fn start_with(
        n: usize,
        requests: u32,
        point: impl FnOnce(&TestApp, &str),
    ) -> Option<Cluster> {
        let turn = ONE_AT_A_TIME.lock().await;
        let url = postgres::server()?.database().await;
        let app = limited(TestApp::builder(), requests).build().await;
        point(&app, &url);
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        let mut c = Cluster {
            app,
            db,
            requests,
            daemons: Vec::new(),
            spawned: 0,
            _turn: turn,
        };
        for _ in 0..n {
            let d = c.spawn();
            c.daemons.push(d);
        }
        c.wait_live(n).await;
        Some(c)
    }

    pub fn spawn(&mut self) -> Daemon {
        self.spawned += 1;
        self.app.spawn_guarded(&format!("d{}.log", self.spawned))
    }

    pub fn pids(&self) -> Vec<u32> {
        self.daemons.iter().map(|d| d.pid()).collect()
    }

    /// An integer from the database, or -1 if the query fails (e.g. the
    /// schema is not there yet).
    pub async fn int(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.db)
            .await
            .unwrap_or(-1)
    }

    /// The live leader: (owner, pid, epoch).
    pub async fn leader(&self) -> Option<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT l.owner, d.pid, l.epoch FROM leases l JOIN daemons d ON d.owner = l.owner
              WHERE l.name = 'leader' AND l.expires_at > assignd_now_ms()",
        )
        .fetch_optional(&self.db)
        .await
        .ok()
        .flatten()
    }

    /// Waits until `n` daemons have a fresh heartbeat and one leads.
    pub async fn wait_live(&mut self, n: usize) {
        let since = Instant::now();
        loop {
            for (i, d) in self.daemons.iter_mut().enumerate() {
                d.assert_running(&format!("daemon {i} while starting"));
            }
            let live = self
                .int("SELECT COUNT(*) FROM daemons WHERE heartbeat_at > assignd_now_ms() - 2000")
                .await;
            if live == n as i64 && self.leader().await.is_some() {
                println!("{n} daemons live, one leading, in {:?}", since.elapsed());
                return;
            }
            if since.elapsed() > Duration::from_secs(20) {
                panic!(
                    "{n} daemons should register (table `daemons`) and one lead (`leases` row \
                     'leader') within 20 s; {live} live\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A producer's insert of `chats` in one statement.
    pub async fn enqueue(&self, chats: i64) {
        sqlx::query(
            "INSERT INTO queue (chat_id) SELECT g FROM generate_series(1, $1::BIGINT) AS g",
        )
        .bind(chats)
        .execute(&self.db)
        .await
        .unwrap();
    }

    pub async fn active(&self) -> i64 {
        self.int("SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'leased')")
            .await
    }

    pub async fn wait_drained(&self, timeout: Duration) -> Duration {
        let since = Instant::now();
        loop {
            if self.active().await == 0 {
                return since.elapsed();
            }
            if since.elapsed() > timeout {
                panic!(
                    "the queue should drain within {timeout:?}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_puts(&self, n: usize) {
        let since = Instant::now();
        while puts(&self.app.sandbox).len() < n {
            if since.elapsed() > Duration::from_secs(30) {
                panic!("{n} PUTs expected within 30 s\n{}", self.report().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything that explains a failure: the queue, the daemons, the
    /// leases, the sandbox's counts and the tail of each daemon's log.
    pub async fn report(&self) -> String {
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM queue GROUP BY state ORDER BY state")
                .fetch_all(&self.db)
                .await
                .unwrap_or_default();
        let daemons: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT owner, pid, assignd_now_ms() - heartbeat_at FROM daemons ORDER BY started_at",
        )
        .fetch_all(&self.db)
        .await
        .unwrap_or_default();
        let leases: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, owner, epoch, expires_at - assignd_now_ms() FROM leases ORDER BY name",
        )
        .fetch_all(&self.db)
        .await
        .unwrap_or_default();
        // A row left leased: whose, and what its chat's last lines say.
        let leased: Vec<(i64, i64, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT id, chat_id, lease_owner, lease_until - assignd_now_ms() FROM queue
              WHERE state = 'leased' ORDER BY id LIMIT 5",
        )
        .fetch_all(&self.db)
        .await
        .unwrap_or_default();
        let f = figures(&self.app.sandbox, self.requests, PER, EDGE);
        let mut out = format!(
            "queue by state: {states:?}\nleased (id, chat, owner, ms to expiry): {leased:?}\n\
             daemons (owner, pid, ms since heartbeat): {daemons:?}\n\
             leases (name, owner, epoch, ms to expiry): {leases:?}\nsandbox: {f:?}\n"
        );
        for i in 1..=self.spawned {
            let log = self.app.log(&format!("d{i}.log"));
            for (_, chat, _, _) in &leased {
                let about = format!("chat_id={chat} ");
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(&about)).collect();
                if !lines.is_empty() {
                    out += &format!("--- d{i}.log on chat {chat}\n{}\n", lines.join("\n"));
                }
            }
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            out += &format!("--- d{i}.log (last lines)\n");
            for l in tail.into_iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// Each daemon's rate slots that went stale before their call could
    /// go (budget lost), with how late each was, from their logs.
    pub fn forfeited_by_daemon(&self) -> BTreeMap<String, Vec<String>> {
        (1..=self.spawned)
            .map(|i| {
                let name = format!("d{i}.log");
                let log = self.app.log(&name);
                let late = log
                    .lines()
                    .filter(|l| l.contains("rate slot went stale"))
                    .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("late_ms=")))
                    .map(str::to_string)
                    .collect();
                (name, late)
            })
            .collect()
    }

    /// PUTs per daemon, from their logs, by log name.
    pub fn assigned_by_daemon(&self) -> BTreeMap<String, usize> {
        (1..=self.spawned)
            .map(|i| {
                let name = format!("d{i}.log");
                let n = assigned_in_log(&self.app.log(&name));
                (name, n)
            })
            .collect()
    }
}
