//! The states and kinds the daemon stores, as types: each maps to the one
//! text value its column holds (the columns' CHECK constraints list the
//! same values), so no state travels as a loose string.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A column type stored as `$inner` on every backend.
macro_rules! stored_as {
    ($t:ty: $inner:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $t
        where
            $inner: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <$inner as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <$inner as sqlx::Type<DB>>::compatible(ty)
            }
        }
    };
}

/// Declares an id of HelpCrunch's: an integer that must not be mixed up
/// with another kind of id (`assign(chat, agent)` takes one of each), stored
/// and sent as the plain integer.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }

        stored_as!($name: i64);

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            i64: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(Self(<i64 as sqlx::Decode<DB>>::decode(value)?))
            }
        }
    };
}

id_type!(
    /// A HelpCrunch chat id.
    ChatId
);
id_type!(
    /// A HelpCrunch agent id.
    AgentId
);

/// The `state` column of `queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    Pending,
    Leased,
    Done,
    Dead,
}

/// The `result` column of `outcomes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeResult {
    Assigned,
    Skipped,
    NoMatch,
    NoAgent,
    Failed,
    Retry,
    /// Shadow mode (SPEC §14): what assignd would have done; nothing was
    /// written to HelpCrunch.
    Shadow,
}

/// Which arm of an experiment a decision belongs to (SPEC §14), the `arm`
/// column of `outcomes` and `chat_arms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// assignd assigns with the rules of `[rules] path` (every chat, when
    /// no experiment runs).
    A,
    /// assignd assigns with `[experiment] b_rules`.
    B,
    /// Decided in shadow mode: recorded, never written to HelpCrunch.
    Shadow,
    /// Outside a canary's share: left to HelpCrunch's routing or people.
    Left,
}

/// The `kind` column of `outbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A private note, seen by agents only.
    Private,
    /// A reply the customer sees.
    Message,
}

/// The `waiting` column of `queue`: why a pending row is held back on
/// purpose, so that what ends the wait can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Its rule's target has no available agent (`when_full = "wait"`): an
    /// agent marked back or a freed seat makes it due at once.
    Candidate,
    /// HelpCrunch rejected the API key: a reload with a good key resumes it.
    ApiKey,
}

/// The `route` column of `outcomes`: how an outcome came about, where it
/// was not the plain decision of a queue row, so that reports count it
/// without reading the reason's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Assigned by a pool's `escalate` step.
    Escalated,
    /// A chat taken off an absent agent (`handback`), as a `skipped` outcome.
    HandedBack,
    /// A hop of `reassign_after`: moved from an agent who did not answer.
    Reassigned,
}

/// The `action` column of `audit`: a change made by a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// An agent marked away (`until` set when it ends by itself).
    Away,
    /// An agent marked back.
    Back,
    /// Finished rows put back on the queue.
    Retry,
    /// A console sign-in.
    SignIn,
}

impl QueueState {
    pub const ALL: [QueueState; 4] = [Self::Pending, Self::Leased, Self::Done, Self::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Pending => "pending",
            QueueState::Leased => "leased",
            QueueState::Done => "done",
            QueueState::Dead => "dead",
        }
    }
}

impl OutcomeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeResult::Assigned => "assigned",
            OutcomeResult::Skipped => "skipped",
            OutcomeResult::NoMatch => "no_match",
            OutcomeResult::NoAgent => "no_agent",
            OutcomeResult::Failed => "failed",
            OutcomeResult::Retry => "retry",
            OutcomeResult::Shadow => "shadow",
        }
    }
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::A => "a",
            Arm::B => "b",
            Arm::Shadow => "shadow",
            Arm::Left => "left",
        }
    }
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Private => "private",
            OutboxKind::Message => "message",
        }
    }
}

impl Wait {
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::Candidate => "candidate",
            Wait::ApiKey => "api_key",
        }
    }
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Escalated => "escalated",
            Route::HandedBack => "handed_back",
            Route::Reassigned => "reassigned",
        }
    }
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Away => "away",
            AuditAction::Back => "back",
            AuditAction::Retry => "retry",
            AuditAction::SignIn => "sign_in",
        }
    }
}

