//! `assignd report`: the figures of a window of history, computed from the
//! rows the store reads (no I/O here). What each figure means is in
//! `docs/report.md`; [`html`] draws them as one self-contained page.

pub mod html;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::domain::Route;
use crate::rules::Rules;
use crate::rules::matcher::Condition;
use crate::simulate::PoolFairness;
use crate::store::report::{DeadLetterRow, ReportOutcome};

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

/// What a report is computed from.
pub struct Input<'a> {
    pub rules: &'a Rules,
    pub since: Timestamp,
    pub until: Timestamp,
    /// As the store reads them: oldest first.
    pub outcomes: &'a [ReportOutcome],
    pub dead: &'a [DeadLetterRow],
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

/// One assignment, classified.
struct Assignment<'a> {
    o: &'a ReportOutcome,
    agent: &'a str,
    hop: bool,
    escalated: bool,
    after_hours: bool,
    /// Time in queue, for the first assignment of a queue row.
    wait: Option<i64>,
}

/// The assignments among `outcomes`, each row's wait counted once.
fn assignments<'a>(outcomes: &'a [ReportOutcome], after: &HashSet<&str>) -> Vec<Assignment<'a>> {
    let mut rows_seen = HashSet::new();
    outcomes
        .iter()
        .filter(|o| o.result == "assigned")
        .filter_map(|o| {
            let agent = o.agent.as_deref()?;
            let wait = match (o.queue_id, o.enqueued_at_ms) {
                (Some(q), Some(e)) if rows_seen.insert(q) => Some((o.at_ms - e).max(0)),
                _ => None,
            };
            Some(Assignment {
                o,
                agent,
                hop: o.route == Some(Route::Reassigned),
                escalated: o.route == Some(Route::Escalated),
                after_hours: o.rule.as_deref().is_some_and(|r| after.contains(r)),
                wait,
            })
        })
        .collect()
}

/// Computes the report.
pub fn build(input: &Input<'_>) -> Report {
    let rules = input.rules;
    let after = after_hours_rules(rules);
    let list = assignments(input.outcomes, &after);
    let handbacks: Vec<&str> = input
        .outcomes
        .iter()
        .filter(|o| o.result == "skipped" && o.route == Some(Route::HandedBack))
        .map(|o| o.agent.as_deref().unwrap_or("-"))
        .collect();
    let count = |f: fn(&Assignment) -> bool| list.iter().filter(|a| f(a)).count() as u32;
    let assigned = list.len() as u32;
    let after_hours = count(|a| a.after_hours);
    let totals = Totals {
        assignments: assigned,
        reassignments: count(|a| a.hop),
        escalations: count(|a| a.escalated),
        handbacks: handbacks.len() as u32,
        after_hours,
        after_hours_share: if assigned == 0 {
            0.0
        } else {
            f64::from(after_hours) / f64::from(assigned)
        },
    };
    Report {
        since: input.since.to_string(),
        until: input.until.to_string(),
        timezone: rules.timezone.iana_name().unwrap_or("UTC").to_string(),
        totals,
        queue_wait: wait_of(list.iter().filter_map(|a| a.wait).collect()),
        agents: agents(rules, &list, &handbacks),
        pools: pools(rules, &list),
        days: days(input, &list),
        dead_letters: input.dead.iter().map(dead_letter).collect(),
    }
}

