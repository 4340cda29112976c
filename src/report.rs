//! `assignd report`: the figures of a window of history, computed from the
//! rows the store reads (no I/O here). What each figure means is in
//! `docs/report.md`; [`html`] draws them as one self-contained page.

pub mod arms;
pub mod compare;
pub mod html;
mod replies;
mod tally;

pub use replies::{AfterHours, ByWhom, ChatFigures};
pub use tally::Tally;

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::rules::Rules;
use crate::rules::matcher::Condition;
use crate::simulate::PoolFairness;
use crate::store::report::DeadLetterRow;

/// Everything `report` shows; `--json` prints it as it is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The window, RFC 3339: from `since` (inclusive) to `until` (exclusive).
    pub since: String,
    pub until: String,
    /// The rules' timezone, in which days are counted.
    pub timezone: String,
    pub totals: Totals,
    /// Time in queue of every chat assigned from a queue row in the window.
    pub queue_wait: Wait,
    /// The chats that arrived in the window: first replies, times to
    /// assignment, the after-hours reply rate.
    pub chats: ChatFigures,
    pub agents: Vec<AgentFigures>,
    pub pools: Vec<PoolFigures>,
    /// Every local day the window touches, oldest first.
    pub days: Vec<DayFigures>,
    /// Rows dead-lettered in the window, newest first.
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// `assigned` outcomes, reassignment hops included.
    pub assignments: u32,
    /// Of those, hops of `reassign_after`.
    pub reassignments: u32,
    /// Of those, found by a pool's `escalate` step.
    pub escalations: u32,
    /// Chats handed back from an absent agent (pool `handback`).
    pub handbacks: u32,
    /// Assignments by rules that match `outside` a schedule.
    pub after_hours: u32,
    /// `after_hours / assignments`, 0 without assignments.
    pub after_hours_share: f64,
}

/// Time in queue, in milliseconds: nearest-rank percentiles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Wait {
    pub count: usize,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentFigures {
    pub agent: String,
    pub assignments: u32,
    /// Reassignment hops that brought a chat to this agent.
    pub reassignments: u32,
    /// Assignments to this agent found by an escalation step.
    pub escalations: u32,
    /// Chats handed back from this agent.
    pub handbacks: u32,
    pub after_hours: u32,
    /// Time in queue of the chats assigned to this agent from a queue row.
    pub queue_wait: Wait,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolFigures {
    /// `pool`, `max`, `min`, `jain`: over the pool's members, each counted
    /// with the assignments the pool's outcomes gave them.
    #[serde(flatten)]
    pub fairness: PoolFairness,
    pub assignments: u32,
    /// Assignments the pool's members got from it, by member.
    pub members: BTreeMap<String, u32>,
    /// Escalated assignments of chats whose rule targets this pool.
    pub escalations: u32,
    pub queue_wait: Wait,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayFigures {
    /// The local date, `YYYY-MM-DD`.
    pub date: String,
    /// Assignments per agent that day (agents with none left out).
    pub assignments: BTreeMap<String, u32>,
    pub queue_wait: Wait,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub row: i64,
    /// As stored: a number, or the SQL literal a producer wrote.
    pub chat_id: serde_json::Value,
    pub reason: Option<String>,
    pub at: Option<String>,
}

/// The rules whose match holds only outside a schedule's hours: an
/// `outside = "…"` among the conditions that must all hold.
pub fn after_hours_rules(rules: &Rules) -> HashSet<&str> {
    rules
        .rules
        .iter()
        .filter(|r| {
            r.conditions
                .iter()
                .any(|c| matches!(c, Condition::Outside { .. }))
        })
        .map(|r| r.name.as_str())
        .collect()
}

/// The value at percentile `p` (0–100) of `sorted` (ascending), by nearest
/// rank: the smallest value with at least `p`% of the values at or below it.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// p50 and p95 of `waits` (any order).
pub fn wait_of(mut waits: Vec<i64>) -> Wait {
    waits.sort_unstable();
    Wait {
        count: waits.len(),
        p50_ms: percentile(&waits, 50.0),
        p95_ms: percentile(&waits, 95.0),
    }
}

/// Max, min and Jain's index of a pool's members' counts.
pub fn fairness(pool: &str, counts: &[u32]) -> PoolFairness {
    PoolFairness::of(pool, counts)
}

/// The local date of a Unix-ms instant in `tz`.
pub fn local_date(ms: i64, tz: &TimeZone) -> Option<Date> {
    Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_zoned(tz.clone()).date())
}

fn dead_letter(row: &DeadLetterRow) -> DeadLetter {
    DeadLetter {
        row: row.id,
        chat_id: row
            .chat_id
            .parse::<i64>()
            .map_or_else(|_| row.chat_id.clone().into(), serde_json::Value::from),
        reason: row.last_error.clone(),
        at: Timestamp::from_millisecond(row.at_ms)
            .ok()
            .map(|t| t.to_string()),
    }
}

/// A duration in ms for people: "850ms", "42s", "3m 20s", "2h 5m".
pub fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    match ms {
        ..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{s}s"),
        60_000..3_600_000 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
    }

    #[test]
    fn jain_index() {
        assert_eq!(fairness("p", &[5, 5, 5]).jain, 1.0);
        let f = fairness("p", &[4, 0]);
        assert_eq!((f.max, f.min, f.jain), (4, 0, 0.5));
        assert_eq!(fairness("p", &[0, 0]).jain, 1.0);
        let f = fairness("p", &[3, 1]);
        assert!((f.jain - 0.8).abs() < 1e-12);
    }

    const RULES: &str = r#"
[agents]
ann = { id = 1 }
cy = { id = 3 }

[schedules.office]
hours = { all = "09:00-17:00" }

[pools.support]
agents = ["ann"]
escalate = [{ after = "5m", assign = "pool:overflow" }, { after = "10m", assign = "cy" }]

[pools.overflow]
agents = ["cy"]

[[rule]]
name = "night"
match = { outside = "office" }
assign = "pool:overflow"

[[rule]]
name = "mixed"
match = { any = [{ outside = "office" }, { department = "x" }] }
assign = "pool:support"

[[rule]]
name = "all"
assign = "pool:support"
"#;

    fn rules() -> Rules {
        crate::rules::load_sources(&[("r.toml".into(), RULES.into())]).unwrap()
    }

    #[test]
    fn after_hours_rules_match_outside_at_the_top_level() {
        let rules = rules();
        let set = after_hours_rules(&rules);
        assert_eq!(set, HashSet::from(["night"]));
    }

    #[test]
    fn days_are_local_to_the_rules_timezone() {
        let kyiv = TimeZone::get("Europe/Kyiv").unwrap();
        // 2026-11-30T23:30:00Z is already December 1 in Kyiv (UTC+2).
        let ms = "2026-11-30T23:30:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(local_date(ms, &kyiv), Some(jiff::civil::date(2026, 12, 1)));
        assert_eq!(
            local_date(ms, &TimeZone::UTC),
            Some(jiff::civil::date(2026, 11, 30))
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(42_000), "42s");
        assert_eq!(human_ms(200_000), "3m 20s");
        assert_eq!(human_ms(7_500_000), "2h 5m");
    }
}
