//! Property tests of the pure decision function's strategies.

use std::collections::HashMap;
use std::path::Path;

use assignd::diag::Location;
use assignd::rules::{
    Agent, ChatContext, LastAgent, Pool, RoutingState, Rule, Rules, Strategy, Target, Verdict,
    WhenFull, decide,
};
use jiff::Timestamp;
use proptest::prelude::*;

fn agent(i: usize, weight: u32, max_open: Option<u32>, skills: &[&str]) -> Agent {
    Agent {
        name: format!("a{i}"),
        id: assignd::domain::AgentId(100 + i as i64),
        skills: skills.iter().map(|s| s.to_string()).collect(),
        schedule: None,
        weight,
        max_open,
        max_per_hour: None,
    }
}

/// One pool of `members` (indexes into `agents`) and one catch-all rule.
fn rules(agents: Vec<Agent>, members: Vec<usize>, strategy: Strategy, skills: &[&str]) -> Rules {
    Rules {
        timezone: jiff::tz::TimeZone::UTC,
        agents,
        schedules: Vec::new(),
        pools: vec![Pool {
            name: "p".into(),
            members,
            strategy,
            when_full: WhenFull::Wait,
            max_open: None,
            reassign_after: None,
            max_reassign: 1,
            max_per_hour: None,
            sticky_for: assignd::rules::DEFAULT_STICKY_FOR,
            handback: assignd::rules::Handback::None,
            escalate: Vec::new(),
            busy_reply: None,
        }],
        rules: vec![Rule {
            name: "all".into(),
            priority: 0,
            conditions: Vec::new(),
            target: Target::Pool(0),
            require_skills: skills.iter().map(|s| s.to_string()).collect(),
            note: None,
            reply: None,
            schedule: None,
            location: Location::at(Path::new("t.toml"), "", 0),
        }],
        files: Vec::new(),
        index: Default::default(),
        hourly_floor: 0,
    }
}

fn now() -> Timestamp {
    "2026-06-03T09:00:00Z".parse().unwrap()
}

