//! The report's figures, counted one outcome at a time as the store reads
//! them (oldest first), so that a month of a million outcomes is never
//! held in memory: names are kept once each, counts per name, and per
//! waited row only its wait and the groups it counts in (24 bytes), for
//! exact nearest-rank percentiles at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use jiff::Timestamp;
use jiff::civil::Date;
use rustc_hash::FxHashMap;

use super::replies::ChatTally;
use super::{
    AgentFigures, DayFigures, PoolFigures, Report, Totals, Wait, after_hours_rules, dead_letter,
    fairness, local_date,
};
use crate::domain::Route;
use crate::rules::Rules;
use crate::store::report::{DeadLetterRow, ReportChat, ReportOutcome};

/// No group: an assignment outside any pool, or of no local date.
const NONE: u32 = u32::MAX;

/// Names seen, each kept once, by first sight.
#[derive(Default)]
struct Names {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(name.to_string(), i);
        self.names.push(name.to_string());
        i
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }
}

/// An agent's counts.
#[derive(Default, Clone)]
struct AgentCounts {
    assignments: u32,
    reassignments: u32,
    escalations: u32,
    handbacks: u32,
    after_hours: u32,
}

/// One row's time in queue and the groups it counts in.
struct Waited {
    wait: i64,
    agent: u32,
    pool: u32,
    day: u32,
}

/// The queue rows whose wait was counted: a bit per row id, in words of
/// 64 consecutive ids (row ids are dense, so a month of rows is a few
/// hundred KiB).
#[derive(Default)]
struct Seen(FxHashMap<i64, u64>);

