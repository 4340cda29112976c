//! Routing state: round-robin positions, weights, open chats per agent,
//! customers' last agents, and what a successful assignment moves.

use crate::domain::ChatId;
use crate::rules::LastAgent;
use std::collections::HashMap;

use jiff::Timestamp;
use rand::RngExt;

use super::db::Source;
use super::outcomes::{RECENT_ASSIGNMENTS, RecentAssignments, by_agent};
use super::{Assigned, Backend, Followup, Store, StoreError, StoredRouting, Tx, now_ms, vals};

const UPSERT_WEIGHT: &str = "INSERT INTO wrr_state (pool, agent, current) VALUES ($1, $2, $3)
    ON CONFLICT (pool, agent) DO UPDATE SET current = excluded.current";
const UPSERT_CUSTOMER: &str = "INSERT INTO customer_agent (customer, agent, at) VALUES ($1, $2, $3)
    ON CONFLICT (customer) DO UPDATE SET agent = excluded.agent, at = excluded.at";
pub(super) const INSERT_MESSAGE: &str =
    "INSERT INTO outbox (chat_id, queue_id, kind, agent_id, text, created_at)
    VALUES ($1, $2, $3, $4, $5, $6)";
/// The check that the new assignee answered (`reassign_after`), replacing
/// any earlier one of the chat.
const UPSERT_FOLLOWUP: &str =
    "INSERT INTO followups (chat_id, pool, rule, agent, hops, tried, due_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (chat_id) DO UPDATE SET pool = excluded.pool, rule = excluded.rule,
        agent = excluded.agent, hops = excluded.hops, tried = excluded.tried,
        due_at = excluded.due_at, answered_at = NULL";
const UPSERT_ROTATION: &str = "INSERT INTO rr_state (pool, last_agent, updated_at) VALUES ($1, $2, $3)
    ON CONFLICT (pool) DO UPDATE SET last_agent = excluded.last_agent, updated_at = excluded.updated_at";
/// A reservation for a chat open with another agent keeps that agent in
/// `previous_agent` (still counted) until the move is confirmed. A
/// reservation carries its decision's mark (`reservation`), by which only
/// that decision gives the seat back; a confirmed seat has none.
const UPSERT_OPEN_CHAT: &str =
    "INSERT INTO open_chats (chat_id, agent, assigned_at, reserved, reservation)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (chat_id) DO UPDATE SET agent = excluded.agent, assigned_at = excluded.assigned_at,
        reserved = excluded.reserved, reservation = excluded.reservation,
        previous_agent = CASE WHEN excluded.reserved = 0 THEN NULL
                              WHEN open_chats.reserved = 0 AND open_chats.agent <> excluded.agent
                              THEN open_chats.agent
                              ELSE open_chats.previous_agent END";
/// A confirmed assignment counts its chat open with `agent`, unless the
/// chat was closed while the call was on its way (the close, applied first,
/// freed the seat; counting it again would hold that seat until a
/// reconciliation).
const SETTLE_OPEN_CHAT: &str = "INSERT INTO open_chats (chat_id, agent, assigned_at, reserved)
    SELECT $1, $2, $3, 0
     WHERE NOT EXISTS (SELECT 1 FROM closed_chats c JOIN assign_intents i ON i.chat_id = c.chat_id
                        WHERE c.chat_id = $1 AND c.closed_at >= i.at)
    ON CONFLICT (chat_id) DO UPDATE SET agent = excluded.agent, assigned_at = excluded.assigned_at,
        reserved = 0, reservation = NULL, previous_agent = NULL";
/// Reconciliation forgets the agent's chats that were counted before its
/// search started, unless still reserved by a decision in flight (a
/// reservation older than the lease is stale: its daemon is gone) or by a
/// call in doubt (kept until its chat is read: a hop's seat also holds the
/// previous agent's, which this agent's search cannot see).
/// A stale reservation for a chat open with another agent (a hop that was
/// never sent) goes back to them, as a failed move does.
const STALE_MOVES_BACK: &str =
    "UPDATE open_chats SET agent = previous_agent, previous_agent = NULL, reserved = 0,
            reservation = NULL
     WHERE agent = $1 AND reserved = 1 AND previous_agent IS NOT NULL AND assigned_at < $2
       AND NOT EXISTS (SELECT 1 FROM assign_intents i WHERE i.chat_id = open_chats.chat_id)";
const FORGET_OPEN_CHATS: &str = "DELETE FROM open_chats WHERE agent = $1 AND assigned_at < $2
    AND (reserved = 0 OR assigned_at < $3)
    AND NOT (reserved = 1 AND EXISTS (SELECT 1 FROM assign_intents i
                                       WHERE i.chat_id = open_chats.chat_id))";
