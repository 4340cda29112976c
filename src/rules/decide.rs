//! The decision: a pure function of (rules, chat, routing state, clock).
//!
//! No I/O and no clock reads happen here, so the worker, `explain`,
//! `simulate`, tests and benchmarks all run this same code and get the same
//! answer for the same inputs. What a decision changes (the rotation, the
//! weights) is returned in the [`Verdict`] for the caller to apply.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::context::ChatContext;
use super::escalate;
use super::matcher::{Condition, first_failing};
use super::strategy::{self, Candidate};
use super::{Pool, Rules, Strategy, Target, WhenFull};

/// The state a decision depends on besides the chat and the clock.
#[derive(Debug, Clone, Default)]
pub struct RoutingState {
    /// Pool name -> name of the agent who got the pool's last chat.
    pub last_pick: HashMap<String, String>,
    /// Agents marked away, by name, with when the absence ends (`None`: until marked back).
    pub away: HashMap<String, Option<Timestamp>>,
    /// Agents HelpCrunch rejected (`invalid_chat_value`), by name.
    pub unusable: HashSet<String>,
    /// Open chats per agent name.
    pub open: HashMap<String, u32>,
    /// Pool name -> agent name -> current weight, for `weighted`.
    pub weights: HashMap<String, HashMap<String, i64>>,
    /// Agent name -> the instants of its assignments within the last hour
    /// (at least), oldest first, for `max_per_hour`: the newest
    /// [`Rules::highest_hourly_cap`] of them at most, all a cap can count
    /// (so none without a cap), so that it never grows with the traffic.
    pub recent: HashMap<String, Vec<Timestamp>>,
    /// Randomness for `random`, drawn by the caller for each decision.
    pub entropy: u64,
}

/// The window `max_per_hour` counts in.
pub const HOUR: SignedDuration = SignedDuration::from_hours(1);

/// The start of the hour that ends at `now` (excluded from it).
pub fn hour_before(now: Timestamp) -> Timestamp {
    now.saturating_sub(HOUR).unwrap_or(Timestamp::MIN)
}

impl RoutingState {
    /// `agent`'s assignments within the hour up to `now`: (now - 1h, now].
    pub fn assigned_last_hour(&self, agent: &str, now: Timestamp) -> u32 {
        let Some(times) = self.recent.get(agent) else {
            return 0;
        };
        let from = times.partition_point(|t| *t <= hour_before(now));
        let to = times.partition_point(|t| *t <= now);
        u32::try_from(to.saturating_sub(from)).unwrap_or(u32::MAX)
    }

    /// When `agent`'s oldest assignment of the hour up to `now` leaves the
    /// window, freeing a place under an hourly cap.
    pub fn hourly_frees_at(&self, agent: &str, now: Timestamp) -> Option<Timestamp> {
        let times = self.recent.get(agent)?;
        let from = times.partition_point(|t| *t <= hour_before(now));
        times
            .get(from)
            .map(|t| t.saturating_add(HOUR).unwrap_or(Timestamp::MAX))
    }

    pub fn is_away(&self, agent: &str, now: Timestamp) -> bool {
        match self.away.get(agent) {
            Some(None) => true,
            Some(Some(until)) => *until > now,
            None => false,
        }
    }
}

/// A pool's current weights for `weighted`, as `(agent, current)`.
pub type Weights = Vec<(String, i64)>;

/// Why an agent was or was not a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateVerdict {
    Kept,
    Unusable,
    Away,
    OffShift,
    MissingSkill(String),
    AtCapacity {
        open: u32,
        cap: u32,
    },
    /// `max_per_hour`: `count` assignments in the last hour, `cap` allowed.
    HourlyCap {
        count: u32,
        cap: u32,
    },
}

impl CandidateVerdict {
    pub fn describe(&self) -> String {
        match self {
            CandidateVerdict::Kept => "candidate".into(),
            CandidateVerdict::Unusable => {
                "rejected by HelpCrunch (invalid agent id) since the last reload".into()
            }
            CandidateVerdict::Away => "away".into(),
            CandidateVerdict::OffShift => "off shift".into(),
            CandidateVerdict::MissingSkill(s) => format!("missing skill `{s}`"),
            CandidateVerdict::AtCapacity { open, cap } => {
                format!("at capacity ({open} open, max {cap})")
            }
            CandidateVerdict::HourlyCap { count, cap } => {
                format!("at hourly cap ({count}/{cap} this hour)")
            }
        }
    }
}

