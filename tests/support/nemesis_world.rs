//! The nemesis's world: the [`Stage`] (the sandbox, the database, the
//! config, what producers and the closer share) and the [`Cast`] (the
//! `assignd run` child processes, which the nemesis kills, stops, restarts
//! and reloads, and the database server it stops and starts).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use assignd::sandbox::{Faults, SandboxLimit, Window};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, SqlitePool};

use crate::common::*;
use crate::plan::{AGENTS, SandboxFault, Setup, Topology, rules, shift_hours};
use crate::postgres::{self, PgServer};

pub const WEBHOOK_KEY: &str = "nemesis-webhook-key";
pub const INTAKE_TOKEN: &str = "nemesis-intake-token";
/// The account's limit, for the sandbox and the daemons: 10 calls a second
/// in windows of 4 s (long enough that a loaded machine's jitter stays
/// inside the limiter's 1.5% margin).
pub const REQUESTS: u32 = 40;
pub const PER: Duration = Duration::from_secs(4);
/// The daemons' `[helpcrunch] timeout` and `[worker] lease`.
pub const TIMEOUT: Duration = Duration::from_secs(2);
pub const LEASE: Duration = Duration::from_secs(5);

/// The database, as producers and the checker reach it.
pub enum Db {
    Sqlite(SqlitePool),
    Postgres {
        server: &'static PgServer,
        pool: PgPool,
    },
}

/// What every part of a campaign shares.
pub struct Stage {
    pub app: TestApp,
    pub db: Db,
    pub topology: Topology,
    /// dave's shift hours, the same in every rules variant.
    pub shift: String,
    /// The listeners of the daemons that run and are not stopped.
    pub live: Mutex<Vec<String>>,
    /// Every chat a producer tried to enqueue.
    pub chats: Mutex<Vec<i64>>,
    pub started: Instant,
    pub setup: Setup,
}

impl Stage {
    /// The sandbox, the config and the database, no daemon yet; None where
    /// PostgreSQL is missing outside CI.
    pub async fn new(topology: Topology, setup: Setup, span: Duration) -> Option<Stage> {
        let pg = match topology {
            Topology::Postgres(_) => Some(postgres::server()?),
            Topology::SqliteStandby => None,
        };
        let shift = shift_hours(jiff::Timestamp::now(), span);
        let app = TestApp::builder()
            .agents(agents(&AGENTS))
            .rules(&rules(0, &shift))
            .limit(SandboxLimit {
                requests: REQUESTS,
                per: PER,
                window: Window::Sliding,
                retry_after: true,
            })
            .rate(&format!(
                "requests = {REQUESTS}\nper = \"{}s\"",
                PER.as_secs()
            ))
            .worker(&format!(
                "lease = \"{}s\"\nconcurrency = 4",
                LEASE.as_secs()
            ))
            .listen()
            .build()
            .await;
        configure(&app, setup);
        if pg.is_none() {
            app.migrate().await;
        }
        let db = match pg {
            Some(server) => {
                let url = server.database().await;
                durable(&url).await;
                app.use_database(&url);
                let pool = PgPoolOptions::new()
                    .max_connections(3)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect(&url)
                    .await
                    .unwrap();
                app.migrate().await;
                Db::Postgres { server, pool }
            }
            None => Db::Sqlite(app.producer().await),
        };
        Some(Stage {
            app,
            db,
            topology,
            shift,
            live: Mutex::new(Vec::new()),
            chats: Mutex::new(Vec::new()),
            started: Instant::now(),
            setup,
        })
    }

