//! The routing state in memory: decisions are taken and reserved under one
//! lock, so concurrent tasks never pick from a stale rotation, and a failed
//! call gives back what its decision reserved.

use crate::domain::ChatId;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rand::RngExt;

use crate::rules::decide::hour_before;
use crate::rules::{Applied, ChatContext, Decision, RoutingState, Rules, Target, decide};
use crate::store::{Assigned, Backend, StoreError, StoredRouting, away_from_ms};

use super::plan::effects;
use super::policy::WAIT_RETRY;
use super::{Worker, lock};

/// Assignment instants per agent name, as the store reads them.
type Recent = HashMap<String, Vec<Timestamp>>;

/// A seat a decision took: what to give back if its call then fails, and
/// how to find that seat and no other (finding 16): a later decision for
/// the same chat, once this one's claim was lost, may hold the chat's
/// reservation by then, in memory (`at`, when it was noted) or, on
/// PostgreSQL, in the shared state (`mark`, [`RoutingLock::reserve`]'s).
///
/// [`RoutingLock::reserve`]: crate::store::RoutingLock::reserve
pub(super) struct Seat {
    pub(super) applied: Applied,
    at: Option<Instant>,
    mark: Option<i64>,
}

impl Worker {
    /// Decides under the routing lock and applies what the decision moves
    /// (rotation, weights, the agent's open count) at once, so that
    /// concurrent tasks decide on current state. Returns what to give back
    /// if the assignment then fails.
    pub(super) async fn decide_and_reserve(
        &self,
        rules: &Rules,
        context: &ChatContext,
    ) -> Result<(Decision, Option<Seat>), StoreError> {
        self.reserve(rules, |routing| {
            routing.state.entropy = rand::rng().random();
            let started = std::time::Instant::now();
            let now = Timestamp::now();
            let decision = decide(rules, context, &routing.state, now);
            crate::metrics::metrics()
                .decision
                .observe(started.elapsed().as_secs_f64());
            let reserved = routing.state.apply(rules, &decision, now);
            let seat = reserved.as_ref().map(|_| {
                let Assigned {
                    round_robin,
                    weights,
                    opened,
                    ..
                } = effects(rules, &decision, context);
                Assigned {
                    round_robin,
                    weights,
                    opened,
                    ..Assigned::default()
                }
            });
            (decision, reserved.zip(seat))
        })
        .await
    }

    /// Runs `pick` under the routing lock, the one place a seat is taken:
    /// on SQLite the daemon's in-memory lock; on PostgreSQL the shared lock
    /// over the database's state, read fresh into memory first, with the
    /// seat `pick` reserves (what it moves of the rotation and the open
    /// chat) written before the lock goes. Returns what `pick` decided and
    /// the seat to give back if the assignment then fails.
    pub(super) async fn reserve<T>(
        &self,
        rules: &Rules,
        pick: impl FnOnce(&mut Routing) -> (T, Option<(Applied, Assigned)>),
    ) -> Result<(T, Option<Seat>), StoreError> {
        let hourly = rules.uses_hourly_caps();
        if self.store.backend() == Backend::Sqlite {
            if hourly {
                self.ensure_recent().await;
            }
            let (decided, seat) = self.pick_seat(None, pick);
            return Ok((decided, seat.map(|(seat, _)| seat)));
        }
        let (mut held, stored) = self.store.lock_routing().await?;
        // Read only when a cap needs it: one query less per decision else.
        let recent = if hourly {
            held.recent_assignments(hour_before(Timestamp::now()))
                .await?
        } else {
            Recent::new()
        };
        let (decided, seat) = self.pick_seat(Some((stored, recent)), pick);
        let Some((mut seat, reservation)) = seat else {
            held.release().await?;
            return Ok((decided, None));
        };
        seat.mark = Some(held.reserve(&reservation).await?);
        Ok((decided, Some(seat)))
    }

