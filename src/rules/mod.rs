//! Routing rules: the model, loading, matching, schedules and the pure
//! decision function that the worker, the CLI, tests and benchmarks share.

mod compile;
pub mod context;
pub mod decide;
pub mod escalate;
pub mod explain;
pub mod fill;
pub mod index;
pub mod intake;
mod keys;
pub mod load;
pub mod matcher;
mod names;
mod raw;
mod reason;
pub mod refs;
pub mod schedule;
pub mod state;
pub mod strategy;
pub mod template;
mod validate;

use std::path::PathBuf;

use jiff::tz::TimeZone;

use crate::diag::Location;
use crate::domain::AgentId;
pub use context::{ChatContext, LastAgent};
pub use decide::{
    CandidateVerdict, Decision, Observer, Picking, RoutingState, Verdict, decide, decide_observed,
    reassign_pick,
};
pub use load::{RulesError, load_path, load_sources};
use matcher::Condition;
use schedule::Schedule;
pub use state::Applied;
use template::Template;

/// A validated, merged rule set. Agents are sorted by name, which is the
/// order round-robin rotates in.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The zone of the first file that names one (else UTC); used for "today".
    pub timezone: TimeZone,
    pub agents: Vec<Agent>,
    pub schedules: Vec<Schedule>,
    pub pools: Vec<Pool>,
    pub rules: Vec<Rule>,
    /// The files the set was loaded from, in merge order.
    pub files: Vec<PathBuf>,
    /// Finds the rules a chat cannot match; call [`Rules::reindex`] after
    /// changing `rules` (until then it is ignored, never wrong).
    pub index: index::RuleIndex,
    /// The hourly counts keep at least this many assignments an agent:
    /// another rule set decides on the same counts (an A/B test's other
    /// arm), and its caps may be higher.
    pub hourly_floor: u32,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    /// The HelpCrunch agent id.
    pub id: AgentId,
    pub skills: Vec<String>,
    /// The agent's own shift (index into `Rules::schedules`).
    pub schedule: Option<usize>,
    /// For the `weighted` strategy; default 1.
    pub weight: u32,
    /// The agent's own cap on open chats; wins over the pool's.
    pub max_open: Option<u32>,
    /// The agent's own cap on new assignments in any sliding hour; wins
    /// over the pool's.
    pub max_per_hour: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastOpen,
    Weighted,
    Random,
    Sticky,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::LeastOpen,
        Strategy::Weighted,
        Strategy::Random,
        Strategy::Sticky,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastOpen => "least-open",
            Strategy::Weighted => "weighted",
            Strategy::Random => "random",
            Strategy::Sticky => "sticky",
        }
    }
}

/// What to do when a rule's target has no candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Requeue the chat until a candidate frees up.
    Wait,
    /// Try the next rule.
    Next,
    /// Record the outcome and leave the chat unassigned.
    Leave,
}

impl WhenFull {
    pub fn name(self) -> &'static str {
        match self {
            WhenFull::Wait => "wait",
            WhenFull::Next => "next",
            WhenFull::Leave => "leave",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Indexes into `Rules::agents`, ascending, so in name order.
    pub members: Vec<usize>,
    pub strategy: Strategy,
    pub when_full: WhenFull,
    /// Default cap on open chats per member.
    pub max_open: Option<u32>,
    /// Unanswered for this long after an assignment: the next candidate gets the chat.
    pub reassign_after: Option<std::time::Duration>,
    /// How many times a chat may be moved on for lack of an answer.
    pub max_reassign: u32,
    /// Default cap on new assignments per member in any sliding hour.
    pub max_per_hour: Option<u32>,
    /// How long `sticky` remembers a customer's agent.
    pub sticky_for: std::time::Duration,
    /// Where a chat may go once it has waited long enough, in order of `after`.
    pub escalate: Vec<escalate::Step>,
    /// The one message a chat gets when it has waited this long with nobody free.
    pub busy_reply: Option<BusyReply>,
    /// Which of an absent member's chats go back through the rules.
    pub handback: Handback,
}

/// A pool's `handback`: what becomes of a member's open chats from the
/// pool when they are marked away or their shift ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handback {
    /// They stay with the agent.
    #[default]
    None,
    /// Those the agent has not answered go back through the rules.
    Unanswered,
    /// All of them go back through the rules.
    All,
}

impl Handback {
    pub const ALL: [Handback; 3] = [Handback::None, Handback::Unanswered, Handback::All];

    pub fn name(self) -> &'static str {
        match self {
            Handback::None => "none",
            Handback::Unanswered => "unanswered",
            Handback::All => "all",
        }
    }
}

/// A pool's `busy_reply`: posted once per chat, as `from`, when the chat has
/// waited `after` (since it was enqueued) with no candidate.
#[derive(Debug, Clone)]
pub struct BusyReply {
    /// The agent the message is posted as (index into `Rules::agents`).
    pub from: usize,
    pub text: Template,
    pub after: std::time::Duration,
}

