//! Why a chat goes where it goes: the decision, step by step, for
//! `assignd explain`. Built by observing the very same [`decide`] call.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::domain::{AgentId, ChatId};

use super::decide::{
    CandidateVerdict, Decision, Observer, Picking, RoutingState, Verdict, decide_observed, pick,
    sticky_age,
};
use super::matcher::Condition;
use super::{ChatContext, Pool, Rules, Strategy, Target};
use crate::duration::exact;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub chat_id: ChatId,
    pub at: String,
    pub rules: Vec<RuleStep>,
    pub decision: DecisionSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleStep {
    pub name: String,
    pub location: String,
    /// `matched`, `failed` or `not evaluated`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pick: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateStep {
    pub agent: String,
    pub kept: bool,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionSummary {
    /// What the worker would record: `assigned`, `no_agent`, `skipped`, `no_match`.
    pub result: &'static str,
    pub rule: Option<String>,
    pub pool: Option<String>,
    pub agent: Option<String>,
    pub agent_id: Option<AgentId>,
    pub reason: String,
}

struct Collector<'r> {
    rules: &'r Rules,
    chat: &'r ChatContext,
    now: Timestamp,
    steps: Vec<RuleStep>,
}

impl Observer for Collector<'_> {
    fn rule_failed(&mut self, rule: usize, condition: &Condition) {
        let step = &mut self.steps[rule];
        step.status = "failed";
        step.failed_key = Some(condition.key().to_string());
        step.seen = Some(condition.seen(self.chat, &self.rules.schedules, self.now));
    }
    fn rule_matched(&mut self, rule: usize) {
        self.steps[rule].status = "matched";
    }
    fn candidate(&mut self, rule: usize, agent: usize, verdict: &CandidateVerdict) {
        self.steps[rule].candidates.push(CandidateStep {
            agent: self.rules.agents[agent].name.clone(),
            kept: *verdict == CandidateVerdict::Kept,
            why: verdict.describe(),
        });
    }
    fn picked(&mut self, rule: usize, picking: &Picking) {
        self.steps[rule].pick = Some(explain_pick(picking));
    }
}

/// Decides for `chat` at `now` and records every step.
pub fn explain(
    rules: &Rules,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
) -> (Decision, Explanation) {
    let steps = rules
        .rules
        .iter()
        .map(|r| RuleStep {
            name: r.name.clone(),
            location: r.location.to_string(),
            status: "not evaluated",
            failed_key: None,
            seen: None,
            target: Some(match r.target {
                Target::Agent(a) => rules.agents[a].name.clone(),
                Target::Pool(p) => format!(
                    "pool:{} ({})",
                    rules.pools[p].name,
                    rules.pools[p].strategy.name()
                ),
                Target::Nobody => "none".into(),
            }),
            candidates: Vec::new(),
            pick: None,
        })
        .collect();
    let mut collector = Collector {
        rules,
        chat,
        now,
        steps,
    };
    let decision = decide_observed(rules, chat, state, now, &mut collector);
    let (result, pool, agent) = match &decision.verdict {
        Verdict::Assign { agent, pool, .. } => ("assigned", *pool, Some(*agent)),
        Verdict::NoCandidate { pool, .. } => ("no_agent", *pool, None),
        Verdict::Nobody => ("skipped", None, None),
        Verdict::NoMatch => ("no_match", None, None),
    };
    let summary = DecisionSummary {
        result,
        rule: decision.rule.map(|r| rules.rules[r].name.clone()),
        pool: pool.map(|p| rules.pools[p].name.clone()),
        agent: agent.map(|a| rules.agents[a].name.clone()),
        agent_id: agent.map(|a| rules.agents[a].id),
        reason: decision.reason(rules),
    };
    let explanation = Explanation {
        chat_id: chat.chat_id,
        at: now.to_string(),
        rules: collector.steps,
        decision: summary,
    };
    (decision, explanation)
}

impl Explanation {
    /// The explanation as people read it.
    pub fn to_text(&self) -> String {
        let mut out = format!("chat {} at {}\n", self.chat_id, self.at);
        for (i, r) in self.rules.iter().enumerate() {
            let target = r.target.as_deref().unwrap_or("");
            match r.status {
                "failed" => out.push_str(&format!(
                    "  {}. {} -> {target}: no, {} is {}\n",
                    i + 1,
                    r.name,
                    r.failed_key.as_deref().unwrap_or("?"),
                    r.seen.as_deref().unwrap_or("?")
                )),
                "matched" => {
                    out.push_str(&format!("  {}. {} -> {target}: MATCH\n", i + 1, r.name));
                    for c in &r.candidates {
                        out.push_str(&format!("       {:<12} {}\n", c.agent, c.why));
                    }
                    if let Some(p) = &r.pick {
                        out.push_str(&format!("       pick: {p}\n"));
                    }
                }
                _ => out.push_str(&format!(
                    "  {}. {} -> {target}: not evaluated\n",
                    i + 1,
                    r.name
                )),
            }
        }
        let d = &self.decision;
        let who = match (&d.agent, d.agent_id) {
            (Some(a), Some(id)) => format!(" {a} (id {id})"),
            _ => String::new(),
        };
        out.push_str(&format!("decision: {}{who}: {}\n", d.result, d.reason));
        out
    }
}