/// Every agent of the rules (and any other an outcome names), by name.
fn agents(rules: &Rules, list: &[Assignment<'_>], handbacks: &[&str]) -> Vec<AgentFigures> {
    let names: BTreeSet<&str> = rules
        .agents
        .iter()
        .map(|a| a.name.as_str())
        .chain(list.iter().map(|a| a.agent))
        .chain(handbacks.iter().copied().filter(|a| *a != "-"))
        .collect();
    names
        .into_iter()
        .map(|name| {
            let mine: Vec<&Assignment> = list.iter().filter(|a| a.agent == name).collect();
            let count = |f: fn(&Assignment) -> bool| mine.iter().filter(|a| f(a)).count() as u32;
            AgentFigures {
                agent: name.to_string(),
                assignments: mine.len() as u32,
                reassignments: count(|a| a.hop),
                escalations: count(|a| a.escalated),
                handbacks: handbacks.iter().filter(|a| **a == name).count() as u32,
                after_hours: count(|a| a.after_hours),
                queue_wait: wait_of(mine.iter().filter_map(|a| a.wait).collect()),
            }
        })
        .collect()
}

/// Every pool of the rules, then any other an outcome names.
fn pools(rules: &Rules, list: &[Assignment<'_>]) -> Vec<PoolFigures> {
    let mut out: Vec<PoolFigures> = rules
        .pools
        .iter()
        .map(|p| {
            let members: Vec<&str> = p
                .members
                .iter()
                .map(|&a| rules.agents[a].name.as_str())
                .collect();
            pool_figures(rules, &p.name, &members, list)
        })
        .collect();
    let others: BTreeSet<&str> = list
        .iter()
        .filter_map(|a| a.o.pool.as_deref())
        .filter(|p| rules.pool_by_name(p).is_none())
        .collect();
    for pool in others {
        let members: BTreeSet<&str> = list
            .iter()
            .filter(|a| a.o.pool.as_deref() == Some(pool))
            .map(|a| a.agent)
            .collect();
        let members: Vec<&str> = members.into_iter().collect();
        out.push(pool_figures(rules, pool, &members, list));
    }
    out
}

fn pool_figures(
    rules: &Rules,
    pool: &str,
    members: &[&str],
    list: &[Assignment<'_>],
) -> PoolFigures {
    let mine: Vec<&Assignment> = list
        .iter()
        .filter(|a| a.o.pool.as_deref() == Some(pool))
        .collect();
    let by_member: BTreeMap<String, u32> = members
        .iter()
        .map(|m| {
            let n = mine.iter().filter(|a| a.agent == *m).count() as u32;
            (m.to_string(), n)
        })
        .collect();
    let counts: Vec<u32> = members.iter().map(|m| by_member[*m]).collect();
    let escalations = list
        .iter()
        .filter(|a| a.escalated && rule_pool(rules, a.o.rule.as_deref()) == Some(pool))
        .count() as u32;
    PoolFigures {
        fairness: fairness(pool, &counts),
        assignments: mine.len() as u32,
        members: by_member,
        escalations,
        queue_wait: wait_of(mine.iter().filter_map(|a| a.wait).collect()),
    }
}

/// The pool a rule (by name) assigns to, in the rules as loaded now.
fn rule_pool<'r>(rules: &'r Rules, rule: Option<&str>) -> Option<&'r str> {
    let rule = rules.rules.iter().find(|r| Some(r.name.as_str()) == rule)?;
    match rule.target {
        crate::rules::Target::Pool(p) => Some(rules.pools[p].name.as_str()),
        _ => None,
    }
}

/// Every local day from `since` to `until`, with its assignments and waits.
fn days(input: &Input<'_>, list: &[Assignment<'_>]) -> Vec<DayFigures> {
    let tz = &input.rules.timezone;
    let (Some(first), Some(last)) = (
        local_date(input.since.as_millisecond(), tz),
        local_date(input.until.as_millisecond() - 1, tz),
    ) else {
        return Vec::new();
    };
    let mut by_day: BTreeMap<Date, Vec<&Assignment>> = BTreeMap::new();
    for a in list {
        if let Some(d) = local_date(a.o.at_ms, tz) {
            by_day.entry(d).or_default().push(a);
        }
    }
    let mut out = Vec::new();
    let mut day = first;
    while day <= last {
        let mine = by_day.remove(&day).unwrap_or_default();
        let mut per_agent = BTreeMap::new();
        for a in &mine {
            *per_agent.entry(a.agent.to_string()).or_insert(0) += 1;
        }
        out.push(DayFigures {
            date: day.to_string(),
            assignments: per_agent,
            queue_wait: wait_of(mine.iter().filter_map(|a| a.wait).collect()),
        });
        let Ok(next) = day.tomorrow() else { break };
        day = next;
    }
    out
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