    /// The rows `sql` selects, from either database.
    pub async fn fetch<T>(&self, sql: &'static str) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Db::Postgres { pool, .. } => sqlx::query_as(sql).fetch_all(pool).await,
        }
    }

    /// One integer from either database.
    pub async fn int(&self, sql: &'static str) -> Result<i64, sqlx::Error> {
        let rows: Vec<(i64,)> = self.fetch(sql).await?;
        Ok(rows.first().map_or(0, |r| r.0))
    }

    /// A producer's `INSERT INTO queue`, with the optional columns.
    pub async fn insert(
        &self,
        chat: i64,
        attrs: Option<String>,
        snapshot: Option<String>,
        priority: i64,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str =
            "INSERT INTO queue (chat_id, attrs, snapshot, priority) VALUES ($1, $2, $3, $4)";
        match &self.db {
            Db::Sqlite(pool) => {
                let q = sqlx::query(SQL).bind(chat).bind(attrs).bind(snapshot);
                q.bind(priority).execute(pool).await.map(drop)
            }
            Db::Postgres { pool, .. } => {
                let q = sqlx::query(SQL).bind(chat).bind(attrs).bind(snapshot);
                q.bind(priority).execute(pool).await.map(drop)
            }
        }
    }

    /// Rows pending or leased, plus hops in doubt (a follow-up still to
    /// read the chat), or an error while the database is down.
    pub async fn active(&self) -> Result<i64, sqlx::Error> {
        let rows = self
            .int("SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'leased')")
            .await?;
        let hops = self
            .int(
                "SELECT COUNT(*) FROM assign_intents i
                  WHERE EXISTS (SELECT 1 FROM followups f WHERE f.chat_id = i.chat_id)",
            )
            .await?;
        Ok(rows + hops)
    }

    /// The newest queue row's id.
    pub async fn last_row(&self) -> Result<i64, sqlx::Error> {
        self.int("SELECT COALESCE(MAX(id), 0) FROM queue").await
    }

    /// A live daemon's listener, at random.
    pub fn any_live(&self) -> Option<String> {
        let live = self.live.lock().unwrap();
        (!live.is_empty()).then(|| live[rand::random_range(0..live.len())].clone())
    }

    /// Milliseconds since the campaign began, for the log.
    pub fn t(&self) -> String {
        format!("{:6.2}s", self.started.elapsed().as_secs_f64())
    }
}

