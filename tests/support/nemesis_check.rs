//! The nemesis's checker: plain functions over a recorded [`History`] (what
//! the sandbox saw, what the database holds after a clean stop, what the
//! harness enqueued), one per property of SPEC §15, each returning the
//! violations it finds with their evidence. The unit tests in
//! `nemesis_check_tests.rs` feed each a small history that violates it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use assignd::sandbox::{Closed, Injected, PutRecord};

use crate::common::busiest_window_at;

/// One request as the sandbox saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub received: Instant,
    pub status: u16,
    pub injected: Option<Injected>,
    /// `METHOD /path`, for the evidence.
    pub what: String,
}

impl From<&assignd::sandbox::Recorded> for Call {
    fn from(r: &assignd::sandbox::Recorded) -> Self {
        Call {
            received: r.received,
            status: r.status,
            injected: r.injected,
            what: format!("{} {}", r.method, r.path),
        }
    }
}

/// A row of `outcomes`.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Outcome {
    pub id: i64,
    pub chat: i64,
    pub agent_id: Option<i64>,
    pub result: String,
    pub route: Option<String>,
    pub reason: Option<String>,
}

impl Outcome {
    /// A decision that moves a chat from one agent to another on purpose:
    /// a reassignment hop, or the new assignment after a hand-back.
    fn is_hop(&self) -> bool {
        self.route.as_deref() == Some("reassigned")
            || self
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("hand-back"))
    }
}

/// A row of `queue`.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub chat: i64,
    pub state: String,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
}

/// An agent's caps, by HelpCrunch id.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cap {
    pub max_open: Option<usize>,
    pub max_per_hour: Option<usize>,
}

/// How the backlog drained after the last fault.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// The stated bound, and how it was computed.
    pub bound: Duration,
    pub why: String,
    /// How long it took; None if it did not drain within the bound.
    pub took: Option<Duration>,
    /// What was still active when the bound passed.
    pub left: String,
    /// The newest queue row once drained: a row after it was enqueued by a
    /// daemon's own job (a hand-back) while the daemons were being stopped.
    pub last_row: i64,
}

/// Everything the checker reads.
#[derive(Debug, Clone)]
pub struct History {
    /// Offsets in the evidence are from here (the sandbox's start).
    pub epoch: Instant,
    pub puts: Vec<PutRecord>,
    pub closes: Vec<Closed>,
    pub calls: Vec<Call>,
    pub outcomes: Vec<Outcome>,
    pub rows: Vec<Row>,
    /// Outbox ids still leased after the clean stop.
    pub outbox_leased: Vec<i64>,
    /// Chats whose enqueue a producer saw acknowledged, and by which
    /// producer.
    pub enqueued: Vec<(i64, String)>,
    /// The account's limit: `requests` per `per`.
    pub requests: usize,
    pub per: Duration,
    pub caps: HashMap<i64, Cap>,
    pub drain: Drain,
    /// Daemons that did not exit 0 within 10 s of the final SIGTERM.
    pub unclean_stops: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An assignee changed in HelpCrunch without an `assigned` outcome.
    UnrecordedChange,
    /// An `assigned` outcome without an applied PUT behind it.
    OutcomeWithoutCall,
    /// A chat moved between agents by a plain decision (a second
    /// assignment), not by a reassignment hop or a hand-back.
    UnintendedHop,
    /// Two PUTs for one chat in flight at once.
    Overlap,
    OverMaxOpen,
    OverPerHour,
    /// More calls than the limit in one window of `per`.
    OverRate,
    /// A 429 the sandbox was not told to give.
    Untold429,
    /// An enqueued chat neither done, nor dead or waiting with a reason.
    Lost,
    /// A row or message still leased after the clean stop, or a daemon
    /// that did not stop cleanly.
    LeaseLeft,
    NotDrained,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: Kind,
    pub chat: Option<i64>,
    pub evidence: String,
}

fn violation(kind: Kind, chat: Option<i64>, evidence: String) -> Violation {
    Violation {
        kind,
        chat,
        evidence,
    }
}

/// Milliseconds from the epoch, for the evidence.
fn ms(h: &History, t: Instant) -> String {
    format!("+{}ms", t.saturating_duration_since(h.epoch).as_millis())
}

/// Every property at once.
pub fn check(h: &History) -> Vec<Violation> {
    let mut out = assignments(h);
    out.extend(overlaps(h));
    out.extend(max_open(h));
    out.extend(per_hour(h));
    out.extend(rate(h));
    out.extend(lost(h));
    out.extend(leases(h));
    out.extend(drained(h));
    out
}

