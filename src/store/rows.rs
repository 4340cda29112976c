//! The shapes of rows read from and written to the database.

use std::time::Duration;

pub use crate::domain::{
    AgentId, Arm, AuditAction, ChatId, OutboxKind, OutcomeResult, PositionedText, QueueState,
    Route, Wait,
};

/// A chat to put on the queue.
#[derive(Debug, Clone, Default)]
pub struct NewQueueItem {
    pub chat_id: ChatId,
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
    pub snapshot: Option<serde_json::Value>,
    pub priority: i64,
    /// `priority` already holds the rule priority at intake (the higher of
    /// the two); else the daemon ranks the row before its first claim.
    pub ranked: bool,
}

/// Who holds a claim: the process (`<pid>-<random>`, released as a whole
/// at shutdown) and the claim's batch within it (the settle fence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKey {
    pub owner: String,
    pub epoch: i64,
}

/// A leased queue row, as the worker sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub id: i64,
    pub chat_id: ChatId,
    /// JSON text as the producer wrote it; may be malformed.
    pub attrs: Option<String>,
    pub snapshot: Option<String>,
    pub priority: i64,
    /// Including the current one.
    pub attempts: i64,
    #[sqlx(rename = "enqueued_at")]
    pub enqueued_at_ms: i64,
    pub last_error: Option<String>,
    /// Why the row was held back, if it was on purpose.
    pub waiting: Option<Wait>,
    /// Set on a row that hands a chat back from an absent agent (pool
    /// `handback`): why, for the outcome. The chat is decided although it
    /// has an assignee.
    pub handback: Option<String>,
}

/// One row for `outcomes`.
#[derive(Debug, Clone)]
pub struct NewOutcome {
    pub chat_id: ChatId,
    pub rule: Option<String>,
    pub pool: Option<String>,
    pub strategy: Option<&'static str>,
    pub agent: Option<String>,
    pub agent_id: Option<AgentId>,
    pub result: OutcomeResult,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub latency: Option<Duration>,
    pub reason: Option<String>,
    /// How it came about, where not by a queue row's plain decision.
    pub route: Option<Route>,
    /// The experiment's arm (SPEC §14); `a` when none runs.
    pub arm: Arm,
}

impl NewOutcome {
    pub fn new(chat_id: ChatId, result: OutcomeResult) -> Self {
        Self {
            chat_id,
            rule: None,
            pool: None,
            strategy: None,
            agent: None,
            agent_id: None,
            result,
            http_status: None,
            error_code: None,
            latency: None,
            reason: None,
            route: None,
            arm: Arm::A,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutcomeRow {
    pub id: i64,
    pub chat_id: ChatId,
    pub queue_id: Option<i64>,
    #[sqlx(rename = "at")]
    pub at_ms: i64,
    pub rule: Option<String>,
    pub pool: Option<String>,
    pub strategy: Option<String>,
    pub agent: Option<String>,
    pub agent_id: Option<i64>,
    pub result: String,
    pub http_status: Option<i64>,
    pub error_code: Option<String>,
    pub latency_ms: Option<f64>,
    pub reason: Option<String>,
    pub arm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutcomeCount {
    pub result: String,
    pub rule: String,
    pub agent: String,
    pub count: i64,
}

/// What becomes of a leased row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    Dead,
    /// Back to pending, due at `at_ms`; `count_attempt = false` gives back
    /// the attempt the claim counted (429s, waiting for a candidate).
    Retry {
        at_ms: i64,
        count_attempt: bool,
    },
    /// Back to pending, due now, the attempt given back and the reason
    /// kept: the row was not worked on (the daemon is stopping).
    Release,
}

/// What a write does with the chat's assignment intent (see
/// `store/intents.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doubt {
    /// The answer is known: the intent made for this queue row (`None`: a
    /// follow-up's hop) is removed.
    Resolved { queue_id: Option<i64> },
    /// Nothing is known of a call's answer (one may have been applied, or
    /// none was made): an intent, if any, and its seat stay until the chat
    /// is read.
    Kept,
}

/// Everything [`super::Store::settle`] writes in one transaction.
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    pub queue_id: i64,
    pub chat_id: ChatId,
    /// Whether the chat's assignment intent is settled by this write.
    pub doubt: Doubt,
    pub lease: &'a LeaseKey,
    pub next: Next,
    pub last_error: Option<String>,
    /// Set with a retry that waits on purpose; what ends the wait finds it.
    pub waiting: Option<Wait>,
    /// The deciding rule's `priority`, raised onto the row (never lowered)
    /// so that waiting chats are taken in that order.
    pub priority: Option<i64>,
    pub outcomes: Vec<NewOutcome>,
    /// What a successful assignment changes besides the row.
    pub assigned: Option<Assigned>,
    /// The pool a chat that waits for a seat waits in, and its "all busy"
    /// message when one is due, sent once per chat.
    pub busy_reply: Option<BusyWait>,
}

/// A chat that waits for a seat in a pool: it stands in that pool's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyWait {
    pub pool: String,
    /// The pool's `busy_reply`, when it is due.
    pub reply: Option<BusyMessage>,
}