/// The test server runs with `synchronous_commit = off` for speed, so a
/// commit acknowledged just before `pg_ctl stop -m immediate` may be lost:
/// the nemesis's database commits durably, so that a lost row is assignd's.
async fn durable(url: &str) {
    use sqlx::Connection;
    let name = url.rsplit('/').next().unwrap();
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = format!("ALTER DATABASE {name} SET synchronous_commit = on");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// The daemons' timeout, the listener's secrets, the reconciliation's pace.
fn configure(app: &TestApp, setup: Setup) {
    let dir = app.dir.path();
    std::fs::write(dir.join("webhook-key"), WEBHOOK_KEY).unwrap();
    std::fs::write(dir.join("intake-token"), INTAKE_TOKEN).unwrap();
    app.edit_config(|c| {
        c.replace(
            "timeout = \"5s\"",
            &format!("timeout = \"{}s\"", TIMEOUT.as_secs()),
        ) + "webhook_key_file = \"webhook-key\"\nintake_token_file = \"intake-token\"\n\n\
               [load]\n"
            + &format!("refresh = \"{}s\"\n", setup.refresh.as_secs())
    });
}

/// The sandbox's faults for the set switched on; always a little slow
/// (150 ms between applying a PUT and answering), which widens the window
/// between HelpCrunch's change and the daemon's record of it.
pub fn faults_of(active: &BTreeMap<SandboxFault, usize>) -> Faults {
    let mut f = Faults {
        delay: Duration::from_millis(150),
        ..Faults::default()
    };
    for fault in active.keys() {
        match fault {
            SandboxFault::LatePut => {
                // Held on its way first: a read of the chat meanwhile still
                // sees it as it was (the window of finding 15).
                f.hold_put = Duration::from_millis(400);
                f.late_put = 0.5;
                f.late_for = TIMEOUT + Duration::from_secs(2);
            }
            SandboxFault::Throttle => {
                f.throttle = 0.2;
                f.throttle_for = LEASE + Duration::from_secs(3);
            }
            SandboxFault::Resets => f.reset = 0.25,
            SandboxFault::Latency => f.latency = Duration::from_millis(600),
            SandboxFault::ServerErrors => f.server_error = 0.25,
            SandboxFault::Drops => f.drop_connection = 0.25,
        }
    }
    f
}

/// One daemon's place: its process, if it runs.
#[derive(Default)]
pub struct Slot {
    pub daemon: Option<Daemon>,
    pub paused: bool,
    /// Its listener, once its log says where.
    pub base: Option<String>,
}

/// The processes the nemesis acts on.
pub struct Cast {
    pub slots: Vec<Slot>,
    pub spawned: usize,
    pub db_down: bool,
    pub away: BTreeSet<usize>,
    /// The sandbox faults on, each with how many windows hold it.
    pub faults: BTreeMap<SandboxFault, usize>,
    /// What the nemesis did, with when.
    pub log: Vec<String>,
    /// Daemons that exited without being told to, and how.
    pub self_exits: Vec<String>,
    /// Actions carried out, by kind; and how many could not apply.
    pub counts: BTreeMap<&'static str, usize>,
    pub skipped: usize,
    /// From the heal on, traffic goes only to daemons whose `/readyz`
    /// answers 200, as a load balancer would route it (on SQLite the
    /// holder, not the standby); before, to any daemon that runs.
    pub ready_only: bool,
}

impl Cast {
    /// Starts the topology's daemons (the first alone until it listens, so
    /// that on SQLite it holds the file and the second is its standby).
    pub async fn start(stage: &Stage) -> Cast {
        let mut cast = Cast {
            slots: (0..stage.topology.daemons())
                .map(|_| Slot::default())
                .collect(),
            spawned: 0,
            db_down: false,
            away: BTreeSet::new(),
            faults: BTreeMap::new(),
            log: Vec::new(),
            self_exits: Vec::new(),
            counts: BTreeMap::new(),
            skipped: 0,
            ready_only: false,
        };
        stage.app.sandbox.set_faults(faults_of(&cast.faults));
        for i in 0..cast.slots.len() {
            cast.spawn(stage, i);
            let since = Instant::now();
            while cast.slots[i].base.is_none() {
                assert!(
                    since.elapsed() < Duration::from_secs(20),
                    "daemon {i} never listened"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                cast.refresh(stage).await;
            }
        }
        cast
    }

    pub fn note(&mut self, stage: &Stage, what: String) {
        println!("nemesis {} {what}", stage.t());
        self.log.push(format!("{} {what}", stage.t()));
    }

    pub fn spawn(&mut self, stage: &Stage, i: usize) {
        self.spawned += 1;
        let daemon = stage.app.spawn_guarded(&format!("d{}.log", self.spawned));
        self.slots[i] = Slot {
            daemon: Some(daemon),
            paused: false,
            base: None,
        };
    }

    /// Notices daemons that exited by themselves (restarted at once, as
    /// systemd would), finds new listeners, and publishes the live ones.
    pub async fn refresh(&mut self, stage: &Stage) {
        for i in 0..self.slots.len() {
            let exited = self.slots[i]
                .daemon
                .as_mut()
                .and_then(|d| d.child.try_wait().unwrap().map(|s| (s, d.log_text())));
            if let Some((status, log)) = exited {
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                let what = format!("daemon {i} exited by itself ({status}): {tail:?}");
                self.self_exits.push(what.clone());
                self.note(stage, what);
                self.spawn(stage, i);
            }
            let slot = &mut self.slots[i];
            if let (Some(d), None) = (&slot.daemon, &slot.base) {
                slot.base = listener_of(&d.log_text());
            }
        }
        let mut live: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.daemon.is_some() && !s.paused)
            .filter_map(|s| s.base.clone())
            .collect();
        if self.ready_only {
            live = ready(live).await;
        }
        *stage.live.lock().unwrap() = live;
    }

    /// SIGCONT to every stopped daemon, and SIGTERM to every daemon; each
    /// must exit 0 within 10 s. The daemons that did not.
    pub async fn stop_all(&mut self) -> Vec<String> {
        let mut unclean = Vec::new();
        for slot in &mut self.slots {
            let Some(d) = slot.daemon.as_mut() else {
                continue;
            };
            if slot.paused {
                signal(d.pid(), "-CONT");
            }
            signal(d.pid(), "-TERM");
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(mut d) = slot.daemon.take() else {
                continue;
            };
            match exit_within(&mut d, Duration::from_secs(10)).await {
                Some(s) if s.success() => {}
                status => unclean.push(format!("daemon {i} (pid {}): {status:?}", d.pid())),
            }
            slot.base = None;
        }
        unclean
    }
}

/// The listeners among `bases` whose `/readyz` answers 200.
async fn ready(bases: Vec<String>) -> Vec<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut out = Vec::new();
    for base in bases {
        let answer = http.get(format!("{base}/readyz")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            out.push(base);
        }
    }
    out
}

/// The listener's address from a daemon's log, once it is there.
fn listener_of(log: &str) -> Option<String> {
    let rest = log.split("HTTP listener ready bound=").nth(1)?;
    Some(format!("http://{}", rest.split_whitespace().next()?))
}

/// Waits for the process to exit, at most `within`; its status.
pub async fn exit_within(d: &mut Daemon, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
