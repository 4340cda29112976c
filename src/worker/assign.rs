//! The one assignment path (SPEC §15.1). Every `PUT /chats/assignee`
//! assignd makes (a queue row's decision, an escalation, a hand-back, a
//! retry, a reassignment hop) goes through [`Worker::put_assignee`]:
//!
//! 1. the seat is already reserved under the routing lock by the caller;
//! 2. one transaction confirms the claim the call is made for (renewing
//!    it) and records the intent; a claim that cannot be confirmed sends
//!    nothing and gives the seat back;
//! 3. the call, sent only while the decision is surely still this
//!    daemon's: by [`send_by`], so that it lands before the lease the
//!    decision was made under could end, even if the slot came late or the
//!    process was stopped; an answer that says nothing was done gives the
//!    seat back, an answer that leaves it unknown keeps the seat and the
//!    intent.
//!
//! A chat has one call in doubt at a time: step 2 refuses while another
//! claim's intent for the chat stands (a queue row's and a follow-up's hop
//! are two claims on one chat). A kept intent is resolved by
//! [`Worker::resolve_intent`], which reads the chat before anything else
//! is decided for it, once the call can no longer be on its way
//! ([`Worker::in_flight_until`]).

use std::time::{Duration, Instant};

use crate::domain::ChatId;
use crate::helpcrunch::ApiError;
use crate::helpcrunch::types::Chat;
use crate::limiter::Priority;
use crate::store::{Backend, Began, CallClaim, Intent, now_ms};

use super::routing::Seat;
use super::{Worker, lock};

/// How an assignment call ended.
pub(super) enum Put {
    /// HelpCrunch applied it.
    Applied(Duration),
    /// An answer that says nothing was done: the seat was given back.
    Refused(ApiError, Duration),
    /// It may have been applied: the seat and the intent are kept until
    /// the chat is read.
    Uncertain(ApiError, Duration),
    /// Not sent, the seat given back: the claim could not be confirmed.
    NotSent(String),
}

/// What reading the chat of a kept intent showed.
pub(super) enum Resolution {
    /// The chat is with the intent's agent: the call was applied.
    Applied(Box<Chat>),
    /// It is not: the call did nothing; the seat is given back and the
    /// intent forgotten, and the chat as read is what to decide on.
    NotApplied(Box<Chat>),
    /// The chat could not be read; the intent stays.
    Unknown(ApiError, Duration),
}

impl Worker {
    /// Confirms `claim`, records `intent`, and makes the call; see the
    /// module's text. `reserved` is what the caller's decision reserved,
    /// `decided` an instant before it was.
    pub(super) async fn put_assignee(
        &self,
        claim: CallClaim<'_>,
        intent: &Intent,
        reserved: Option<Seat>,
        decided: Instant,
    ) -> Put {
        let confirmed = self.store.begin_call(claim, intent).await;
        self.storage_result(&confirmed);
        let why = match confirmed {
            Ok(Began::Confirmed) => None,
            Ok(Began::ClaimLost) => {
                Some("the claim on this chat was lost before the call".to_string())
            }
            Ok(Began::Busy(other)) => Some(format!(
                "another call for this chat (to {}, by {}) is not settled yet",
                other.agent, other.owner
            )),
            Err(e) => Some(format!("cannot confirm the claim before the call: {e}")),
        };
        if let Some(why) = why {
            tracing::warn!(reason = %why, "assignment not sent");
            self.undo_reservation(intent.chat_id, reserved).await;
            return Put::NotSent(why);
        }
        let client = self.client();
        let by = send_by(decided, self.settings.lease, client.timeout());
        let call = client
            .assign(intent.chat_id, intent.agent_id, Some(by))
            .await;
        match call.result {
            Ok(_) => Put::Applied(call.latency),
            // Shadow mode: the call took its slot at the live pace and went
            // nowhere; what assignd would have done stands, seat and claim.
            Err(ApiError::ReadOnly) => Put::Applied(Duration::ZERO),
            Err(e @ ApiError::TooLate) => {
                // The intent stays: the next decision for the chat reads it
                // first, as for any call whose fate it cannot know itself.
                tracing::warn!(agent = %intent.agent, waited_ms = call.waited.as_millis() as u64, "assignment not sent: its decision is too old to stand behind");
                self.undo_reservation(intent.chat_id, reserved).await;
                Put::NotSent(e.to_string())
            }
            Err(e) if e.maybe_applied() => {
                tracing::warn!(agent = %intent.agent, error = %e, "the assignment's answer is unknown; its seat is kept until the chat is read");
                Put::Uncertain(e, call.latency)
            }
            Err(e) => {
                self.undo_reservation(intent.chat_id, reserved).await;
                Put::Refused(e, call.latency)
            }
        }
    }

