//! The nemesis's plan: from a seed, which faults strike and when, and the
//! rules the daemons run (with the variants a SIGHUP switches between).
//! The same seed and topology always give the same plan.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The daemons of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One daemon on a SQLite file, a second on the same file as its standby.
    SqliteStandby,
    /// This many daemons on one PostgreSQL database.
    Postgres(usize),
}

impl Topology {
    pub fn daemons(self) -> usize {
        match self {
            Topology::SqliteStandby => 2,
            Topology::Postgres(n) => n,
        }
    }
}

/// A fault of the sandbox, switched on for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SandboxFault {
    /// PUTs applied, answered after the daemons' timeout.
    LatePut,
    /// 429s with a `Retry-After` longer than the row lease.
    Throttle,
    /// Connections dropped before any work.
    Resets,
    /// Random latency before the work.
    Latency,
    /// 502/503 instead of the work.
    ServerErrors,
    /// The work done, the answer's body broken off.
    Drops,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// `kill -9` a daemon; start it again after `down`.
    Kill { daemon: usize, down: Duration },
    /// SIGSTOP a daemon; SIGCONT after `paused`.
    Pause { daemon: usize, paused: Duration },
    /// SIGTERM a daemon, wait for its exit, start it again.
    Restart { daemon: usize },
    /// Rewrite the rules as variant `variant`, SIGHUP every daemon.
    Reload { variant: usize },
    /// Stop PostgreSQL (`pg_ctl stop -m fast` or `immediate`) for `down`.
    DbOutage { down: Duration, immediate: bool },
    /// SQLite: stop the daemon that holds the file (kill -9, or SIGTERM),
    /// so that the standby takes over; start it again after `down`.
    Takeover { kill: bool, down: Duration },
    /// `assignd agent away NAME`, then `back` after `away`.
    Away { agent: usize, away: Duration },
    /// A sandbox fault for `lasting`.
    Fault {
        fault: SandboxFault,
        lasting: Duration,
    },
}

impl Action {
    /// The kind, for the figures.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Kill { .. } => "kill -9",
            Action::Pause { .. } => "SIGSTOP/SIGCONT",
            Action::Restart { .. } => "SIGTERM and restart",
            Action::Reload { .. } => "SIGHUP with changed rules",
            Action::DbOutage { .. } => "PostgreSQL restart",
            Action::Takeover { .. } => "standby takeover",
            Action::Away { .. } => "agent away and back",
            Action::Fault { fault, .. } => match fault {
                SandboxFault::LatePut => "PUT held, applied, answered after the timeout",
                SandboxFault::Throttle => "429 outliving the lease",
                SandboxFault::Resets => "connection resets",
                SandboxFault::Latency => "latency",
                SandboxFault::ServerErrors => "5xx",
                SandboxFault::Drops => "answers cut off",
            },
        }
    }

    /// How long until it is undone, if it is.
    pub fn lasts(&self) -> Option<Duration> {
        match *self {
            Action::Kill { down, .. }
            | Action::DbOutage { down, .. }
            | Action::Takeover { down, .. } => Some(down),
            Action::Pause { paused, .. } => Some(paused),
            Action::Away { away, .. } => Some(away),
            Action::Fault { lasting, .. } => Some(lasting),
            Action::Restart { .. } | Action::Reload { .. } => None,
        }
    }
}

/// What a seed sets besides the actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// `[load] refresh`: how often reconciliation races the decisions
    /// (1 s, 2 s), or how long a daemon may run on what it loaded (30 s).
    pub refresh: Duration,
}

pub fn setup(seed: u64) -> Setup {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x05e7);
    Setup {
        refresh: Duration::from_secs([1, 2, 30][rng.random_range(0..3)]),
    }
}

/// One action at `at` after the chaos began.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// The agents of the campaign's rules: (name, HelpCrunch id).
pub const AGENTS: [(&str, i64); 4] = [
    ("alice", 4188),
    ("bob", 4761),
    ("carol", 6694),
    ("dave", 2533),
];
/// `max_open` per agent, as in [`rules`]; constant across variants.
pub const MAX_OPEN: [usize; 4] = [3, 3, 2, 3];
/// alice's `max_per_hour`: low enough to bind in a campaign.
pub const ALICE_PER_HOUR: usize = 12;
/// How many rule variants [`rules`] knows.
pub const VARIANTS: usize = 4;

/// The plan for `seed`: an action every 1–3.5 s from the 2nd second to
/// `chaos` less 3 s.
pub fn plan(seed: u64, topology: Topology, chaos: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut at = Duration::from_secs(2);
    let end = chaos.saturating_sub(Duration::from_secs(3));
    while at < end {
        let action = pick(&mut rng, topology);
        steps.push(Step { at, action });
        at += Duration::from_millis(rng.random_range(1000..3500));
    }
    steps
}

fn secs(rng: &mut StdRng, from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(from..to))
}

fn pick(rng: &mut StdRng, topology: Topology) -> Action {
    let daemon = rng.random_range(0..topology.daemons());
    // Process faults, database or takeover, people, sandbox faults.
    match rng.random_range(0..100) {
        0..12 => Action::Kill {
            daemon,
            down: secs(rng, 0.5, 4.0),
        },
        12..24 => Action::Pause {
            daemon,
            paused: secs(rng, 0.5, 8.0),
        },
        24..32 => Action::Restart { daemon },
        32..40 => Action::Reload {
            variant: rng.random_range(0..VARIANTS),
        },
        40..50 => match topology {
            Topology::SqliteStandby => Action::Takeover {
                kill: rng.random_bool(0.6),
                down: secs(rng, 1.0, 5.0),
            },
            Topology::Postgres(_) => Action::DbOutage {
                down: secs(rng, 1.0, 10.0),
                immediate: rng.random_bool(0.5),
            },
        },
        50..60 => Action::Away {
            agent: rng.random_range(0..AGENTS.len()),
            away: secs(rng, 1.0, 6.0),
        },
        _ => Action::Fault {
            fault: [
                SandboxFault::LatePut,
                SandboxFault::Throttle,
                SandboxFault::Resets,
                SandboxFault::Latency,
                SandboxFault::ServerErrors,
                SandboxFault::Drops,
            ][rng.random_range(0..6)],
            lasting: secs(rng, 1.0, 5.0),
        },
    }
}

