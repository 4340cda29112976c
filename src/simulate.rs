//! Offline replay of chats through the rules, with in-memory state that
//! moves exactly as the worker moves it after each successful assignment.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde::Serialize;

use crate::helpcrunch::types::{Chat, timestamp_from_value};
use crate::rules::{LastAgent, RoutingState, Rules, Verdict, decide};

/// One chat to replay: a chat object as `GET /chats/{id}` returns it, plus
/// optional `at` (when to decide; RFC 3339 or Unix seconds), `enqueued_at`
/// (when it was enqueued, for `escalate`; same forms) and `attrs`.
#[derive(Debug, Clone)]
pub struct SimChat {
    pub chat: Chat,
    pub at: Option<Timestamp>,
    pub enqueued_at: Option<Timestamp>,
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// An optional time field: RFC 3339 text or Unix seconds.
fn time_field(value: &serde_json::Value, key: &str) -> Result<Option<Timestamp>, String> {
    match value.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.contains('-') => s
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|e| format!("`{key}`: {e}")),
        Some(v) => timestamp_from_value(v).map_err(|e| format!("`{key}`: {e}")),
    }
}

impl SimChat {
    /// Parses one JSON line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let at = time_field(&value, "at")?;
        let enqueued_at = time_field(&value, "enqueued_at")?;
        let attrs = match value.get("attrs") {
            Some(serde_json::Value::Object(m)) => m.clone(),
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(_) => return Err("`attrs` must be an object".into()),
        };
        let chat: Chat = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Ok(Self {
            chat,
            at,
            enqueued_at,
            attrs,
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SimOutcome {
    pub chat_id: i64,
    pub result: &'static str,
    pub rule: Option<String>,
    pub agent: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolFairness {
    pub pool: String,
    pub max: u32,
    pub min: u32,
    /// Jain's fairness index over the pool's members: 1 is perfectly even.
    pub jain: f64,
}

impl PoolFairness {
    /// Max, min and Jain's index of the members' `counts` (1 when all are zero).
    pub fn of(pool: &str, counts: &[u32]) -> Self {
        let sum: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        let squares: f64 = counts.iter().map(|&c| f64::from(c).powi(2)).sum();
        Self {
            pool: pool.to_string(),
            max: counts.iter().copied().max().unwrap_or(0),
            min: counts.iter().copied().min().unwrap_or(0),
            jain: if squares == 0.0 {
                1.0
            } else {
                sum * sum / (counts.len() as f64 * squares)
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub chats: usize,
    pub outcomes: Vec<SimOutcome>,
    pub per_rule: BTreeMap<String, u32>,
    pub per_agent: BTreeMap<String, u32>,
    pub per_result: BTreeMap<String, u32>,
    pub fairness: Vec<PoolFairness>,
}

/// Replays `chats` in order. `default_at` is used for chats without `at`.
pub fn replay(rules: &Rules, chats: &[SimChat], default_at: Timestamp) -> Replay {
    let mut state = RoutingState::default();
    let mut customers: HashMap<String, LastAgent> = HashMap::new();
    let mut outcomes = Vec::new();
    for (i, c) in chats.iter().enumerate() {
        // A fixed seed per position keeps `random` repeatable.
        state.entropy = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        outcomes.push(replay_one(rules, c, &mut state, &mut customers, default_at));
    }
    summarize(rules, chats.len(), outcomes)
}

/// One chat through the rules; `customers` remembers each customer's last
/// agent and when, as the worker's `customer_agent` table does.
fn replay_one(
    rules: &Rules,
    c: &SimChat,
    state: &mut RoutingState,
    customers: &mut HashMap<String, LastAgent>,
    default_at: Timestamp,
) -> SimOutcome {
    let mut context = c.chat.rules_context(&c.attrs);
    let key = context.customer_key();
    context.last_agent = key.as_ref().and_then(|k| customers.get(k).cloned());
    context.enqueued_at = c.enqueued_at;
    if let Some(why) = skip_reason(&c.chat) {
        return SimOutcome {
            chat_id: c.chat.id.0,
            result: "skipped",
            rule: None,
            agent: None,
            reason: why.into(),
        };
    }
    let now = c.at.unwrap_or(default_at);
    let d = decide(rules, &context, state, now);
    // The same move the worker makes after a successful assignment.
    let agent = state.apply(rules, &d, now).map(|a| a.agent);
    if let (Some(k), Some(name)) = (key, &agent) {
        customers.insert(k, LastAgent::new(name.clone(), Some(now)));
    }
    SimOutcome {
        chat_id: c.chat.id.0,
        result: result_of(&d.verdict),
        rule: d.rule.map(|r| rules.rules[r].name.clone()),
        agent,
        reason: d.reason(rules),
    }
}

/// Why the worker would leave the chat alone without deciding.
pub fn skip_reason(chat: &Chat) -> Option<&'static str> {
    if chat.is_closed() {
        Some("chat is closed")
    } else if chat.assignee.is_some() {
        Some("chat is already assigned")
    } else {
        None
    }
}

/// The outcome's `result` as the worker records it.
pub fn result_of(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Assign { .. } => "assigned",
        Verdict::NoCandidate { .. } => "no_agent",
        Verdict::Nobody => "skipped",
        Verdict::NoMatch => "no_match",
    }
}

/// Counts per result, rule and agent, and fairness per pool, of `outcomes`.
pub fn summarize(rules: &Rules, chats: usize, outcomes: Vec<SimOutcome>) -> Replay {
    let mut per_rule = BTreeMap::new();
    let mut per_agent: BTreeMap<String, u32> =
        rules.agents.iter().map(|a| (a.name.clone(), 0)).collect();
    let mut per_result = BTreeMap::new();
    for o in &outcomes {
        *per_result.entry(o.result.to_string()).or_default() += 1;
        if let Some(r) = &o.rule {
            *per_rule.entry(r.clone()).or_default() += 1;
        }
        if let Some(a) = &o.agent {
            *per_agent.entry(a.clone()).or_default() += 1;
        }
    }
    let fairness = rules
        .pools
        .iter()
        .map(|p| {
            let counts: Vec<u32> = p
                .members
                .iter()
                .map(|&a| per_agent[&rules.agents[a].name])
                .collect();
            PoolFairness::of(&p.name, &counts)
        })
        .collect();
    Replay {
        chats,
        outcomes,
        per_rule,
        per_agent,
        per_result,
        fairness,
    }
}
