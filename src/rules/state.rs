//! The one way a decision changes [`RoutingState`]: an assignment takes a
//! seat (the agent's open count), counts towards the agent's hourly cap,
//! advances the pool's rotation and, for `weighted`, stores the pool's new
//! current weights. The worker, the
//! reassignment job and `simulate` all apply decisions through here, so
//! their state moves the same way; [`RoutingState::undo`] gives a seat back
//! when the assignment then fails.

use std::collections::HashMap;

use jiff::Timestamp;

use super::Rules;
use super::decide::{Decision, RoutingState, hour_before};

/// What applying a decision changed, to give back if the assignment fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The agent who got the seat.
    pub agent: String,
    /// The pool whose rotation moved, if the agent was picked from one.
    pub pool: Option<String>,
    /// When: the instant counted towards the agent's hourly cap.
    pub at: Timestamp,
    previous_pick: Option<String>,
    /// The pool's weights before, when the decision carried new ones.
    previous_weights: Option<HashMap<String, i64>>,
}

impl Applied {
    /// Who had the pool's rotation before this pick.
    pub fn previous_pick(&self) -> Option<&str> {
        self.previous_pick.as_deref()
    }
}

impl RoutingState {
    /// Applies `decision`, taken at `now`, if it assigns; `None` when it
    /// does not.
    pub fn apply(&mut self, rules: &Rules, decision: &Decision, now: Timestamp) -> Option<Applied> {
        let (agent, pool, weights) = decision.verdict.assignment()?;
        Some(self.apply_pick(rules, agent, pool, weights, now))
    }

    /// Applies a pick made outside [`decide`](super::decide()) (a
    /// reassignment): `agent` and `pool` index into `rules`, `weights` are
    /// the pool's new current weights for `weighted`, `now` the instant of
    /// the assignment.
    pub fn apply_pick(
        &mut self,
        rules: &Rules,
        agent: usize,
        pool: Option<usize>,
        weights: Option<&[(String, i64)]>,
        now: Timestamp,
    ) -> Applied {
        let agent = rules.agents[agent].name.clone();
        let pool = pool.map(|p| rules.pools[p].name.clone());
        *self.open.entry(agent.clone()).or_default() += 1;
        self.count_assignment(&agent, now, rules.highest_hourly_cap());
        let Some(name) = &pool else {
            return Applied {
                agent,
                pool,
                at: now,
                previous_pick: None,
                previous_weights: None,
            };
        };
        let previous_weights = weights.map(|w| {
            let entry = self.weights.entry(name.clone()).or_default();
            let before = entry.clone();
            entry.extend(w.iter().cloned());
            before
        });
        let previous_pick = self.last_pick.insert(name.clone(), agent.clone());
        Applied {
            agent,
            pool,
            at: now,
            previous_pick,
            previous_weights,
        }
    }

    /// Gives back what [`apply`](Self::apply) took: the seat always; the
    /// rotation and weights only if no other decision has moved the pool
    /// since (else undoing would rewind someone else's pick).
    pub fn undo(&mut self, applied: Applied) {
        if let Some(n) = self.open.get_mut(&applied.agent) {
            *n = n.saturating_sub(1);
        }
        if let Some(times) = self.recent.get_mut(&applied.agent)
            && let Some(i) = times.iter().rposition(|t| *t == applied.at)
        {
            times.remove(i);
        }
        let Some(pool) = applied.pool else { return };
        if self.last_pick.get(&pool) != Some(&applied.agent) {
            return;
        }
        match applied.previous_pick {
            Some(prev) => self.last_pick.insert(pool.clone(), prev),
            None => self.last_pick.remove(&pool),
        };
        if let Some(w) = applied.previous_weights {
            self.weights.insert(pool, w);
        }
    }

    /// Counts an assignment of `agent` at `now` towards its hourly cap,
    /// and forgets its assignments that left the hour, and all but the
    /// newest `keep`, so the list stays as short as the highest cap.
    fn count_assignment(&mut self, agent: &str, now: Timestamp, keep: usize) {
        let times = self.recent.entry(agent.to_string()).or_default();
        let gone = times.partition_point(|t| *t <= hour_before(now));
        times.drain(..gone);
        // Kept in order even if a caller's clock steps back.
        let at = times.partition_point(|t| *t <= now);
        times.insert(at, now);
        self.keep_recent(keep);
    }