/// Receives the steps of a decision, for `explain`. The unit type ignores
/// them at no cost, which is what the worker uses.
pub trait Observer {
    /// Whether every rule must be tried and reported. When false, the rules
    /// the index rules out are skipped unseen, which changes no decision.
    const SEES_EVERY_RULE: bool = true;
    fn rule_failed(&mut self, _rule: usize, _condition: &Condition) {}
    fn rule_matched(&mut self, _rule: usize) {}
    fn candidate(&mut self, _rule: usize, _agent: usize, _verdict: &CandidateVerdict) {}
    /// What a pool's strategy chose among, when it found someone.
    fn picked(&mut self, _rule: usize, _picking: &Picking) {}
}

/// What a pool's strategy picked from, for an [`Observer`] to tell how it
/// chose (`explain`); it can run [`pick`] on it again.
pub struct Picking<'a> {
    pub pool: &'a Pool,
    pub candidates: &'a [Candidate<'a>],
    pub chat: &'a ChatContext,
    pub state: &'a RoutingState,
    pub now: Timestamp,
}

impl Observer for () {
    const SEES_EVERY_RULE: bool = false;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Assign `agent` (an index into `Rules::agents`).
    Assign {
        agent: usize,
        pool: Option<usize>,
        /// The agent who had the pool's last chat, before this one.
        previous: Option<String>,
        /// For `weighted`: the pool's new current weights.
        weights: Option<Weights>,
        /// The step of the rule's pool's `escalate` that found the agent.
        escalation: Option<usize>,
    },
    /// The rule's target had no candidate.
    NoCandidate {
        pool: Option<usize>,
        when_full: WhenFull,
        /// The members left out by `max_per_hour`, so the reason can say
        /// why the chat waits (their places come back within the hour).
        hourly: Vec<HourlyCapped>,
        /// The last step of the rule's pool's `escalate` the chat reached.
        escalation: Option<usize>,
    },
    /// The rule says `assign = "none"`.
    Nobody,
    /// No rule matched.
    NoMatch,
}

/// A member at its hourly cap: (agent index, assignments this hour, cap).
pub type HourlyCapped = (usize, u32, u32);

/// An assignment's agent, pool and the pool's new weights (indexes into `Rules`).
pub type Assignment<'v> = (usize, Option<usize>, Option<&'v [(String, i64)]>);

