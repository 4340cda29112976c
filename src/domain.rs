//! The states and kinds the daemon stores, as types: each maps to the one
//! text value its column holds (the columns' CHECK constraints list the
//! same values), so no state travels as a loose string.

use std::fmt;

/// The `state` column of `queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum QueueState {
    Pending,
    Leased,
    Done,
    Dead,
}

/// The `result` column of `outcomes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum OutcomeResult {
    Assigned,
    Skipped,
    NoMatch,
    NoAgent,
    Failed,
    Retry,
}

/// The `kind` column of `outbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum OutboxKind {
    /// A private note, seen by agents only.
    Private,
    /// A reply the customer sees.
    Message,
}

/// The `waiting` column of `queue`: why a pending row is held back on
/// purpose, so that what ends the wait can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum Wait {
    /// Its rule's target has no available agent (`when_full = "wait"`): an
    /// agent marked back or a freed seat makes it due at once.
    Candidate,
    /// HelpCrunch rejected the API key: a reload with a good key resumes it.
    ApiKey,
}

impl QueueState {
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

impl fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text each value is stored as is the one the schema's CHECK
    /// constraints allow.
    #[test]
    fn stored_texts_match_the_schema() {
        let schema = concat!(
            include_str!("../migrations/0001_initial.sql"),
            include_str!("../migrations/0002_routing_state.sql"),
            include_str!("../migrations/0005_leases_and_waits.sql")
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
        ];
        let texts = states
            .iter()
            .map(|s| s.as_str())
            .chain(results.iter().map(|r| r.as_str()))
            .chain([OutboxKind::Private.as_str(), OutboxKind::Message.as_str()])
            .chain([Wait::Candidate.as_str(), Wait::ApiKey.as_str()]);
        for text in texts {
            assert!(
                schema.contains(&format!("'{text}'")),
                "{text} is not in the schema"
            );
        }
    }
}