    /// Runs `pick` on the in-memory state (refreshed from `fresh` first,
    /// when the database's state is shared) and notes the seat it took.
    fn pick_seat<T>(
        &self,
        fresh: Option<(StoredRouting, Recent)>,
        pick: impl FnOnce(&mut Routing) -> (T, Option<(Applied, Assigned)>),
    ) -> (T, Option<(Seat, Assigned)>) {
        let mut routing = lock(&self.routing);
        if let Some((stored, recent)) = fresh {
            routing.state.last_pick = stored.last_pick;
            routing.state.weights = stored.weights;
            routing.state.open = stored.open;
            routing.state.away = away_from_ms(stored.away);
            routing.state.recent = recent;
        }
        let (decided, picked) = pick(&mut routing);
        let seat = picked.map(|(applied, reservation)| {
            let at = match &reservation.opened {
                Some((chat, _)) => Some(routing.reserved(*chat, &applied.agent)),
                None => None,
            };
            let seat = Seat {
                applied,
                at,
                mark: None,
            };
            (seat, reservation)
        });
        (decided, seat)
    }

    /// Loads each agent's assignments of the last hour from the outcomes
    /// (for `max_per_hour`) when the in-memory counts are not loaded yet:
    /// after a start, and after each reconciliation round. Merged, not
    /// replaced: an agent's count never drops below what this daemon has
    /// applied itself (its calls in flight have no outcome yet). On failure
    /// the decision goes on with the counts it has, and the next one tries
    /// again.
    pub(super) async fn ensure_recent(&self) {
        if lock(&self.routing).recent_loaded {
            return;
        }
        let now = Timestamp::now();
        match self.store.recent_assignments(hour_before(now)).await {
            Ok(stored) => {
                let keep = self.rules().highest_hourly_cap();
                let mut routing = lock(&self.routing);
                routing.merge_recent(stored, now);
                routing.state.keep_recent(keep);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last hour's assignments; counting from memory")
            }
        }
    }

    /// What a settle writes of an assignment's effects. On PostgreSQL the
    /// rotation and weights are the shared state's, moved under its lock
    /// when decisions reserve; written again after the call, they could
    /// rewind another daemon's later pick, so they are left out.
    pub(super) fn settled_effects(&self, mut moved: Assigned) -> Assigned {
        if self.store.backend() == Backend::Postgres {
            moved.round_robin = None;
            moved.weights = None;
        }
        moved
    }

    /// Gives back what a decision reserved: its own seat only, never one a
    /// later decision for the chat holds now (see [`Seat`]). The rotation
    /// and weights go back only if no other decision has moved them since;
    /// on PostgreSQL the shared state too.
    pub(super) async fn undo_reservation(&self, chat_id: ChatId, reserved: Option<Seat>) {
        let Some(Seat { applied, at, mark }) = reserved else {
            return;
        };
        if self.store.backend() == Backend::Postgres {
            let rotation = applied
                .pool
                .as_deref()
                .map(|p| (p, applied.previous_pick()));
            if let Err(e) = self
                .store
                .unreserve(chat_id, &applied.agent, mark, rotation)
                .await
            {
                tracing::warn!(error = %e, "cannot give back the reserved seat; reconciliation will");
            }
        }
        let mut routing = lock(&self.routing);
        // A later decision for the chat may hold its entry by now.
        if at.is_some() && routing.in_flight.get(&chat_id).map(|(_, t)| *t) == at {
            routing.in_flight.remove(&chat_id);
        }
        routing.state.undo(applied);
    }

    /// Records in memory that `chat` is now open with `agent`; see
    /// [`Routing::opened`].
    pub(super) fn opened(&self, chat: ChatId, agent: &str) {
        lock(&self.routing).opened(chat, agent);
    }

    /// A webhook said which agent `chat` is open with now (`None`: nobody we
    /// route to, or closed). Already stored; this moves the in-memory
    /// counts, and a freed seat wakes the waiting chats.
    pub fn note_open(&self, chat: ChatId, agent: Option<&str>) {
        if agent.is_none() {
            // Its row, if it waits, reads the chat again: no read is kept
            // for a chat that closed (issue 23).
            lock(&self.waiting_reads).forget(chat);
        }
        if lock(&self.routing).note_open(chat, agent, Instant::now()) {
            self.wake();
        }
    }

