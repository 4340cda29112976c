//! The report's measure of routing, per chat that arrived in the window:
//! time to the first agent reply and the share replied, time to the first
//! assignment by who made it, and the after-hours reply rate. Counted one
//! chat at a time as the store reads them; per chat only its times are
//! kept (8 bytes each), for exact percentiles at the end.

use rustc_hash::FxHashSet;
use serde::Serialize;

use super::{Wait, wait_of};
use crate::domain::ChatId;
use crate::store::report::ReportChat;

/// The chats that arrived in the window (those whose arrival assignd
/// knows: it saw them queued).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatFigures {
    pub arrived: u32,
    /// Of those, with an agent reply recorded.
    pub replied: u32,
    /// `replied / arrived`, 0 with no chats.
    pub reply_share: f64,
    /// From arrival to the first agent reply, of the replied chats.
    pub first_reply: Wait,
    /// From arrival to the first assignment, by who made it.
    pub time_to_assignment: ByWhom,
    pub after_hours: AfterHours,
}

/// Times to assignment: assignd's own, and everyone else's (a person,
/// HelpCrunch's own routing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ByWhom {
    pub assignd: Wait,
    pub other: Wait,
}

/// The chats assigned by an after-hours rule, and how many got a reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AfterHours {
    pub chats: u32,
    pub replied: u32,
    /// `replied / chats`, 0 with no chats.
    pub reply_rate: f64,
}

/// [`ChatFigures`], counted as the chats come.
#[derive(Default)]
pub(super) struct ChatTally {
    /// The chats an after-hours rule assigned (from the outcomes, read
    /// before the chats).
    after_hours: FxHashSet<i64>,
    figures: ChatFigures,
    replies: Vec<i64>,
    by_assignd: Vec<i64>,
    by_other: Vec<i64>,
}

impl ChatTally {
    /// Notes that an after-hours rule assigned `chat`.
    pub(super) fn after_hours(&mut self, chat: ChatId) {
        self.after_hours.insert(chat.0);
    }

    pub(super) fn add(&mut self, c: &ReportChat) {
        let f = &mut self.figures;
        f.arrived += 1;
        let after_hours = self.after_hours.contains(&c.chat_id.0);
        f.after_hours.chats += u32::from(after_hours);
        if let Some(at) = c.first_reply_at_ms {
            f.replied += 1;
            f.after_hours.replied += u32::from(after_hours);
            self.replies.push((at - c.arrived_at_ms).max(0));
        }
        if let Some(at) = c.assigned_at_ms {
            let by = match c.assigned_by.as_deref() {
                Some("assignd") => &mut self.by_assignd,
                _ => &mut self.by_other,
            };
            by.push((at - c.arrived_at_ms).max(0));
        }
    }

    pub(super) fn finish(self) -> ChatFigures {
        let mut f = self.figures;
        f.reply_share = share(f.replied, f.arrived);
        f.after_hours.reply_rate = share(f.after_hours.replied, f.after_hours.chats);
        f.first_reply = wait_of(self.replies);
        f.time_to_assignment = ByWhom {
            assignd: wait_of(self.by_assignd),
            other: wait_of(self.by_other),
        };
        f
    }
}

/// `part / whole`, 0 when there is no whole.
fn share(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(id: i64, assigned: Option<(i64, &str)>, reply: Option<i64>) -> ReportChat {
        ReportChat {
            chat_id: ChatId(id),
            arrived_at_ms: 1_000,
            assigned_at_ms: assigned.map(|(at, _)| at),
            assigned_by: assigned.map(|(_, by)| by.to_string()),
            first_reply_at_ms: reply,
        }
    }

    #[test]
    fn replies_assignments_and_after_hours_are_counted_per_chat() {
        let mut t = ChatTally::default();
        t.after_hours(ChatId(3));
        t.after_hours(ChatId(4));
        t.add(&chat(1, Some((3_000, "assignd")), Some(61_000)));
        t.add(&chat(2, Some((11_000, "other")), None));
        t.add(&chat(3, Some((2_000, "assignd")), Some(31_000)));
        t.add(&chat(4, None, None));
        // A reply seen before the chat's recorded arrival counts as 0.
        t.add(&chat(5, None, Some(500)));
        let f = t.finish();
        assert_eq!((f.arrived, f.replied), (5, 3));
        assert!((f.reply_share - 0.6).abs() < 1e-12);
        assert_eq!(f.first_reply.count, 3);
        assert_eq!(f.first_reply.p50_ms, Some(30_000));
        assert_eq!(f.first_reply.p95_ms, Some(60_000));
        assert_eq!(f.time_to_assignment.assignd.count, 2);
        assert_eq!(f.time_to_assignment.assignd.p95_ms, Some(2_000));
        assert_eq!(f.time_to_assignment.other.p50_ms, Some(10_000));
        assert_eq!((f.after_hours.chats, f.after_hours.replied), (2, 1));
        assert_eq!(f.after_hours.reply_rate, 0.5);
    }

    #[test]
    fn no_chats_give_zero_shares() {
        let f = ChatTally::default().finish();
        assert_eq!((f.reply_share, f.after_hours.reply_rate), (0.0, 0.0));
        assert_eq!(f.first_reply.p50_ms, None);
    }
}
