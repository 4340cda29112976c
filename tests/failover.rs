//! Through a primary failover (SPEC §11, issue 25): two or three `assignd
//! run` reach a PostgreSQL primary with a real streaming replica through a
//! TCP proxy, the address that moves (`support/replica.rs`), in front of
//! one rate-limited sandbox; a backlog drains at the limit, and in the
//! middle:
//!
//! - **direct** (the baseline): no fault, the daemons straight to the
//!   primary;
//! - **PgBouncer restart**: the daemons reach the primary through a real
//!   PgBouncer in transaction mode (`support/pgbouncer.rs`), which is
//!   killed (every client and server connection drops) and started again
//!   on the same port 1 s later;
//! - **VIP move** (synchronous replica, three daemons): the primary is
//!   killed (SIGKILL of every process of it), the replica promoted, and the
//!   proxy switched, dropping every connection, as a virtual IP's move does;
//! - **read-only old primary** (synchronous replica): the primary is
//!   fenced read-only (`default_transaction_read_only`, reloaded: open
//!   sessions stay, every write fails with SQLSTATE 25006), the replica
//!   promoted once it replayed everything; for 2 s new connections still
//!   reach the old server (a stale DNS answer), then the proxy switches
//!   and the old connections stay on the read-only server;
//! - **lag** (asynchronous replica): the replica is cut off 2 s before the
//!   kill, so the promotion loses the last commits the primary
//!   acknowledged (outcomes, claims, intents, budget steps).
//!
//! Each asserts that every daemon assigns again within 10 s of the
//! promotion (or the restart), that every chat ends assigned, none by two agents, no 429,
//! and runs the nemesis's checker (`support/nemesis_check.rs`) over the
//! history. Figures: `cargo test --test failover -- --nocapture`.

#[path = "support/nemesis_check.rs"]
mod check;
mod common;
#[allow(dead_code)] // The harness of tests/cluster.rs; its limits are used here.
#[path = "support/cluster.rs"]
mod pg_cluster;
#[path = "support/pgbouncer.rs"]
mod pgbouncer;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/replica.rs"]
mod replica;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use check::{Call, Drain, History, Kind, Outcome, Row};
use common::*;
use pg_cluster::{EDGE, PER, limited};
use pgbouncer::Bouncer;
use replica::{Pair, Proxy, Replication, Server};

const CHATS: i64 = 100;
const LIMIT: u32 = 30;
/// PUTs before the fault.
const FAULT_AT: usize = 30;
/// How long the old primary goes on alone in [`Fault::Lag`].
const LAG: Duration = Duration::from_secs(2);
/// How long new connections still reach the old primary in
/// [`Fault::ReadOnly`].
const STALE_DNS: Duration = Duration::from_secs(2);
/// How long PgBouncer is down in [`Fault::PgBouncerRestart`].
const BOUNCER_DOWN: Duration = Duration::from_secs(1);

/// One failover at a time: each is two servers, 2-3 daemons and a sandbox
/// at its limit, paced to a 3-s window.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// None: the baseline.
    Direct,
    PgBouncerRestart,
    VipMove,
    ReadOnly,
    Lag,
}

/// What a run saw, for the assertions and the figures.
struct Seen {
    figures: Figures,
    /// Chats with more than one applied PUT, and with two agents.
    twice: usize,
    two_agents: Vec<i64>,
    /// Chats without an assignee at the end.
    lost: Vec<i64>,
    /// Per daemon: its first assignment after the promotion (or the
    /// restart), how long after.
    resumed: Vec<Option<Duration>>,
    violations: Vec<check::Violation>,
    /// Chats found assigned already when read before a decision.
    found_assigned: BTreeSet<i64>,
    /// `assignd_database_promotions_total`, `assignd_database_read_only_total`,
    /// and the episodes logged, per daemon.
    metrics: Vec<(f64, f64, usize)>,
    max_attempts: i64,
    dead: i64,
}