    /// Open chats per agent, as the decisions see them.
    pub fn open_counts(&self) -> Vec<(String, u32)> {
        let routing = lock(&self.routing);
        let mut v: Vec<(String, u32)> = routing
            .state
            .open
            .iter()
            .map(|(a, n)| (a.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Reads the away flags the CLI keeps in the database.
    pub(super) async fn refresh_away(&self) {
        match self.store.load_away().await {
            Ok(away) => lock(&self.routing).state.away = away_from_ms(away),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read away flags; keeping the last known ones")
            }
        }
    }

    /// How long a chat waits for a candidate: [`WAIT_RETRY`], or less if a
    /// member's shift starts sooner.
    pub(super) fn wait_delay(
        &self,
        rules: &Rules,
        decision: &Decision,
        enqueued_at_ms: i64,
    ) -> Duration {
        let now = Timestamp::now();
        let escalation = next_escalation(rules, decision, enqueued_at_ms);
        let busy_reply = busy_reply_due(rules, decision, enqueued_at_ms);
        let members: Vec<usize> = match decision.rule.map(|r| rules.rules[r].target) {
            Some(Target::Pool(p)) => rules.pools[p].members.clone(),
            Some(Target::Agent(a)) => vec![a],
            _ => Vec::new(),
        };
        let shifts = members
            .iter()
            .filter_map(|&a| rules.agents[a].schedule)
            .filter_map(|s| rules.schedules[s].next_open(now))
            .map(|z| z.timestamp());
        let hourly = self.hourly_frees(rules, decision, &members, now);
        shifts
            .chain(hourly)
            .chain(escalation)
            .chain(busy_reply)
            .filter_map(|t| Duration::try_from(t.duration_since(now)).ok())
            .min()
            .map_or(WAIT_RETRY, |d| {
                d.clamp(Duration::from_millis(50), WAIT_RETRY)
            })
    }

    /// When the members that are at their hourly cap get a place again.
    fn hourly_frees(
        &self,
        rules: &Rules,
        decision: &Decision,
        members: &[usize],
        now: Timestamp,
    ) -> Vec<Timestamp> {
        let pool = match decision.rule.map(|r| rules.rules[r].target) {
            Some(Target::Pool(p)) => Some(&rules.pools[p]),
            _ => None,
        };
        let routing = lock(&self.routing);
        let state = &routing.state;
        members
            .iter()
            .map(|&a| &rules.agents[a])
            .filter(|a| {
                pool.map_or(a.max_per_hour, |p| p.hourly_cap(a))
                    .is_some_and(|cap| state.assigned_last_hour(&a.name, now) >= cap)
            })
            .filter_map(|a| state.hourly_frees_at(&a.name, now))
            .collect()
    }
}

/// When a waiting chat's pool's busy reply is due (a past time is ignored).
fn busy_reply_due(rules: &Rules, decision: &Decision, enqueued_at_ms: i64) -> Option<Timestamp> {
    let after = decision.rule_pool(rules)?.busy_reply.as_ref()?.after;
    let after = jiff::SignedDuration::try_from(after).ok()?;
    Timestamp::from_millisecond(enqueued_at_ms)
        .ok()?
        .checked_add(after)
        .ok()
}

/// When a waiting chat reaches its rule's pool's next escalation step.
fn next_escalation(rules: &Rules, decision: &Decision, enqueued_at_ms: i64) -> Option<Timestamp> {
    let crate::rules::Verdict::NoCandidate { escalation, .. } = decision.verdict else {
        return None;
    };
    let pool = decision.rule_pool(rules)?;
    let done = escalation.map_or(0, |step| step + 1);
    let enqueued_at = Timestamp::from_millisecond(enqueued_at_ms).ok()?;
    crate::rules::escalate::next_step_at(pool, done, enqueued_at)
}

/// The decision state, and which agent each open chat is with (so that a
/// chat moving between agents moves its count). The agent's open count in
/// `state` is its open chats plus the seats reserved by decisions in
/// flight; when each chat was opened or closed here is kept so that a
/// reconciliation can merge a search that predates them (issue 14).
pub(super) struct Routing {
    pub(super) state: RoutingState,
    pub(super) open_chats: HashMap<ChatId, String>,
    /// When each chat of `open_chats` was opened (or moved) here; a chat
    /// loaded from the database has none (it predates every search).
    pub(super) opened_at: HashMap<ChatId, Instant>,
    /// Seats reserved by decisions whose assignment has not settled yet,
    /// and when.
    pub(super) in_flight: HashMap<ChatId, (String, Instant)>,
    /// Chats closed here recently, for the reconciliation under way.
    pub(super) closed_at: HashMap<ChatId, Instant>,
    /// Whether `state.recent` holds the outcomes' last hour; see
    /// [`Worker::ensure_recent`].
    pub(super) recent_loaded: bool,
}

impl Routing {
    pub(super) fn new(state: RoutingState, open_chats: HashMap<ChatId, String>) -> Self {
        Self {
            state,
            open_chats,
            opened_at: HashMap::new(),
            in_flight: HashMap::new(),
            closed_at: HashMap::new(),
            recent_loaded: false,
        }
    }

    /// Takes an agent's assignments of the hour up to `now` from `stored`
    /// when they are more than the ones counted here. This daemon's own
    /// instants after the newest stored one have no outcome yet (calls in
    /// flight), so they count on top of the stored ones.
    pub(super) fn merge_recent(&mut self, stored: Recent, now: Timestamp) {
        let in_hour = |v: &[Timestamp]| v.len() - v.partition_point(|t| *t <= hour_before(now));
        for (agent, mut times) in stored {
            let here = self.state.recent.get(&agent).map_or(&[][..], Vec::as_slice);
            let newest = times.last().copied();
            times.extend(here.iter().filter(|t| newest.is_none_or(|n| **t > n)));
            if in_hour(&times) > in_hour(here) {
                self.state.recent.insert(agent, times);
            }
        }
        self.recent_loaded = true;
    }

    /// Records that `chat` is now open with `agent` (the open count was
    /// reserved at decision time); a chat that moves from another agent
    /// lowers that agent's count. A chat closed here while its call was on
    /// its way stays closed: the close came after the seat was taken.
    pub(super) fn opened(&mut self, chat: ChatId, agent: &str) {
        let reserved_at = self.in_flight.remove(&chat).map(|(_, at)| at);
        let closed_at = self.closed_at.get(&chat).copied();
        if let (Some(reserved), Some(closed)) = (reserved_at, closed_at)
            && closed >= reserved
        {
            self.recount();
            return;
        }
        self.opened_at.insert(chat, Instant::now());
        self.closed_at.remove(&chat);
        self.open_chats.insert(chat, agent.to_string());
        // Counted once, whatever counted it before (its reserved seat, a
        // reconciliation that saw it, another agent it moved from).
        self.recount();
    }

    /// Notes that `chat` is open with `agent` since `now`, or closed
    /// (`None`), and moves the counts; whether a seat was freed.
    pub(super) fn note_open(&mut self, chat: ChatId, agent: Option<&str>, now: Instant) -> bool {
        let previous = match agent {
            Some(a) => {
                self.opened_at.insert(chat, now);
                self.closed_at.remove(&chat);
                self.open_chats.insert(chat, a.to_string())
            }
            None => {
                self.opened_at.remove(&chat);
                self.closed_at.insert(chat, now);
                self.bound_memory(now);
                self.open_chats.remove(&chat)
            }
        };
        if previous.as_deref() == agent {
            return false;
        }
        if let Some(prev) = &previous
            && let Some(n) = self.state.open.get_mut(prev)
        {
            *n = n.saturating_sub(1);
        }
        if let Some(a) = agent {
            *self.state.open.entry(a.to_string()).or_default() += 1;
        }
        previous.is_some()
    }

    /// Notes the seat a decision just took (with `RoutingState::apply`)
    /// for `chat`, until its assignment settles or is undone; returns when,
    /// which tells this seat from a later one for the chat.
    pub(super) fn reserved(&mut self, chat: ChatId, agent: &str) -> Instant {
        let now = Instant::now();
        self.in_flight.insert(chat, (agent.to_string(), now));
        self.bound_memory(now);
        now
    }

    /// Where no reconciliation runs (a daemon that does not lead, or a long
    /// `[load] refresh`), forgets the closes and reservations older than
    /// any search could be once there are many.
    fn bound_memory(&mut self, now: Instant) {
        const MANY: usize = 4096;
        const KEPT: Duration = Duration::from_secs(600);
        if self.closed_at.len() + self.in_flight.len() < MANY {
            return;
        }
        if let Some(before) = now.checked_sub(KEPT) {
            self.closed_at.retain(|_, t| *t >= before);
            self.in_flight.retain(|_, (_, t)| *t >= before);
        }
    }

    /// Merges what HelpCrunch reports open with `agent` (`open`, from a
    /// search that started at `since`): the search's chats, plus the chats
    /// opened here since it started or still in flight, minus the chats
    /// closed here since. Then counts every agent's seats again. A seat
    /// reserved before `stale_before` is given back: its decision never
    /// settled (a lost lease), and the row will be decided again.
    pub(super) fn reconcile(
        &mut self,
        agent: &str,
        open: &HashSet<ChatId>,
        since: Instant,
        stale_before: Option<Instant>,
    ) {
        if let Some(stale) = stale_before {
            self.in_flight.retain(|_, (_, at)| *at >= stale);
        }
        // The hourly counts are read again from the outcomes too, before
        // the next decision.
        self.recent_loaded = false;
        let found = open.iter().map(|c| (*c, agent));
        self.merge(|a| a == agent, found, since);
    }

    /// Takes the open chats the database holds (read from `since`), the
    /// way [`Routing::reconcile`] takes a search's: on PostgreSQL a daemon
    /// that does not lead runs no reconciliation, and the closes other
    /// daemons were told of would otherwise stay here for good (issue 23).
    pub(super) fn resync(&mut self, stored: &HashMap<ChatId, String>, since: Instant) {
        let found = stored.iter().map(|(c, a)| (*c, a.as_str()));
        self.merge(|_| true, found, since);
    }

    /// The merge of `found` (chat, agent: what a read that started at
    /// `since` saw open) into the open chats of the agents in `scope`.
    fn merge<'a>(
        &mut self,
        scope: impl Fn(&str) -> bool,
        found: impl Iterator<Item = (ChatId, &'a str)> + Clone,
        since: Instant,
    ) {
        let seen: HashSet<ChatId> = found.clone().map(|(c, _)| c).collect();
        let opened_before = |r: &Self, c: &ChatId| r.opened_at.get(c).is_none_or(|t| *t < since);
        let forgotten: Vec<ChatId> = self
            .open_chats
            .iter()
            .filter(|(c, a)| scope(a) && !seen.contains(c) && opened_before(self, c))
            .map(|(c, _)| *c)
            .collect();
        for c in forgotten {
            self.open_chats.remove(&c);
            self.opened_at.remove(&c);
        }
        for (c, agent) in found {
            let closed_since = self.closed_at.get(&c).is_some_and(|t| *t >= since);
            let moved_since = match self.open_chats.get(&c) {
                Some(a) => a != agent && !opened_before(self, &c),
                None => false,
            };
            if closed_since || moved_since || self.in_flight.contains_key(&c) {
                continue;
            }
            if self.open_chats.insert(c, agent.to_string()).as_deref() != Some(agent) {
                self.opened_at.insert(c, since);
            }
        }
        self.recount();
    }

    /// Forgets the closes older than `before`: no reconciliation under way
    /// started before them.
    pub(super) fn forget_closes(&mut self, before: Instant) {
        self.closed_at.retain(|_, t| *t >= before);
    }

    /// Each agent's open count: its open chats, and the seats reserved for
    /// it by decisions in flight (a chat counted once).
    pub(super) fn recount(&mut self) {
        let mut open: HashMap<String, u32> = HashMap::new();
        for a in self.open_chats.values() {
            *open.entry(a.clone()).or_default() += 1;
        }
        for (c, (a, _)) in &self.in_flight {
            if self.open_chats.get(c) != Some(a) {
                *open.entry(a.clone()).or_default() += 1;
            }
        }
        for n in self.state.open.values_mut() {
            *n = 0;
        }
        self.state.open.extend(open);
    }
}

#[cfg(test)]
mod tests;