    /// Until when `intent`'s call may still be on its way, if it may now.
    /// Its maker sends it within a lease of recording it ([`send_by`], the
    /// clocks' half second included), so until then reading the chat
    /// cannot tell a call that did nothing from one not yet applied. That
    /// holds for the claim's own intent too: a row whose call timed out
    /// comes back for a retry while HelpCrunch may still apply the call.
    /// (A row that came back because its lease ran out waited that long
    /// already: the intent was recorded under a renewed lease.)
    pub(super) fn in_flight_until(&self, intent: &Intent) -> Option<i64> {
        let until = intent.at_ms + self.settings.lease.as_millis() as i64;
        (until > now_ms()).then_some(until)
    }

    /// Reads the chat of an assignment call whose answer was never known.
    pub(super) async fn resolve_intent(&self, intent: &Intent) -> Resolution {
        let call = self.client().chat(intent.chat_id, Priority::Assign).await;
        let chat = match call.result {
            Ok(chat) => chat,
            Err(e) => return Resolution::Unknown(e, call.latency),
        };
        if chat.assignee.as_ref().map(|a| a.id) == Some(intent.agent_id) {
            tracing::info!(chat_id = intent.chat_id.0, agent = %intent.agent, "an assignment whose answer was lost was applied");
            return Resolution::Applied(Box::new(chat));
        }
        tracing::info!(chat_id = intent.chat_id.0, agent = %intent.agent, "an assignment whose answer was lost was not applied; its seat is given back");
        self.release_seat(intent.chat_id, &intent.agent).await;
        if let Err(e) = self.store.clear_intent(intent.chat_id).await {
            // Harmless: the next decision for the chat reads it again.
            tracing::warn!(error = %e, "cannot forget the resolved assignment intent");
        }
        Resolution::NotApplied(Box::new(chat))
    }

    /// Gives back the seat a call of unknown answer kept for `agent`, in
    /// memory and, on PostgreSQL, in the shared state.
    pub(super) async fn release_seat(&self, chat: ChatId, agent: &str) {
        if self.store.backend() == Backend::Postgres
            && let Err(e) = self.store.unreserve(chat, agent, None, None).await
        {
            tracing::warn!(error = %e, "cannot give back the kept seat; reconciliation will");
        }
        let mut routing = lock(&self.routing);
        if routing
            .in_flight
            .get(&chat)
            .is_some_and(|(a, _)| a == agent)
        {
            routing.in_flight.remove(&chat);
            routing.recount();
        }
    }

    /// The intent for a call about to be made for `chat`.
    pub(super) fn intent(
        &self,
        chat_id: ChatId,
        agent: &crate::rules::Agent,
        queue_id: Option<i64>,
        outcome: &crate::store::NewOutcome,
    ) -> Intent {
        Intent {
            chat_id,
            agent: agent.name.clone(),
            agent_id: agent.id,
            rule: outcome.rule.clone(),
            pool: outcome.pool.clone(),
            route: outcome.route,
            queue_id,
            owner: self.owner.clone(),
            at_ms: 0,
        }
    }
}

/// What a decision's call is sent by. The call's claim was renewed after
/// the decision (`Store::begin_call`), so no other daemon can claim the
/// chat's row or count its seat as stale until a `lease` after it, by
/// every daemon's clock; a call sent by this instant is answered, or given
/// up, a `timeout` later, with half a second to spare for the clocks, so it
/// lands before anyone else could decide for the chat. `[worker] lease`
/// exceeds `[helpcrunch] timeout` by at least a second (the configuration
/// refuses less), which leaves a call at least half a second.
pub(super) fn send_by(decided: Instant, lease: Duration, timeout: Duration) -> Instant {
    decided + lease.saturating_sub(timeout + Duration::from_millis(500))
}
