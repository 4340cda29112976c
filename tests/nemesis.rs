//! The nemesis (issue 21): a standing, seeded chaos campaign in the spirit
//! of Jepsen. Real `assignd run` processes (one on SQLite with a standby;
//! two and three on PostgreSQL) work a stream of chats from producers of
//! every kind, while a nemesis drawn from a seed kills, stops, restarts
//! and reloads them, restarts the database, sends agents away, and makes
//! the sandbox HelpCrunch late, throttled and unreliable. Afterwards a
//! checker reads the sandbox's history and the database and fails on any
//! breach of SPEC §15. See docs/nemesis.md.
//!
//! `ASSIGND_NEMESIS_SEED=N` replays a seed (`random` draws one);
//! `ASSIGND_NEMESIS_SECS=S` sets the length of the chaos (40 s by default).

#[path = "support/nemesis_act.rs"]
mod act;
#[path = "support/nemesis_check.rs"]
mod check;
#[path = "support/nemesis_check_tests.rs"]
mod check_tests;
mod common;
#[path = "support/nemesis_plan.rs"]
mod plan;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/nemesis_run.rs"]
mod run;
#[path = "support/nemesis_sandbox_tests.rs"]
mod sandbox_tests;
#[path = "support/nemesis_traffic.rs"]
mod traffic;
#[path = "support/nemesis_world.rs"]
mod world;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use plan::{Topology, plan, setup};
use world::{Cast, Stage};

/// One SQLite daemon and its standby, taken over again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_sqlite_with_a_standby() {
    campaign("nemesis_sqlite_with_a_standby", Topology::SqliteStandby, 5).await;
}

/// Two daemons on PostgreSQL, with database restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_two_daemons_on_postgres() {
    campaign("nemesis_two_daemons_on_postgres", Topology::Postgres(2), 2).await;
}

/// Three daemons on PostgreSQL, with database restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_three_daemons_on_postgres() {
    campaign(
        "nemesis_three_daemons_on_postgres",
        Topology::Postgres(3),
        3,
    )
    .await;
}

/// Campaigns run one at a time: each is several daemons (and a database
/// server) on a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The seed: `ASSIGND_NEMESIS_SEED` (a number, or `random`), else `ci`.
fn seed(ci: u64) -> u64 {
    match std::env::var("ASSIGND_NEMESIS_SEED") {
        Ok(s) if s == "random" => rand::random(),
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ASSIGND_NEMESIS_SEED={s}: a number, or `random`")),
        Err(_) => ci,
    }
}

/// The chaos's length: `ASSIGND_NEMESIS_SECS`, else 40 s.
fn span() -> Duration {
    let secs = std::env::var("ASSIGND_NEMESIS_SECS").map_or(40, |s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("ASSIGND_NEMESIS_SECS={s}: a number of seconds"))
    });
    Duration::from_secs(secs)
}

async fn campaign(name: &str, topology: Topology, ci_seed: u64) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let began = Instant::now();
    let (seed, span) = (seed(ci_seed), span());
    let replay =
        format!("ASSIGND_NEMESIS_SEED={seed} cargo test --test nemesis {name} -- --nocapture");
    let (setup, steps) = (setup(seed), plan(seed, topology, span));
    println!("nemesis {name}: seed {seed}, {span:?} of chaos, {setup:?}; replay: {replay}");
    for s in &steps {
        println!("  plan +{:5.2}s {:?}", s.at.as_secs_f64(), s.action);
    }
    let Some(stage) = Stage::new(topology, setup, span + Duration::from_secs(60)).await else {
        return;
    };
    let mut cast = Cast::start(&stage).await;
    let (stop_producing, stop_churn) = (CancellationToken::new(), CancellationToken::new());
    let hurry = AtomicBool::new(false);
    let (drain, produced, churned) = tokio::join!(
        async {
            let undos = run::chaos(&stage, &mut cast, &steps, span).await;
            stop_producing.cancel();
            cast.heal(&stage, undos).await;
            hurry.store(true, Ordering::SeqCst);
            let drain = run::drain(&stage, &mut cast).await;
            stop_churn.cancel();
            drain
        },
        traffic::produce(&stage, seed, &stop_producing),
        traffic::churn(&stage, seed, &stop_churn, &hurry),
    );
    let unclean = cast.stop_all().await;
    let history = run::collect(&stage, &produced, drain, unclean).await;
    let violations = check::check(&history);
    println!(
        "nemesis {name} seed {seed}: {:.0} s in all, {span:?} of chaos",
        began.elapsed().as_secs_f64()
    );
    print_figures(&cast, &produced, &churned, &history);
    println!("  violations: {}", violations.len());
    if !violations.is_empty() {
        let kept = keep_logs(&stage, name, seed);
        panic!(
            "nemesis {name}, seed {seed}: {} violation(s) of SPEC §15\n{}\nreplay: {replay}\n\
             daemon logs and database kept in {kept}\nthe nemesis's last actions:\n{}",
            violations.len(),
            check::summary(&violations),
            cast.log[cast.log.len().saturating_sub(30)..].join("\n"),
        );
    }
}

/// What the campaign did, and what the sandbox saw.
fn print_figures(
    cast: &Cast,
    produced: &traffic::Produced,
    churned: &traffic::Churned,
    history: &check::History,
) {
    println!(
        "  actions {:?} ({} skipped); daemons that exited by themselves: {:?}\n  \
         producers (tried, acknowledged): {:?}; {:?}\n  sandbox: {:?}\n  \
         peak open chats per agent (peak, max_open): {:?}\n  drain: {:?} (bound {:?})",
        cast.counts,
        cast.skipped,
        cast.self_exits,
        produced.tried,
        churned,
        run::figures(history),
        run::peaks(history),
        history.drain.took,
        history.drain.bound,
    );
}

/// Copies the daemons' logs (and a SQLite database) out of the temporary
/// directory, which goes when the test ends; where.
fn keep_logs(stage: &Stage, name: &str, seed: u64) -> String {
    let to = std::env::temp_dir().join(format!("assignd-nemesis-{name}-{seed}"));
    let _ = std::fs::remove_dir_all(&to);
    let _ = std::fs::create_dir_all(&to);
    for entry in std::fs::read_dir(stage.app.dir.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.is_file() {
            let _ = std::fs::copy(&path, to.join(entry.file_name()));
        }
    }
    to.display().to_string()
}
