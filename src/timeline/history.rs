//! `simulate --history`: the chats the daemon really saw, replayed over
//! time through a rule set by [`super::replay`], and the figures of
//! `simulate --chats` for them, with time in queue, escalations,
//! hand-backs and how often the replay agrees with what really happened.
//! Pure, like the engine: the caller reads the history and hands it over.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{Absence, Arrival, Entry, Event, Recorded, Scenario};
use crate::domain::ChatId;
use crate::helpcrunch::types::Chat;
use crate::report::{Wait, wait_of};
use crate::rules::{ChatContext, Rules};
use crate::simulate::{Replay, SimOutcome, skip_reason, summarize};

/// One recorded chat: when it arrived, what the worker decided on, when it
/// closed, and when it was answered (if still known).
#[derive(Debug, Clone)]
pub struct Recording {
    pub chat_id: ChatId,
    pub arrived_at: Timestamp,
    pub snapshot: Option<String>,
    pub attrs: Option<String>,
    pub priority: i64,
    pub closed_at: Option<Timestamp>,
    pub answered_at: Option<Timestamp>,
}

/// An agent marked away (`until` when it ends by itself) or back.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at: Timestamp,
    pub agent: String,
    pub away: bool,
    pub until: Option<Timestamp>,
}

/// What the replay covers: it starts at `from`, a margin before `start`,
/// so that chats still open and rotations at `start` are as they were;
/// only chats that arrived from `start` on are counted.
#[derive(Debug, Clone)]
pub struct Window {
    pub from: Timestamp,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The limiter's pace: one assignment per `pace` at most.
    pub pace: Option<Duration>,
}

/// The figures of one rule set over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    #[serde(flatten)]
    pub replay: Replay,
    /// From arrival to the first assignment.
    pub queue_wait: Wait,
    pub escalations: u32,
    pub handbacks: u32,
    /// Chats given the agent the daemon really assigned (or, like it,
    /// none).
    pub agreed: usize,
    /// `agreed / chats`; `None` without chats.
    pub agreement: Option<f64>,
}

/// One side of a chat decided differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub result: String,
    pub agent: Option<String>,
    pub reason: String,
}

impl From<&SimOutcome> for Side {
    fn from(o: &SimOutcome) -> Self {
        Self {
            result: o.result.to_string(),
            agent: o.agent.clone(),
            reason: o.reason.clone(),
        }
    }
}

/// A chat decided differently by the two sides.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub chat_id: i64,
    pub a: Side,
    pub b: Side,
}

/// How long the simulated clock may go without looking: shifts and
/// escalation steps are noticed within this.
const TICK: Duration = Duration::from_secs(30);

/// Folds `away`/`back` marks (oldest first) into absences: an away lasts
/// until its `until`, the agent's next mark, or `end`, whichever is first.
pub fn absences(marks: &[Mark], end: Timestamp) -> Vec<Absence> {
    let mut current: HashMap<&str, (Timestamp, Timestamp)> = HashMap::new();
    let mut out = Vec::new();
    let mut close = |agent: &str, from: Timestamp, until: Timestamp| {
        if from < until {
            out.push(Absence {
                agent: agent.to_string(),
                from,
                until,
            });
        }
    };
    for m in marks {
        if let Some((from, until)) = current.remove(m.agent.as_str()) {
            close(&m.agent, from, until.min(m.at));
        }
        if m.away {
            let until = m.until.unwrap_or(end).min(end);
            current.insert(&m.agent, (m.at, until));
        }
    }
    for (agent, (from, until)) in current {
        close(agent, from, until);
    }
    out.sort_by(|a, b| (a.from, &a.agent).cmp(&(b.from, &b.agent)));
    out
}

/// The chat's context as the worker built it from its queue row, or why
/// the worker would not have decided it.
fn context(rec: &Recording) -> Result<ChatContext, SimOutcome> {
    let skipped = |result: &'static str, reason: &str| SimOutcome {
        chat_id: rec.chat_id.0,
        result,
        rule: None,
        agent: None,
        reason: reason.to_string(),
    };
    let attrs = match rec.attrs.as_deref().map(serde_json::from_str) {
        None | Some(Ok(serde_json::Value::Null)) => serde_json::Map::new(),
        Some(Ok(serde_json::Value::Object(map))) => map,
        Some(_) => return Err(skipped("failed", "queue.attrs is not a JSON object")),
    };
    // A snapshot that does not parse is ignored, as the worker does.
    let chat = rec
        .snapshot
        .as_deref()
        .and_then(|s| serde_json::from_str::<Chat>(s).ok());
    match chat {
        Some(chat) => match skip_reason(&chat) {
            Some(why) => Err(skipped("skipped", why)),
            None => Ok(chat.rules_context(&attrs)),
        },
        None => Ok(ChatContext::bare(rec.chat_id, &attrs)),
    }
}