impl Seen {
    /// Whether `id` is new; notes it.
    fn insert(&mut self, id: i64) -> bool {
        let word = self.0.entry(id.div_euclid(64)).or_default();
        let bit = 1u64 << id.rem_euclid(64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// The report of a window, counted as its outcomes come.
pub struct Tally<'r> {
    rules: &'r Rules,
    since: Timestamp,
    until: Timestamp,
    after: HashSet<&'r str>,
    agents: Names,
    counts: Vec<AgentCounts>,
    pools: Names,
    pool_assignments: Vec<u32>,
    pool_members: BTreeMap<(u32, u32), u32>,
    escalated_by_rule: HashMap<Option<String>, u32>,
    days: Vec<Date>,
    day_index: HashMap<Date, u32>,
    day_agents: BTreeMap<(u32, u32), u32>,
    totals: Totals,
    seen: Seen,
    waits: Vec<Waited>,
    chats: ChatTally,
}

impl<'r> Tally<'r> {
    pub fn new(rules: &'r Rules, since: Timestamp, until: Timestamp) -> Self {
        Self {
            rules,
            since,
            until,
            after: after_hours_rules(rules),
            agents: Names::default(),
            counts: Vec::new(),
            pools: Names::default(),
            pool_assignments: Vec::new(),
            pool_members: BTreeMap::new(),
            escalated_by_rule: HashMap::new(),
            days: Vec::new(),
            day_index: HashMap::new(),
            day_agents: BTreeMap::new(),
            totals: Totals::default(),
            seen: Seen::default(),
            waits: Vec::new(),
            chats: ChatTally::default(),
        }
    }

    /// The window in Unix ms, half open.
    pub fn window_ms(&self) -> (i64, i64) {
        (self.since.as_millisecond(), self.until.as_millisecond())
    }

    fn agent(&mut self, name: &str) -> u32 {
        let i = self.agents.id(name);
        if self.counts.len() <= i as usize {
            self.counts.resize(i as usize + 1, AgentCounts::default());
        }
        i
    }

    /// Counts one outcome; outcomes come oldest first (`at`, then id), so
    /// a row's first assignment is the one whose wait counts.
    pub fn add(&mut self, o: &ReportOutcome) {
        if o.result == "skipped" && o.route == Some(Route::HandedBack) {
            let a = self.agent(o.agent.as_deref().unwrap_or("-"));
            self.counts[a as usize].handbacks += 1;
            self.totals.handbacks += 1;
            return;
        }
        let (true, Some(name)) = (o.result == "assigned", o.agent.as_deref()) else {
            return;
        };
        let agent = self.agent(name);
        let hop = o.route == Some(Route::Reassigned);
        let escalated = o.route == Some(Route::Escalated);
        let after = o.rule.as_deref().is_some_and(|r| self.after.contains(r));
        let c = &mut self.counts[agent as usize];
        c.assignments += 1;
        c.reassignments += u32::from(hop);
        c.escalations += u32::from(escalated);
        c.after_hours += u32::from(after);
        let t = &mut self.totals;
        t.assignments += 1;
        t.reassignments += u32::from(hop);
        t.escalations += u32::from(escalated);
        t.after_hours += u32::from(after);
        if escalated {
            *self.escalated_by_rule.entry(o.rule.clone()).or_default() += 1;
        }
        if after {
            self.chats.after_hours(o.chat_id);
        }
        let pool = self.count_pool(o.pool.as_deref(), agent);
        let day = self.count_day(o.at_ms, agent);
        let wait = match (o.queue_id, o.enqueued_at_ms) {
            (Some(q), Some(e)) if self.seen.insert(q) => Some((o.at_ms - e).max(0)),
            _ => None,
        };
        if let Some(wait) = wait {
            self.waits.push(Waited {
                wait,
                agent,
                pool,
                day,
            });
        }
    }

    /// Counts one chat that arrived in the window; after every outcome,
    /// so that it is known whether an after-hours rule assigned it.
    pub fn add_chat(&mut self, c: &ReportChat) {
        self.chats.add(c);
    }

    /// The assignment's pool, counted with its agent.
    fn count_pool(&mut self, pool: Option<&str>, agent: u32) -> u32 {
        let Some(name) = pool else { return NONE };
        let p = self.pools.id(name);
        if self.pool_assignments.len() <= p as usize {
            self.pool_assignments.resize(p as usize + 1, 0);
        }
        self.pool_assignments[p as usize] += 1;
        *self.pool_members.entry((p, agent)).or_default() += 1;
        p
    }

    /// The assignment's local day, counted with its agent.
    fn count_day(&mut self, at_ms: i64, agent: u32) -> u32 {
        let Some(date) = local_date(at_ms, &self.rules.timezone) else {
            return NONE;
        };
        let d = *self.day_index.entry(date).or_insert_with(|| {
            self.days.push(date);
            self.days.len() as u32 - 1
        });
        *self.day_agents.entry((d, agent)).or_default() += 1;
        d
    }

    /// The report, with the window's dead letters.
    pub fn finish(mut self, dead: &[DeadLetterRow]) -> Report {
        let waits = Percentiles::of(&mut self.waits, self.counts.len(), self.pools.names.len());
        let t = &mut self.totals;
        t.after_hours_share = if t.assignments == 0 {
            0.0
        } else {
            f64::from(t.after_hours) / f64::from(t.assignments)
        };
        Report {
            since: self.since.to_string(),
            until: self.until.to_string(),
            timezone: self.rules.timezone.iana_name().unwrap_or("UTC").to_string(),
            totals: self.totals.clone(),
            queue_wait: waits.overall(),
            chats: std::mem::take(&mut self.chats).finish(),
            agents: self.agent_figures(&waits),
            pools: self.pool_figures(&waits),
            days: self.day_figures(&waits),
            dead_letters: dead.iter().map(dead_letter).collect(),
        }
    }

    /// Every agent of the rules, and any other an assignment or a named
    /// hand-back names, by name.
    fn agent_figures(&self, waits: &Percentiles) -> Vec<AgentFigures> {
        let named = self.agents.names.iter().zip(&self.counts);
        let names: BTreeSet<&str> = self
            .rules
            .agents
            .iter()
            .map(|a| a.name.as_str())
            .chain(
                named
                    .filter(|(n, c)| c.assignments > 0 || (c.handbacks > 0 && *n != "-"))
                    .map(|(n, _)| n.as_str()),
            )
            .collect();
        names
            .into_iter()
            .map(|name| {
                let i = self.agents.get(name);
                let c = i.map(|i| self.counts[i as usize].clone());
                let c = c.unwrap_or_default();
                AgentFigures {
                    agent: name.to_string(),
                    assignments: c.assignments,
                    reassignments: c.reassignments,
                    escalations: c.escalations,
                    handbacks: c.handbacks,
                    after_hours: c.after_hours,
                    queue_wait: i.map(|i| waits.agent(i)).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Every pool of the rules, then any other an assignment names.
    fn pool_figures(&self, waits: &Percentiles) -> Vec<PoolFigures> {
        let rules = self.rules;
        let mut out: Vec<PoolFigures> = rules
            .pools
            .iter()
            .map(|p| {
                let members: Vec<&str> = p
                    .members
                    .iter()
                    .map(|&a| rules.agents[a].name.as_str())
                    .collect();
                self.pool(&p.name, &members, waits)
            })
            .collect();
        let others: BTreeSet<&str> = self
            .pools
            .names
            .iter()
            .map(String::as_str)
            .filter(|p| rules.pool_by_name(p).is_none())
            .collect();
        for pool in others {
            let p = self.pools.get(pool);
            let members: BTreeSet<&str> = self
                .pool_members
                .keys()
                .filter(|(of, _)| Some(*of) == p)
                .map(|&(_, a)| self.agents.names[a as usize].as_str())
                .collect();
            let members: Vec<&str> = members.into_iter().collect();
            out.push(self.pool(pool, &members, waits));
        }
        out
    }

    fn pool(&self, pool: &str, members: &[&str], waits: &Percentiles) -> PoolFigures {
        let p = self.pools.get(pool);
        let by_member: BTreeMap<String, u32> = members
            .iter()
            .map(|m| {
                let n = p
                    .zip(self.agents.get(m))
                    .and_then(|key| self.pool_members.get(&key).copied());
                (m.to_string(), n.unwrap_or(0))
            })
            .collect();
        let counts: Vec<u32> = members.iter().map(|m| by_member[*m]).collect();
        let escalations = self
            .escalated_by_rule
            .iter()
            .filter(|(rule, _)| rule_pool(self.rules, rule.as_deref()) == Some(pool))
            .map(|(_, n)| n)
            .sum();
        PoolFigures {
            fairness: fairness(pool, &counts),
            assignments: p.map_or(0, |p| self.pool_assignments[p as usize]),
            members: by_member,
            escalations,
            queue_wait: p.map(|p| waits.pool(p)).unwrap_or_default(),
        }
    }

    /// Every local day from `since` to `until`, with its assignments and
    /// waits.
    fn day_figures(&self, waits: &Percentiles) -> Vec<DayFigures> {
        let tz = &self.rules.timezone;
        let (Some(first), Some(last)) = (
            local_date(self.since.as_millisecond(), tz),
            local_date(self.until.as_millisecond() - 1, tz),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut day = first;
        while day <= last {
            let d = self.day_index.get(&day).copied();
            let assignments = self
                .day_agents
                .range((d.unwrap_or(NONE), 0)..=(d.unwrap_or(NONE), u32::MAX))
                .filter(|_| d.is_some())
                .map(|(&(_, a), &n)| (self.agents.names[a as usize].clone(), n))
                .collect();
            out.push(DayFigures {
                date: day.to_string(),
                assignments,
                queue_wait: d.map(|d| waits.day(d)).unwrap_or_default(),
            });
            let Ok(next) = day.tomorrow() else { break };
            day = next;
        }
        out
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

/// Nearest-rank p50 and p95 of every group (all, each agent, each pool,
/// each day) from one sort of the waits: walking them in order, a
/// group's k-th wait is its value at rank k.
struct Percentiles {
    agents: usize,
    pools: usize,
    waits: Vec<Wait>,
}

impl Percentiles {
    fn of(waited: &mut [Waited], agents: usize, pools: usize) -> Self {
        let days = waited
            .iter()
            .filter(|w| w.day != NONE)
            .map(|w| w.day as usize + 1)
            .max()
            .unwrap_or(0);
        let groups = |w: &Waited| {
            let pool = (w.pool != NONE).then(|| 1 + agents + w.pool as usize);
            let day = (w.day != NONE).then(|| 1 + agents + pools + w.day as usize);
            [Some(0), Some(1 + w.agent as usize), pool, day]
        };
        let mut waits = vec![Wait::default(); 1 + agents + pools + days];
        for w in waited.iter() {
            for g in groups(w).into_iter().flatten() {
                waits[g].count += 1;
            }
        }
        waited.sort_unstable_by_key(|w| w.wait);
        let mut seen = vec![0usize; waits.len()];
        for w in waited.iter() {
            for g in groups(w).into_iter().flatten() {
                seen[g] += 1;
                let wait = &mut waits[g];
                if seen[g] == rank(wait.count, 50.0) {
                    wait.p50_ms = Some(w.wait);
                }
                if seen[g] == rank(wait.count, 95.0) {
                    wait.p95_ms = Some(w.wait);
                }
            }
        }
        Self {
            agents,
            pools,
            waits,
        }
    }

    fn overall(&self) -> Wait {
        self.waits[0].clone()
    }

    fn agent(&self, i: u32) -> Wait {
        self.waits[1 + i as usize].clone()
    }

    fn pool(&self, i: u32) -> Wait {
        self.waits[1 + self.agents + i as usize].clone()
    }

    fn day(&self, i: u32) -> Wait {
        let g = 1 + self.agents + self.pools + i as usize;
        self.waits.get(g).cloned().unwrap_or_default()
    }
}

/// The 1-based rank of percentile `p` among `n` values, as
/// [`super::percentile`] takes it.
fn rank(n: usize, p: f64) -> usize {
    ((p / 100.0 * n as f64).ceil().max(1.0) as usize).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::wait_of;

    /// One sort's walk gives each group what sorting the group alone does.
    #[test]
    fn percentiles_of_every_group_match_each_group_sorted_alone() {
        let mut waited: Vec<Waited> = (0..5000_i64)
            .map(|i| Waited {
                wait: (i * 7919) % 1013 + i % 7,
                agent: (i % 3) as u32,
                pool: if i % 5 == 0 { NONE } else { (i % 2) as u32 },
                day: if i % 11 == 0 { NONE } else { (i % 4) as u32 },
            })
            .collect();
        let of = |keep: &dyn Fn(&Waited) -> bool| {
            wait_of(waited.iter().filter(|w| keep(w)).map(|w| w.wait).collect())
        };
        let all = of(&|_| true);
        let agents: Vec<Wait> = (0..3).map(|a| of(&|w| w.agent == a)).collect();
        let pools: Vec<Wait> = (0..2).map(|p| of(&|w| w.pool == p)).collect();
        let days: Vec<Wait> = (0..4).map(|d| of(&|w| w.day == d)).collect();
        let p = Percentiles::of(&mut waited, 3, 2);
        assert_eq!(p.overall(), all);
        assert!(all.p50_ms.is_some());
        assert_eq!((0..3).map(|a| p.agent(a)).collect::<Vec<_>>(), agents);
        assert_eq!((0..2).map(|i| p.pool(i)).collect::<Vec<_>>(), pools);
        assert_eq!((0..4).map(|d| p.day(d)).collect::<Vec<_>>(), days);
    }

    #[test]
    fn a_row_id_is_new_once() {
        let mut seen = Seen::default();
        for id in [-65, -1, 0, 1, 63, 64, 1 << 40] {
            assert!(seen.insert(id), "{id}");
        }
        for id in [-65, -1, 0, 1, 63, 64, 1 << 40] {
            assert!(!seen.insert(id), "{id}");
        }
        assert!(seen.insert(2));
    }
}