impl fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a stored state from its column's text on any backend: the
/// texts are those of `as_str`, and any other text is a decode error (the
/// schema's CHECK constraints keep it from being stored).
macro_rules! text_column {
    ($t:ty: $($v:expr),+) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                [$($v),+]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("`{s}` is not a {}", stringify!($t)))
            }
        }
        stored_as!($t: str);
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $t
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<DB>>::decode(value)?;
                Ok(text.parse::<$t>()?)
            }
        }
    };
}

text_column!(QueueState: QueueState::Pending, QueueState::Leased, QueueState::Done, QueueState::Dead);
text_column!(
    OutcomeResult: OutcomeResult::Assigned,
    OutcomeResult::Skipped,
    OutcomeResult::NoMatch,
    OutcomeResult::NoAgent,
    OutcomeResult::Failed,
    OutcomeResult::Retry,
    OutcomeResult::Shadow
);
text_column!(Arm: Arm::A, Arm::B, Arm::Shadow, Arm::Left);
text_column!(OutboxKind: OutboxKind::Private, OutboxKind::Message);
text_column!(Wait: Wait::Candidate, Wait::ApiKey);
text_column!(Route: Route::Escalated, Route::HandedBack, Route::Reassigned);
text_column!(
    AuditAction: AuditAction::Away,
    AuditAction::Back,
    AuditAction::Retry,
    AuditAction::SignIn
);

/// A message whose `{position}` (a chat's place in line) is filled in
/// where the place is known, in the store: the text between its uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionedText(pub Vec<String>);

impl PositionedText {
    pub fn fill(&self, position: i64) -> String {
        self.0.join(&position.to_string())
    }
}

/// How long a row waits to gain one priority level in the claim order
/// (written out in the claim's SQL).
pub const AGING_MS: i64 = 600_000;

/// A row's place in the claim order at `now` (higher first), as the claim's
/// SQL computes it: its priority, bounded, plus one for every mark of
/// [`AGING_MS`] on the clock (every 10 minutes: :00, :10, ...) passed since
/// it was enqueued. The worker's claim, the busy reply's position and the
/// replays of `simulate` all order by it.
pub fn claim_rank(priority: i64, enqueued_at_ms: i64, now: i64) -> i64 {
    claim_key(priority, enqueued_at_ms) + now.max(0) / AGING_MS
}

/// The part of [`claim_rank`] that does not change with time, which the
/// claim's index holds (`store/claim.rs`): the priority, bounded, less the
/// marks of [`AGING_MS`] before the row was enqueued.
pub fn claim_key(priority: i64, enqueued_at_ms: i64) -> i64 {
    priority.clamp(-1_000_000, 1_000_000) - enqueued_at_ms.max(0) / AGING_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text each value is stored as is the one the schema's CHECK
    /// constraints allow.
    #[test]
    fn stored_texts_match_the_schema() {
        let schema = concat!(
            include_str!("../migrations/sqlite/0001_initial.sql"),
            include_str!("../migrations/sqlite/0002_routing_state.sql"),
            include_str!("../migrations/sqlite/0005_leases_and_waits.sql"),
            include_str!("../migrations/sqlite/0023_experiments.sql")
        );
        let states = [
            QueueState::Pending,
            QueueState::Leased,
            QueueState::Done,
            QueueState::Dead,
        ];
        let results = [
            OutcomeResult::Assigned,
            OutcomeResult::Skipped,
            OutcomeResult::NoMatch,
            OutcomeResult::NoAgent,
            OutcomeResult::Failed,
            OutcomeResult::Retry,
            OutcomeResult::Shadow,
        ];
        let texts = states
            .iter()
            .map(|s| s.as_str())
            .chain(results.iter().map(|r| r.as_str()))
            .chain([OutboxKind::Private.as_str(), OutboxKind::Message.as_str()])
            .chain([Wait::Candidate.as_str(), Wait::ApiKey.as_str()])
            .chain([Arm::A, Arm::B, Arm::Shadow, Arm::Left].map(Arm::as_str));
        for text in texts {
            assert!(
                schema.contains(&format!("'{text}'")),
                "{text} is not in the schema"
            );
        }
    }
}
