//! A stretch of time on a simulated clock: chats arrive, are decided by the
//! same [`decide`] the worker runs and applied through the same
//! [`RoutingState::apply`], take seats that free when they close, wait for a
//! candidate (in the worker's claim order), escalate, get their pool's busy
//! reply, and are handed back when their agent is marked away or their shift
//! ends. Pure: the clock is the scenario's, nothing is read or written, so
//! the demo can show a whole day whatever the time is now.
//!
//! [`replay`] runs recorded history instead (`simulate --history`,
//! [`history`]): chats close at their real close, agents' answers are
//! absolute, assignments keep the API limiter's pace, and the clock moves
//! from event to event.

pub mod history;

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::domain::{ChatId, claim_rank};
use crate::rules::fill::Fill;
use crate::rules::{ChatContext, Decision, Handback, LastAgent, RoutingState, Rules, Verdict};
use crate::rules::{WhenFull, decide};
use crate::simulate::result_of;

/// A chat of the scenario.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub context: ChatContext,
    pub at: Timestamp,
    pub priority: i64,
    /// How long the chat stays open once assigned.
    pub open_for: Duration,
    /// How long its agent takes to write in it; `None`: never.
    pub answer_after: Option<Duration>,
}

/// An agent marked away from `from` until `until`.
#[derive(Debug, Clone)]
pub struct Absence {
    pub agent: String,
    pub from: Timestamp,
    pub until: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub arrivals: Vec<Arrival>,
    pub absences: Vec<Absence>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// How often waiting chats are decided again (the worker: at once).
    pub tick: Duration,
}

/// What a replay of recorded history knows that a [`Scenario`] does not.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Per arrival (same index): when the chat really closed, instead of
    /// `open_for`; `None`: it has not closed. Assigned after it closed, it
    /// closes at once.
    pub closed_at: Vec<Option<Timestamp>>,
    /// Per arrival: when its agent answered, instead of `answer_after`.
    pub answered_at: Vec<Option<Timestamp>>,
    /// At most one assignment per `pace` (the limiter's `per / requests`).
    pub pace: Option<Duration>,
}

/// What happened to a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `escalated`: found by a pool's `escalate` step.
    Assigned { agent: String, escalated: bool },
    /// Started waiting, or waits for a new reason (an escalation step).
    Waiting,
    /// No rule matched, the rule assigns nobody, or it leaves the chat.
    Unassigned,
    /// A rule's `reply`, posted after the assignment.
    Reply { from: String, text: String },
    /// The pool's `busy_reply`.
    BusyReply { from: String, text: String },
    /// Taken off `from`, back through the rules.
    HandedBack { from: String, why: String },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub at: Timestamp,
    pub chat: ChatId,
    pub event: Event,
    /// The decision's reason, as the worker records it.
    pub reason: String,
    /// For a decision: its result and rule, as the worker's outcome row
    /// records them (`assigned`, `no_agent`, `no_match`, `skipped`).
    pub decided: Option<(&'static str, Option<String>)>,
}

/// A chat waiting for a seat.
struct Waiting {
    arrival: usize,
    enqueued_at: Timestamp,
    priority: i64,
    last_reason: Option<String>,
}

/// A chat open with an agent.
struct Open {
    arrival: usize,
    agent: String,
    /// The pool it was assigned from, for `handback`.
    pool: Option<usize>,
    closes_at: Timestamp,
    answered_at: Option<Timestamp>,
}

struct Sim<'a> {
    rules: &'a Rules,
    scenario: &'a Scenario,
    state: RoutingState,
    waiting: Vec<Waiting>,
    open: Vec<Open>,
    customers: HashMap<String, LastAgent>,
    busy_sent: Vec<usize>,
    log: Vec<Entry>,
    recorded: Option<&'a Recorded>,
    /// When the limiter allows the next assignment.
    next_free: Timestamp,
}

/// Runs `scenario` over `rules`; returns what happened, in order.
pub fn run(rules: &Rules, scenario: &Scenario) -> Vec<Entry> {
    run_with(rules, scenario, None)
}

/// Runs recorded history: like [`run`], with `recorded`'s closes, answers
/// and pace, and a clock that moves to the next event (an arrival, a close,
/// an absence's start or end, the limiter's next slot) or by the
/// scenario's tick (shifts, escalations), whichever comes first.
pub fn replay(rules: &Rules, scenario: &Scenario, recorded: &Recorded) -> Vec<Entry> {
    run_with(rules, scenario, Some(recorded))
}