/// Replays `chats` (oldest first) through `rules` over `window`, with
/// `absences`; `real` is what the daemon really did, by chat.
pub fn replay(
    rules: &Rules,
    chats: &[Recording],
    absences: &[Absence],
    window: &Window,
    real: &HashMap<ChatId, SimOutcome>,
) -> Figures {
    let mut skipped = HashMap::new();
    let mut scenario = Scenario {
        arrivals: Vec::new(),
        absences: absences.to_vec(),
        start: window.from,
        end: window.end,
        tick: TICK,
    };
    let mut recorded = Recorded {
        pace: window.pace,
        ..Recorded::default()
    };
    for rec in chats {
        match context(rec) {
            Err(outcome) => {
                skipped.insert(rec.chat_id, outcome);
            }
            Ok(context) => {
                scenario.arrivals.push(Arrival {
                    context,
                    at: rec.arrived_at,
                    priority: rec.priority,
                    open_for: Duration::ZERO,
                    answer_after: None,
                });
                recorded.closed_at.push(rec.closed_at);
                recorded.answered_at.push(rec.answered_at);
            }
        }
    }
    let log = super::replay(rules, &scenario, &recorded);
    let counted: Vec<&Recording> = chats
        .iter()
        .filter(|r| r.arrived_at >= window.start)
        .collect();
    figures(rules, &counted, &log, skipped, real)
}

/// What the log says of each chat: its last assignment, else its last
/// decision (the rule [`real_outcomes`] applies to reality, so that the
/// two compare alike), and when it was first assigned.
#[derive(Default)]
struct Fold {
    last: Option<SimOutcome>,
    assigned_at: Option<Timestamp>,
}

fn fold(log: &[Entry]) -> HashMap<ChatId, Fold> {
    let mut folds: HashMap<ChatId, Fold> = HashMap::new();
    for e in log {
        let Some((result, rule)) = &e.decided else {
            continue;
        };
        let f = folds.entry(e.chat).or_default();
        let agent = match &e.event {
            Event::Assigned { agent, .. } => {
                f.assigned_at.get_or_insert(e.at);
                Some(agent.clone())
            }
            _ => None,
        };
        if agent.is_none() && f.last.as_ref().is_some_and(|o| o.agent.is_some()) {
            continue;
        }
        f.last = Some(SimOutcome {
            chat_id: e.chat.0,
            result,
            rule: rule.clone(),
            agent,
            reason: e.reason.clone(),
        });
    }
    folds
}

fn figures(
    rules: &Rules,
    counted: &[&Recording],
    log: &[Entry],
    mut skipped: HashMap<ChatId, SimOutcome>,
    real: &HashMap<ChatId, SimOutcome>,
) -> Figures {
    let mut folds = fold(log);
    let mut waits = Vec::new();
    let mut outcomes = Vec::with_capacity(counted.len());
    for rec in counted {
        let f = folds.remove(&rec.chat_id).unwrap_or_default();
        if let Some(at) = f.assigned_at {
            waits.push(at.duration_since(rec.arrived_at).as_millis() as i64);
        }
        let outcome = skipped.remove(&rec.chat_id).or(f.last);
        outcomes.push(outcome.unwrap_or_else(|| SimOutcome {
            chat_id: rec.chat_id.0,
            result: "pending",
            rule: None,
            agent: None,
            reason: "not decided before the window ended".into(),
        }));
    }
    let mut ids: Vec<ChatId> = counted.iter().map(|r| r.chat_id).collect();
    ids.sort_unstable();
    let counts = |pred: fn(&Event) -> bool| {
        log.iter()
            .filter(|e| ids.binary_search(&e.chat).is_ok() && pred(&e.event))
            .count() as u32
    };
    let escalations = counts(|e| {
        matches!(
            e,
            Event::Assigned {
                escalated: true,
                ..
            }
        )
    });
    let handbacks = counts(|e| matches!(e, Event::HandedBack { .. }));
    let agreed = outcomes
        .iter()
        .filter(|o| real_agent(real, o.chat_id) == o.agent.as_deref())
        .count();
    let chats = outcomes.len();
    Figures {
        replay: summarize(rules, chats, outcomes),
        queue_wait: wait_of(waits),
        escalations,
        handbacks,
        agreed,
        agreement: (chats > 0).then(|| agreed as f64 / chats as f64),
    }
}