/// Reconciliation counts a chat HelpCrunch reports open with `agent`,
/// unless it was closed after the search started, or moved (or reserved) by
/// a decision since.
const RECONCILE_OPEN_CHAT: &str = "INSERT INTO open_chats (chat_id, agent, assigned_at, reserved)
    SELECT $1, $2, $3, 0
     WHERE NOT EXISTS (SELECT 1 FROM closed_chats WHERE chat_id = $1 AND closed_at >= $3)
    ON CONFLICT (chat_id) DO UPDATE SET agent = excluded.agent, assigned_at = excluded.assigned_at,
        reserved = 0, previous_agent = NULL
     WHERE open_chats.agent <> excluded.agent AND open_chats.reserved = 0
       AND open_chats.assigned_at < excluded.assigned_at";
const UPSERT_CLOSED_CHAT: &str = "INSERT INTO closed_chats (chat_id, closed_at) VALUES ($1, $2)
    ON CONFLICT (chat_id) DO UPDATE SET closed_at = excluded.closed_at";
/// How long a close is remembered for reconciliations already under way.
const CLOSED_KEPT_MS: i64 = 600_000;

impl Store {
    /// Everything the decision needs from the database.
    pub async fn load_routing(&self) -> Result<StoredRouting, StoreError> {
        Ok(read_routing(Source::Pools(&self.db)).await?)
    }

    /// Locks the routing state for a decision taken for every daemon at
    /// once (PostgreSQL): the decisions of all daemons queue on one
    /// transaction lock, each reads the state fresh, and what it reserves
    /// is written before the lock goes, so rotations stay even and caps
    /// hold across daemons.
    pub async fn lock_routing(&self) -> Result<(RoutingLock, StoredRouting), StoreError> {
        let mut tx = self.begin_routing().await?;
        let stored = read_routing(Source::Tx(&mut tx)).await?;
        Ok((RoutingLock { tx }, stored))
    }