/// The strategy's reasoning in words, for `explain`.
fn explain_pick(picking: &Picking) -> String {
    let &Picking {
        pool,
        candidates,
        chat,
        state,
        now,
    } = picking;
    let last = state.last_pick.get(&pool.name).map(String::as_str);
    let Some((picked, _, _)) = pick(pool, candidates, chat, state, now) else {
        return "no candidate".into();
    };
    let name = candidates
        .iter()
        .find(|c| c.index == picked)
        .map_or("?", |c| c.name);
    let last_text = last.unwrap_or("nobody yet");
    match pool.strategy {
        Strategy::RoundRobin => format!("round-robin: last was {last_text} -> {name}"),
        Strategy::LeastOpen => {
            let counts: Vec<String> = candidates
                .iter()
                .map(|c| format!("{} {}", c.name, c.open))
                .collect();
            format!(
                "least-open: open chats {} (ties after {last_text}) -> {name}",
                counts.join(", ")
            )
        }
        Strategy::Weighted => {
            let weights: Vec<String> = candidates
                .iter()
                .map(|c| format!("{} x{}", c.name, c.weight))
                .collect();
            format!("weighted: {} -> {name}", weights.join(", "))
        }
        Strategy::Random => format!("random among {} candidates -> {name}", candidates.len()),
        Strategy::Sticky => explain_sticky(pool, chat, now, last_text, name),
    }
}

fn explain_sticky(
    pool: &Pool,
    chat: &ChatContext,
    now: Timestamp,
    last_text: &str,
    name: &str,
) -> String {
    let Some(prev) = &chat.last_agent else {
        return format!(
            "sticky: no earlier agent for this customer; round-robin after {last_text} -> {name}"
        );
    };
    match sticky_age(pool, prev.at, now) {
        Some((true, age)) => format!(
            "sticky: the customer's last agent {} was {} ago (sticky_for {}); round-robin after {last_text} -> {name}",
            prev.name,
            ago(age),
            exact(pool.sticky_for)
        ),
        _ if prev.name == name => format!("sticky: the customer's last agent -> {name}"),
        _ => format!(
            "sticky: the customer's last agent {} is not a candidate; round-robin after {last_text} -> {name}",
            prev.name
        ),
    }
}

/// An age in its largest whole unit, rounded down: "31d", "5h", "2m", "40s".
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::LastAgent;
    use crate::rules::load::load_texts;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_agent_at_the_hourly_cap_is_no_candidate_until_the_hour_passes() {
        let rules = load_texts(&[(
            "r.toml",
            "[agents]\nann = { id = 1, max_per_hour = 3 }\nbob = { id = 2 }\n\
             [pools.p]\nagents = [\"ann\", \"bob\"]\nmax_per_hour = 1\n\
             [[rule]]\nname = \"all\"\nassign = \"pool:p\"\n",
        )])
        .unwrap();
        let now = at("2026-06-03T10:00:00Z");
        let mut state = RoutingState::default();
        let ann = ["09:00:00", "09:10:00", "09:30:00", "09:59:59"]
            .map(|t| at(&format!("2026-06-03T{t}Z")))
            .to_vec();
        state.recent.insert("ann".into(), ann);
        state
            .recent
            .insert("bob".into(), vec![at("2026-06-03T09:20:00Z")]);
        let (decision, e) = explain(&rules, &ChatContext::default(), &state, now);
        assert_eq!(
            decision.reason(&rules),
            "rule `all`: pool `p` has no available agent (when_full = wait); \
             at hourly cap: ann (3/3 this hour), bob (1/1 this hour)"
        );
        let text = e.to_text();
        // 09:00 is exactly an hour ago: out of the window, so 3 and not 4.
        assert!(
            text.contains("ann          at hourly cap (3/3 this hour)"),
            "{text}"
        );
        assert!(
            text.contains("bob          at hourly cap (1/1 this hour)"),
            "{text}"
        );
        // Ten minutes on, ann's 09:10 has left the hour.
        let (decision, _) = explain(
            &rules,
            &ChatContext::default(),
            &state,
            at("2026-06-03T10:10:00Z"),
        );
        assert_eq!(decision.verdict.assignment().map(|a| a.0), Some(0));
    }

    #[test]
    fn sticky_forgets_a_last_agent_older_than_sticky_for() {
        let rules = load_texts(&[(
            "r.toml",
            "[agents]\nann = { id = 1 }\nbob = { id = 2 }\n\
             [pools.p]\nagents = [\"ann\", \"bob\"]\nstrategy = \"sticky\"\n\
             [[rule]]\nname = \"all\"\nassign = \"pool:p\"\n",
        )])
        .unwrap();
        let now = at("2026-06-03T10:00:00Z");
        let chat = |days: i64| ChatContext {
            last_agent: Some(LastAgent::new(
                "bob",
                Some(now - jiff::SignedDuration::from_hours(24 * days)),
            )),
            ..ChatContext::default()
        };
        let state = RoutingState::default();
        let (d, e) = explain(&rules, &chat(29), &state, now);
        assert_eq!(d.verdict.assignment().map(|a| a.0), Some(1));
        assert_eq!(
            e.rules[0].pick.as_deref(),
            Some("sticky: the customer's last agent -> bob")
        );
        let (d, e) = explain(&rules, &chat(31), &state, now);
        assert_eq!(
            d.verdict.assignment().map(|a| a.0),
            Some(0),
            "round-robin from the start"
        );
        assert_eq!(
            e.rules[0].pick.as_deref(),
            Some(
                "sticky: the customer's last agent bob was 31d ago (sticky_for 30d); round-robin after nobody yet -> ann"
            )
        );
        // A time the store does not know counts as recent.
        let unknown = ChatContext {
            last_agent: Some(LastAgent::new("bob", None)),
            ..ChatContext::default()
        };
        assert_eq!(
            explain(&rules, &unknown, &state, now)
                .0
                .verdict
                .assignment()
                .map(|a| a.0),
            Some(1)
        );
    }
}