    /// Keeps each agent's newest `keep` assignments of [`Self::recent`]
    /// and forgets the rest: a cap of at most `keep` counts the same on
    /// them (`assigned_last_hour` reaches the cap exactly when it did), and
    /// the place that frees first under it is still known. An agent with
    /// none left is forgotten.
    pub fn keep_recent(&mut self, keep: usize) {
        self.recent.retain(|_, times| {
            let extra = times.len().saturating_sub(keep);
            times.drain(..extra);
            !times.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::rules::{Verdict, load_sources};

    fn rules() -> Rules {
        let text = "[agents]\nann = { id = 1 }\nbob = { id = 2, weight = 2 }\n\
                    [pools.p]\nagents = [\"ann\", \"bob\"]\nstrategy = \"weighted\"\n\
                    [[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";
        load_sources(&[(PathBuf::from("r.toml"), text.to_string())]).unwrap()
    }

    fn assign(agent: usize, weights: Option<Vec<(String, i64)>>) -> Decision {
        Decision {
            rule: Some(0),
            verdict: Verdict::Assign {
                agent,
                pool: Some(0),
                previous: None,
                weights,
                escalation: None,
            },
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn w(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(a, n)| (a.to_string(), *n)).collect()
    }

    #[test]
    fn apply_takes_a_seat_and_moves_rotation_and_weights() {
        let rules = rules();
        let mut state = RoutingState::default();
        let applied = state.apply(
            &rules,
            &assign(1, Some(w(&[("ann", 1), ("bob", -1)]))),
            t(0),
        );
        let applied = applied.expect("an assignment applies");
        assert_eq!(
            (applied.agent.as_str(), applied.pool.as_deref()),
            ("bob", Some("p"))
        );
        assert_eq!(state.open["bob"], 1);
        assert_eq!(state.last_pick["p"], "bob");
        assert_eq!(state.weights["p"]["bob"], -1);

        state.undo(applied);
        assert_eq!(state.open["bob"], 0);
        assert!(state.last_pick.is_empty());
        assert!(state.weights["p"].is_empty());
    }

    #[test]
    fn apply_leaves_state_alone_when_nobody_is_assigned() {
        let rules = rules();
        let mut state = RoutingState::default();
        let none = Decision {
            rule: None,
            verdict: Verdict::NoMatch,
        };
        assert_eq!(state.apply(&rules, &none, t(0)), None);
        assert!(state.open.is_empty() && state.last_pick.is_empty());
    }

    #[test]
    fn undo_keeps_rotation_and_weights_that_moved_since() {
        let rules = rules();
        let mut state = RoutingState::default();
        let first = state.apply(
            &rules,
            &assign(0, Some(w(&[("ann", -2), ("bob", 2)]))),
            t(0),
        );
        let second = state.apply_pick(
            &rules,
            1,
            Some(0),
            Some(&w(&[("ann", 1), ("bob", -1)])),
            t(1),
        );
        // The first fails after the second moved the pool: only its seat goes back.
        state.undo(first.unwrap());
        assert_eq!(state.open["ann"], 0);
        assert_eq!(state.open["bob"], 1);
        assert_eq!(state.last_pick["p"], "bob");
        assert_eq!(state.weights["p"]["bob"], -1);
        // The second, undone in turn, rewinds to what it found.
        state.undo(second);
        assert_eq!(state.open["bob"], 0);
        assert_eq!(state.last_pick["p"], "ann");
        assert_eq!(state.weights["p"]["ann"], -2);
    }

    #[test]
    fn a_direct_assignment_moves_only_the_seat() {
        let rules = rules();
        let mut state = RoutingState::default();
        let applied = state.apply_pick(&rules, 0, None, None, t(0));
        assert_eq!(state.open["ann"], 1);
        assert!(state.last_pick.is_empty() && state.weights.is_empty());
        state.undo(applied);
        assert_eq!(state.open["ann"], 0);
    }

    /// `rules()` with an hourly cap of `cap` on ann.
    fn capped(cap: u32) -> Rules {
        let text = format!(
            "[agents]\nann = {{ id = 1, max_per_hour = {cap} }}\nbob = {{ id = 2 }}\n\
             [pools.p]\nagents = [\"ann\", \"bob\"]\n\
             [[rule]]\nname = \"all\"\nassign = \"pool:p\"\n"
        );
        load_sources(&[(PathBuf::from("r.toml"), text)]).unwrap()
    }

    #[test]
    fn assignments_count_for_an_hour_and_undo_gives_them_back() {
        let rules = capped(2);
        let mut state = RoutingState::default();
        state.apply_pick(&rules, 0, None, None, t(0));
        state.apply_pick(&rules, 0, None, None, t(1800));
        assert_eq!(state.assigned_last_hour("ann", t(1800)), 2);
        assert_eq!(
            state.assigned_last_hour("ann", t(3600)),
            1,
            "t(0) left the hour"
        );
        assert_eq!(state.hourly_frees_at("ann", t(3599)), Some(t(3600)));
        let third = state.apply_pick(&rules, 0, None, None, t(3700));
        assert_eq!(
            state.recent["ann"],
            vec![t(1800), t(3700)],
            "pruned when applying"
        );
        state.undo(third);
        assert_eq!(state.recent["ann"], vec![t(1800)]);
        assert_eq!(state.assigned_last_hour("bob", t(0)), 0);
    }

    /// Issue 23: the hourly counts keep no more than the highest cap can
    /// count, whatever the traffic, and count the same up to it.
    #[test]
    fn hourly_counts_stay_as_short_as_the_highest_cap() {
        let rules = capped(3);
        let mut state = RoutingState::default();
        for s in 0..10_000 {
            state.apply_pick(&rules, s as usize % 2, None, None, t(s / 10));
            let ann = state.assigned_last_hour("ann", t(s / 10));
            assert_eq!(ann, (s as u32 / 2 + 1).min(3), "after {s}");
        }
        assert_eq!(state.recent["ann"].len(), 3);
        assert_eq!(state.recent["bob"].len(), 3);
        // Where the third newest leaves the hour, a place frees under the cap.
        assert_eq!(state.hourly_frees_at("ann", t(999)), Some(t(999 + 3600)));
        // Without a cap nothing is kept.
        let (uncapped, mut state) = (self::rules(), RoutingState::default());
        for s in 0..1_000 {
            state.apply_pick(&uncapped, 0, Some(0), None, t(s));
        }
        assert!(state.recent.is_empty());
        assert_eq!(state.open["ann"], 1_000);
    }
}