/// The rules, variant `variant` (SIGHUP switches between them): the same
/// agents and caps in each, so that every cap holds at every instant;
/// strategies, rule order, priorities and reassignment settings change.
/// `shift` is dave's `hours` value (see [`shift_hours`]).
pub fn rules(variant: usize, shift: &str) -> String {
    let (support, billing) = match variant % VARIANTS {
        1 => ("least-open", "round-robin"),
        _ => ("round-robin", "least-open"),
    };
    let (after, hops) = if variant == 2 { ("2s", 2) } else { ("3s", 1) };
    let members = if variant == 3 {
        r#""dave", "carol", "bob", "alice""#
    } else {
        r#""alice", "bob", "carol", "dave""#
    };
    let gold = format!(
        "[[rule]]\nname = \"gold\"\nmatch = {{ attr.tier = \"gold\" }}\nassign = \"pool:support\"\npriority = {}\n",
        if variant == 3 { 5 } else { 10 }
    );
    let billing_rule = "[[rule]]\nname = \"billing\"\nmatch = { department = \"Billing\" }\nassign = \"pool:billing\"\n";
    let (first, second) = if variant == 3 {
        (billing_rule, gold.as_str())
    } else {
        (gold.as_str(), billing_rule)
    };
    format!(
        r#"timezone = "UTC"

[agents]
alice = {{ id = 4188, max_open = {a}, max_per_hour = {ALICE_PER_HOUR} }}
bob   = {{ id = 4761, max_open = {b} }}
carol = {{ id = 6694, max_open = {c} }}
dave  = {{ id = 2533, max_open = {d}, schedule = "shift" }}

[schedules.shift]
hours = {{ all = {shift} }}

[pools.support]
agents = [{members}]
strategy = "{support}"
handback = "all"

[pools.billing]
agents = ["bob", "carol", "dave"]
strategy = "{billing}"
reassign_after = "{after}"
max_reassign = {hops}
handback = "unanswered"

{first}
{second}
[[rule]]
name = "everything"
assign = "pool:support"
"#,
        a = MAX_OPEN[0],
        b = MAX_OPEN[1],
        c = MAX_OPEN[2],
        d = MAX_OPEN[3],
    )
}

/// dave's shift as an `hours` list in UTC: on, except one minute in three
/// from the first minute that starts at least 10 s after `now` until
/// `span` later, so that his shift ends (and starts again) during the
/// campaign on the wall clock.
pub fn shift_hours(now: jiff::Timestamp, span: Duration) -> String {
    let secs = now.as_second();
    let first = (secs + 10).div_euclid(60) + 1;
    let last = (secs + span.as_secs() as i64).div_euclid(60) + 1;
    let mut off = [false; 1440];
    for minute in (first..=last.max(first)).step_by(3) {
        off[minute.rem_euclid(1440) as usize] = true;
    }
    let mut ranges = Vec::new();
    let mut start = None;
    for (m, is_off) in off.iter().chain(std::iter::once(&true)).enumerate() {
        match (start, is_off) {
            (None, false) => start = Some(m),
            (Some(s), true) => {
                ranges.push(format!("\"{}-{}\"", hhmm(s), hhmm(m)));
                start = None;
            }
            _ => {}
        }
    }
    format!("[{}]", ranges.join(", "))
}

fn hhmm(minute: usize) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan() {
        let a = plan(7, Topology::Postgres(3), Duration::from_secs(60));
        let b = plan(7, Topology::Postgres(3), Duration::from_secs(60));
        let c = plan(8, Topology::Postgres(3), Duration::from_secs(60));
        assert!(a.len() > 10);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{c:?}"));
    }

    #[test]
    fn seeds_cover_every_refresh() {
        let refreshes: Vec<u64> = (1..=12).map(|s| setup(s).refresh.as_secs()).collect();
        println!("refresh by seed 1..=12: {refreshes:?}");
        for r in [1, 2, 30] {
            assert!(refreshes.contains(&r), "{refreshes:?}");
        }
    }

    #[test]
    fn the_shift_has_a_gap_soon_after_now() {
        let now: jiff::Timestamp = "2026-03-04T12:34:55Z".parse().unwrap();
        assert_eq!(
            shift_hours(now, Duration::from_secs(60)),
            r#"["00:00-12:36", "12:37-24:00"]"#
        );
        let late: jiff::Timestamp = "2026-03-04T23:58:30Z".parse().unwrap();
        assert_eq!(
            shift_hours(late, Duration::from_secs(200)),
            r#"["00:00-00:02", "00:03-23:59"]"#
        );
    }

    #[test]
    fn every_variant_loads() {
        let shift = shift_hours(jiff::Timestamp::now(), Duration::from_secs(60));
        for v in 0..VARIANTS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rules.toml");
            std::fs::write(&path, rules(v, &shift)).unwrap();
            assignd::rules::load_path(&path).unwrap_or_else(|e| panic!("variant {v}: {e}"));
        }
    }
}
