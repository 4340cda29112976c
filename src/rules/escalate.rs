//! Escalation by waiting time (pool `escalate`): a chat that has waited a
//! step's `after` for a candidate, counted from when it was enqueued, may go
//! to that step's target too. The pool itself is still tried first at every
//! decision, then each step reached in order, so the chat goes to the first
//! of them with a candidate; the widening never narrows while it waits.

use std::time::Duration;

use jiff::Timestamp;

use super::names::{Names, compile_target};
use super::raw::File;
use super::{Pool, Rules, Target};
use crate::diag::SourceError;
use crate::duration::exact;

/// One step of a pool's `escalate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How long the chat must have waited since it was enqueued.
    pub after: Duration,
    /// An agent or a pool, never `none`.
    pub target: Target,
}

/// Resolves every pool's `escalate`, once all pools have names (a step may
/// name a pool defined later). Steps must come strictly later each.
pub(super) fn compile(
    files: &[File],
    names: &Names,
    pools: &mut [Pool],
) -> Result<(), SourceError> {
    for f in files {
        for (name, raw) in &f.raw.pools {
            let mut steps: Vec<Step> = Vec::new();
            for step in &raw.get_ref().escalate {
                let step = step.get_ref();
                let target = compile_target(f, &step.assign, names)?;
                if target == Target::Nobody {
                    return Err(f.err(
                        step.assign.span(),
                        "an escalation step must assign an agent or a pool, not \"none\"",
                    ));
                }
                let after = step.after.get_ref().0;
                if let Some(before) = steps.last()
                    && after <= before.after
                {
                    return Err(f.err(
                        step.after.span(),
                        format!(
                            "escalation steps must come later each: {} is not after {}",
                            exact(after),
                            exact(before.after)
                        ),
                    ));
                }
                if after.is_zero() {
                    return Err(f.err(step.after.span(), "`after` must be longer than zero"));
                }
                steps.push(Step { after, target });
            }
            pools[names.pools[name.get_ref()]].escalate = steps;
        }
    }
    Ok(())
}

/// How many of `pool`'s steps a chat that has waited `waited` has reached.
pub fn reached(pool: &Pool, waited: Duration) -> usize {
    pool.escalate
        .iter()
        .take_while(|s| s.after <= waited)
        .count()
}

/// When the chat enqueued at `enqueued_at` reaches `pool`'s next step
/// after the `done` it has reached, if there is one.
pub fn next_step_at(pool: &Pool, done: usize, enqueued_at: Timestamp) -> Option<Timestamp> {
    let step = pool.escalate.get(done)?;
    let after = jiff::SignedDuration::try_from(step.after).ok()?;
    enqueued_at.checked_add(after).ok()
}

/// A step's target in words: "pool `overflow`" or "lead".
pub fn target_name(rules: &Rules, target: Target) -> String {
    match target {
        Target::Pool(p) => format!("pool `{}`", rules.pools[p].name),
        Target::Agent(a) => rules.agents[a].name.clone(),
        Target::Nobody => "nobody".into(),
    }
}

/// "escalated after 2m (step 1 of 2) to pool `overflow`" for step `index`.
pub fn describe_step(rules: &Rules, pool: &Pool, index: usize) -> String {
    let step = &pool.escalate[index];
    format!(
        "escalated after {} (step {} of {}) to {}",
        exact(step.after),
        index + 1,
        pool.escalate.len(),
        target_name(rules, step.target)
    )
}

/// What a chat that found no candidate up to step `index` waits for:
/// "; next: lead at 10m" or "; no further step".
pub fn describe_next(rules: &Rules, pool: &Pool, index: usize) -> String {
    match pool.escalate.get(index + 1) {
        Some(next) => format!(
            "; next: {} at {}",
            target_name(rules, next.target),
            exact(next.after)
        ),
        None => "; no further step".into(),
    }
}

/// Whether some pool escalates to `target`.
pub fn is_step_target(rules: &Rules, target: Target) -> bool {
    rules
        .pools
        .iter()
        .any(|p| p.escalate.iter().any(|s| s.target == target))
}

/// What `check` warns about: a step that can never find a candidate the
/// pool did not (the pool itself, or only its own members), or whose
/// agents are never on shift or lack the skills every rule to the pool needs.
pub fn warnings(rules: &Rules) -> Vec<String> {
    let mut out = Vec::new();
    for (p, pool) in rules.pools.iter().enumerate() {
        for (n, step) in pool.escalate.iter().enumerate() {
            let members = match step.target {
                Target::Pool(q) => rules.pools[q].members.clone(),
                Target::Agent(a) => vec![a],
                Target::Nobody => Vec::new(),
            };
            let why = if step.target == Target::Pool(p) {
                Some("is the pool itself")
            } else if members.iter().all(|a| pool.members.contains(a)) {
                Some("adds no agent the pool does not have")
            } else if members.iter().all(|&a| never_on_shift(rules, a)) {
                Some("has no agent who is ever on shift")
            } else if !members
                .iter()
                .any(|&a| has_skills_of_some_rule(rules, p, a))
            {
                Some("has no agent with the skills the pool's rules require")
            } else {
                None
            };
            if let Some(why) = why {
                out.push(format!(
                    "pool `{}`: escalation step {} ({}) {why}: it never finds a candidate",
                    pool.name,
                    n + 1,
                    target_name(rules, step.target)
                ));
            }
        }
    }
    out
}

