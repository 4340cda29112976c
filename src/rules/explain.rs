//! Why a chat goes where it goes: the decision, step by step, for
//! `assignd explain`. Built by observing the very same [`decide`] call.

use jiff::Timestamp;
use serde::Serialize;

use crate::domain::{AgentId, ChatId};

use super::decide::{CandidateVerdict, Decision, Observer, RoutingState, Verdict, decide_observed};
use super::matcher::Condition;
use super::{ChatContext, Rules, Target};

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
    fn picked(&mut self, rule: usize, explain: &dyn Fn() -> String) {
        self.steps[rule].pick = Some(explain());
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
