//! Several daemons on one database (SPEC §11), as real processes: three
//! `assignd run` on one PostgreSQL database in front of one rate-limited
//! sandbox (one budget, one rotation, one leader), SIGKILL of the leader and
//! of random daemons, SIGSTOP of the leader inside the shared routing lock,
//! and a second daemon on one SQLite file (a standby). The harness is in
//! `support/cluster.rs`.
//!
//! Every test prints its figures: `cargo test --test cluster -- --nocapture`.
//!
//! The figures (busiest window, steady share of the limit, repeats,
//! longest gap between PUTs) come from what the sandbox recorded; see
//! `common::Figures` for exactly how each is computed.

mod common;
#[path = "support/cluster.rs"]
mod pg_cluster;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use pg_cluster::*;
use rand::RngExt;

/// Three daemons drain 300 chats through one budget: no 429, every chat
/// PUT once, never more than the limit in any window, ≥ 97% of it used,
/// and the round-robin rotation as even as if one daemon had done it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_one_budget_and_one_rotation() {
    const CHATS: i64 = 300;
    const LIMIT: u32 = 30;
    let Some(c) = Cluster::start(3, LIMIT).await else {
        return;
    };
    c.enqueue(CHATS).await;
    let took = c.wait_drained(Duration::from_secs(90)).await;
    let f = figures(&c.app.sandbox, LIMIT, PER, EDGE);
    f.print("3 daemons, 300 chats", LIMIT, PER);
    let mut per_agent: BTreeMap<&str, usize> = ABC.iter().map(|(n, _)| (*n, 0)).collect();
    for chat in 1..=CHATS {
        let agent = c.app.sandbox.assignee(chat);
        let name = ABC
            .iter()
            .find(|(_, id)| Some(*id) == agent)
            .map(|(n, _)| *n);
        *per_agent.entry(name.unwrap_or("nobody")).or_default() += 1;
    }
    let by_daemon = c.assigned_by_daemon();
    println!(
        "drained in {took:?}; chats per agent {per_agent:?}; assigned per daemon {by_daemon:?}"
    );

    assert_eq!(
        f.rejected,
        0,
        "no 429 from the sandbox\n{}",
        c.report().await
    );
    assert_eq!(f.chats_put, CHATS as usize, "every chat PUT");
    assert_eq!(f.repeats, 0, "no chat PUT twice (worst: {} PUTs)", f.worst);
    assert_eq!(
        c.int("SELECT COUNT(*) FROM queue WHERE state = 'done'")
            .await,
        CHATS,
        "every row done"
    );
    assert!(
        f.busiest <= LIMIT as usize,
        "together the daemons sent {} requests in one {PER:?} window; the limit is {LIMIT}: {:?}",
        f.busiest,
        f.over
    );
    assert!(
        f.steady_share >= 0.97,
        "together the daemons used {:.1}% of the limit over the steady drain; at least 97% expected; \
         slots forfeited (sent too late) per daemon: {:?}",
        f.steady_share * 100.0,
        c.forfeited_by_daemon()
    );
    let (min, max) = (per_agent.values().min(), per_agent.values().max());
    assert!(
        max.unwrap() - min.unwrap() <= 1 && per_agent.get("nobody").is_none_or(|n| *n == 0),
        "round-robin across daemons should spread 300 chats evenly (max - min <= 1): {per_agent:?}"
    );
    assert!(
        by_daemon.values().all(|n| *n > 0),
        "all three daemons should take part in the drain: {by_daemon:?}"
    );
    let (_, leader, _) = c.leader().await.expect("a leader");
    wait_status(&c.app, &c.pids(), leader as u32, "leader").await;
}