fn never_on_shift(rules: &Rules, agent: usize) -> bool {
    rules.agents[agent]
        .schedule
        .is_some_and(|s| !rules.schedules[s].ever_open())
}

/// Whether `agent` has every skill of at least one rule that routes to
/// pool `p` (vacuously so when no rule does).
fn has_skills_of_some_rule(rules: &Rules, p: usize, agent: usize) -> bool {
    let skills = &rules.agents[agent].skills;
    let mut routing = rules
        .rules
        .iter()
        .filter(|r| r.target == Target::Pool(p))
        .peekable();
    routing.peek().is_none()
        || routing.any(|r| {
            r.require_skills
                .iter()
                .all(|s| skills.iter().any(|have| have.eq_ignore_ascii_case(s)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load::load_texts;

    const AGENTS: &str =
        "[agents]\na = { id = 1 }\nb = { id = 2 }\n[[rule]]\nname = \"r\"\nassign = \"pool:p\"\n";

    fn load(pools: &str) -> Result<Rules, String> {
        load_texts(&[("r.toml", &format!("{AGENTS}{pools}"))]).map_err(|e| e.to_string())
    }

    #[test]
    fn steps_resolve_later_pools_and_describe_themselves() {
        let r = load(
            "[pools.p]\nagents = [\"a\"]\nescalate = [{ after = \"2m\", assign = \"pool:q\" }, { after = \"10m\", assign = \"b\" }]\n\
             [pools.q]\nagents = [\"b\"]\n",
        )
        .unwrap();
        let p = &r.pools[r.pool_by_name("p").unwrap()];
        assert_eq!(reached(p, Duration::from_secs(119)), 0);
        assert_eq!(reached(p, Duration::from_secs(120)), 1);
        assert_eq!(reached(p, Duration::from_secs(3600)), 2);
        assert_eq!(
            describe_step(&r, p, 0),
            "escalated after 2m (step 1 of 2) to pool `q`"
        );
        assert_eq!(describe_next(&r, p, 0), "; next: b at 10m");
        assert_eq!(describe_next(&r, p, 1), "; no further step");
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        assert_eq!(
            next_step_at(p, 1, t0).unwrap().to_string(),
            "2026-12-03T10:10:00Z"
        );
        assert_eq!(next_step_at(p, 2, t0), None);
    }

    #[test]
    fn check_warns_about_steps_that_never_find_anyone() {
        let r = load(
            "[pools.p]\nagents = [\"a\"]\nescalate = [{ after = \"1m\", assign = \"pool:p\" }, { after = \"2m\", assign = \"a\" }, { after = \"3m\", assign = \"b\" }]\n",
        )
        .unwrap();
        let w = warnings(&r);
        assert_eq!(
            w,
            [
                "pool `p`: escalation step 1 (pool `p`) is the pool itself: it never finds a candidate",
                "pool `p`: escalation step 2 (a) adds no agent the pool does not have: it never finds a candidate",
            ]
        );
        assert!(
            !r.warnings()
                .iter()
                .any(|w| w.contains("agent `b` is in no pool"))
        );
    }

    #[test]
    fn bad_steps_are_refused_where_they_are_written() {
        let cases = [
            (
                "[{ after = \"2m\", assign = \"none\" }]",
                "r.toml:9:38: an escalation step must assign",
            ),
            (
                "[{ after = \"2m\", assign = \"pool:nope\" }]",
                "r.toml:9:38: unknown pool `nope`",
            ),
            (
                "[{ after = \"5m\", assign = \"b\" }, { after = \"5m\", assign = \"a\" }]",
                "r.toml:9:55: escalation steps must come later each: 5m is not after 5m",
            ),
            (
                "[{ after = \"0s\", assign = \"b\" }]",
                "r.toml:9:23: `after` must be longer",
            ),
            ("[{ after = \"2m\", to = \"b\" }]", "unknown field `to`"),
        ];
        for (steps, wanted) in cases {
            let err = load(&format!(
                "[pools.p]\nagents = [\"a\"]\nescalate = {steps}\n"
            ))
            .unwrap_err();
            assert!(err.contains(wanted), "{steps}: {err}");
        }
    }
}