/// The applied PUTs of each chat, in the order they were applied.
fn applied_by_chat(h: &History) -> BTreeMap<i64, Vec<&PutRecord>> {
    let mut by: BTreeMap<i64, Vec<&PutRecord>> = BTreeMap::new();
    for p in h.puts.iter().filter(|p| p.applied.is_some()) {
        by.entry(p.chat).or_default().push(p);
    }
    for puts in by.values_mut() {
        puts.sort_by_key(|p| p.applied.map(|a| a.at));
    }
    by
}

/// Every change of assignee in HelpCrunch matches one `assigned` outcome
/// of that chat and agent; a change away from another agent matches a hop
/// or a hand-back; and every `assigned` outcome has an applied PUT.
pub fn assignments(h: &History) -> Vec<Violation> {
    let mut outcomes: BTreeMap<i64, Vec<&Outcome>> = BTreeMap::new();
    for o in h.outcomes.iter().filter(|o| o.result == "assigned") {
        outcomes.entry(o.chat).or_default().push(o);
    }
    let mut out = Vec::new();
    let applied = applied_by_chat(h);
    for (chat, puts) in &applied {
        let mut left = outcomes.get(chat).cloned().unwrap_or_default();
        for p in puts {
            let before = p.applied.and_then(|a| a.before);
            if before == p.assignee {
                continue;
            }
            match take_outcome(&mut left, p.assignee, before.is_some()) {
                None => out.push(violation(
                    Kind::UnrecordedChange,
                    Some(*chat),
                    format!(
                        "PUT #{} {before:?} -> {:?} applied at {} with no `assigned` outcome for it",
                        p.seq,
                        p.assignee,
                        ms(h, p.applied.expect("applied").at)
                    ),
                )),
                Some(o) if before.is_some() && !o.is_hop() => out.push(violation(
                    Kind::UnintendedHop,
                    Some(*chat),
                    format!(
                        "PUT #{} moved the chat from {before:?} to {:?} at {} by a plain decision \
                         (outcome {}: {:?}), not a hop or a hand-back",
                        p.seq,
                        p.assignee,
                        ms(h, p.applied.expect("applied").at),
                        o.id,
                        o.reason
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    out.extend(outcomes_without_calls(&outcomes, &applied));
    out
}

/// The first outcome for `agent`, of the kind the change needs if any.
fn take_outcome<'a>(
    left: &mut Vec<&'a Outcome>,
    agent: Option<i64>,
    hop: bool,
) -> Option<&'a Outcome> {
    let of_agent = |o: &&Outcome| o.agent_id == agent && agent.is_some();
    let i = left
        .iter()
        .position(|o| of_agent(o) && o.is_hop() == hop)
        .or_else(|| left.iter().position(of_agent))?;
    Some(left.remove(i))
}

fn outcomes_without_calls(
    outcomes: &BTreeMap<i64, Vec<&Outcome>>,
    applied: &BTreeMap<i64, Vec<&PutRecord>>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (chat, list) in outcomes {
        let mut counts: HashMap<Option<i64>, i64> = HashMap::new();
        for o in list {
            *counts.entry(o.agent_id).or_default() += 1;
        }
        for p in applied.get(chat).into_iter().flatten() {
            *counts.entry(p.assignee).or_default() -= 1;
        }
        for (agent, extra) in counts.into_iter().filter(|(_, n)| *n > 0) {
            out.push(violation(
                Kind::OutcomeWithoutCall,
                Some(*chat),
                format!("{extra} `assigned` outcome(s) for agent {agent:?} more than applied PUTs"),
            ));
        }
    }
    out
}

/// No two PUTs for one chat in flight at once: from its arrival to its
/// answer (or dropped connection) on HelpCrunch's side, whether or not
/// the client still waited.
pub fn overlaps(h: &History) -> Vec<Violation> {
    let mut by: BTreeMap<i64, Vec<&PutRecord>> = BTreeMap::new();
    for p in &h.puts {
        by.entry(p.chat).or_default().push(p);
    }
    let mut out = Vec::new();
    for (chat, mut puts) in by {
        puts.sort_by_key(|p| p.received);
        let mut busy: Option<(&PutRecord, Option<Instant>)> = None;
        for p in puts {
            if let Some((q, until)) = busy
                && until.is_none_or(|u| p.received < u)
            {
                out.push(violation(
                    Kind::Overlap,
                    Some(chat),
                    format!(
                        "PUT #{} (-> {:?}) arrived at {} while PUT #{} (-> {:?}, arrived {}) was \
                         in flight until {}",
                        p.seq,
                        p.assignee,
                        ms(h, p.received),
                        q.seq,
                        q.assignee,
                        ms(h, q.received),
                        until.map_or("never answered".into(), |u| ms(h, u))
                    ),
                ));
            }
            let ends_later = match (busy, p.answered) {
                (None, _) | (_, None) => true,
                (Some((_, until)), Some(a)) => until.is_some_and(|u| a > u),
            };
            if ends_later {
                busy = Some((p, p.answered));
            }
        }
    }
    out
}

/// Applied PUTs and closes, in the order they happened.
enum Event<'a> {
    Put(&'a PutRecord),
    Close(i64),
}

fn events(h: &History) -> Vec<(Instant, Event<'_>)> {
    let mut ev: Vec<(Instant, Event)> = h
        .puts
        .iter()
        .filter_map(|p| Some((p.applied?.at, Event::Put(p))))
        .collect();
    ev.extend(h.closes.iter().map(|c| (c.at, Event::Close(c.chat))));
    ev.sort_by_key(|(at, _)| *at);
    ev
}

/// An agent's open chats right after a PUT gave them one.
pub struct Seated<'a> {
    pub at: Instant,
    pub put: &'a PutRecord,
    pub agent: i64,
    pub chats: Vec<i64>,
}

/// Applied PUTs and closes replayed in order, counting the open chats
/// assignd placed: each agent's open chats after each PUT that seated one.
pub fn seated(h: &History) -> Vec<Seated<'_>> {
    let mut holder: HashMap<i64, i64> = HashMap::new();
    let mut closed: HashSet<i64> = HashSet::new();
    let mut open: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut out = Vec::new();
    for (at, e) in events(h) {
        let chat = match e {
            Event::Close(chat) => {
                closed.insert(chat);
                chat
            }
            Event::Put(p) => p.chat,
        };
        if let Some(before) = holder.remove(&chat) {
            open.entry(before).or_default().retain(|c| *c != chat);
        }
        let Event::Put(put) = e else { continue };
        let (Some(agent), false) = (put.assignee, closed.contains(&chat)) else {
            continue;
        };
        holder.insert(chat, agent);
        let chats = open.entry(agent).or_default();
        chats.push(chat);
        out.push(Seated {
            at,
            put,
            agent,
            chats: chats.clone(),
        });
    }
    out
}

/// No agent above `max_open` at any instant.
pub fn max_open(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for s in seated(h) {
        let cap = h.caps.get(&s.agent).and_then(|c| c.max_open);
        if let Some(cap) = cap.filter(|cap| s.chats.len() > *cap) {
            out.push(violation(
                Kind::OverMaxOpen,
                Some(s.put.chat),
                format!(
                    "agent {} held {} open chats {:?} (max_open {cap}) after PUT #{} at {}",
                    s.agent,
                    s.chats.len(),
                    s.chats,
                    s.put.seq,
                    ms(h, s.at)
                ),
            ));
        }
    }
    out
}

/// No agent given more than `max_per_hour` new chats in any hour: every
/// change of assignee to them counts, hops included.
pub fn per_hour(h: &History) -> Vec<Violation> {
    const HOUR: Duration = Duration::from_secs(3600);
    let mut given: BTreeMap<i64, Vec<Instant>> = BTreeMap::new();
    for p in &h.puts {
        if let (Some(a), Some(agent)) = (p.applied, p.assignee)
            && a.before != Some(agent)
        {
            given.entry(agent).or_default().push(a.at);
        }
    }
    let mut out = Vec::new();
    for (agent, mut times) in given {
        let Some(cap) = h.caps.get(&agent).and_then(|c| c.max_per_hour) else {
            continue;
        };
        times.sort();
        let (most, first) = busiest_window_at(&times, HOUR);
        if most > cap {
            out.push(violation(
                Kind::OverPerHour,
                None,
                format!(
                    "agent {agent} got {most} new chats within an hour from {} (max_per_hour {cap})",
                    ms(h, times[first])
                ),
            ));
        }
    }
    out
}

/// No window of `per` holds more than `requests` calls (every call of
/// every daemon, whatever its answer), and no 429 the sandbox was not told
/// to give.
pub fn rate(h: &History) -> Vec<Violation> {
    let mut calls: Vec<&Call> = h.calls.iter().collect();
    calls.sort_by_key(|c| c.received);
    let times: Vec<Instant> = calls.iter().map(|c| c.received).collect();
    let mut out = Vec::new();
    let (most, first) = busiest_window_at(&times, h.per);
    if most > h.requests {
        let window: Vec<String> = calls[first..first + most]
            .iter()
            .map(|c| format!("{} {} {}", ms(h, c.received), c.what, c.status))
            .collect();
        out.push(violation(
            Kind::OverRate,
            None,
            format!(
                "{most} calls in {:?} from {} (limit {}): {}",
                h.per,
                ms(h, times[first]),
                h.requests,
                window.join(", ")
            ),
        ));
    }
    for c in calls
        .iter()
        .filter(|c| c.status == 429 && c.injected.is_none())
    {
        out.push(violation(
            Kind::Untold429,
            None,
            format!(
                "{} at {} answered 429 by the sandbox's own limit",
                c.what,
                ms(h, c.received)
            ),
        ));
    }
    out
}

/// Every enqueued chat's last row is `done`, or `dead` or `pending` with
/// its reason in `last_error`.
pub fn lost(h: &History) -> Vec<Violation> {
    let mut last: HashMap<i64, &Row> = HashMap::new();
    for r in &h.rows {
        if last.get(&r.chat).is_none_or(|l| l.id < r.id) {
            last.insert(r.chat, r);
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (chat, via) in h.enqueued.iter().filter(|(c, _)| seen.insert(*c)) {
        let chat = *chat;
        let why = match last.get(&chat) {
            None => format!("no queue row (acknowledged by {via})"),
            Some(r) if r.state == "done" => continue,
            Some(r)
                if matches!(r.state.as_str(), "dead" | "pending")
                    && r.last_error
                        .as_deref()
                        .is_some_and(|e| !e.trim().is_empty()) =>
            {
                continue;
            }
            Some(r) if r.state == "leased" => continue, // see `leases`
            // Enqueued after the drain, during the stop: queued for the
            // next start, which a clean stop may leave (SPEC §6).
            Some(r) if r.state == "pending" && r.id > h.drain.last_row => continue,
            Some(r) => format!("row {} is `{}` without a reason", r.id, r.state),
        };
        out.push(violation(Kind::Lost, Some(chat), why));
    }
    out
}

/// After the clean stop: no row leased, no message leased, and every
/// daemon exited 0 in time.
pub fn leases(h: &History) -> Vec<Violation> {
    let mut out: Vec<Violation> = h
        .rows
        .iter()
        .filter(|r| r.state == "leased")
        .map(|r| {
            violation(
                Kind::LeaseLeft,
                Some(r.chat),
                format!(
                    "row {} is `{}` with lease owner {:?}",
                    r.id, r.state, r.lease_owner
                ),
            )
        })
        .collect();
    out.extend(h.outbox_leased.iter().map(|id| {
        violation(
            Kind::LeaseLeft,
            None,
            format!("outbox message {id} is still leased"),
        )
    }));
    out.extend(
        h.unclean_stops
            .iter()
            .map(|s| violation(Kind::LeaseLeft, None, format!("unclean stop: {s}"))),
    );
    out
}

/// The backlog drained within the stated bound after the last fault.
pub fn drained(h: &History) -> Vec<Violation> {
    match h.drain.took {
        Some(took) if took <= h.drain.bound => Vec::new(),
        took => vec![violation(
            Kind::NotDrained,
            None,
            format!(
                "not drained within {:?} ({}); took {took:?}; left: {}",
                h.drain.bound, h.drain.why, h.drain.left
            ),
        )],
    }
}

/// The violations by kind: how many, and the first few with evidence.
pub fn summary(violations: &[Violation]) -> String {
    let mut by: BTreeMap<Kind, Vec<&Violation>> = BTreeMap::new();
    for v in violations {
        by.entry(v.kind).or_default().push(v);
    }
    let mut out = String::new();
    for (kind, list) in by {
        out += &format!("{kind:?}: {}\n", list.len());
        for v in list.iter().take(5) {
            let chat = v.chat.map(|c| format!("chat {c}: ")).unwrap_or_default();
            out += &format!("  {chat}{}\n", v.evidence);
        }
    }
    out
}