/// SIGKILL of the leader mid-backlog: another daemon leads within 5 s, the
/// dead one's rows come back, every chat ends done, at most one repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_5s() {
    const CHATS: i64 = 200;
    const LIMIT: u32 = 30;
    let Some(mut c) = draining(3, LIMIT, CHATS, 50).await else {
        return;
    };
    let (owner, pid, epoch) = c.leader().await.expect("a leader before the kill");
    let i = c
        .daemons
        .iter()
        .position(|d| i64::from(d.pid()) == pid)
        .unwrap_or_else(|| panic!("the leader's pid {pid} is none of ours: {:?}", c.pids()));
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue WHERE lease_owner = $1")
        .bind(&owner)
        .fetch_one(&c.db)
        .await
        .unwrap();
    let killed_at = Instant::now();
    c.daemons[i].kill9();
    let mut new_leader = None;
    let mut rows_back = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        if new_leader.is_none()
            && let Some((o, p, e)) = c.leader().await.filter(|l| l.0 != owner)
        {
            new_leader = Some((o, p, e, killed_at.elapsed()));
        }
        let still: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM queue WHERE state = 'leased' AND lease_owner = $1",
        )
        .bind(&owner)
        .fetch_one(&c.db)
        .await
        .unwrap();
        if rows_back.is_none() && still == 0 {
            rows_back = Some(killed_at.elapsed());
        }
        if new_leader.is_some() && rows_back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.daemons.remove(i);
    // Its rows come back as their leases run out, a lease after the kill.
    let drained = c.wait_drained(LEASE + Duration::from_secs(30)).await;
    let f = figures(&c.app.sandbox, LIMIT, PER, EDGE);
    f.print("leader killed", LIMIT, PER);
    let first_after = puts(&c.app.sandbox)
        .iter()
        .find(|p| p.received > killed_at)
        .map(|p| p.received - killed_at);
    println!(
        "killed the leader (pid {pid}, epoch {epoch}, {held} rows leased); new leader {:?}; \
         its rows back after {rows_back:?}; first PUT after the kill {first_after:?}; drained \
         {drained:?} later",
        new_leader
            .as_ref()
            .map(|(_, p, e, t)| format!("pid {p} epoch {e} after {t:?}"))
    );

    let Some((_, new_pid, new_epoch, took)) = new_leader else {
        panic!(
            "no other daemon led within 15 s of the leader's death\n{}",
            c.report().await
        );
    };
    assert!(
        took <= Duration::from_secs(5),
        "a new leader after {took:?}; at most 5 s"
    );
    assert!(
        new_epoch > epoch,
        "the fencing epoch grows: {epoch} -> {new_epoch}"
    );
    assert!(
        rows_back.is_some_and(|t| t <= Duration::from_secs(8)),
        "the dead leader's leased rows should be taken back within ~5 s (8 s allowed): {rows_back:?}"
    );
    assert_eq!(
        c.int("SELECT COUNT(*) FROM queue WHERE state = 'done'")
            .await,
        CHATS,
        "every chat ends done\n{}",
        c.report().await
    );
    after_one_kill(&f, CHATS);
    assert!(
        f.gap <= Duration::from_secs(5),
        "the PUTs paused {:?}",
        f.gap
    );
    wait_status(&c.app, &c.pids(), new_pid as u32, "leader").await;
}

/// kill -9 of random daemons of a trio, each restarted, 24 times while a
/// backlog drains: nothing lost, nothing left leased, nothing over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_of_random_daemons_loses_nothing() {
    const CHATS: i64 = 500;
    const LIMIT: u32 = 60;
    const KILLS: usize = 24;
    let Some(mut c) = draining(3, LIMIT, CHATS, 10).await else {
        return;
    };
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut killed_leaders = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1100))).await;
        let i = rng.random_range(0..c.daemons.len());
        let leader = c.leader().await.map(|l| l.1);
        if leader == Some(i64::from(c.daemons[i].pid())) {
            killed_leaders += 1;
        }
        c.daemons[i].kill9();
        c.daemons[i] = c.spawn();
    }
    let left = c.active().await;
    println!(
        "{KILLS} kills ({killed_leaders} of the leader) in {:?}; {left} chats still queued after the last",
        started.elapsed()
    );
    assert!(left > 0, "the kills must land while the backlog drains");
    // The last daemon killed may have claimed a row just before: it comes
    // back when that lease runs out, a full lease after the kill.
    let drained = c.wait_drained(LEASE + Duration::from_secs(30)).await;
    let f = figures(&c.app.sandbox, LIMIT, PER, EDGE);
    f.print(&format!("{KILLS} kills"), LIMIT, PER);
    println!(
        "drained {drained:?} after the last kill; assigned per daemon {:?}",
        c.assigned_by_daemon()
    );

    let by_state: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM queue GROUP BY state ORDER BY state")
            .fetch_all(&c.db)
            .await
            .unwrap();
    assert_eq!(
        by_state,
        vec![("done".to_string(), CHATS)],
        "every chat done, none left leased, pending or dead"
    );
    for chat in 1..=CHATS {
        assert!(
            c.app.sandbox.assignee(chat).is_some(),
            "chat {chat} unassigned"
        );
    }
    assert!(
        f.repeats <= KILLS,
        "at most one repeated PUT per kill: {} repeats",
        f.repeats
    );
    assert_eq!(f.rejected, 0, "no 429 across restarts");
    assert!(f.busiest <= LIMIT as usize, "busiest window: {:?}", f.over);
    c.wait_live(3).await;
}