/// A busy reply whose `{position}` the store fills with the chat's place
/// in its pool's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyMessage {
    pub chat_id: ChatId,
    /// The agent it is posted as.
    pub agent_id: AgentId,
    pub text: PositionedText,
}

/// The state a successful assignment moves, written with its outcome.
#[derive(Debug, Clone, Default)]
pub struct Assigned {
    /// `(pool, agent)`: the agent got the pool's latest chat.
    pub round_robin: Option<(String, String)>,
    /// For `weighted`: the pool and its members' new current weights.
    pub weights: Option<(String, Vec<(String, i64)>)>,
    /// The chat is now open with this agent.
    pub opened: Option<(ChatId, String)>,
    /// `(customer key, agent)`: remembered for `sticky`.
    pub customer: Option<(String, String)>,
    /// Notes and replies to post now that the chat is assigned.
    pub messages: Vec<OutboxMessage>,
    /// When to check that the assignee answered (`reassign_after`).
    pub followup: Option<Followup>,
}

/// A pending check that a chat's assignee answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followup {
    pub chat_id: ChatId,
    pub pool: String,
    pub rule: Option<String>,
    pub agent: String,
    pub hops: u32,
    pub tried: Vec<String>,
    pub due_at_ms: i64,
}

/// A note or reply waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub chat_id: ChatId,
    pub kind: OutboxKind,
    pub agent_id: Option<AgentId>,
    pub text: String,
}

/// An outbox row claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub chat_id: ChatId,
    pub kind: OutboxKind,
    pub agent_id: Option<AgentId>,
    pub text: String,
    pub attempts: i64,
}

/// The routing state kept in the database.
#[derive(Debug, Clone, Default)]
pub struct StoredRouting {
    pub last_pick: std::collections::HashMap<String, String>,
    pub weights: std::collections::HashMap<String, std::collections::HashMap<String, i64>>,
    pub open: std::collections::HashMap<String, u32>,
    pub away: std::collections::HashMap<String, Option<i64>>,
}

/// A queue row as `queue list` and `status` show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueListing {
    pub id: i64,
    /// The chat id as stored: digits, or an SQL literal (`'abc'`, `X'00'`)
    /// for a value a producer wrote with the wrong type.
    pub chat_id: String,
    pub state: String,
    pub attempts: i64,
    #[sqlx(rename = "next_attempt_at")]
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
}

/// Away flags as stored (Unix ms) to the decision's form.
pub fn away_from_ms(
    away: std::collections::HashMap<String, Option<i64>>,
) -> std::collections::HashMap<String, Option<jiff::Timestamp>> {
    away.into_iter()
        .map(|(agent, until)| {
            (
                agent,
                until.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()),
            )
        })
        .collect()
}

impl StoredRouting {
    /// The decision's state, as the database holds it.
    pub fn into_state(self) -> crate::rules::RoutingState {
        crate::rules::RoutingState {
            last_pick: self.last_pick,
            weights: self.weights,
            open: self.open,
            away: away_from_ms(self.away),
            ..crate::rules::RoutingState::default()
        }
    }
}

/// What a webhook event changes, applied with its id in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEffect {
    /// `chat.new`: queue the chat with the event's chat as its snapshot.
    Enqueue(NewQueueItemJson),
    /// `chat.assigned`: the chat is now open with this agent (by name), or
    /// with nobody we route to (`None`).
    Assigned {
        chat_id: ChatId,
        agent: Option<String>,
    },
    /// `chat.assigned` in shadow mode: who really has the chat, recorded
    /// for the comparison; the shadow's seats are its own and do not move.
    Observed { chat_id: ChatId, agent: String },
    /// `chat.closed` (or a status update to closed): no longer open.
    Closed { chat_id: ChatId },
    /// `message.chat.agent`: an agent answered (by name, or `#<id>` for
    /// an agent the rules do not name; without an agent in the event, the
    /// chat's assignee is taken to have), with the message's text.
    Answered {
        chat_id: ChatId,
        agent: Option<String>,
        text: Option<String>,
    },
    /// `message.chat.customer`: the customer wrote (pool `handback`).
    CustomerWrote { chat_id: ChatId },
    /// An event that changes nothing here; its id is still recorded.
    Ignored,
}

/// A chat to enqueue from a webhook: its id and the chat object as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueueItemJson {
    pub chat_id: ChatId,
    pub snapshot: String,
    /// As in [`NewQueueItem`].
    pub priority: i64,
    pub ranked: bool,
}
