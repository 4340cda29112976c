//! The sandbox's own people, for shadow mode and experiments: an account
//! whose routing assigns some new chats by itself and whose agents answer
//! the chats they are given, whoever assigned them, and may close them.
//!
//! Off unless [`Sandbox::set_people`] is called. Every choice is drawn
//! from the seed and the chat id (and agent), never from a clock or a
//! shared generator, so one seed makes the same choices in any run; only
//! the round-robin turn depends on the order chats are created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Sandbox, SandboxChat, Shared};

/// How the sandbox's account behaves by itself.
#[derive(Debug, Clone, Default)]
pub struct People {
    pub seed: u64,
    /// The share (0 to 1) of new chats the account's own routing takes.
    pub assign_share: f64,
    /// How long after its creation the routing assigns a chat it takes
    /// (unless someone assigned it first).
    pub assign_after: Duration,
    /// The agents the routing takes turns among; empty: all the sandbox's.
    pub agents: Vec<i64>,
    /// The mean wait from an assignment to the assignee's first reply,
    /// drawn evenly between half and one and a half times it; None: agents
    /// without a mean of their own never reply.
    pub reply_after: Option<Duration>,
    /// Agents' own means, over `reply_after`.
    pub reply_after_by_agent: Vec<(i64, Duration)>,
    /// How long after its first reply a chat is closed; None: never.
    pub close_after: Option<Duration>,
}

/// Settings [`Sandbox::set_people`] refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeopleError {
    #[error("assign_share must be between 0 and 1, not {0}")]
    Share(f64),
    #[error("agent {0} is not one of the sandbox's agents")]
    UnknownAgent(i64),
    #[error("assign_share is above 0 but the sandbox has no agents to assign to")]
    NoAgents,
}

/// Who changed a chat's assignee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignedBy {
    /// The account's own routing ([`People`]).
    Sandbox,
    /// A client's `PUT /chats/assignee` (assignd).
    Client,
}

/// A change of a chat's assignee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub chat: i64,
    pub before: Option<i64>,
    pub agent: Option<i64>,
    pub by: AssignedBy,
    pub at: Instant,
}

/// A chat's first agent reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstReply {
    pub chat: i64,
    pub agent: i64,
    /// The wait drawn for it, from the assignment it answers.
    pub drawn: Duration,
    pub assigned_at: Instant,
    pub at: Instant,
}

#[derive(Default)]
pub(super) struct Staff {
    people: Mutex<Option<Arc<People>>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The routing's next turn.
    turn: usize,
    /// Each created chat's draw: the agent the routing picked, or None.
    picks: HashMap<i64, Option<i64>>,
    assignments: Vec<Assignment>,
    replies: Vec<FirstReply>,
}

const ASSIGN: u64 = 0xa551_6e00;
const REPLY: u64 = 0x5e91_1e00;

impl Sandbox {
    /// Gives the account its own routing and agents (None: back to none).
    pub fn set_people(&self, people: Option<People>) -> Result<(), PeopleError> {
        if let Some(p) = &people {
            check(p, &self.shared)?;
        }
        *self.shared.staff.people.lock().expect("people lock") = people.map(Arc::new);
        Ok(())
    }

    /// Every change of an assignee so far (by a client's PUT or by the
    /// account's routing), in order.
    pub fn assignments(&self) -> Vec<Assignment> {
        self.shared.staff.state().assignments.clone()
    }

    /// Every first agent reply so far, in order.
    pub fn first_replies(&self) -> Vec<FirstReply> {
        self.shared.staff.state().replies.clone()
    }

    pub fn first_reply(&self, chat_id: i64) -> Option<FirstReply> {
        let state = self.shared.staff.state();
        state.replies.iter().find(|r| r.chat == chat_id).copied()
    }

    /// The agent the account's routing picked for a created chat, whether
    /// or not it got there first; None if it left the chat to others.
    pub fn routing_pick(&self, chat_id: i64) -> Option<i64> {
        self.shared.staff.state().picks.get(&chat_id).copied()?
    }
}

fn check(p: &People, s: &Shared) -> Result<(), PeopleError> {
    if !(0.0..=1.0).contains(&p.assign_share) {
        return Err(PeopleError::Share(p.assign_share));
    }
    let known = |id: &i64| s.agents.iter().any(|a| a.id == *id);
    let mut named = p
        .agents
        .iter()
        .chain(p.reply_after_by_agent.iter().map(|(a, _)| a));
    if let Some(&unknown) = named.find(|a| !known(a)) {
        return Err(PeopleError::UnknownAgent(unknown));
    }
    if p.assign_share > 0.0 && s.agents.is_empty() {
        return Err(PeopleError::NoAgents);
    }
    Ok(())
}

impl Staff {
    fn people(&self) -> Option<Arc<People>> {
        self.people.lock().expect("people lock").clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("people state lock")
    }
}

// The hooks below run with the chats lock held (chats, then the staff's
// state: always in that order).
impl Shared {
    /// A customer started `chat`: `chat.new`, then the routing's draw.
    pub(super) fn chat_created(&self, chat: &SandboxChat) {
        self.emit_chat("chat.new", chat);
        let Some(people) = self.staff.people() else {
            return;
        };
        let pick = {
            let mut state = self.staff.state();
            if state.picks.contains_key(&chat.id) {
                return;
            }
            let pick = (unit(people.seed, chat.id, ASSIGN) < people.assign_share)
                .then(|| self.next_turn(&people, &mut state))
                .flatten();
            state.picks.insert(chat.id, pick);
            pick
        };
        if let Some(agent) = pick {
            let id = chat.id;
            self.after(people.assign_after, move |s| s.route(id, agent));
        }
    }