/// The baseline the faults are measured against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straight_to_the_primary_nothing_is_lost() {
    lossless(Fault::Direct, 2, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_restart_mid_backlog_loses_nothing() {
    lossless(Fault::PgBouncerRestart, 2, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_lose_nothing_through_a_vip_move_to_a_synchronous_replica() {
    lossless(Fault::VipMove, 3, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_left_on_a_read_only_old_primary_are_dropped() {
    let Some(seen) = failover(Fault::ReadOnly, 2).await else {
        return;
    };
    assert_clean(&seen);
    for (i, (promotions, read_only, episodes)) in seen.metrics.iter().enumerate() {
        assert_eq!(*promotions, 1.0, "daemon {i} saw the promotion once");
        assert!(
            *read_only > 0.0,
            "daemon {i} counted its read-only errors and refusals"
        );
        assert_eq!(*episodes, 1, "daemon {i} logged the read-only episode once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_loses_outcomes_but_no_chat_goes_to_two_agents() {
    let Some(seen) = failover(Fault::Lag, 2).await else {
        return;
    };
    assert_safe(&seen);
    assert_eq!(
        seen.twice, 0,
        "no chat PUT twice: a chat whose outcome was lost is read before it is decided again"
    );
    // An assignment whose outcome the promotion lost shows as a change
    // without an outcome; the chat was read again and found assigned.
    let (lost_outcomes, other): (Vec<_>, Vec<_>) = seen.violations.iter().partition(|v| {
        v.kind == Kind::UnrecordedChange && v.chat.is_some_and(|c| seen.found_assigned.contains(&c))
    });
    assert!(
        other.is_empty(),
        "the checker, besides outcomes lost with the commits:\n{}",
        check::summary(&seen.violations)
    );
    println!(
        "assignments whose outcome was lost with the old primary's last commits (the chat read \
         again and recorded as skipped): {}",
        lost_outcomes.len()
    );
}

/// A run that loses no commit, clean, each daemon having seen
/// `promotions`.
async fn lossless(fault: Fault, daemons: usize, promotions: f64) {
    let Some(seen) = failover(fault, daemons).await else {
        return;
    };
    assert_clean(&seen);
    for (i, (saw, _, _)) in seen.metrics.iter().enumerate() {
        assert_eq!(*saw, promotions, "daemon {i} saw {promotions} promotions");
    }
}

/// What every setup guarantees.
fn assert_safe(seen: &Seen) {
    assert!(
        seen.lost.is_empty(),
        "chats never assigned: {:?}",
        seen.lost
    );
    assert!(
        seen.two_agents.is_empty(),
        "chats assigned to two agents: {:?}",
        seen.two_agents
    );
    assert_eq!(seen.figures.rejected, 0, "no 429 from the sandbox");
    assert_eq!(seen.dead, 0, "no row dead-lettered");
    for (i, resumed) in seen.resumed.iter().enumerate() {
        let after = resumed.unwrap_or_else(|| panic!("daemon {i} never assigned again"));
        assert!(
            after <= Duration::from_secs(10),
            "daemon {i} assigned again {after:?} after the fault; within 10 s expected"
        );
    }
}

/// What a failover that loses no commit guarantees besides: no chat PUT
/// twice, no attempt counted for the database's fault, and the checker
/// finds nothing.
fn assert_clean(seen: &Seen) {
    assert_safe(seen);
    assert_eq!(seen.twice, 0, "no chat PUT twice");
    assert!(
        seen.max_attempts <= 1,
        "a row's attempt was counted for the database's fault: {} attempts",
        seen.max_attempts
    );
    assert!(
        seen.violations.is_empty(),
        "the checker:\n{}",
        check::summary(&seen.violations)
    );
}

/// The whole run: servers, proxy, daemons, backlog, the fault, the drain,
/// the clean stop, and what was seen. None where PostgreSQL (or, for
/// [`Fault::PgBouncerRestart`], PgBouncer) is missing.
async fn failover(fault: Fault, daemons: usize) -> Option<Seen> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let bin = postgres::binaries("pg_basebackup")?;
    let replication = match fault {
        Fault::Lag => Replication::Asynchronous,
        _ => Replication::Synchronous,
    };
    let pair = Pair::start(&bin, &format!("{fault:?}"), replication).await;
    let proxy = Proxy::start(pair.primary.port).await;
    let mut bouncer = match fault {
        Fault::PgBouncerRestart => Some(pgbouncer::start(pair.primary.port, "")?),
        _ => None,
    };
    // A short row lease: a row whose claim survived a lossy failover but
    // whose settlement did not comes back when its lease runs out.
    let app = limited(TestApp::builder().listen(), LIMIT)
        .worker("lease = \"15s\"")
        .build()
        .await;
    let primary = pair.primary.url("assignd");
    match (&bouncer, fault) {
        (Some(b), _) => pgbouncer::through(&app, b, &primary),
        (None, Fault::Direct) => app.use_database(&primary),
        _ => app.use_database(&format!(
            "postgres://postgres@127.0.0.1:{}/assignd",
            proxy.port
        )),
    }
    let mut daemons: Vec<Daemon> = (1..=daemons)
        .map(|i| app.spawn_guarded(&format!("d{i}.log")))
        .collect();
    let before = pool(&pair.primary).await;
    wait_live(&before, &mut daemons).await;
    sqlx::query("INSERT INTO queue (chat_id) SELECT g FROM generate_series(1, $1::BIGINT) AS g")
        .bind(CHATS)
        .execute(&before)
        .await
        .unwrap();
    let since = Instant::now();
    while puts(&app.sandbox).len() < FAULT_AT {
        assert!(since.elapsed() < Duration::from_secs(30), "no PUTs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    before.close().await;
    let promoted = strike(fault, &pair, &proxy, bouncer.as_mut()).await;
    let after = match fault {
        Fault::Direct | Fault::PgBouncerRestart => pool(&pair.primary).await,
        _ => pool(&pair.replica).await,
    };
    let drain = drain(&after, &app, &daemons).await;
    let metrics = metrics(&app, &daemons).await;
    let unclean = stop(&mut daemons);
    let history = history(&app, &after, drain, unclean).await;
    let seen = observe(&app, &after, &daemons, promoted, history, metrics).await;
    print(fault, &seen);
    Some(seen)
}

/// Per daemon: promotions seen, read-only errors, read-only episodes logged.
async fn metrics(app: &TestApp, daemons: &[Daemon]) -> Vec<(f64, f64, usize)> {
    let mut metrics = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        let scraped = scrape(app, &format!("d{}.log", i + 1)).await;
        let episodes = d
            .log_text()
            .matches("closing every connection opened before now")
            .count();
        metrics.push((
            scraped("assignd_database_promotions_total"),
            scraped("assignd_database_read_only_total"),
            episodes,
        ));
    }
    metrics
}

/// The fault; returns when the replica was promoted (or PgBouncer back,
/// or, without a fault, now), on the wall clock.
async fn strike(
    fault: Fault,
    pair: &Pair,
    proxy: &Proxy,
    bouncer: Option<&mut Bouncer>,
) -> jiff::Timestamp {
    match fault {
        Fault::Direct => return jiff::Timestamp::now(),
        Fault::PgBouncerRestart => {
            let down = Instant::now();
            // On the test's own thread: the sandbox runs on the workers.
            bouncer.expect("a PgBouncer").restart(BOUNCER_DOWN);
            println!(
                "{fault:?}: PgBouncer back {:?} after the kill",
                down.elapsed()
            );
            return jiff::Timestamp::now();
        }
        Fault::VipMove => pair.primary.kill9(),
        Fault::ReadOnly => pair.fence_primary().await,
        Fault::Lag => {
            pair.cut_replica().await;
            tokio::time::sleep(LAG).await;
            pair.primary.kill9();
        }
    }
    let down = Instant::now();
    // pg_ctl waits: not on a thread the sandbox and the proxy run on.
    tokio::task::block_in_place(|| pair.promote());
    println!(
        "{fault:?}: the replica promoted {:?} after the primary went down",
        down.elapsed()
    );
    let promoted = jiff::Timestamp::now();
    if fault == Fault::ReadOnly {
        tokio::time::sleep(STALE_DNS).await;
    }
    proxy.switch(pair.replica.port, fault != Fault::ReadOnly);
    promoted
}

async fn pool(server: &Server) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&server.url("assignd"))
        .await
        .unwrap()
}

async fn int(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db)
        .await
        .unwrap_or(-1)
}

/// Waits until every daemon has a fresh heartbeat and one leads.
async fn wait_live(db: &PgPool, daemons: &mut [Daemon]) {
    let since = Instant::now();
    loop {
        for (i, d) in daemons.iter_mut().enumerate() {
            d.assert_running(&format!("daemon {i} while starting"));
        }
        let live = int(
            db,
            "SELECT COUNT(*) FROM daemons WHERE heartbeat_at > assignd_now_ms() - 2000",
        )
        .await;
        let led = int(
            db,
            "SELECT COUNT(*) FROM leases WHERE name = 'leader' AND expires_at > assignd_now_ms()",
        )
        .await;
        if live == daemons.len() as i64 && led == 1 {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the daemons should register and one lead within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no row is pending or leased on the new primary.
async fn drain(db: &PgPool, app: &TestApp, daemons: &[Daemon]) -> Drain {
    const BOUND: Duration = Duration::from_secs(60);
    let since = Instant::now();
    loop {
        let active = int(
            db,
            "SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'leased')",
        )
        .await;
        if active == 0 || since.elapsed() > BOUND {
            let tails: String = daemons
                .iter()
                .map(|d| {
                    let log = d.log_text();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    format!("--- {}\n{}\n", d.log.display(), tail.join("\n"))
                })
                .collect();
            let f = figures(&app.sandbox, LIMIT, PER, EDGE);
            return Drain {
                bound: BOUND,
                why: "the backlog at the limit, after the fault".into(),
                took: (active == 0).then(|| since.elapsed()),
                left: format!("{active} rows active; {f:?}\n{tails}"),
                last_row: int(db, "SELECT COALESCE(MAX(id), 0) FROM queue").await,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A reader of one daemon's `/metrics`: a sample's value, or -1.
async fn scrape(app: &TestApp, log: &str) -> impl Fn(&str) -> f64 + use<> {
    let addr = app.listener_addr(log).await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    move |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(-1.0)
    }
}

/// SIGTERM to each daemon; those that did not exit 0 within 10 s.
fn stop(daemons: &mut [Daemon]) -> Vec<String> {
    daemons
        .iter_mut()
        .enumerate()
        .filter_map(|(i, d)| {
            let status = terminate(&mut d.child, Duration::from_secs(10));
            (!status.success()).then(|| format!("daemon {i}: {status}"))
        })
        .collect()
}

/// What the checker reads: the sandbox's record and the new primary's rows.
async fn history(app: &TestApp, db: &PgPool, drain: Drain, unclean: Vec<String>) -> History {
    let requests = app.sandbox.requests();
    let epoch = requests
        .first()
        .map_or_else(Instant::now, |r| r.received - r.at);
    let outcomes: Vec<Outcome> = sqlx::query_as(
        "SELECT id, chat_id AS chat, agent_id, result, route, reason FROM outcomes ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, chat_id AS chat, state, last_error, lease_owner FROM queue ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    History {
        epoch,
        puts: app.sandbox.put_history(),
        closes: app.sandbox.closes(),
        calls: requests.iter().map(Call::from).collect(),
        outcomes,
        rows,
        outbox_leased: Vec::new(),
        enqueued: (1..=CHATS).map(|c| (c, "the producer".into())).collect(),
        requests: LIMIT as usize,
        per: PER,
        caps: HashMap::new(),
        drain,
        unclean_stops: unclean,
    }
}

/// The figures and what the assertions look at.
async fn observe(
    app: &TestApp,
    db: &PgPool,
    daemons: &[Daemon],
    promoted: jiff::Timestamp,
    history: History,
    metrics: Vec<(f64, f64, usize)>,
) -> Seen {
    let mut agents: BTreeMap<i64, BTreeSet<Option<i64>>> = BTreeMap::new();
    let mut applied: BTreeMap<i64, usize> = BTreeMap::new();
    for p in history.puts.iter().filter(|p| p.applied.is_some()) {
        agents.entry(p.chat).or_default().insert(p.assignee);
        *applied.entry(p.chat).or_default() += 1;
    }
    let found_assigned = history
        .outcomes
        .iter()
        .filter(|o| o.result == "skipped")
        .filter(|o| {
            o.reason
                .as_deref()
                .is_some_and(|r| r.contains("already assigned"))
        })
        .map(|o| o.chat)
        .collect();
    let resumed = daemons
        .iter()
        .map(|d| first_assignment_after(&d.log_text(), promoted))
        .collect();
    Seen {
        figures: figures(&app.sandbox, LIMIT, PER, EDGE),
        twice: applied.values().filter(|n| **n > 1).count(),
        two_agents: agents
            .iter()
            .filter(|(_, a)| a.len() > 1)
            .map(|(c, _)| *c)
            .collect(),
        lost: (1..=CHATS)
            .filter(|c| app.sandbox.assignee(*c).is_none())
            .collect(),
        resumed,
        violations: check::check(&history),
        found_assigned,
        metrics,
        max_attempts: int(db, "SELECT COALESCE(MAX(attempts), 0)::BIGINT FROM queue").await,
        dead: int(db, "SELECT COUNT(*) FROM queue WHERE state = 'dead'").await,
    }
}

/// How long after `promoted` a daemon's log first shows an assignment.
fn first_assignment_after(log: &str, promoted: jiff::Timestamp) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains("outcome") && l.contains("result=\"assigned\""))
        .filter_map(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .find(|t| *t > promoted)
        .map(|t| Duration::from_millis((t.as_millisecond() - promoted.as_millisecond()) as u64))
}

fn print(fault: Fault, seen: &Seen) {
    let f = &seen.figures;
    let n = seen.resumed.len();
    f.print(&format!("{fault:?}, {n} daemons"), LIMIT, PER);
    println!(
        "{fault:?}, {n} daemons: {CHATS} chats, {} answered 429, {} PUT more than once, {} to two agents, {} \
         never assigned; longest gap between PUTs {:.2}s; assigning again after the fault: \
         {:?}; per daemon (promotions seen, read-only errors, episodes logged): {:?}; highest \
         attempts {}",
        f.rejected,
        seen.twice,
        seen.two_agents.len(),
        seen.lost.len(),
        f.gap.as_secs_f64(),
        seen.resumed,
        seen.metrics,
        seen.max_attempts
    );
}
