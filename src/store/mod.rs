//! All SQL lives here.
//!
//! One writer connection (SQLite allows one writer at a time; a pool of one
//! makes that explicit and avoids SQLITE_BUSY between our own tasks) and a
//! small reader pool. Every write transaction starts with `BEGIN IMMEDIATE`
//! so it takes the write lock up front, and none is held across an HTTP call.

mod rows;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use crate::config::Synchronous;
pub use rows::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The current time in Unix milliseconds, as stored.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database file; does not migrate.
    pub async fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE` on the one writer
    /// connection.
    ///
    /// When a COMMIT fails (a full disk, say), SQLite rolls the transaction
    /// back itself, sqlx's own ROLLBACK then fails, and sqlx keeps counting
    /// the connection as inside a transaction: it could never begin again.
    /// Such a connection is closed here and a fresh one takes its place, so
    /// the daemon recovers by itself when the fault clears.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        match self.writer.begin_with("BEGIN IMMEDIATE").await {
            Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::BeginFailed) => {
                tracing::warn!(
                    "the database writer connection is stuck after a failed commit; opening a new one"
                );
                self.writer.acquire().await?.close().await?;
                self.writer.begin_with("BEGIN IMMEDIATE").await
            }
            other => other,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Adds chats to the queue; a chat that already has a pending or leased
    /// row is left alone. Returns how many rows were added.
    pub async fn enqueue(&self, items: &[NewQueueItem]) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        let now = now_ms();
        for item in items {
            let r = sqlx::query(
                "INSERT INTO queue (chat_id, attrs, snapshot, priority, enqueued_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(item.chat_id)
            .bind(
                item.attrs
                    .as_ref()
                    .map(|a| serde_json::Value::Object(a.clone()).to_string()),
            )
            .bind(item.snapshot.as_ref().map(|s| s.to_string()))
            .bind(item.priority)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            added += r.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Leases up to `limit` rows that are due, highest priority first, and
    /// also takes back rows whose lease expired (their owner died). Counts an
    /// attempt on each.
    pub async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<QueueRow>, StoreError> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE queue
                SET state = 'leased', lease_owner = ?1, lease_until = ?2,
                    attempts = attempts + 1, updated_at = ?3
              WHERE id IN (
                    -- Two selects, each served by its partial index, so the
                    -- finished rows kept for retention are never scanned.
                    SELECT id FROM (
                        SELECT id, priority FROM queue WHERE state = 'pending' AND next_attempt_at <= ?3
                        UNION ALL
                        SELECT id, priority FROM queue WHERE state = 'leased' AND lease_until <= ?3)
                     ORDER BY priority DESC, id
                     LIMIT ?4)
          RETURNING id, chat_id, attrs, snapshot, priority, attempts, enqueued_at, last_error",
        )
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out: Vec<QueueRow> = rows.iter().map(QueueRow::from_row).collect();
        // RETURNING gives no order guarantee.
        out.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Settles a leased row and records what happened, in one transaction:
    /// the outcomes, the round-robin position, and the row's new state. The
    /// row changes only while `owner` still holds its lease; returns whether
    /// it did (false: the lease was lost to another claimer).
    pub async fn settle(&self, s: &Settlement<'_>) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for o in &s.outcomes {
            insert_outcome(&mut tx, o, Some(s.queue_id), now).await?;
        }
        if let Some(assigned) = &s.assigned {
            apply_assigned(&mut tx, assigned, Some(s.queue_id), now).await?;
        }
        let (state, next_at, uncount) = match s.next {
            Next::Done => ("done", 0, false),
            Next::Dead => ("dead", 0, false),
            Next::Retry {
                at_ms,
                count_attempt,
            } => ("pending", at_ms, !count_attempt),
        };
        let changed = sqlx::query(
            "UPDATE queue
                SET state = ?1, next_attempt_at = ?2, last_error = ?3, lease_owner = NULL, lease_until = NULL,
                    attempts = attempts - ?4, updated_at = ?5
              WHERE id = ?6 AND state = 'leased' AND lease_owner = ?7",
        )
        .bind(state)
        .bind(next_at)
        .bind(s.last_error.as_deref())
        .bind(uncount as i64)
        .bind(now)
        .bind(s.queue_id)
        .bind(s.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Puts back the rows leased by processes that no longer run, so they
    /// need not wait for their leases to expire. Owners are
    /// `<pid>-<random>#<batch>`; `alive` says whether a pid runs. The
    /// attempt they spent stays counted: a row that kills its process must
    /// still reach `max_attempts`.
    pub async fn release_orphans(&self, alive: impl Fn(u32) -> bool) -> Result<u64, StoreError> {
        let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT lease_owner FROM queue WHERE state = 'leased' AND lease_owner IS NOT NULL")
            .fetch_all(&self.reader)
            .await?;
        let mut released = 0;
        for owner in owners {
            let pid = owner
                .split(['-', '#'])
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(&alive) {
                continue;
            }
            let mut tx = self.begin_write().await?;
            released += sqlx::query(
                "UPDATE queue SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = ?
                  WHERE state = 'leased' AND lease_owner = ?",
            )
            .bind(now_ms())
            .bind(&owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
        }
        Ok(released)
    }

    /// Puts every row leased by `owner` back, uncounted (shutdown).
    pub async fn release_all(&self, owner: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE queue SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                    attempts = MAX(attempts - 1, 0), updated_at = ?
              WHERE state = 'leased' AND lease_owner = ?",
        )
        .bind(now_ms())
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// When the next pending row becomes due, if any.
    pub async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(t) FROM (
                SELECT MIN(next_attempt_at) AS t FROM queue WHERE state = 'pending'
                UNION ALL SELECT MIN(lease_until) FROM queue WHERE state = 'leased')",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Everything the decision needs from the database.
    pub async fn load_routing(&self) -> Result<StoredRouting, StoreError> {
        let mut out = StoredRouting::default();
        for r in sqlx::query("SELECT pool, last_agent FROM rr_state")
            .fetch_all(&self.reader)
            .await?
        {
            out.last_pick.insert(r.try_get(0)?, r.try_get(1)?);
        }
        for r in sqlx::query("SELECT pool, agent, current FROM wrr_state")
            .fetch_all(&self.reader)
            .await?
        {
            out.weights
                .entry(r.try_get(0)?)
                .or_default()
                .insert(r.try_get(1)?, r.try_get(2)?);
        }
        for r in sqlx::query("SELECT agent, COUNT(*) FROM open_chats GROUP BY agent")
            .fetch_all(&self.reader)
            .await?
        {
            out.open
                .insert(r.try_get(0)?, r.try_get::<i64, _>(1)? as u32);
        }
        out.away = self.load_away().await?;
        Ok(out)
    }

    /// Takes up to `limit` follow-ups that are due, moving each one's due
    /// time on by `lease` so that a crash mid-check retries it later.
    pub async fn claim_followups(
        &self,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Followup>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // An answer seen by webhook settles the follow-up without a call.
        sqlx::query("DELETE FROM followups WHERE answered_at IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "UPDATE followups SET due_at = ?1
              WHERE chat_id IN (SELECT chat_id FROM followups WHERE due_at <= ?2 ORDER BY due_at LIMIT ?3)
          RETURNING chat_id, pool, rule, agent, hops, tried, due_at",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| Followup {
                chat_id: r.get(0),
                pool: r.get(1),
                rule: r.get(2),
                agent: r.get(3),
                hops: r.get::<i64, _>(4) as u32,
                tried: serde_json::from_str(&r.get::<String, _>(5)).unwrap_or_default(),
                due_at_ms: r.get(6),
            })
            .collect())
    }

    /// Records a follow-up check in one transaction: its outcomes, what a
    /// reassignment moved (with the next follow-up), notes; then, unless a
    /// reassignment replaced it, the follow-up is put off to `next_due_ms`
    /// or, with `None`, ended.
    pub async fn settle_followup(
        &self,
        chat_id: i64,
        outcomes: &[NewOutcome],
        assigned: Option<&Assigned>,
        next_due_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for o in outcomes {
            insert_outcome(&mut tx, o, None, now).await?;
        }
        if let Some(a) = assigned {
            apply_assigned(&mut tx, a, None, now).await?;
        }
        // A reassignment wrote the next follow-up above; otherwise the check
        // is either put off or over.
        if assigned.is_none_or(|a| a.followup.is_none()) {
            match next_due_ms {
                Some(due) => {
                    sqlx::query("UPDATE followups SET due_at = ? WHERE chat_id = ?")
                        .bind(due)
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM followups WHERE chat_id = ?")
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// When the next follow-up is due, if any.
    pub async fn followup_next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM followups")
            .fetch_one(&self.reader)
            .await?)
    }

    /// Applies a webhook event once: returns `false` for an id seen before
    /// (nothing is changed then). The id and the effect commit together, so
    /// a 2xx is only ever answered for an event that is durably stored.
    pub async fn apply_webhook(
        &self,
        id: &str,
        event: &str,
        effect: &WebhookEffect,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let new = sqlx::query(
            "INSERT OR IGNORE INTO webhook_events (id, event, received_at) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(event)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !new {
            return Ok(false);
        }
        match effect {
            WebhookEffect::Enqueue(item) => {
                sqlx::query("INSERT INTO queue (chat_id, snapshot, enqueued_at, updated_at) VALUES (?, ?, ?, ?)")
                    .bind(item.chat_id)
                    .bind(&item.snapshot)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            WebhookEffect::Assigned {
                chat_id,
                agent: Some(agent),
            } => {
                upsert_open_chat(&mut tx, *chat_id, agent, now).await?;
            }
            WebhookEffect::Assigned {
                chat_id,
                agent: None,
            }
            | WebhookEffect::Closed { chat_id } => {
                sqlx::query("DELETE FROM open_chats WHERE chat_id = ?")
                    .bind(chat_id)
                    .execute(&mut *tx)
                    .await?;
                if matches!(effect, WebhookEffect::Closed { .. }) {
                    sqlx::query("DELETE FROM followups WHERE chat_id = ?")
                        .bind(chat_id)
                        .execute(&mut *tx)
                        .await?;
                }
                // A seat may have freed up.
                wake_waiting(&mut tx).await?;
            }
            WebhookEffect::Answered { chat_id } => {
                sqlx::query("UPDATE followups SET answered_at = ? WHERE chat_id = ?")
                    .bind(now)
                    .bind(chat_id)
                    .execute(&mut *tx)
                    .await?;
            }
            WebhookEffect::Ignored => {}
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Whether the database answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
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

    pub async fn daemon_state_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM daemon_state WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    /// Which agent each open chat is with.
    pub async fn open_chats(&self) -> Result<HashMap<i64, String>, StoreError> {
        let rows = sqlx::query_as("SELECT chat_id, agent FROM open_chats")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Agents marked away, with the end of their absence (Unix ms).
    pub async fn load_away(&self) -> Result<HashMap<String, Option<i64>>, StoreError> {
        let rows = sqlx::query_as("SELECT agent, until FROM agent_away")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Marks an agent away (until `until_ms`, or until marked back).
    pub async fn set_away(&self, agent: &str, until_ms: Option<i64>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_away (agent, until, since) VALUES (?, ?, ?)
             ON CONFLICT (agent) DO UPDATE SET until = excluded.until, since = excluded.since",
        )
        .bind(agent)
        .bind(until_ms)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Marks an agent back and makes every waiting chat due now, so it is
    /// tried again at once rather than at its next timed retry. Returns
    /// whether the agent was away.
    pub async fn set_back(&self, agent: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let was = sqlx::query("DELETE FROM agent_away WHERE agent = ?")
            .bind(agent)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        wake_waiting(&mut tx).await?;
        tx.commit().await?;
        Ok(was)
    }

    /// Makes every chat that waits for a candidate due now.
    pub async fn wake_waiting(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = wake_waiting(&mut tx).await?;
        tx.commit().await?;
        Ok(n)
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

    /// Takes up to `limit` due outbox messages, oldest first, counting an attempt.
    pub async fn claim_outbox(
        &self,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // The lease is the retry time: a crash mid-send retries after it.
        let rows = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?1
              WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?2 ORDER BY id LIMIT ?3)
          RETURNING id, chat_id, kind, agent_id, text, attempts",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out: Vec<OutboxRow> = rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                chat_id: r.get(1),
                kind: r.get(2),
                agent_id: r.get(3),
                text: r.get(4),
                attempts: r.get(5),
            })
            .collect();
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// Records a send: `state` is `done`, `dead`, or `pending` due at `next_ms`.
    pub async fn settle_outbox(
        &self,
        id: i64,
        state: &str,
        next_ms: i64,
        uncount: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, attempts = attempts - ?, last_error = ? WHERE id = ?",
        )
        .bind(state)
        .bind(next_ms)
        .bind(uncount as i64)
        .bind(error)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Outbox messages not yet sent or given up.
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// When the next outbox message is due, if any.
    pub async fn outbox_next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    pub async fn queue_depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query_as("SELECT state, COUNT(*) FROM queue GROUP BY state ORDER BY state")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Rows that are not finished (pending or leased).
    pub async fn active_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'leased')")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn recent_outcomes(&self, limit: u32) -> Result<Vec<OutcomeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, chat_id, queue_id, at, rule, pool, strategy, agent, agent_id, result,
                    http_status, error_code, latency_ms, reason
               FROM outcomes ORDER BY id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(OutcomeRow::from_row).collect())
    }

    /// Successful assignments per agent since `since_ms`.
    pub async fn assignments_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT agent, COUNT(*) FROM outcomes WHERE result = 'assigned' AND at >= ?
              GROUP BY agent ORDER BY agent",
        )
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Outcome counts by (result, rule), all time.
    pub async fn outcome_counts(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT result, COALESCE(rule, ''), COALESCE(agent, ''), COUNT(*) FROM outcomes
              GROUP BY result, rule, agent ORDER BY result, rule, agent",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutcomeCount {
                    result: r.try_get(0)?,
                    rule: r.try_get(1)?,
                    agent: r.try_get(2)?,
                    count: r.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn set_daemon_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO daemon_state (key, value, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn daemon_state(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query_as("SELECT key, value, updated_at FROM daemon_state ORDER BY key")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Queue rows, newest first, optionally of one state.
    pub async fn list_queue(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueueListing>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, chat_id, state, attempts, next_attempt_at, last_error FROM queue
              WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(state)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(QueueListing::from_row).collect())
    }

    /// Puts dead rows back on the queue as new: all of them, or those in
    /// `ids`. A row whose chat already has an active row stays dead (the
    /// active one will do). Returns how many came back.
    pub async fn retry_dead(&self, ids: Option<&[i64]>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let mut revived = 0;
        let targets: Vec<i64> = match ids {
            Some(ids) => ids.to_vec(),
            None => {
                sqlx::query_scalar("SELECT id FROM queue WHERE state = 'dead' ORDER BY id")
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        for id in targets {
            revived += sqlx::query(
                "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL,
                        lease_owner = NULL, lease_until = NULL, updated_at = ?1
                  WHERE id = ?2 AND state = 'dead'
                    AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.chat_id = queue.chat_id AND q.state IN ('pending', 'leased'))",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(revived)
    }

    /// Deletes what is older than `before_ms` and finished: `done` queue
    /// rows, outcomes, and sent or abandoned messages. Pending, leased and
    /// dead rows are never pruned. Returns (rows, outcomes) deleted.
    pub async fn prune(&self, before_ms: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("DELETE FROM queue WHERE state = 'done' AND updated_at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let outcomes = sqlx::query("DELETE FROM outcomes WHERE at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM outbox WHERE state != 'pending' AND created_at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        // Event ids are kept at least 7 days, longer than HelpCrunch retries.
        sqlx::query("DELETE FROM webhook_events WHERE received_at < ?")
            .bind(before_ms.min(now_ms() - 7 * 86_400_000))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((rows, outcomes))
    }

    /// Rows waiting for a retry or a candidate, with their reasons.
    pub async fn waiting(&self, limit: u32) -> Result<Vec<(i64, i64, i64, String)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT id, chat_id, next_attempt_at, last_error FROM queue
              WHERE state = 'pending' AND last_error IS NOT NULL ORDER BY next_attempt_at LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

/// Writes what a successful assignment moves: rotation, weights, the open
/// chat, the customer's agent, notes and replies, and the next follow-up.
async fn apply_assigned(
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
async fn upsert_open_chat(
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

async fn upsert_followup(conn: &mut SqliteConnection, f: &Followup) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO followups (chat_id, pool, rule, agent, hops, tried, due_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (chat_id) DO UPDATE SET pool = excluded.pool, rule = excluded.rule, agent = excluded.agent,
             hops = excluded.hops, tried = excluded.tried, due_at = excluded.due_at, answered_at = NULL",
    )
    .bind(f.chat_id)
    .bind(&f.pool)
    .bind(f.rule.as_deref())
    .bind(&f.agent)
    .bind(f.hops as i64)
    .bind(serde_json::to_string(&f.tried).unwrap_or_else(|_| "[]".into()))
    .bind(f.due_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Rows waiting for a candidate say so in `last_error` (see the worker).
async fn wake_waiting(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE queue SET next_attempt_at = ? WHERE state = 'pending' AND last_error LIKE 'waiting:%' AND next_attempt_at > ?",
    )
    .bind(now_ms())
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected())
}

async fn insert_outcome(
    conn: &mut SqliteConnection,
    o: &NewOutcome,
    queue_id: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outcomes (chat_id, queue_id, at, rule, pool, strategy, agent, agent_id, result,
                               http_status, error_code, latency_ms, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(o.chat_id)
    .bind(queue_id)
    .bind(now)
    .bind(o.rule.as_deref())
    .bind(o.pool.as_deref())
    .bind(o.strategy)
    .bind(o.agent.as_deref())
    .bind(o.agent_id)
    .bind(o.result.as_str())
    .bind(o.http_status.map(i64::from))
    .bind(o.error_code.as_deref())
    .bind(o.latency.map(|d| d.as_secs_f64() * 1000.0))
    .bind(o.reason.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}
