//! Which arm of an experiment a chat falls in (SPEC §14): a stable hash of
//! its id against the shares, so every daemon, every restart and every
//! replay puts a chat in the same arm. The arm a chat was decided in is
//! also kept (`chat_arms`), so that a later change of the shares moves no
//! chat that was already decided.

use crate::config::Experiment;
use crate::domain::{Arm, ChatId};
use crate::rules::{Rules, RulesError, load_path};

/// Independent draws for the canary's share and for arm b's.
const SHARE_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
const B_SALT: u64 = 0xd1b5_4a32_d192_ed03;

/// An experiment's shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// The share of chats assignd assigns; the others are left.
    pub share: f64,
    /// The share of assigned chats that go to arm b.
    pub b_share: f64,
}

impl Split {
    /// The split `[experiment]` asks for, if it asks for one.
    pub fn of(experiment: &Experiment) -> Option<Split> {
        experiment.runs().then(|| Split {
            share: experiment.share(),
            b_share: experiment.b_share(),
        })
    }

    /// The arm of a chat decided for the first time.
    pub fn arm_of(&self, chat: ChatId) -> Arm {
        if unit(chat, SHARE_SALT) >= self.share {
            Arm::Left
        } else if unit(chat, B_SALT) < self.b_share {
            Arm::B
        } else {
            Arm::A
        }
    }
}

/// Arm b's rules when an A/B experiment names them.
pub fn load_b_rules(experiment: &Experiment) -> Result<Option<Rules>, RulesError> {
    experiment.b_rules.as_deref().map(load_path).transpose()
}

/// Both arms route one team: every agent arm b names is an agent of arm a
/// with the same HelpCrunch id, so that webhooks, seats, caps and
/// reconciliation, all keyed on arm a's agents, see arm b's assignments.
pub fn check_b_rules(a: &Rules, b: &Rules) -> Result<(), String> {
    for agent in &b.agents {
        match a.agent_by_name(&agent.name).map(|i| &a.agents[i]) {
            Some(same) if same.id == agent.id => {}
            Some(other) => {
                return Err(format!(
                    "[experiment] b_rules: agent `{}` has id {} there but {} in [rules] path; both arms route one team",
                    agent.name, agent.id.0, other.id.0
                ));
            }
            None => {
                return Err(format!(
                    "[experiment] b_rules: agent `{}` is not in [rules] path; both arms route one team: name every agent there",
                    agent.name
                ));
            }
        }
    }
    Ok(())
}

/// A number in [0, 1) from the chat id: SplitMix64's finaliser, whose
/// output is even for consecutive ids.
fn unit(chat: ChatId, salt: u64) -> f64 {
    let mut z = (chat.0 as u64) ^ salt;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(split: Split, arm: Arm) -> usize {
        (1..=100_000)
            .filter(|c| split.arm_of(ChatId(*c)) == arm)
            .count()
    }

    #[test]
    fn shares_are_kept_over_consecutive_ids() {
        let canary = Split {
            share: 0.2,
            b_share: 0.0,
        };
        let a = count(canary, Arm::A);
        assert!(
            (19_000..21_000).contains(&a),
            "{a} of 100,000 in a 20% canary"
        );
        assert_eq!(count(canary, Arm::B), 0);
        let ab = Split {
            share: 1.0,
            b_share: 0.5,
        };
        let b = count(ab, Arm::B);
        assert!((49_000..51_000).contains(&b), "{b} of 100,000 in b");
        assert_eq!(count(ab, Arm::Left), 0);
    }

    /// A wider canary keeps every chat the narrower one assigned, and arm
    /// b does not depend on the canary's share.
    #[test]
    fn a_wider_share_keeps_the_chats_it_had() {
        let narrow = Split {
            share: 0.2,
            b_share: 0.3,
        };
        let wide = Split {
            share: 0.6,
            ..narrow
        };
        for c in 1..=20_000 {
            let (n, w) = (narrow.arm_of(ChatId(c)), wide.arm_of(ChatId(c)));
            if n != Arm::Left {
                assert_eq!(n, w, "chat {c}");
            }
        }
    }
}
