//! The sandbox's history for checkers (tests/nemesis.rs): for every
//! `PUT /chats/assignee`, when it arrived, whether and when it changed the
//! chat, and when its answer was ready; and every chat closed. Instants are
//! taken under the chats lock where the chat changes, so that assignments
//! and closes of one chat are in their true order.

use std::sync::Mutex;
use std::time::Instant;

/// Why the sandbox failed a request on purpose, without doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// A [`super::Trick`] answered (a 429 with `Retry-After` among them).
    Trick,
    /// [`super::Faults::server_error`]: a 502/503.
    ServerError,
    /// [`super::Faults::throttle`]: a 429 the sandbox was told to give.
    Throttle,
    /// [`super::Faults::reset`]: the connection dropped before any work.
    Reset,
}

/// What a PUT did to its chat, as the sandbox applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The chat's assignee before.
    pub before: Option<i64>,
    pub at: Instant,
}

/// One `PUT /chats/assignee`.
#[derive(Debug, Clone)]
pub struct PutRecord {
    /// Its place in arrival order.
    pub seq: usize,
    pub chat: i64,
    /// The assignee asked for.
    pub assignee: Option<i64>,
    pub received: Instant,
    /// Set when it changed the chat (HelpCrunch's 200).
    pub applied: Option<Applied>,
    /// When its answer was ready (or its connection dropped): the end of
    /// the call on HelpCrunch's side, whether the client still waited or
    /// not. None while the call is in flight.
    pub answered: Option<Instant>,
    pub status: u16,
    pub injected: Option<Injected>,
    /// The answer's body broke off ([`super::Faults::drop_connection`]).
    pub dropped: bool,
}

/// A chat closed in HelpCrunch ([`super::Sandbox::close_chat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub chat: i64,
    pub at: Instant,
}

#[derive(Default)]
pub(super) struct History {
    puts: Mutex<Vec<PutRecord>>,
    closes: Mutex<Vec<Closed>>,
}

impl History {
    /// Records a PUT once its work is done; its index, to mark the answer.
    pub(super) fn put(&self, mut record: PutRecord) -> usize {
        let mut puts = self.puts.lock().expect("history lock");
        record.seq = puts.len();
        puts.push(record);
        puts.len() - 1
    }

    pub(super) fn answered(&self, index: usize, dropped: bool) {
        let mut puts = self.puts.lock().expect("history lock");
        if let Some(p) = puts.get_mut(index) {
            p.answered = Some(Instant::now());
            p.dropped = dropped;
        }
    }

    pub(super) fn closed(&self, chat: i64, at: Instant) {
        self.closes
            .lock()
            .expect("history lock")
            .push(Closed { chat, at });
    }

    pub(super) fn puts(&self) -> Vec<PutRecord> {
        self.puts.lock().expect("history lock").clone()
    }

    pub(super) fn closes(&self) -> Vec<Closed> {
        self.closes.lock().expect("history lock").clone()
    }
}