fn real_agent(real: &HashMap<ChatId, SimOutcome>, chat: i64) -> Option<&str> {
    real.get(&ChatId(chat)).and_then(|o| o.agent.as_deref())
}

/// The chats `a` and `b` (same chats, same order) decided differently:
/// how many, and the first `n` with both sides. `by_result`: a different
/// result counts too, not only a different agent.
pub fn differences(
    a: &[SimOutcome],
    b: &[SimOutcome],
    by_result: bool,
    n: usize,
) -> (usize, Vec<Difference>) {
    let differ =
        |x: &SimOutcome, y: &SimOutcome| x.agent != y.agent || (by_result && x.result != y.result);
    let all: Vec<Difference> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| differ(x, y))
        .map(|(x, y)| Difference {
            chat_id: x.chat_id,
            a: x.into(),
            b: y.into(),
        })
        .collect();
    let total = all.len();
    (total, all.into_iter().take(n).collect())
}

/// What really happened to each of `outcomes`' chats, in the same order:
/// from `real`, or "nothing recorded".
pub fn reality_of(outcomes: &[SimOutcome], real: &HashMap<ChatId, SimOutcome>) -> Vec<SimOutcome> {
    outcomes
        .iter()
        .map(|o| {
            real.get(&ChatId(o.chat_id))
                .cloned()
                .unwrap_or_else(|| SimOutcome {
                    chat_id: o.chat_id,
                    result: "none",
                    rule: None,
                    agent: None,
                    reason: "no outcome recorded".into(),
                })
        })
        .collect()
}

