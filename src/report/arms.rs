//! The two arms `report --compare` puts side by side, from the chats of a
//! window (SPEC §14): arm `a` against arm `b` of an A/B test; `left`
//! (HelpCrunch's routing or people) against `a` (assignd) for a canary; or,
//! with neither in the window, what really happened against what assignd
//! in shadow mode would have done with the same chats. Pure.

use std::collections::{BTreeSet, HashSet};

use super::compare::{Arm, ChatSample};
use crate::store::compare::CompareChat;

/// Why there is nothing to compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "nothing to compare in this window: {0}; run shadow mode or an [experiment] first (docs/experiments.md)"
)]
pub struct NothingToCompare(String);

/// The arms of the chats of a window, first arm first (differences are
/// second − first). `after_hours`: the rules that assign after hours.
pub fn arms(
    chats: &[CompareChat],
    after_hours: &HashSet<&str>,
) -> Result<(Arm, Arm), NothingToCompare> {
    let present: BTreeSet<&str> = chats.iter().filter_map(|c| c.arm.as_deref()).collect();
    let pick = |name: &'static str| chats.iter().filter(move |c| c.arm.as_deref() == Some(name));
    let arm = |name: &str, chats: Vec<ChatSample>| Arm {
        name: name.to_string(),
        chats,
    };
    let live = |name| {
        pick(name)
            .map(|c| as_it_happened(c, after_hours, true))
            .collect()
    };
    // A live experiment in the window outranks an earlier shadow run.
    let pair = match (present.contains("b"), present.contains("left")) {
        (true, _) => ("a", "b"),
        (false, true) => ("left", "a"),
        (false, false) if present.contains("shadow") => {
            let reality = pick("shadow").map(|c| as_it_happened(c, after_hours, false));
            let shadow = pick("shadow").map(shadowed);
            return Ok((
                arm("reality", reality.collect()),
                arm("shadow", shadow.collect()),
            ));
        }
        (false, false) => {
            let seen = present.into_iter().collect::<Vec<_>>().join(", ");
            let seen = if seen.is_empty() {
                "no decided chat".into()
            } else {
                format!("only arm {seen}")
            };
            return Err(NothingToCompare(seen));
        }
    };
    let (first, second) = (live(pair.0), live(pair.1));
    Ok((arm(pair.0, first), arm(pair.1, second)))
}

/// A chat as it really went: its first assignment (by anyone) and first
/// agent reply. assignd's own counts of hops and hand-backs are known only
/// where assignd routed the chat (`routed`).
fn as_it_happened(c: &CompareChat, after_hours: &HashSet<&str>, routed: bool) -> ChatSample {
    let known = |n: i64| (routed && c.arm.as_deref() != Some("left")).then_some(n as u32);
    ChatSample {
        first_reply_s: since_arrival(c, c.first_reply_at_ms),
        assignment_s: since_arrival(c, c.assigned_at_ms),
        reassignments: known(c.reassignments),
        handbacks: known(c.handbacks),
        after_hours: is_after_hours(c, after_hours),
        agent: c.assigned_agent.clone(),
    }
}

/// What the shadow would have done: when and to whom. No reply is known
/// (its assignee was never asked): the chat counts in no reply measure,
/// the after-hours reply rate included.
fn shadowed(c: &CompareChat) -> ChatSample {
    ChatSample {
        first_reply_s: None,
        assignment_s: since_arrival(c, c.shadow_at_ms),
        reassignments: Some(c.reassignments as u32),
        handbacks: Some(c.handbacks as u32),
        after_hours: false,
        agent: c.shadow_agent.clone(),
    }
}

fn is_after_hours(c: &CompareChat, after_hours: &HashSet<&str>) -> bool {
    c.rule.as_deref().is_some_and(|r| after_hours.contains(r))
}

/// Seconds from the chat's arrival to `at` (never below zero: clocks).
fn since_arrival(c: &CompareChat, at: Option<i64>) -> Option<f64> {
    at.map(|t| (t - c.arrived_at_ms).max(0) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChatId;

    fn chat(id: i64, arm: &str) -> CompareChat {
        CompareChat {
            chat_id: ChatId(id),
            arrived_at_ms: 1_000_000,
            assigned_at_ms: Some(1_004_000),
            assigned_agent: Some("amy".into()),
            first_reply_at_ms: Some(1_060_000),
            arm: Some(arm.into()),
            shadow_at_ms: (arm == "shadow").then_some(1_000_500),
            shadow_agent: (arm == "shadow").then(|| "bob".into()),
            rule: Some("night".into()),
            reassignments: 1,
            handbacks: 0,
        }
    }

    #[test]
    fn an_ab_test_is_a_against_b_and_a_canary_left_against_a() {
        let night: HashSet<&str> = ["night"].into();
        let chats = [chat(1, "a"), chat(2, "b"), chat(3, "left"), chat(4, "b")];
        let (a, b) = arms(&chats, &night).unwrap();
        assert_eq!(
            (
                a.name.as_str(),
                a.chats.len(),
                b.name.as_str(),
                b.chats.len()
            ),
            ("a", 1, "b", 2)
        );
        let s = &a.chats[0];
        assert_eq!(
            (s.first_reply_s, s.assignment_s, s.reassignments),
            (Some(60.0), Some(4.0), Some(1))
        );
        assert!(s.after_hours);
        let (left, a) = arms(
            &chats[..1]
                .iter()
                .chain(&chats[2..3])
                .cloned()
                .collect::<Vec<_>>(),
            &night,
        )
        .unwrap();
        assert_eq!((left.name.as_str(), a.name.as_str()), ("left", "a"));
        assert_eq!(
            left.chats[0].reassignments, None,
            "HelpCrunch's hops are not known"
        );
    }

    #[test]
    fn shadow_is_compared_with_what_really_happened_to_the_same_chats() {
        let (reality, shadow) =
            arms(&[chat(1, "shadow"), chat(2, "shadow")], &HashSet::new()).unwrap();
        assert_eq!(
            (reality.name.as_str(), shadow.name.as_str()),
            ("reality", "shadow")
        );
        assert_eq!(reality.chats[0].agent.as_deref(), Some("amy"));
        assert_eq!(reality.chats[0].first_reply_s, Some(60.0));
        assert_eq!(shadow.chats[0].agent.as_deref(), Some("bob"));
        assert_eq!(
            (shadow.chats[0].first_reply_s, shadow.chats[0].assignment_s),
            (None, Some(0.5))
        );
    }

    /// A canary started after a shadow run: the window holds both, and
    /// the experiment is what is compared.
    #[test]
    fn a_live_experiment_outranks_an_earlier_shadow_run() {
        let chats = [chat(1, "shadow"), chat(2, "left"), chat(3, "a")];
        let (first, second) = arms(&chats, &HashSet::new()).unwrap();
        assert_eq!((first.name.as_str(), second.name.as_str()), ("left", "a"));
        assert_eq!((first.chats.len(), second.chats.len()), (1, 1));
    }

    #[test]
    fn one_arm_alone_says_what_to_do() {
        let e = arms(&[chat(1, "a")], &HashSet::new()).unwrap_err();
        assert!(e.to_string().contains("only arm a"), "{e}");
        let e = arms(&[], &HashSet::new()).unwrap_err();
        assert!(e.to_string().contains("no decided chat"), "{e}");
    }
}
