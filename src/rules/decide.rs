//! The decision: a pure function of (rules, chat, routing state, clock).
//!
//! No I/O and no clock reads happen here, so the worker, `explain`,
//! `simulate`, tests and benchmarks all run this same code and get the same
//! answer for the same inputs.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::context::ChatContext;
use super::matcher::{Condition, first_failing};
use super::strategy;
use super::{Rules, Strategy, Target, WhenFull};

/// The state a decision depends on besides the chat and the clock.
#[derive(Debug, Clone, Default)]
pub struct RoutingState {
    /// Pool name -> name of the agent who got the pool's last chat.
    pub last_pick: HashMap<String, String>,
    /// Agents marked away, by name.
    pub away: HashSet<String>,
    /// Agents HelpCrunch rejected (`invalid_chat_value`), by name.
    pub unusable: HashSet<String>,
}

/// Why an agent was or was not a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateVerdict {
    Kept,
    OffShift,
    Away,
    Unusable,
    MissingSkill(String),
}

/// Receives the steps of a decision, for `explain`. The unit type ignores
/// them at no cost, which is what the worker uses.
pub trait Observer {
    fn rule_failed(&mut self, _rule: usize, _condition: &Condition) {}
    fn rule_matched(&mut self, _rule: usize) {}
    fn candidate(&mut self, _agent: usize, _verdict: &CandidateVerdict) {}
}

impl Observer for () {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Assign `agent` (an index into `Rules::agents`).
    Assign {
        agent: usize,
        pool: Option<usize>,
        /// For round-robin: the agent who had the pool's last chat.
        previous: Option<String>,
    },
    /// The rule's target had no candidate.
    NoCandidate {
        pool: Option<usize>,
        when_full: WhenFull,
    },
    /// The rule says `assign = "none"`.
    Nobody,
    /// No rule matched.
    NoMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The deciding rule (index into `Rules::rules`).
    pub rule: Option<usize>,
    pub verdict: Verdict,
}

impl Decision {
    /// A one-line reason, as recorded in outcomes and shown by `explain`.
    pub fn reason(&self, rules: &Rules) -> String {
        let rule = self
            .rule
            .map(|r| rules.rules[r].name.as_str())
            .unwrap_or("-");
        match &self.verdict {
            Verdict::Assign {
                agent,
                pool: Some(p),
                previous,
            } => {
                let pool = &rules.pools[*p];
                let agent = &rules.agents[*agent].name;
                match previous {
                    Some(prev) => format!(
                        "rule `{rule}`: {}: last was {prev} -> {agent}",
                        pool.strategy.name()
                    ),
                    None => format!(
                        "rule `{rule}`: {}: first pick -> {agent}",
                        pool.strategy.name()
                    ),
                }
            }
            Verdict::Assign {
                agent, pool: None, ..
            } => {
                format!("rule `{rule}` assigns {}", rules.agents[*agent].name)
            }
            Verdict::NoCandidate { pool, when_full } => {
                let target = pool
                    .map(|p| format!("pool `{}`", rules.pools[p].name))
                    .unwrap_or("the agent".into());
                format!(
                    "rule `{rule}`: {target} has no available agent (when_full = {})",
                    when_full.name()
                )
            }
            Verdict::Nobody => format!("rule `{rule}` assigns none"),
            Verdict::NoMatch => "no rule matched".into(),
        }
    }
}

/// Decides who should get `chat` at instant `now`.
pub fn decide(rules: &Rules, chat: &ChatContext, state: &RoutingState, now: Timestamp) -> Decision {
    decide_observed(rules, chat, state, now, &mut ())
}

/// [`decide`], reporting each step to `observer`.
pub fn decide_observed(
    rules: &Rules,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
    observer: &mut impl Observer,
) -> Decision {
    // A `when_full = "next"` rule that fell through, reported if nothing later decides.
    let mut overflowed: Option<(usize, Option<usize>)> = None;
    for (index, rule) in rules.rules.iter().enumerate() {
        if let Some(failed) = first_failing(&rule.conditions, chat, &rules.schedules, now) {
            observer.rule_failed(index, failed);
            continue;
        }
        observer.rule_matched(index);
        let single: [usize; 1];
        let (members, pool, when_full): (&[usize], Option<usize>, WhenFull) = match rule.target {
            Target::Nobody => {
                return Decision {
                    rule: Some(index),
                    verdict: Verdict::Nobody,
                };
            }
            Target::Agent(agent) => {
                single = [agent];
                (&single[..], None, WhenFull::Wait)
            }
            Target::Pool(p) => (&rules.pools[p].members, Some(p), rules.pools[p].when_full),
        };
        let candidates: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&a| {
                let verdict = judge(rules, a, &rule.require_skills, state, now);
                observer.candidate(a, &verdict);
                verdict == CandidateVerdict::Kept
            })
            .collect();
        let picked = match pool {
            None => candidates.first().map(|&a| (a, None)),
            Some(p) => {
                let pool = &rules.pools[p];
                match pool.strategy {
                    Strategy::RoundRobin => {
                        let last = state.last_pick.get(&pool.name).map(String::as_str);
                        strategy::round_robin(&candidates, |&a| rules.agents[a].name.as_str(), last)
                            .map(|&a| (a, last.map(str::to_string)))
                    }
                }
            }
        };
        match picked {
            Some((agent, previous)) => {
                return Decision {
                    rule: Some(index),
                    verdict: Verdict::Assign {
                        agent,
                        pool,
                        previous,
                    },
                };
            }
            None if when_full == WhenFull::Next => overflowed = Some((index, pool)),
            None => {
                return Decision {
                    rule: Some(index),
                    verdict: Verdict::NoCandidate { pool, when_full },
                };
            }
        }
    }
    match overflowed {
        // Overflow with nowhere left to go: leave it, visibly.
        Some((rule, pool)) => Decision {
            rule: Some(rule),
            verdict: Verdict::NoCandidate {
                pool,
                when_full: WhenFull::Leave,
            },
        },
        None => Decision {
            rule: None,
            verdict: Verdict::NoMatch,
        },
    }
}

fn judge(
    rules: &Rules,
    agent: usize,
    skills: &[String],
    state: &RoutingState,
    now: Timestamp,
) -> CandidateVerdict {
    let a = &rules.agents[agent];
    if state.unusable.contains(&a.name) {
        return CandidateVerdict::Unusable;
    }
    if state.away.contains(&a.name) {
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
    CandidateVerdict::Kept
}