/// What really happened to each chat, from its recorded outcomes (oldest
/// first: result, rule, agent, reason): the last `assigned` one, else the
/// last one.
pub fn real_outcomes<'a>(
    rows: impl IntoIterator<
        Item = (
            ChatId,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        ),
    >,
) -> HashMap<ChatId, SimOutcome> {
    let mut real: HashMap<ChatId, SimOutcome> = HashMap::new();
    for (chat, result, rule, agent, reason) in rows {
        let result = match result {
            "assigned" | "shadow" => "assigned",
            "no_agent" => "no_agent",
            "no_match" => "no_match",
            _ => "skipped",
        };
        if result != "assigned" && real.get(&chat).is_some_and(|o| o.result == "assigned") {
            continue;
        }
        real.insert(
            chat,
            SimOutcome {
                chat_id: chat.0,
                result,
                rule: rule.map(str::to_string),
                agent: agent.map(str::to_string),
                reason: reason.unwrap_or_default().to_string(),
            },
        );
    }
    real
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(hhmm: &str) -> Timestamp {
        format!("2026-06-03T{hhmm}:00Z").parse().unwrap()
    }

    fn mark(at: &str, agent: &str, away: bool, until: Option<&str>) -> Mark {
        Mark {
            at: t(at),
            agent: agent.into(),
            away,
            until: until.map(t),
        }
    }

    #[test]
    fn absences_end_at_until_back_or_the_window() {
        let marks = [
            mark("08:00", "a", true, None),
            mark("09:00", "b", true, Some("09:30")),
            mark("10:00", "a", false, None),
            mark("11:00", "b", false, None),
            mark("12:00", "a", true, Some("18:00")),
        ];
        let got: Vec<(String, String, String)> = absences(&marks, t("13:00"))
            .iter()
            .map(|a| {
                let hm = |x: Timestamp| x.strftime("%H:%M").to_string();
                (a.agent.clone(), hm(a.from), hm(a.until))
            })
            .collect();
        let want = [
            ("a", "08:00", "10:00"),
            ("b", "09:00", "09:30"),
            ("a", "12:00", "13:00"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, f, u)| (a.to_string(), f.to_string(), u.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    fn rec(id: i64, at: &str, closed: Option<&str>) -> Recording {
        Recording {
            chat_id: ChatId(id),
            arrived_at: t(at),
            snapshot: Some(format!(r#"{{"id": {id}, "status": "new"}}"#)),
            attrs: None,
            priority: 0,
            closed_at: closed.map(t),
            answered_at: None,
        }
    }

    #[test]
    fn chats_close_at_their_real_close_and_wait_for_a_seat() {
        let rules = crate::rules::load_sources(&[(
            "r.toml".into(),
            "[agents]\na = { id = 1, max_open = 1 }\nb = { id = 2, max_open = 1 }\n\
             [pools.p]\nagents = [\"a\", \"b\"]\n\
             [[rule]]\nname = \"r\"\nassign = \"pool:p\"\n"
                .to_string(),
        )])
        .unwrap();
        // 4 arrives before the window (not counted) and moves the rotation
        // to b; 1 and 2 take both seats; 3 waits for 1's close at 10:20;
        // 2 never closes.
        let chats = [
            rec(4, "09:00", Some("09:05")),
            rec(1, "10:00", Some("10:20")),
            rec(2, "10:01", None),
            rec(3, "10:02", Some("10:21")),
        ];
        let window = Window {
            from: t("08:00"),
            start: t("09:30"),
            end: t("11:00"),
            pace: Some(Duration::from_millis(500)),
        };
        let real = real_outcomes([
            (ChatId(1), "assigned", Some("r"), Some("b"), Some("x")),
            (ChatId(2), "assigned", Some("r"), Some("a"), Some("y")),
            (ChatId(3), "assigned", Some("r"), Some("a"), Some("z")),
        ]);
        let f = replay(&rules, &chats, &[], &window, &real);
        let agents: Vec<Option<&str>> = f
            .replay
            .outcomes
            .iter()
            .map(|o| o.agent.as_deref())
            .collect();
        assert_eq!(agents, [Some("b"), Some("a"), Some("b")]);
        assert_eq!(f.replay.chats, 3);
        assert_eq!(f.queue_wait.p95_ms, Some(18 * 60_000));
        assert_eq!(f.agreed, 2);
        let reality = reality_of(&f.replay.outcomes, &real);
        let (n, first) = differences(&f.replay.outcomes, &reality, false, 1);
        assert_eq!((n, first.len(), first[0].chat_id), (1, 1, 3));
        assert_eq!(
            (first[0].a.reason.is_empty(), first[0].b.reason.as_str()),
            (false, "z")
        );
    }

    /// A chat that really closed while it waited leaves the replay's queue
    /// (and takes no seat after), and a chat assigned and then waiting again
    /// is judged by its assignment on both sides.
    #[test]
    fn closed_while_waiting_and_assigned_then_waiting_compare_alike() {
        let rules = crate::rules::load_sources(&[(
            "r.toml".into(),
            "[agents]\na = { id = 1, max_open = 1 }\n\
             [pools.p]\nagents = [\"a\"]\nhandback = \"all\"\n\
             [[rule]]\nname = \"r\"\nassign = \"pool:p\"\n"
                .to_string(),
        )])
        .unwrap();
        // 1 takes a's seat; 2 waits and really closes at 10:10, before 1
        // closes at 10:20; 3 arrives at 10:30 and gets the seat. a is away
        // from 10:40: 3 is handed back and waits to the end.
        let chats = [
            rec(1, "10:00", Some("10:20")),
            rec(2, "10:05", Some("10:10")),
            rec(3, "10:30", None),
        ];
        let window = Window {
            from: t("10:00"),
            start: t("10:00"),
            end: t("11:00"),
            pace: None,
        };
        let away = [Absence {
            agent: "a".into(),
            from: t("10:40"),
            until: t("11:00"),
        }];
        let real = real_outcomes([
            (ChatId(1), "assigned", Some("r"), Some("a"), None),
            (ChatId(2), "no_agent", Some("r"), None, None),
            (ChatId(3), "assigned", Some("r"), Some("a"), None),
            (ChatId(3), "no_agent", Some("r"), None, None),
        ]);
        let f = replay(&rules, &chats, &away, &window, &real);
        let got: Vec<(&str, Option<&str>)> = f
            .replay
            .outcomes
            .iter()
            .map(|o| (o.result, o.agent.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("assigned", Some("a")),
                ("no_agent", None),
                ("assigned", Some("a"))
            ]
        );
        assert_eq!(f.handbacks, 1);
        assert_eq!(f.agreed, 3, "{:?}", f.replay.outcomes);
    }
}
