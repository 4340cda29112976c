//! A decision in words: the one-line reason recorded in outcomes, shown by
//! `explain` and `status`, and the rule's pool it was decided for.

use super::decide::{Decision, Verdict};
use super::{Pool, Rules, Strategy, Target};

/// How the strategy chose, in words: "round-robin: last was ann -> bob",
/// "pool `p` least-open -> bob", or the agent's name without a pool.
fn pick_text(rules: &Rules, agent: usize, pool: Option<usize>, previous: Option<&str>) -> String {
    let agent = &rules.agents[agent].name;
    let Some(p) = pool else {
        return agent.clone();
    };
    let pool = &rules.pools[p];
    match (pool.strategy, previous) {
        (Strategy::RoundRobin, Some(prev)) => format!("round-robin: last was {prev} -> {agent}"),
        (Strategy::RoundRobin, None) => format!("round-robin: first pick -> {agent}"),
        (s, _) => format!("pool `{}` {} -> {agent}", pool.name, s.name()),
    }
}

impl Decision {
    /// The pool the deciding rule assigns to, if it names one.
    pub fn rule_pool<'r>(&self, rules: &'r Rules) -> Option<&'r Pool> {
        match rules.rules[self.rule?].target {
            Target::Pool(p) => Some(&rules.pools[p]),
            _ => None,
        }
    }

    /// A one-line reason, as recorded in outcomes and shown by `explain`.
    pub fn reason(&self, rules: &Rules) -> String {
        let rule = self
            .rule
            .map(|r| rules.rules[r].name.as_str())
            .unwrap_or("-");
        match &self.verdict {
            Verdict::Assign {
                agent,
                pool,
                previous,
                escalation,
                ..
            } => {
                let picked = pick_text(rules, *agent, *pool, previous.as_deref());
                match (escalation, self.rule_pool(rules)) {
                    (Some(step), Some(p)) => {
                        let step = super::escalate::describe_step(rules, p, *step);
                        let to = if pool.is_some() {
                            format!(": {picked}")
                        } else {
                            String::new()
                        };
                        format!(
                            "rule `{rule}`: pool `{}` had no available agent; {step}{to}",
                            p.name
                        )
                    }
                    _ if pool.is_none() => format!("rule `{rule}` assigns {picked}"),
                    _ => format!("rule `{rule}`: {picked}"),
                }
            }
            Verdict::NoCandidate {
                pool,
                when_full,
                hourly,
                escalation,
            } => {
                let target = pool
                    .map(|p| format!("pool `{}`", rules.pools[p].name))
                    .unwrap_or("the agent".into());
                let capped: Vec<String> = hourly
                    .iter()
                    .map(|(a, count, cap)| {
                        format!("{} ({count}/{cap} this hour)", rules.agents[*a].name)
                    })
                    .collect();
                let capped = if capped.is_empty() {
                    String::new()
                } else {
                    format!("; at hourly cap: {}", capped.join(", "))
                };
                let escalated = match (escalation, self.rule_pool(rules)) {
                    (Some(step), Some(p)) => format!(
                        "; {}: none there either{}",
                        super::escalate::describe_step(rules, p, *step),
                        super::escalate::describe_next(rules, p, *step)
                    ),
                    _ => String::new(),
                };
                format!(
                    "rule `{rule}`: {target} has no available agent{escalated} (when_full = {}){capped}",
                    when_full.name()
                )
            }
            Verdict::Nobody => format!("rule `{rule}` assigns none"),
            Verdict::NoMatch => "no rule matched".into(),
        }
    }
}