    fn next_turn(&self, people: &People, state: &mut State) -> Option<i64> {
        let pool: Vec<i64> = if people.agents.is_empty() {
            self.agents.iter().map(|a| a.id).collect()
        } else {
            people.agents.clone()
        };
        let agent = pool.get(state.turn % pool.len().max(1)).copied();
        state.turn += 1;
        agent
    }

    /// The routing's assignment, if the chat is still open and unassigned.
    fn route(&self, chat_id: i64, agent: i64) {
        self.with_chat(chat_id, |c| {
            if c.assignee.is_none() && c.status != "closed" {
                c.assignee = Some(agent);
                c.updated_at = jiff::Timestamp::now().as_second();
                self.assignee_changed(c, None, AssignedBy::Sandbox);
            }
        });
    }

    /// `chat`'s assignee changed from `before`: recorded, `chat.assigned`,
    /// and the new assignee's first reply drawn if the chat has none yet.
    pub(super) fn assignee_changed(&self, chat: &SandboxChat, before: Option<i64>, by: AssignedBy) {
        if chat.assignee == before {
            return;
        }
        let at = Instant::now();
        let replied = {
            let mut state = self.staff.state();
            state.assignments.push(Assignment {
                chat: chat.id,
                before,
                agent: chat.assignee,
                by,
                at,
            });
            state.replies.iter().any(|r| r.chat == chat.id)
        };
        self.emit_chat("chat.assigned", chat);
        let (Some(people), Some(agent), false) = (self.staff.people(), chat.assignee, replied)
        else {
            return;
        };
        if let Some(drawn) = reply_wait(&people, chat.id, agent) {
            let id = chat.id;
            self.after(drawn, move |s| s.reply(id, agent, at, drawn));
        }
    }

    /// `agent`'s first reply, if the chat is still theirs, open, unanswered.
    fn reply(&self, chat_id: i64, agent: i64, assigned_at: Instant, drawn: Duration) {
        let close_after = self.staff.people().and_then(|p| p.close_after);
        let replied = self.with_chat(chat_id, |c| {
            if c.assignee != Some(agent) || c.status == "closed" {
                return false;
            }
            let mut state = self.staff.state();
            if state.replies.iter().any(|r| r.chat == chat_id) {
                return false;
            }
            state.replies.push(FirstReply {
                chat: chat_id,
                agent,
                drawn,
                assigned_at,
                at: Instant::now(),
            });
            drop(state);
            let text = format!("Hello, this is agent {agent}; let me look into it.");
            if !c.agents.contains(&agent) {
                c.agents.push(agent);
            }
            c.status = "opened".into();
            c.last_message_text = text.clone();
            c.updated_at = jiff::Timestamp::now().as_second();
            self.emit_agent_message(c, agent, &text);
            true
        });
        if let (Some(true), Some(wait)) = (replied, close_after) {
            self.after(wait, move |s| {
                s.close(chat_id);
            });
        }
    }

    /// Runs `f` after `wait` on the sandbox's runtime, unless it stops first.
    fn after(&self, wait: Duration, f: impl FnOnce(&Shared) + Send + 'static) {
        let Some(s) = self.this.upgrade() else {
            return;
        };
        self.runtime.spawn(async move {
            tokio::select! {
                _ = s.shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => f(&s),
            }
        });
    }
}

/// The wait before `agent`'s first reply in `chat`, if they reply at all.
fn reply_wait(people: &People, chat: i64, agent: i64) -> Option<Duration> {
    let mean = people
        .reply_after_by_agent
        .iter()
        .find(|(a, _)| *a == agent)
        .map(|(_, d)| *d)
        .or(people.reply_after)?;
    let u = unit(people.seed, chat, REPLY ^ mix(agent as u64));
    Some(mean.mul_f64(0.5 + u))
}

/// A number in [0, 1) drawn from the seed, the chat and what it is for.
fn unit(seed: u64, chat: i64, salt: u64) -> f64 {
    let bits = mix(seed ^ mix(chat as u64 ^ salt));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64's finaliser: a well-spread hash of a 64-bit number.
pub(super) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_on_seed_chat_and_purpose_only() {
        assert_eq!(unit(1, 42, ASSIGN), unit(1, 42, ASSIGN));
        assert_ne!(unit(1, 42, ASSIGN), unit(2, 42, ASSIGN));
        assert_ne!(unit(1, 42, ASSIGN), unit(1, 43, ASSIGN));
        assert_ne!(unit(1, 42, ASSIGN), unit(1, 42, REPLY));
        let taken = (0..10_000).filter(|&c| unit(7, c, ASSIGN) < 0.3).count();
        assert!((2_700..3_300).contains(&taken), "{taken} of 10000 at 0.3");
    }

    #[test]
    fn reply_waits_use_the_agents_own_mean_within_half_to_one_and_a_half() {
        let people = People {
            reply_after: Some(Duration::from_millis(100)),
            reply_after_by_agent: vec![(2, Duration::from_secs(10))],
            ..People::default()
        };
        for chat in 0..200 {
            let w = reply_wait(&people, chat, 1).unwrap();
            assert!(w >= Duration::from_millis(50) && w < Duration::from_millis(150));
            let own = reply_wait(&people, chat, 2).unwrap();
            assert!(own >= Duration::from_secs(5) && own < Duration::from_secs(15));
        }
        let silent = People::default();
        assert_eq!(reply_wait(&silent, 1, 1), None);
    }
}