/// Applies a decision to the state, as the worker does after a 200.
fn apply(r: &Rules, s: &mut RoutingState, v: &Verdict) -> usize {
    let Verdict::Assign { agent, weights, .. } = v else {
        panic!("no pick: {v:?}")
    };
    let name = r.agents[*agent].name.clone();
    s.last_pick.insert("p".into(), name.clone());
    *s.open.entry(name).or_default() += 1;
    if let Some(w) = weights {
        s.weights
            .entry("p".into())
            .or_default()
            .extend(w.iter().cloned());
    }
    *agent
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Within any stretch of stable members, round-robin never gives one
    /// agent two more chats than another, across restarts (only the stored
    /// state survives) and members joining and leaving between stretches.
    #[test]
    fn round_robin_is_fair_across_restarts_and_member_changes(
        segments in prop::collection::vec((prop::collection::btree_set(0usize..6, 1..=6), 1usize..25, any::<bool>()), 1..6)
    ) {
        let agents: Vec<Agent> = (0..6).map(|i| agent(i, 1, None, &[])).collect();
        let mut state = RoutingState::default();
        for (members, chats, restart) in segments {
            if restart {
                // Only what the database keeps survives a restart.
                state = RoutingState { last_pick: state.last_pick.clone(), ..RoutingState::default() };
            }
            let r = rules(agents.clone(), members.iter().copied().collect(), Strategy::RoundRobin, &[]);
            let mut counts: HashMap<usize, usize> = members.iter().map(|&m| (m, 0)).collect();
            for _ in 0..chats {
                let d = decide(&r, &ChatContext::default(), &state, now());
                *counts.get_mut(&apply(&r, &mut state, &d.verdict)).unwrap() += 1;
            }
            let max = counts.values().max().unwrap();
            let min = counts.values().min().unwrap();
            prop_assert!(max - min <= 1, "{counts:?}");
        }
    }

    /// Smooth weighted round-robin gives each agent its weight per cycle.
    #[test]
    fn weighted_converges_to_the_weights(weights in prop::collection::vec(1u32..6, 2..6), cycles in 1usize..5) {
        let agents: Vec<Agent> = weights.iter().enumerate().map(|(i, &w)| agent(i, w, None, &[])).collect();
        let r = rules(agents, (0..weights.len()).collect(), Strategy::Weighted, &[]);
        let total: u32 = weights.iter().sum();
        let mut state = RoutingState::default();
        let mut counts = vec![0u32; weights.len()];
        for cycle in 1..=cycles {
            for _ in 0..total {
                let d = decide(&r, &ChatContext::default(), &state, now());
                counts[apply(&r, &mut state, &d.verdict)] += 1;
            }
            for (i, &w) in weights.iter().enumerate() {
                let expected = w * cycle as u32;
                prop_assert!(counts[i].abs_diff(expected) <= 1, "cycle {cycle}: {counts:?} vs weights {weights:?}");
            }
        }
    }

    /// least-open never picks an agent with more open chats than another candidate.
    #[test]
    fn least_open_picks_a_least_loaded_candidate(open in prop::collection::vec(0u32..10, 2..7), last in 0usize..7) {
        let agents: Vec<Agent> = (0..open.len()).map(|i| agent(i, 1, None, &[])).collect();
        let r = rules(agents, (0..open.len()).collect(), Strategy::LeastOpen, &[]);
        let mut state = RoutingState::default();
        for (i, &n) in open.iter().enumerate() {
            state.open.insert(format!("a{i}"), n);
        }
        if last < open.len() {
            state.last_pick.insert("p".into(), format!("a{last}"));
        }
        let d = decide(&r, &ChatContext::default(), &state, now());
        let Verdict::Assign { agent, .. } = d.verdict else { panic!() };
        prop_assert_eq!(open[agent], *open.iter().min().unwrap());
    }

    /// Whatever the strategy, the pick is always a candidate: not away, not
    /// rejected, under its cap, with the required skills.
    #[test]
    fn no_strategy_picks_a_non_candidate(
        strategy in prop::sample::select(Strategy::ALL.to_vec()),
        flags in prop::collection::vec((any::<bool>(), any::<bool>(), 0u32..4, any::<bool>()), 1..7),
        entropy in any::<u64>(),
        last in 0usize..7,
        sticky in 0usize..7,
    ) {
        let agents: Vec<Agent> = flags
            .iter()
            .enumerate()
            .map(|(i, (_, _, _, skilled))| agent(i, 1 + i as u32 % 3, Some(2), if *skilled { &["uk"] } else { &[] }))
            .collect();
        let r = rules(agents, (0..flags.len()).collect(), strategy, &["uk"]);
        let mut state = RoutingState { entropy, ..RoutingState::default() };
        for (i, (away, unusable, open, _)) in flags.iter().enumerate() {
            let name = format!("a{i}");
            if *away { state.away.insert(name.clone(), None); }
            if *unusable { state.unusable.insert(name.clone()); }
            state.open.insert(name, *open);
        }
        state.last_pick.insert("p".into(), format!("a{last}"));
        let chat = ChatContext { last_agent: Some(LastAgent::new(format!("a{sticky}"), None)), ..ChatContext::default() };
        let eligible = |i: usize| {
            let (away, unusable, open, skilled) = flags[i];
            !away && !unusable && open < 2 && skilled
        };
        let d = decide(&r, &chat, &state, now());
        match d.verdict {
            Verdict::Assign { agent, .. } => prop_assert!(eligible(agent), "{strategy:?} picked a{agent}: {:?}", flags[agent]),
            Verdict::NoCandidate { .. } => prop_assert!(!(0..flags.len()).any(eligible)),
            other => prop_assert!(false, "{other:?}"),
        }
    }
}