fn run_with(rules: &Rules, scenario: &Scenario, recorded: Option<&Recorded>) -> Vec<Entry> {
    let mut order: Vec<usize> = (0..scenario.arrivals.len()).collect();
    order.sort_by_key(|&i| scenario.arrivals[i].at);
    let mut sim = Sim {
        rules,
        scenario,
        state: RoutingState::default(),
        waiting: Vec::new(),
        open: Vec::new(),
        customers: HashMap::new(),
        busy_sent: Vec::new(),
        log: Vec::new(),
        recorded,
        next_free: scenario.start,
    };
    let tick = SignedDuration::try_from(scenario.tick).unwrap_or(SignedDuration::from_mins(1));
    let mut next = order.iter().peekable();
    let mut t = scenario.start;
    while t <= scenario.end {
        sim.close_due(t);
        sim.set_away(t);
        sim.hand_back(t);
        while let Some(&&i) = next.peek().filter(|&&&i| scenario.arrivals[i].at <= t) {
            let a = &scenario.arrivals[i];
            sim.enqueue(i, a.at, a.priority);
            next.next();
        }
        sim.decide_waiting(t);
        let Ok(mut later) = t.checked_add(tick) else {
            break;
        };
        if recorded.is_some() {
            let arrival = next.peek().map(|&&i| scenario.arrivals[i].at);
            later = sim.next_event(t, arrival).map_or(later, |e| e.min(later));
        }
        t = later;
    }
    sim.log
}