/// `sticky_for` when a pool does not say.
pub const DEFAULT_STICKY_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

impl Pool {
    /// An agent's cap in this pool: their own `max_open`, else the pool's.
    pub fn cap(&self, agent: &Agent) -> Option<u32> {
        agent.max_open.or(self.max_open)
    }

    /// An agent's hourly cap in this pool: their own `max_per_hour`, else the pool's.
    pub fn hourly_cap(&self, agent: &Agent) -> Option<u32> {
        agent.max_per_hour.or(self.max_per_hour)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Agent(usize),
    Pool(usize),
    /// `assign = "none"`: record the decision, assign nobody.
    Nobody,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Waiting chats are taken highest priority first (default 0).
    pub priority: i64,
    /// All must hold; empty matches every chat.
    pub conditions: Vec<Condition>,
    pub target: Target,
    pub require_skills: Vec<String>,
    /// A private note posted after a successful assignment.
    pub note: Option<Template>,
    /// A message the customer sees, posted after a successful assignment.
    pub reply: Option<Reply>,
    /// The schedule named by the rule's `within`/`outside`, for `{next_open}`.
    pub schedule: Option<usize>,
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct Reply {
    /// The agent the message is posted as (index into `Rules::agents`).
    pub from: usize,
    pub text: Template,
}

impl Rules {
    /// Rebuilds the index after `rules` changed.
    pub fn reindex(&mut self) {
        self.index = index::RuleIndex::build(&self.rules);
    }

    pub fn agent_by_name(&self, name: &str) -> Option<usize> {
        self.agents
            .binary_search_by(|a| a.name.as_str().cmp(name))
            .ok()
    }

    /// Whether any agent or pool has a `max_per_hour`: else the last hour's
    /// assignments need not be read for a decision.
    pub fn uses_hourly_caps(&self) -> bool {
        self.agents.iter().any(|a| a.max_per_hour.is_some())
            || self.pools.iter().any(|p| p.max_per_hour.is_some())
    }

    /// The highest `max_per_hour` of any agent or pool (0 without one):
    /// how many of an agent's newest assignments a decision can need, so
    /// that no more are kept ([`RoutingState::keep_recent`]).
    ///
    /// [`RoutingState::keep_recent`]: crate::rules::RoutingState::keep_recent
    pub fn highest_hourly_cap(&self) -> usize {
        let agents = self.agents.iter().filter_map(|a| a.max_per_hour);
        let pools = self.pools.iter().filter_map(|p| p.max_per_hour);
        let own = agents.chain(pools).max().unwrap_or(0);
        own.max(self.hourly_floor) as usize
    }

    pub fn pool_by_name(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// The longest `sticky_for` of any pool: how long a customer's agent
    /// can matter to a decision (the default when there is no pool).
    pub fn longest_sticky_for(&self) -> std::time::Duration {
        self.pools
            .iter()
            .map(|p| p.sticky_for)
            .max()
            .unwrap_or(DEFAULT_STICKY_FOR)
    }

    pub fn agent_by_id(&self, id: AgentId) -> Option<usize> {
        self.agents.iter().position(|a| a.id == id)
    }

    /// The hours of the week starting `monday` (local midnight) at which no
    /// member of `pool` is on shift, as `(weekday 0 = Monday, hour)`.
    /// Members without a schedule are always on shift.
    pub fn uncovered_hours(&self, pool: usize, monday: &jiff::Zoned) -> Vec<(usize, u8)> {
        let members = &self.pools[pool].members;
        let mut out = Vec::new();
        for day in 0..7 {
            for hour in 0..24u8 {
                let Ok(at) = monday.checked_add(jiff::SignedDuration::from_mins(
                    day as i64 * 1440 + hour as i64 * 60 + 30,
                )) else {
                    continue;
                };
                let t = at.timestamp();
                let covered = members.iter().any(|&a| match self.agents[a].schedule {
                    None => true,
                    Some(s) => self.schedules[s].is_open(t),
                });
                if !covered {
                    out.push((day, hour));
                }
            }
        }
        out
    }

    /// What `check` warns about: valid, but probably not what was meant.
    /// Shift coverage is judged over the week that starts `monday`.
    pub fn warnings_for_week(&self, monday: &jiff::Zoned) -> Vec<String> {
        let mut out = self.warnings();
        for (i, p) in self.pools.iter().enumerate() {
            let Some(rule) = self.rules.iter().find(|r| r.target == Target::Pool(i)) else {
                continue;
            };
            let gaps = self.uncovered_hours(i, monday);
            if !gaps.is_empty() {
                out.push(format!(
                    "pool `{}` has no agent on shift {} (rule `{}` routes to it)",
                    p.name,
                    describe_hours(&gaps),
                    rule.name
                ));
            }
        }
        out
    }

    /// What `check` warns about that needs no calendar.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(first) = self.rules.iter().position(|r| r.conditions.is_empty()) {
            for later in &self.rules[first + 1..] {
                out.push(format!(
                    "{}: rule `{}` can never match: rule `{}` before it matches every chat",
                    later.location, later.name, self.rules[first].name
                ));
            }
        }
        for (i, s) in self.schedules.iter().enumerate() {
            if !s.ever_open() {
                out.push(format!("schedule `{}` is never open", s.name));
            }
            let by_agent = self.agents.iter().any(|a| a.schedule == Some(i));
            let by_rule = self
                .rules
                .iter()
                .any(|r| r.conditions.iter().any(|c| c.uses_schedule(i)));
            if !by_agent && !by_rule {
                out.push(format!("schedule `{}` is used by no rule or agent", s.name));
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            let in_pool = self.pools.iter().any(|p| p.members.contains(&i));
            let named = self.rules.iter().any(|r| r.target == Target::Agent(i))
                || escalate::is_step_target(self, Target::Agent(i));
            if !in_pool && !named {
                out.push(format!(
                    "agent `{}` is in no pool and no rule assigns to it",
                    a.name
                ));
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            if !self.rules.iter().any(|r| r.target == Target::Pool(i))
                && !escalate::is_step_target(self, Target::Pool(i))
            {
                out.push(format!("pool `{}` is used by no rule", p.name));
            }
        }
        out.extend(self.handback_warnings());
        out.extend(escalate::warnings(self));
        out
    }

    /// A pool that hands chats back but none of whose members has a shift:
    /// only `agent away` can ever set it off.
    fn handback_warnings(&self) -> Vec<String> {
        self.pools
            .iter()
            .filter(|p| p.handback != Handback::None)
            .filter(|p| p.members.iter().all(|&a| self.agents[a].schedule.is_none()))
            .map(|p| {
                format!(
                    "pool `{}` has handback = \"{}\" but none of its agents has a schedule: it acts only when an agent is marked away",
                    p.name,
                    p.handback.name()
                )
            })
            .collect()
    }
}

/// `[(0, 0), (0, 1), (0, 2), (2, 23)]` -> "mon 00:00-03:00, wed 23:00-24:00".
fn describe_hours(hours: &[(usize, u8)]) -> String {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut spans: Vec<(usize, u8, u8)> = Vec::new();
    for &(day, hour) in hours {
        match spans.last_mut() {
            Some((d, _, end)) if *d == day && *end == hour => *end = hour + 1,
            _ => spans.push((day, hour, hour + 1)),
        }
    }
    spans
        .iter()
        .map(|(d, a, b)| format!("{} {a:02}:00-{b:02}:00", DAYS[*d]))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod handback_tests {
    use super::*;

    fn load(pool: &str, agents: &str) -> Result<Rules, RulesError> {
        let text = format!(
            "[schedules.day]\nhours = {{ all = \"09:00-18:00\" }}\n\n[agents]\n{agents}\n\n[pools.support]\nagents = [\"alice\", \"bob\"]\n{pool}\n\n[[rule]]\nname = \"all\"\nassign = \"pool:support\"\n"
        );
        load_sources(&[(PathBuf::from("rules.toml"), text)])
    }

    const NO_SHIFTS: &str = "alice = { id = 1 }\nbob = { id = 2 }";

    #[test]
    fn handback_is_none_unless_set() {
        let r = load("", NO_SHIFTS).unwrap();
        assert_eq!(r.pools[0].handback, Handback::None);
        let r = load("handback = \"unanswered\"", NO_SHIFTS).unwrap();
        assert_eq!(r.pools[0].handback, Handback::Unanswered);
        let r = load("handback = \"all\"", NO_SHIFTS).unwrap();
        assert_eq!(r.pools[0].handback, Handback::All);
    }

    #[test]
    fn a_bad_handback_names_file_line_and_column() {
        let e = load("handback = \"some\"", NO_SHIFTS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules.toml:10:12"), "{e}");
        assert!(e.contains("unknown handback `some`"), "{e}");
    }

    #[test]
    fn handback_without_any_shift_warns_that_only_away_sets_it_off() {
        let warned = |r: &Rules| r.warnings().iter().any(|w| w.contains("handback"));
        let r = load("handback = \"all\"", NO_SHIFTS).unwrap();
        let w = r.warnings();
        assert!(
            w.iter().any(|w| w
                == "pool `support` has handback = \"all\" but none of its agents has a schedule: it acts only when an agent is marked away"),
            "{w:?}"
        );
        let shifts = "alice = { id = 1, schedule = \"day\" }\nbob = { id = 2 }";
        assert!(!warned(&load("handback = \"all\"", shifts).unwrap()));
        assert!(!warned(&load("", NO_SHIFTS).unwrap()));
    }
}
