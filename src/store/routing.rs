//! Routing state: round-robin positions, weights, open chats per agent,
//! customers' last agents, and what a successful assignment moves.

use std::collections::HashMap;

use sqlx::SqliteConnection;

use super::followups::upsert_followup;
use super::{Assigned, Store, StoreError, StoredRouting, now_ms};

impl Store {
    /// Everything the decision needs from the database.
    pub async fn load_routing(&self) -> Result<StoredRouting, StoreError> {
        let mut out = StoredRouting {
            last_pick: sqlx::query_as("SELECT pool, last_agent FROM rr_state")
                .fetch_all(&self.reader)
                .await?
                .into_iter()
                .collect(),
            ..StoredRouting::default()
        };
        let weights: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT pool, agent, current FROM wrr_state")
                .fetch_all(&self.reader)
                .await?;
        for (pool, agent, current) in weights {
            out.weights.entry(pool).or_default().insert(agent, current);
        }
        let open: Vec<(String, i64)> =
            sqlx::query_as("SELECT agent, COUNT(*) FROM open_chats GROUP BY agent")
                .fetch_all(&self.reader)
                .await?;
        out.open = open
            .into_iter()
            .map(|(agent, n)| (agent, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect();
        out.away = self.load_away().await?;
        Ok(out)
    }

    /// Replaces the open chats recorded for `agent` with `chats`, as
    /// HelpCrunch reports them; a freed seat wakes the waiting chats.
    pub async fn replace_open_chats(&self, agent: &str, chats: &[i64]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM open_chats WHERE agent = ?")
            .bind(agent)
            .execute(&mut *tx)
            .await?;
        for chat in chats {
            upsert_open_chat(&mut tx, *chat, agent, now).await?;
        }
        wake_waiting(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Which agent each open chat is with.
    pub async fn open_chats(&self) -> Result<HashMap<i64, String>, StoreError> {
        let rows = sqlx::query_as("SELECT chat_id, agent FROM open_chats")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The agent who last had a chat of this customer.
    pub async fn customer_last_agent(&self, customer: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT agent FROM customer_agent WHERE customer = ?")
                .bind(customer)
                .fetch_optional(&self.reader)
                .await?,
        )
    }
}

/// Writes what a successful assignment moves: rotation, weights, the open
/// chat, the customer's agent, notes and replies, and the next follow-up.
pub(super) async fn apply_assigned(
    conn: &mut SqliteConnection,
    assigned: &Assigned,
    queue_id: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    if let Some((pool, weights)) = &assigned.weights {
        for (agent, current) in weights {
            sqlx::query(
                "INSERT INTO wrr_state (pool, agent, current) VALUES (?, ?, ?)
                     ON CONFLICT (pool, agent) DO UPDATE SET current = excluded.current",
            )
            .bind(pool)
            .bind(agent)
            .bind(current)
            .execute(&mut *conn)
            .await?;
        }
    }
    if let Some((chat_id, agent)) = &assigned.opened {
        upsert_open_chat(conn, *chat_id, agent, now).await?;
    }
    if let Some((customer, agent)) = &assigned.customer {
        sqlx::query(
            "INSERT INTO customer_agent (customer, agent, at) VALUES (?, ?, ?)
                 ON CONFLICT (customer) DO UPDATE SET agent = excluded.agent, at = excluded.at",
        )
        .bind(customer)
        .bind(agent)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    for m in &assigned.messages {
        sqlx::query(
                "INSERT INTO outbox (chat_id, queue_id, kind, agent_id, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(m.chat_id)
            .bind(queue_id)
            .bind(m.kind)
            .bind(m.agent_id)
            .bind(&m.text)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(f) = &assigned.followup {
        upsert_followup(conn, f).await?;
    }
    if let Some((pool, agent)) = &assigned.round_robin {
        sqlx::query(
                "INSERT INTO rr_state (pool, last_agent, updated_at) VALUES (?, ?, ?)
                 ON CONFLICT (pool) DO UPDATE SET last_agent = excluded.last_agent, updated_at = excluded.updated_at",
            )
            .bind(pool)
            .bind(agent)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Records that `chat_id` is open with `agent`, moving it from whoever had it.
pub(super) async fn upsert_open_chat(
    conn: &mut SqliteConnection,
    chat_id: i64,
    agent: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO open_chats (chat_id, agent, assigned_at) VALUES (?, ?, ?)
         ON CONFLICT (chat_id) DO UPDATE SET agent = excluded.agent, assigned_at = excluded.assigned_at",
    )
    .bind(chat_id)
    .bind(agent)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes every row that waits for a candidate due now.
pub(super) async fn wake_waiting(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE queue SET next_attempt_at = ? WHERE state = 'pending' AND waiting = 'candidate' AND next_attempt_at > ?",
    )
    .bind(now_ms())
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected())
}