impl Sim<'_> {
    /// The first moment after `t` at which something recorded happens.
    fn next_event(&self, t: Timestamp, arrival: Option<Timestamp>) -> Option<Timestamp> {
        let closes = self.open.iter().map(|o| o.closes_at);
        let gone = self
            .waiting
            .iter()
            .filter_map(|w| self.closed_at(w.arrival));
        let absences = self
            .scenario
            .absences
            .iter()
            .flat_map(|a| [a.from, a.until]);
        let slot = (!self.waiting.is_empty()).then_some(self.next_free);
        arrival
            .into_iter()
            .chain(closes)
            .chain(gone)
            .chain(absences)
            .chain(slot)
            .filter(|&e| e > t)
            .min()
    }

    /// Whether the limiter holds assignments back at `t`.
    fn paced(&self, t: Timestamp) -> bool {
        self.recorded.is_some_and(|r| r.pace.is_some()) && t < self.next_free
    }

    fn enqueue(&mut self, arrival: usize, at: Timestamp, priority: i64) {
        self.waiting.push(Waiting {
            arrival,
            enqueued_at: at,
            priority,
            last_reason: None,
        });
    }

    fn entry(&mut self, at: Timestamp, arrival: usize, event: Event, reason: String) {
        let chat = self.scenario.arrivals[arrival].context.chat_id;
        self.log.push(Entry {
            at,
            chat,
            event,
            reason,
            decided: None,
        });
    }

    /// [`Self::entry`] for a decision.
    fn decision(
        &mut self,
        at: Timestamp,
        arrival: usize,
        event: Event,
        reason: String,
        d: &Decision,
    ) {
        self.entry(at, arrival, event, reason);
        let rule = d.rule.map(|r| self.rules.rules[r].name.clone());
        if let Some(e) = self.log.last_mut() {
            e.decided = Some((result_of(&d.verdict), rule));
        }
    }

    /// Closed chats give their seats back, as the close webhook does. In a
    /// replay, a chat that really closed while the replay still has it
    /// waiting leaves the queue too (its customer left, or someone took it
    /// by hand): the worker skips a closed chat.
    fn close_due(&mut self, t: Timestamp) {
        let (closed, open): (Vec<Open>, Vec<Open>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| o.closes_at <= t);
        self.open = open;
        for o in closed {
            self.free_seat(&o.agent);
        }
        let (gone, waiting): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| self.closed_at(w.arrival).is_some_and(|c| c <= t));
        self.waiting = waiting;
        for w in gone {
            let why = "closed while waiting, as it really did".to_string();
            self.entry(t, w.arrival, Event::Unassigned, why);
        }
    }

    /// When a chat really closed, in a replay.
    fn closed_at(&self, arrival: usize) -> Option<Timestamp> {
        self.recorded?.closed_at.get(arrival).copied().flatten()
    }

    fn free_seat(&mut self, agent: &str) {
        if let Some(n) = self.state.open.get_mut(agent) {
            *n = n.saturating_sub(1);
        }
    }

    fn set_away(&mut self, t: Timestamp) {
        self.state.away = self
            .scenario
            .absences
            .iter()
            .filter(|a| a.from <= t && t < a.until)
            .map(|a| (a.agent.clone(), Some(a.until)))
            .collect();
    }

    /// Chats whose agent is away or off shift go back through the rules,
    /// if their pool says so (`handback`).
    fn hand_back(&mut self, t: Timestamp) {
        let open = std::mem::take(&mut self.open);
        for o in open {
            match self.handback_reason(&o, t) {
                Some(why) => {
                    self.free_seat(&o.agent);
                    let event = Event::HandedBack {
                        from: o.agent.clone(),
                        why: why.clone(),
                    };
                    let reason = format!("handed back from {} ({why})", o.agent);
                    self.entry(t, o.arrival, event, reason);
                    self.enqueue(o.arrival, t, 0);
                }
                None => self.open.push(o),
            }
        }
    }

    fn handback_reason(&self, o: &Open, t: Timestamp) -> Option<String> {
        let pool = &self.rules.pools[o.pool?];
        let answered = o.answered_at.is_some_and(|at| at <= t);
        match pool.handback {
            Handback::None => return None,
            Handback::Unanswered if answered => return None,
            _ => {}
        }
        let agent = &self.rules.agents[self.rules.agent_by_name(&o.agent)?];
        if self.state.is_away(&o.agent, t) {
            return Some("away".into());
        }
        let off = agent
            .schedule
            .is_some_and(|s| !self.rules.schedules[s].is_open(t));
        off.then(|| "shift ended".into())
    }

    /// Every waiting chat, in the worker's claim order (priority, one level
    /// more per 10-minute mark of the clock passed while waiting, then
    /// oldest), decided at `t`.
    fn decide_waiting(&mut self, t: Timestamp) {
        let now = t.as_millisecond();
        let rank = |w: &Waiting| {
            let at = w.enqueued_at.as_millisecond();
            (
                std::cmp::Reverse(claim_rank(w.priority, at, now)),
                w.enqueued_at,
            )
        };
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.sort_by_key(rank);
        for w in waiting {
            self.decide_one(w, t);
        }
    }

    fn decide_one(&mut self, mut w: Waiting, t: Timestamp) {
        if self.paced(t) {
            self.waiting.push(w);
            return;
        }
        let arrival = &self.scenario.arrivals[w.arrival];
        let mut context = arrival.context.clone();
        context.enqueued_at = Some(w.enqueued_at);
        let key = context.customer_key();
        context.last_agent = key.as_ref().and_then(|k| self.customers.get(k).cloned());
        self.state.entropy =
            (context.chat_id.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t.as_second() as u64;
        let d = decide(self.rules, &context, &self.state, t);
        let reason = d.reason(self.rules);
        match d.verdict {
            Verdict::Assign { .. } => self.assigned(&w, &d, &context, t, reason),
            Verdict::NoCandidate {
                when_full: WhenFull::Wait,
                ..
            } => {
                if w.last_reason.as_deref() != Some(reason.as_str()) {
                    self.decision(t, w.arrival, Event::Waiting, reason.clone(), &d);
                    w.last_reason = Some(reason);
                }
                self.busy_reply(&w, &d, &context, t);
                self.waiting.push(w);
            }
            _ => self.decision(t, w.arrival, Event::Unassigned, reason, &d),
        }
    }

    fn assigned(
        &mut self,
        w: &Waiting,
        d: &Decision,
        context: &ChatContext,
        t: Timestamp,
        reason: String,
    ) {
        let rules = self.rules;
        let Some(applied) = self.state.apply(rules, d, t) else {
            return;
        };
        let Verdict::Assign {
            pool, escalation, ..
        } = &d.verdict
        else {
            return;
        };
        if let Some(key) = context.customer_key() {
            self.customers
                .insert(key, LastAgent::new(applied.agent.clone(), Some(t)));
        }
        let (closes_at, answered_at) = self.timing(w.arrival, t);
        let event = Event::Assigned {
            agent: applied.agent.clone(),
            escalated: escalation.is_some(),
        };
        self.decision(t, w.arrival, event, reason, d);
        if closes_at <= t && self.recorded.is_some() {
            // Closed before the replay got to it: the seat is not taken.
            self.free_seat(&applied.agent);
        } else {
            self.open.push(Open {
                arrival: w.arrival,
                agent: applied.agent.clone(),
                pool: *pool,
                closes_at,
                answered_at,
            });
        }
        let rule = d.rule.map(|r| &rules.rules[r]);
        if let Some(reply) = rule.and_then(|r| r.reply.as_ref()) {
            let fill = Fill {
                rules,
                rule,
                pool: pool.map(|p| rules.pools[p].name.as_str()),
                agent: Some(&applied.agent),
                context,
                position: None,
                now: t,
            };
            let from = rules.agents[reply.from].name.clone();
            let text = fill.render(&reply.text);
            self.entry(t, w.arrival, Event::Reply { from, text }, String::new());
        }
    }

    /// When a chat assigned at `t` closes and is answered: as recorded, or
    /// after the scenario's durations. Recorded, it moves the limiter's
    /// next slot too.
    fn timing(&mut self, arrival: usize, t: Timestamp) -> (Timestamp, Option<Timestamp>) {
        let later = |d: Duration| {
            SignedDuration::try_from(d)
                .ok()
                .and_then(|d| t.checked_add(d).ok())
        };
        let Some(r) = self.recorded else {
            let a = &self.scenario.arrivals[arrival];
            return (
                later(a.open_for).unwrap_or(t),
                a.answer_after.and_then(later),
            );
        };
        self.next_free = r.pace.and_then(later).unwrap_or(t);
        let closed = self.closed_at(arrival);
        let answered = r.answered_at.get(arrival).copied().flatten();
        // Never closed: it stays open.
        (closed.map_or(Timestamp::MAX, |c| c.max(t)), answered)
    }

    /// The pool's busy reply, once per chat, when it has waited long enough.
    fn busy_reply(&mut self, w: &Waiting, d: &Decision, context: &ChatContext, t: Timestamp) {
        let Some(pool) = d.rule_pool(self.rules) else {
            return;
        };
        let Some(busy) = &pool.busy_reply else {
            return;
        };
        if self.busy_sent.contains(&w.arrival) || context.waited(t) < busy.after {
            return;
        }
        self.busy_sent.push(w.arrival);
        let fill = Fill {
            rules: self.rules,
            rule: d.rule.map(|r| &self.rules.rules[r]),
            pool: Some(&pool.name),
            agent: None,
            context,
            position: Some(self.waiting.len() as i64 + 1),
            now: t,
        };
        let from = self.rules.agents[busy.from].name.clone();
        let text = fill.render(&busy.text);
        self.entry(t, w.arrival, Event::BusyReply { from, text }, String::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(id: i64, at: Timestamp, open_mins: u64, answer: Option<u64>) -> Arrival {
        Arrival {
            context: ChatContext {
                chat_id: ChatId(id),
                ..ChatContext::default()
            },
            at,
            priority: 0,
            open_for: Duration::from_secs(open_mins * 60),
            answer_after: answer.map(|m| Duration::from_secs(m * 60)),
        }
    }

    fn t(hhmm: &str) -> Timestamp {
        format!("2026-06-03T{hhmm}:00Z").parse().unwrap()
    }

    #[test]
    fn seats_free_when_chats_close_and_absences_hand_chats_back() {
        let rules = crate::rules::load_sources(&[(
            "r.toml".into(),
            "[agents]\na = { id = 1 }\nb = { id = 2 }\n\
             [pools.p]\nagents = [\"a\", \"b\"]\nmax_open = 1\nhandback = \"unanswered\"\n\
             [[rule]]\nname = \"r\"\nassign = \"pool:p\"\n"
                .to_string(),
        )])
        .unwrap();
        let scenario = Scenario {
            // 1 and 2 fill both seats; 3 waits for 1 to close at 10:30;
            // 2 is never answered and b leaves at 10:10.
            arrivals: vec![
                chat(1, t("10:00"), 30, Some(1)),
                chat(2, t("10:00"), 60, None),
                chat(3, t("10:05"), 10, Some(1)),
            ],
            absences: vec![Absence {
                agent: "b".into(),
                from: t("10:10"),
                until: t("12:00"),
            }],
            start: t("10:00"),
            end: t("11:00"),
            tick: Duration::from_secs(60),
        };
        let log = run(&rules, &scenario);
        let line = |e: &Entry| {
            let hm = e.at.strftime("%H:%M");
            match &e.event {
                Event::Assigned { agent, .. } => format!("{hm} {} -> {agent}", e.chat),
                Event::Waiting => format!("{hm} {} waits", e.chat),
                Event::HandedBack { from, why } => {
                    format!("{hm} {} back from {from} ({why})", e.chat)
                }
                other => format!("{hm} {} {other:?}", e.chat),
            }
        };
        let lines: Vec<String> = log.iter().map(line).collect();
        assert_eq!(
            lines,
            [
                "10:00 1 -> a",
                "10:00 2 -> b",
                "10:05 3 waits",
                "10:10 2 back from b (away)",
                "10:10 2 waits",
                "10:30 3 -> a",
                "10:40 2 -> a",
            ]
        );
    }
}