    /// The routing lock's transaction (PostgreSQL: the shared advisory
    /// lock, waited for at most 5 s), the seat changes folded into their
    /// counters.
    async fn begin_routing(&self) -> Result<Tx, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // A daemon that hangs inside the lock (a paused VM, a partition
            // that keeps the connection open) must not stall the others:
            // the server ends its transaction after 2 s idle, and a waiter
            // gives up after 5 s and tries the row again.
            tx.run(
                "SET LOCAL idle_in_transaction_session_timeout = '2s'",
                vals![],
            )
            .await?;
            tx.run("SET LOCAL lock_timeout = '5s'", vals![]).await?;
            tx.run("SELECT pg_advisory_xact_lock(1095976773)", vals![])
                .await?;
        }
        super::seats::fold_seats(&mut tx).await?;
        Ok(tx)
    }

    /// Folds the seat changes into their counters where no decision does:
    /// on SQLite, whose decisions take their seats in memory, and on a
    /// PostgreSQL cluster that decides nothing for a while (closes still
    /// append changes). Run with retention.
    pub async fn fold_seats(&self) -> Result<(), StoreError> {
        self.begin_routing().await?.commit().await?;
        Ok(())
    }

    /// Gives back a seat a decision reserved under [`Store::lock_routing`]
    /// when the assignment then failed: the open chat, and the pool's
    /// rotation if no other decision has moved it since. `mark` is the
    /// reservation's ([`RoutingLock::reserve`]): a decision gives back its
    /// own seat only, never the one a later decision for the same chat and
    /// agent took once this one's claim was lost (finding 16). `None`, for a
    /// call in doubt found not applied, gives back the seat `agent` holds
    /// for the chat. The rotation goes back only with the seat: a seat
    /// that is no longer the decision's means the chat was decided again.
    pub async fn unreserve(
        &self,
        chat_id: ChatId,
        agent: &str,
        mark: Option<i64>,
        rotation: Option<(&str, Option<&str>)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // A chat that was open with another agent goes back to them.
        let back = "UPDATE open_chats SET agent = previous_agent, previous_agent = NULL,
                           reserved = 0, reservation = NULL
                     WHERE chat_id = $1 AND agent = $2 AND previous_agent IS NOT NULL
                       AND ($3 IS NULL OR reservation = $3)";
        let moved = tx.run(back, vals![chat_id, agent, mark]).await?;
        let sql = "DELETE FROM open_chats WHERE chat_id = $1 AND agent = $2
                      AND ($3 IS NULL OR reservation = $3)";
        let deleted = tx.run(sql, vals![chat_id, agent, mark]).await?;
        if let Some((pool, previous)) = rotation.filter(|_| moved + deleted > 0) {
            let sql = match previous {
                Some(_) => {
                    "UPDATE rr_state SET last_agent = $3 WHERE pool = $1 AND last_agent = $2"
                }
                None => "DELETE FROM rr_state WHERE pool = $1 AND last_agent = $2",
            };
            tx.run(sql, vals![pool, agent, previous]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Merges what HelpCrunch reports open with `agent` (`chats`, from a
    /// search that started at `since_ms`) into the open chats recorded:
    /// the search's chats, plus those opened or reserved since it started
    /// (which it cannot know yet), minus those closed since. A reservation
    /// older than `stale_before_ms` is dropped (its decision is long gone).
    /// A freed seat wakes the waiting chats. A chat with no assignment
    /// recorded gets this one, as of `since_ms` (`chat_history`).
    pub async fn reconcile_open_chats(
        &self,
        agent: &str,
        chats: &[ChatId],
        since_ms: i64,
        stale_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // A close waits for this transaction (and this one for a close
            // under way): a close's delete would not see a chat this one
            // counts again, so the two must not interleave.
            tx.run("LOCK TABLE closed_chats IN SHARE MODE", vals![])
                .await?;
        }
        let stale = vals![agent, stale_before_ms];
        tx.run(STALE_MOVES_BACK, stale).await?;
        tx.run(FORGET_OPEN_CHATS, vals![agent, since_ms, stale_before_ms])
            .await?;
        for chat in chats {
            tx.run(RECONCILE_OPEN_CHAT, vals![*chat, agent, since_ms])
                .await?;
        }
        let forgotten = "DELETE FROM closed_chats WHERE closed_at < $1";
        tx.run(forgotten, vals![since_ms - CLOSED_KEPT_MS]).await?;
        wake_waiting(&mut tx).await?;
        tx.commit().await?;
        // A measure only: its failure leaves the seats as merged.
        if let Err(e) = self.record_assignees(agent, chats, since_ms).await {
            tracing::warn!(agent, error = %e, "cannot record the chats' first assignments");
        }
        Ok(())
    }

    /// Which agent each open chat is with.
    /// Frees the seats of chats a search saw closed (shadow mode, where
    /// the search's open chats are reality's, not the shadow's seats).
    pub async fn close_chats(&self, chats: &[ChatId]) -> Result<(), StoreError> {
        if chats.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chat in chats {
            close_open_chat(&mut tx, *chat, now_ms()).await?;
        }
        wake_waiting(&mut tx).await?;
        self.commit_queue_change(tx).await?;
        Ok(())
    }

    pub async fn open_chats(&self) -> Result<HashMap<ChatId, String>, StoreError> {
        let rows: Vec<(ChatId, String)> = self
            .db
            .all("SELECT chat_id, agent FROM open_chats", vals![])
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The agent who last had a chat of this customer, and when.
    pub async fn customer_last_agent(
        &self,
        customer: &str,
    ) -> Result<Option<LastAgent>, StoreError> {
        let sql = "SELECT agent, at FROM customer_agent WHERE customer = $1";
        let row: Option<(String, i64)> = self.db.first(sql, vals![customer]).await?;
        Ok(row.map(|(agent, at)| LastAgent::new(agent, Timestamp::from_millisecond(at).ok())))
    }
}

/// The routing state, locked for one decision; see [`Store::lock_routing`].
pub struct RoutingLock {
    tx: Tx,
}

impl RoutingLock {
    /// Writes what the decision reserved (rotation, weights, the open
    /// chat, marked reserved until the assignment settles) and lets the
    /// lock go. Returns the reservation's mark, by which
    /// [`Store::unreserve`] gives back this seat and no later one.
    pub async fn reserve(mut self, reserved: &Assigned) -> Result<i64, StoreError> {
        let mark = rand::rng().random();
        apply_moves(&mut self.tx, reserved, None, now_ms(), Some(mark)).await?;
        self.tx.commit().await?;
        Ok(mark)
    }

    /// Each agent's assignments after `since`, read under the lock, so that
    /// every daemon's hourly counts are the same (see [`RECENT_ASSIGNMENTS`]).
    pub async fn recent_assignments(
        &mut self,
        since: Timestamp,
    ) -> Result<RecentAssignments, StoreError> {
        let rows = self
            .tx
            .all(RECENT_ASSIGNMENTS, vals![since.as_millisecond()])
            .await?;
        Ok(by_agent(rows))
    }

    /// Lets the lock go without a change (the decision assigned nobody).
    pub async fn release(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Reads rotation, weights, open chats per agent and away flags.
async fn read_routing(mut src: Source<'_>) -> Result<StoredRouting, sqlx::Error> {
    let picks: Vec<(String, String)> = src
        .all("SELECT pool, last_agent FROM rr_state", vals![])
        .await?;
    let mut out = StoredRouting {
        last_pick: picks.into_iter().collect(),
        ..StoredRouting::default()
    };
    let weights: Vec<(String, String, i64)> = src
        .all("SELECT pool, agent, current FROM wrr_state", vals![])
        .await?;
    for (pool, agent, current) in weights {
        out.weights.entry(pool).or_default().insert(agent, current);
    }
    let open: Vec<(String, i64)> = src.all(super::seats::SEATS, vals![]).await?;
    out.open = open
        .into_iter()
        .map(|(agent, n)| (agent, u32::try_from(n).unwrap_or(u32::MAX)))
        .collect();
    let away: Vec<(String, Option<i64>)> = src
        .all("SELECT agent, until FROM agent_away", vals![])
        .await?;
    out.away = away.into_iter().collect();
    Ok(out)
}

/// Writes what a successful assignment moves: rotation, weights, the open
/// chat, the customer's agent, notes and replies, and the next follow-up.
pub(super) async fn apply_assigned(
    tx: &mut Tx,
    assigned: &Assigned,
    queue_id: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    apply_moves(tx, assigned, queue_id, now, None).await
}

/// [`apply_assigned`]; `reservation`: the assignment is not confirmed yet,
/// and its seat is reserved with this mark.
async fn apply_moves(
    tx: &mut Tx,
    assigned: &Assigned,
    queue_id: Option<i64>,
    now: i64,
    reservation: Option<i64>,
) -> Result<(), sqlx::Error> {
    if let Some((pool, weights)) = &assigned.weights {
        for (agent, current) in weights {
            tx.run(UPSERT_WEIGHT, vals![pool, agent, current]).await?;
        }
    }
    if let Some((chat_id, agent)) = &assigned.opened {
        if let Some(mark) = reservation {
            let values = vals![*chat_id, agent, now, 1i64, mark];
            tx.run(UPSERT_OPEN_CHAT, values).await?;
        } else {
            tx.run(SETTLE_OPEN_CHAT, vals![*chat_id, agent, now])
                .await?;
        }
    }
    if let Some((customer, agent)) = &assigned.customer {
        tx.run(UPSERT_CUSTOMER, vals![customer, agent, now]).await?;
    }
    for m in &assigned.messages {
        let values = vals![m.chat_id, queue_id, m.kind, m.agent_id, &m.text, now];
        tx.run(INSERT_MESSAGE, values).await?;
    }
    if let Some(f) = &assigned.followup {
        upsert_followup(tx, f).await?;
    }
    if let Some((pool, agent)) = &assigned.round_robin {
        tx.run(UPSERT_ROTATION, vals![pool, agent, now]).await?;
    }
    Ok(())
}

/// Writes `f`, the chat's next follow-up, over any earlier one.
async fn upsert_followup(tx: &mut Tx, f: &Followup) -> Result<(), sqlx::Error> {
    let tried = serde_json::to_string(&f.tried).unwrap_or_else(|_| "[]".into());
    let values = vals![
        f.chat_id,
        &f.pool,
        f.rule.as_deref(),
        &f.agent,
        f.hops,
        tried,
        f.due_at_ms
    ];
    tx.run(UPSERT_FOLLOWUP, values).await?;
    Ok(())
}

/// Records that `chat_id` is open with `agent`, moving it from whoever had it.
pub(super) async fn upsert_open_chat(
    tx: &mut Tx,
    chat_id: ChatId,
    agent: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    tx.run(
        UPSERT_OPEN_CHAT,
        vals![chat_id, agent, now, 0i64, None::<i64>],
    )
    .await?;
    Ok(())
}

/// Records that `chat_id` is open with nobody (closed, or unassigned): its
/// seat is free, and a reconciliation whose search started before now
/// does not count it again. The close is written first: on PostgreSQL it
/// waits there for a reconciliation under way, so that the delete then
/// sees what that reconciliation counted.
pub(super) async fn close_open_chat(
    tx: &mut Tx,
    chat_id: ChatId,
    now: i64,
) -> Result<(), sqlx::Error> {
    tx.run(UPSERT_CLOSED_CHAT, vals![chat_id, now]).await?;
    tx.run("DELETE FROM open_chats WHERE chat_id = $1", vals![chat_id])
        .await?;
    Ok(())
}

/// Makes every row that waits for a candidate due now.
pub(super) async fn wake_waiting(tx: &mut Tx) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE queue SET next_attempt_at = $1
                WHERE state = 'pending' AND waiting = 'candidate' AND next_attempt_at > $1";
    tx.run(sql, vals![now_ms()]).await
}