/// SQLite: a second daemon on the same file waits as a standby (no PUT, no
/// 429, a warning naming the holder); after kill -9 of the first it takes
/// over at once and drains the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_second_daemon_stands_by_then_takes_over() {
    const CHATS: i64 = 120;
    const LIMIT: u32 = 30;
    // A chat whose call was on its way at the kill is read a lease after
    // that call: a short lease keeps the drain short.
    const SHORT_LEASE: Duration = Duration::from_secs(10);
    let app = limited(TestApp::builder(), LIMIT)
        .worker(&format!("lease = \"{}s\"", SHORT_LEASE.as_secs()))
        .migrated()
        .await;
    app.insert_raw(1..=CHATS).await;
    let mut first = app.spawn_guarded("first.log");
    wait_until(
        Duration::from_secs(15),
        || format!("the first daemon assigns nothing: {}", app.log("first.log")),
        || puts(&app.sandbox).len() >= 5,
    )
    .await;
    let mut second = app.spawn_guarded("second.log");
    wait_until(
        Duration::from_secs(10),
        || {
            format!(
                "the second daemon should log that it waits as a standby: {}",
                app.log("second.log")
            )
        },
        || app.log("second.log").contains("standby"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.assert_running("the standby");
    first.assert_running("the first daemon");
    let f = figures(&app.sandbox, LIMIT, PER, EDGE);
    f.print("SQLite, both daemons up", LIMIT, PER);
    let standby_log = app.log("second.log");
    let warning = standby_log
        .lines()
        .find(|l| l.contains("standby"))
        .unwrap_or_default()
        .to_string();
    println!("the standby says: {warning}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_contains(
        &warning,
        &[host.trim(), &format!("pid {}", first.pid()), "since"],
    );
    assert_eq!(
        assigned_in_log(&standby_log),
        0,
        "the standby assigned: {standby_log}"
    );
    assert_eq!(
        f.repeats, 0,
        "the standby must not PUT a chat the holder PUT"
    );
    assert_eq!(
        f.rejected, 0,
        "no 429: the standby must not spend the budget"
    );
    assert!(f.busiest <= LIMIT as usize, "busiest window: {:?}", f.over);
    let status = wait_status(&app, &[first.pid(), second.pid()], first.pid(), "holder").await;
    println!("status listed both daemons, the first as holder, after {status:?}");

    let done_before = puts(&app.sandbox).len();
    let owner: Option<String> = {
        let pool = app.producer().await;
        let o = sqlx::query_scalar("SELECT owner FROM daemons WHERE pid = ?")
            .bind(i64::from(first.pid()))
            .fetch_optional(&pool)
            .await
            .unwrap();
        pool.close().await;
        o
    };
    let killed_at = Instant::now();
    first.kill9();
    let mut rows_back = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        let mine = owner
            .as_ref()
            .map_or(String::new(), |o| format!(" AND lease_owner = '{o}'"));
        let held = app
            .count(&format!("queue WHERE state = 'leased'{mine}"))
            .await;
        if held == 0 {
            rows_back = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_drained(SHORT_LEASE + Duration::from_secs(30))
        .await;
    let takeover = puts(&app.sandbox)
        .iter()
        .find(|p| p.received > killed_at)
        .map(|p| p.received - killed_at);
    let f = figures(&app.sandbox, LIMIT, PER, EDGE);
    f.print("SQLite, after the takeover", LIMIT, PER);
    println!(
        "{done_before} PUTs before the kill; first PUT by the standby {takeover:?} after it; \
         the dead holder's rows back after {rows_back:?}"
    );
    second.assert_running("the new holder");
    assert!(
        takeover.is_some_and(|t| t <= Duration::from_secs(3)),
        "the standby should take over within ~1-2 s of kill -9 (3 s allowed): {takeover:?}\n{}",
        app.log("second.log")
    );
    assert_eq!(
        app.count("queue WHERE state = 'done'").await,
        CHATS,
        "every chat done"
    );
    after_one_kill(&f, CHATS);
    assert!(f.busiest <= LIMIT as usize, "busiest window: {:?}", f.over);
    wait_status(&app, &[second.pid()], second.pid(), "holder").await;
}

/// A daemon that hangs (SIGSTOP: a VM pause, a partition that keeps its
/// connections open) at the worst moment, inside the shared routing lock,
/// must stall nobody: the others keep assigning, another leads within 5 s,
/// and once it resumes it steps down and its stale rows cost at most a
/// repeat each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_leader_stalls_nobody() {
    const LIMIT: u32 = 30;
    let Some(c) = Cluster::start(3, LIMIT).await else {
        return;
    };
    c.enqueue(250).await;
    c.wait_puts(30).await;
    let (owner, pid, epoch) = c.leader().await.expect("a leader");
    // Stop the leader at the worst moment: while it holds the routing lock
    // (pg_advisory_xact_lock 1095976773), seen as the same backend holding
    // it 100 ms later; a healthy daemon holds it for a few ms.
    let holder = async || -> Option<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
              AND classid = 0 AND objid = 1095976773",
        )
        .fetch_optional(&c.db)
        .await
        .ok()
        .flatten()
    };
    // SAFETY: kill only sends a signal to the daemon this test started.
    let stop = |sig| unsafe { libc::kill(pid as i32, sig) };
    let mut rng = rand::rng();
    let (mut caught, mut tries) = (false, 0);
    while !caught && tries < 400 {
        tries += 1;
        stop(libc::SIGSTOP);
        if let Some(backend) = holder().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            caught = holder().await == Some(backend);
        }
        if !caught {
            stop(libc::SIGCONT);
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        }
    }
    stop(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let mut new_leader = None;
    while stopped_at.elapsed() < Duration::from_secs(8) {
        if new_leader.is_none()
            && let Some(l) = c.leader().await.filter(|l| l.0 != owner)
        {
            new_leader = Some((l.1, l.2, stopped_at.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = puts(&c.app.sandbox)
        .iter()
        .filter(|p| p.received > stopped_at)
        .count();
    stop(libc::SIGCONT);
    c.wait_drained(Duration::from_secs(60)).await;
    let f = figures(&c.app.sandbox, LIMIT, PER, EDGE);
    f.print("hung leader", LIMIT, PER);
    println!(
        "leader pid {pid} (epoch {epoch}) stopped for 8 s, {} the routing lock (try {tries}); \
         new leader (pid, epoch, after) {new_leader:?}; {during} PUTs by the others meanwhile",
        if caught {
            "inside"
        } else {
            "NOT caught inside"
        }
    );
    assert!(
        during >= 40,
        "while one daemon hangs the others should keep assigning (~{} PUTs in 8 s); {during} \
         PUTs: a hung daemon holding the routing lock stalls every daemon",
        8 * LIMIT / PER.as_secs() as u32
    );
    let (_, new_epoch, took) = new_leader.expect("another daemon leads");
    assert!(
        took <= Duration::from_secs(5),
        "a new leader after {took:?}"
    );
    assert!(new_epoch > epoch);
    assert!(
        f.repeats <= 4,
        "at most the hung daemon's rows in flight: {}",
        f.repeats
    );
    assert_eq!(f.rejected, 0, "no 429");
    let resumed = c.leader().await.map(|l| l.1);
    assert_ne!(resumed, Some(pid), "the resumed daemon must not lead");
}

/// `daemons` daemons on one database with `chats` enqueued, once the
/// first `puts` PUTs are seen; `None` when PostgreSQL is not installed.
async fn draining(daemons: usize, limit: u32, chats: i64, puts: usize) -> Option<Cluster> {
    let c = Cluster::start(daemons, limit).await?;
    c.enqueue(chats).await;
    c.wait_puts(puts).await;
    Some(c)
}

/// After one kill: every chat PUT, at most one of them twice (the call in
/// flight at the kill), and never a 429.
fn after_one_kill(f: &Figures, chats: i64) {
    assert_eq!(f.chats_put, chats as usize, "every chat PUT");
    assert!(
        f.repeats <= 1,
        "at most one repeated PUT for one kill: {}",
        f.repeats
    );
    assert_eq!(f.rejected, 0, "no 429");
}