impl Verdict {
    /// The agent, pool and new weights of an assignment; `None` for any
    /// other verdict.
    pub fn assignment(&self) -> Option<Assignment<'_>> {
        match self {
            Verdict::Assign {
                agent,
                pool,
                weights,
                ..
            } => Some((*agent, *pool, weights.as_deref())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The deciding rule (index into `Rules::rules`).
    pub rule: Option<usize>,
    pub verdict: Verdict,
}

/// Decides who should get `chat` at instant `now`.
pub fn decide(rules: &Rules, chat: &ChatContext, state: &RoutingState, now: Timestamp) -> Decision {
    decide_observed(rules, chat, state, now, &mut ())
}

/// [`decide`], reporting each step to `observer`.
pub fn decide_observed<O: Observer>(
    rules: &Rules,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
    observer: &mut O,
) -> Decision {
    // A `when_full = "next"` rule that fell through, reported if nothing later decides.
    let mut overflowed: Option<(usize, Option<usize>, Vec<HourlyCapped>)> = None;
    let may_match = if O::SEES_EVERY_RULE {
        None
    } else {
        rules.index.candidates(rules.rules.len(), chat)
    };
    for (index, rule) in rules.rules.iter().enumerate() {
        if let Some(bits) = &may_match
            && !super::index::contains(bits, index)
        {
            continue;
        }
        if let Some(failed) = first_failing(&rule.conditions, chat, &rules.schedules, now) {
            observer.rule_failed(index, failed);
            continue;
        }
        observer.rule_matched(index);
        match decide_rule(rules, index, chat, state, now, observer) {
            RuleOutcome::Decided(verdict) => {
                return Decision {
                    rule: Some(index),
                    verdict,
                };
            }
            RuleOutcome::Overflowed(pool, hourly) => overflowed = Some((index, pool, hourly)),
        }
    }
    match overflowed {
        // Overflow with nowhere left to go: leave it, visibly.
        Some((rule, pool, hourly)) => Decision {
            rule: Some(rule),
            verdict: Verdict::NoCandidate {
                pool,
                when_full: WhenFull::Leave,
                hourly,
                escalation: None,
            },
        },
        None => Decision {
            rule: None,
            verdict: Verdict::NoMatch,
        },
    }
}

/// What a rule that matched concluded.
enum RuleOutcome {
    Decided(Verdict),
    /// No candidate, and `when_full = "next"`: try the later rules.
    Overflowed(Option<usize>, Vec<HourlyCapped>),
}

/// The verdict of rule `index`, which matched the chat: its target, then
/// each escalation step the chat has reached, the first with a candidate.
fn decide_rule<O: Observer>(
    rules: &Rules,
    index: usize,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
    observer: &mut O,
) -> RuleOutcome {
    let target = rules.rules[index].target;
    let rule_pool = match target {
        Target::Nobody => return RuleOutcome::Decided(Verdict::Nobody),
        Target::Agent(_) => None,
        Target::Pool(p) => Some(p),
    };
    let mut hourly = match try_target(rules, index, target, chat, state, now, observer) {
        Ok(assign) => return RuleOutcome::Decided(assign),
        Err(hourly) => hourly,
    };
    let steps = rule_pool.map_or(&[][..], |p| &rules.pools[p].escalate[..]);
    let reached = rule_pool.map_or(0, |p| escalate::reached(&rules.pools[p], chat.waited(now)));
    for (n, step) in steps.iter().take(reached).enumerate() {
        match try_target(rules, index, step.target, chat, state, now, observer) {
            Ok(Verdict::Assign {
                agent,
                pool,
                previous,
                weights,
                ..
            }) => {
                return RuleOutcome::Decided(Verdict::Assign {
                    agent,
                    pool,
                    previous,
                    weights,
                    escalation: Some(n),
                });
            }
            Ok(other) => return RuleOutcome::Decided(other),
            Err(more) => {
                for m in more {
                    if !hourly.iter().any(|h| h.0 == m.0) {
                        hourly.push(m);
                    }
                }
            }
        }
    }
    let when_full = rule_pool.map_or(WhenFull::Wait, |p| rules.pools[p].when_full);
    if when_full == WhenFull::Next {
        return RuleOutcome::Overflowed(rule_pool, hourly);
    }
    RuleOutcome::Decided(Verdict::NoCandidate {
        pool: rule_pool,
        when_full,
        hourly,
        escalation: reached.checked_sub(1),
    })
}

/// One target (the rule's, or an escalation step's): an assignment to the
/// candidate its strategy picks, else the members left out by their
/// hourly cap.
fn try_target<O: Observer>(
    rules: &Rules,
    index: usize,
    target: Target,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
    observer: &mut O,
) -> Result<Verdict, Vec<HourlyCapped>> {
    let single: [usize; 1];
    let (members, pool_index): (&[usize], Option<usize>) = match target {
        Target::Nobody => return Err(Vec::new()),
        Target::Agent(agent) => {
            single = [agent];
            (&single[..], None)
        }
        Target::Pool(p) => (&rules.pools[p].members, Some(p)),
    };
    let pool = pool_index.map(|p| &rules.pools[p]);
    let (candidates, hourly) = kept(rules, index, members, pool, state, now, observer);
    let picked = match pool {
        None => candidates.first().map(|c| (c.index, None, None)),
        Some(pool) => pick(pool, &candidates, chat, state, now).inspect(|_| {
            let picking = Picking {
                pool,
                candidates: &candidates,
                chat,
                state,
                now,
            };
            observer.picked(index, &picking);
        }),
    };
    match picked {
        Some((agent, previous, weights)) => Ok(Verdict::Assign {
            agent,
            pool: pool_index,
            previous,
            weights,
            escalation: None,
        }),
        None => Err(hourly),
    }
}

/// The members of rule `index`'s target who may take a chat now, each
/// judged aloud to `observer`; and those left out by their hourly cap.
fn kept<'r, O: Observer>(
    rules: &'r Rules,
    index: usize,
    members: &[usize],
    pool: Option<&Pool>,
    state: &RoutingState,
    now: Timestamp,
    observer: &mut O,
) -> (Vec<Candidate<'r>>, Vec<HourlyCapped>) {
    let skills = &rules.rules[index].require_skills;
    // Sized once: growing it from a filter costs two reallocations.
    let mut candidates: Vec<Candidate> = Vec::with_capacity(members.len());
    let mut hourly = Vec::new();
    for &a in members {
        let verdict = judge(rules, a, pool, skills, state, now);
        observer.candidate(index, a, &verdict);
        match verdict {
            CandidateVerdict::Kept => candidates.push(candidate(rules, a, state)),
            // Rare, so the empty list costs nothing on the usual path.
            CandidateVerdict::HourlyCap { count, cap } => hourly.push((a, count, cap)),
            _ => {}
        }
    }
    (candidates, hourly)
}

pub(super) type Pick = (usize, Option<String>, Option<Weights>);

/// The next agent for a chat nobody answered: the pool's strategy among its
/// candidates, leaving out the agents who already had the chat. Returns the
/// agent and, for `weighted`, the pool's new weights.
pub fn reassign_pick(
    rules: &Rules,
    pool: usize,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
    require_skills: &[String],
    exclude: &[String],
) -> Option<(usize, Option<Weights>)> {
    let p = &rules.pools[pool];
    let candidates: Vec<Candidate> = p
        .members
        .iter()
        .copied()
        .filter(|&a| !exclude.contains(&rules.agents[a].name))
        .filter(|&a| judge(rules, a, Some(p), require_skills, state, now) == CandidateVerdict::Kept)
        .map(|a| candidate(rules, a, state))
        .collect();
    pick(p, &candidates, chat, state, now).map(|(agent, _, weights)| (agent, weights))
}

fn candidate<'r>(rules: &'r Rules, a: usize, state: &RoutingState) -> Candidate<'r> {
    let agent = &rules.agents[a];
    Candidate {
        index: a,
        name: &agent.name,
        open: state.open.get(&agent.name).copied().unwrap_or(0),
        weight: agent.weight,
    }
}

