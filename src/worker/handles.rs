//! The narrow handles other parts of the daemon hold instead of the whole
//! [`Worker`]: the listener feeds it ([`Intake`]), reports on it
//! ([`Health`]) and serves the console from it ([`Console`]), and can do
//! nothing else with it.

use crate::domain::ChatId;
use std::sync::Arc;

use super::Worker;
use crate::helpcrunch::ApiError;
use crate::helpcrunch::types::Chat;
use crate::limiter::Priority;
use crate::rules::Rules;

/// What intake may tell the worker: work is waiting, or a chat's assignee
/// changed.
#[derive(Clone)]
pub struct Intake(Arc<Worker>);

/// What health checks and metrics may read from the worker.
#[derive(Clone)]
pub struct Health(Arc<Worker>);

/// What the console may use of the worker: the rules in force, whether
/// assigned chats are decided, a chat read from HelpCrunch, and the
/// wake-up after a change that makes waiting chats due.
#[derive(Clone)]
pub struct Console(Arc<Worker>);

impl Worker {
    pub fn intake(self: &Arc<Self>) -> Intake {
        Intake(self.clone())
    }

    pub fn health(self: &Arc<Self>) -> Health {
        Health(self.clone())
    }

    pub fn console(self: &Arc<Self>) -> Console {
        Console(self.clone())
    }
}

impl Intake {
    /// A chat was enqueued: take it now rather than at the next poll.
    pub fn wake(&self) {
        self.0.wake();
    }

    /// A webhook said which agent `chat` is open with now (`None`: nobody
    /// we route to, or closed).
    pub fn note_open(&self, chat: ChatId, agent: Option<&str>) {
        self.0.note_open(chat, agent);
    }

    /// The rules in force, to resolve an agent id to its name.
    pub fn rules(&self) -> Arc<Rules> {
        self.0.rules()
    }

    /// Shadow mode: who HelpCrunch says has a chat is reality's choice,
    /// not a seat of the shadow's.
    pub fn shadow(&self) -> bool {
        self.0.shadow()
    }

    /// The rule priority a new row takes at intake, if what it carries
    /// (`attrs`, a snapshot of the chat) tells which rule will decide it.
    pub fn intake_priority(
        &self,
        chat_id: ChatId,
        attrs: &serde_json::Map<String, serde_json::Value>,
        snapshot: Option<&Chat>,
    ) -> Option<i64> {
        self.0.intake_priority(chat_id, attrs, snapshot)
    }
}

impl Health {
    /// Why the worker cannot do its work right now, if it cannot: a job
    /// failed, the database fails, or HelpCrunch rejects the API key.
    pub fn problem(&self) -> Option<String> {
        if let Some(failed) = self.0.failure() {
            return Some(format!("stopping: {failed}"));
        }
        if let Some(e) = self.0.storage_error() {
            return Some(format!("database: {e}"));
        }
        if !self.0.api_authorized() {
            return Some("HelpCrunch rejects the API key (401); fix it and reload".into());
        }
        if !self.0.cluster.may_work() {
            return Some("standby: another daemon works this database".into());
        }
        None
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.0.rules()
    }

    /// Open chats per agent, as the decisions see them.
    pub fn open_counts(&self) -> Vec<(String, u32)> {
        self.0.open_counts()
    }
}

impl Console {
    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.0.rules()
    }

    /// `worker.reassign`: whether chats that have an assignee are decided.
    pub fn reassign(&self) -> bool {
        self.0.reassign()
    }

    /// What runs instead of plain assignment, in words: shadow mode, or an
    /// experiment's shares (SPEC §14); None when assignd assigns every chat.
    pub fn experiment(&self) -> Option<String> {
        self.0.experiment_summary()
    }

    /// Chats were made due (an agent is back, dead letters retried):
    /// decide them now rather than at the next poll.
    pub fn wake(&self) {
        self.0.wake();
    }

    /// The chat as HelpCrunch returns it now, read at background priority
    /// (after the calls of rows in flight).
    pub async fn chat(&self, id: ChatId) -> Result<Chat, ApiError> {
        self.0.client().chat(id, Priority::Background).await.result
    }
}