pub(super) fn pick(
    pool: &Pool,
    candidates: &[Candidate],
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
) -> Option<Pick> {
    let last = state.last_pick.get(&pool.name).map(String::as_str);
    let previous = last.map(str::to_string);
    match pool.strategy {
        Strategy::RoundRobin => {
            strategy::round_robin(candidates, last).map(|c| (c.index, previous, None))
        }
        Strategy::LeastOpen => {
            strategy::least_open(candidates, last).map(|c| (c.index, previous, None))
        }
        Strategy::Weighted => strategy::weighted(candidates, state.weights.get(&pool.name))
            .map(|(c, w)| (c.index, previous, Some(w))),
        Strategy::Random => {
            strategy::random(candidates, state.entropy).map(|c| (c.index, previous, None))
        }
        Strategy::Sticky => {
            let remembered = chat.last_agent.as_ref().and_then(|l| {
                let forgotten = sticky_age(pool, l.at, now).is_some_and(|(old, _)| old);
                (!forgotten).then_some(l.name.as_str())
            });
            strategy::sticky(candidates, remembered, last).map(|c| (c.index, previous, None))
        }
    }
}

/// How long ago the customer's last agent had them (`at`), and whether that
/// is longer than `pool` remembers; `None` when the time is unknown (which
/// counts as recent: a row written before times were kept).
pub(super) fn sticky_age(
    pool: &Pool,
    at: Option<Timestamp>,
    now: Timestamp,
) -> Option<(bool, Duration)> {
    let age = Duration::try_from(now.duration_since(at?)).unwrap_or(Duration::ZERO);
    Some((age > pool.sticky_for, age))
}

fn judge(
    rules: &Rules,
    agent: usize,
    pool: Option<&Pool>,
    skills: &[String],
    state: &RoutingState,
    now: Timestamp,
) -> CandidateVerdict {
    let a = &rules.agents[agent];
    if state.unusable.contains(&a.name) {
        return CandidateVerdict::Unusable;
    }
    if state.is_away(&a.name, now) {
        return CandidateVerdict::Away;
    }
    if let Some(s) = a.schedule
        && !rules.schedules[s].is_open(now)
    {
        return CandidateVerdict::OffShift;
    }
    if let Some(missing) = skills
        .iter()
        .find(|s| !a.skills.iter().any(|have| have.eq_ignore_ascii_case(s)))
    {
        return CandidateVerdict::MissingSkill(missing.clone());
    }
    let cap = match pool {
        Some(p) => p.cap(a),
        None => a.max_open,
    };
    if let Some(cap) = cap {
        let open = state.open.get(&a.name).copied().unwrap_or(0);
        if open >= cap {
            return CandidateVerdict::AtCapacity { open, cap };
        }
    }
    let hourly = match pool {
        Some(p) => p.hourly_cap(a),
        None => a.max_per_hour,
    };
    if let Some(cap) = hourly {
        let count = state.assigned_last_hour(&a.name, now);
        if count >= cap {
            return CandidateVerdict::HourlyCap { count, cap };
        }
    }
    CandidateVerdict::Kept
}
