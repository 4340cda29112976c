//! The processing loop: claim rows, build each chat's context, decide, call
//! HelpCrunch, and settle the row with its outcomes in one transaction.
//!
//! Delivery is at least once: a row is leased, and a crash before it is
//! settled lets the lease expire and the row be claimed again. The only
//! state shared between tasks is the routing state (round-robin positions,
//! unusable agents), which is decided and reserved under one lock so that
//! concurrent tasks never pick from a stale rotation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use rand::RngExt;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{FetchChat, Worker as WorkerConfig};
use crate::helpcrunch::types::Chat;
use crate::helpcrunch::{ApiError, Call, Client, ErrorClass};
use crate::limiter::Priority;
use crate::rules::template::{Placeholder, Template};
use crate::rules::{ChatContext, Decision, RoutingState, Rules, Target, Verdict, WhenFull, decide};
use crate::store::{
    Assigned, Followup, NewOutcome, Next, OutboxMessage, OutcomeResult, QueueRow, Settlement,
    Store, away_from_ms, now_ms,
};

mod outbox;
mod reassign;
mod reconcile;

/// How long a chat waits before it is tried again when its rule's target has
/// no available agent.
pub const WAIT_RETRY: Duration = Duration::from_secs(5);
/// The first retry delay after a transient failure; doubles per attempt.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long shutdown lets in-flight rows finish before releasing them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// How often finished rows past the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Worker settings, from `[worker]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: u32,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
    pub fetch_chat: FetchChat,
    pub reassign: bool,
    /// Finished rows and outcomes older than this are pruned.
    pub retention: Duration,
    /// How often open chats per agent are reconciled with HelpCrunch.
    pub load_refresh: Duration,
    /// How often to look for new unassigned chats, if at all.
    pub poll_new_chats: Option<Duration>,
}

impl From<&WorkerConfig> for Settings {
    fn from(c: &WorkerConfig) -> Self {
        Self {
            concurrency: c.concurrency.get(),
            poll_interval: c.poll_interval.0,
            lease: c.lease.0,
            max_attempts: c.max_attempts.get(),
            fetch_chat: c.fetch_chat,
            reassign: c.reassign,
            retention: Duration::from_secs(30 * 86400),
            load_refresh: Duration::from_secs(300),
            poll_new_chats: None,
        }
    }
}

pub struct Worker {
    store: Store,
    client: RwLock<Client>,
    rules: RwLock<Arc<Rules>>,
    routing: Mutex<Routing>,
    settings: Settings,
    /// Identifies this process's leases.
    owner: String,
    batches: AtomicU64,
    wake: Notify,
    outbox_wake: Notify,
    /// The last outcome, for systemd's STATUS= line.
    last_outcome: Mutex<Option<String>>,
    /// The last database failure, until the next success: not ready meanwhile.
    storage_error: Mutex<Option<String>>,
}

/// What processing a row decided; written by [`Store::settle`].
struct Plan {
    next: Next,
    last_error: Option<String>,
    outcomes: Vec<NewOutcome>,
    assigned: Option<Assigned>,
}

impl Plan {
    fn finish(next: Next, outcome: NewOutcome) -> Self {
        Self {
            next,
            last_error: outcome.reason.clone().filter(|_| next != Next::Done),
            outcomes: vec![outcome],
            assigned: None,
        }
    }
}

impl Worker {
    /// Builds a worker; loads the round-robin positions from the database.
    pub async fn new(
        store: Store,
        client: Client,
        rules: Arc<Rules>,
        settings: Settings,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let stored = store.load_routing().await?;
        let open_chats = store.open_chats().await?;
        let owner = format!("{}-{}", std::process::id(), rand::rng().random::<u32>());
        Ok(Arc::new(Self {
            store,
            client: RwLock::new(client),
            rules: RwLock::new(rules),
            routing: Mutex::new(Routing {
                state: stored.into_state(),
                open_chats,
            }),
            settings,
            owner,
            batches: AtomicU64::new(0),
            wake: Notify::new(),
            outbox_wake: Notify::new(),
            last_outcome: Mutex::new(None),
            storage_error: Mutex::new(None),
        }))
    }

    /// Tells the loop that work may be waiting (a chat was just enqueued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("rules lock").clone()
    }

    /// Applies a reloaded rule set to the next decision. Agents HelpCrunch
    /// rejected get another chance, since the reload may have fixed their ids.
    pub fn set_rules(&self, rules: Arc<Rules>) {
        *self.rules.write().expect("rules lock") = rules;
        self.routing
            .lock()
            .expect("routing lock")
            .state
            .unusable
            .clear();
    }

    /// Replaces the API client (a reloaded key) and resumes work stopped by
    /// a 401.
    pub fn set_client(&self, client: Client) {
        let limiter = client.limiter().clone();
        *self.client.write().expect("client lock") = client;
        if limiter.reopen() {
            tracing::info!("API key reloaded; taking work again");
        }
        self.wake();
    }

    /// False after HelpCrunch rejected the API key, until a reload.
    pub fn api_authorized(&self) -> bool {
        !self.client().limiter().is_closed()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn client(&self) -> Client {
        self.client.read().expect("client lock").clone()
    }

    /// Processes the queue until `shutdown` fires, then lets in-flight rows
    /// finish for up to [`DRAIN_TIMEOUT`] and releases whatever is left.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency as usize));
        let mut tasks = JoinSet::new();
        let mut last_auth_log: Option<tokio::time::Instant> = None;
        let mut store_backoff = self.settings.poll_interval;
        let mut reported_auth: Option<bool> = None;
        let outbox = tokio::spawn(self.clone().run_outbox(shutdown.clone()));
        let followups = tokio::spawn(self.clone().run_followups(shutdown.clone()));
        let reconcile = tokio::spawn(self.clone().run_reconcile(shutdown.clone()));
        let poller = self
            .settings
            .poll_new_chats
            .map(|every| tokio::spawn(self.clone().run_poller(every, shutdown.clone())));
        let mut next_prune = tokio::time::Instant::now();
        // systemd's watchdog: pinged from this loop, so a hung loop is restarted.
        let watchdog = watchdog_interval();
        let mut last_ping: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            let authorized = self.api_authorized();
            if reported_auth != Some(authorized) {
                let text = if authorized {
                    "ok"
                } else {
                    "unauthorized (HTTP 401): not taking work until the API key is fixed and assignd is reloaded"
                };
                if self.store.set_daemon_state("api", text).await.is_ok() {
                    reported_auth = Some(authorized);
                }
            }
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a row's task failed; its lease will expire and it will be retried");
                }
            }
            if !self.api_authorized() {
                if last_auth_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!(
                        "HelpCrunch rejects the API key (401); not taking work until the key is fixed and assignd is reloaded (SIGHUP)"
                    );
                    last_auth_log = Some(tokio::time::Instant::now());
                }
                self.idle(&shutdown, self.settings.poll_interval).await;
                continue;
            }
            // Claiming while paused would only age the leases.
            if let Some(until) = self.client().limiter().paused_until() {
                let resume = Timestamp::now() + (until - tokio::time::Instant::now());
                let _ = self
                    .store
                    .set_daemon_state(
                        "limiter",
                        &format!("HelpCrunch answered 429; all calls paused until {resume:.0}"),
                    )
                    .await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(until) => {}
                }
                continue;
            }
            if let Some(every) = watchdog
                && last_ping.is_none_or(|t| t.elapsed() >= every)
            {
                crate::notify::notify(&format!("WATCHDOG=1\nSTATUS={}", self.status_line().await));
                last_ping = Some(tokio::time::Instant::now());
            }
            self.refresh_away().await;
            if tokio::time::Instant::now() >= next_prune {
                self.prune().await;
                next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
            }
            let free = permits.available_permits() as u32;
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tasks.join_next() => {}
                }
                continue;
            }
            let token = format!(
                "{}#{}",
                self.owner,
                self.batches.fetch_add(1, Ordering::Relaxed)
            );
            let claimed = self.store.claim(&token, self.settings.lease, free).await;
            self.storage_result(&claimed);
            match claimed {
                Ok(rows) if !rows.is_empty() => {
                    store_backoff = self.settings.poll_interval;
                    for row in rows {
                        let permit = permits
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("semaphore open");
                        let worker = self.clone();
                        let token = token.clone();
                        tasks.spawn(async move {
                            worker.process(row, &token).await;
                            drop(permit);
                        });
                    }
                }
                Ok(_) => {
                    store_backoff = self.settings.poll_interval;
                    let wait = match self.store.next_due_ms().await {
                        Ok(Some(due)) => Duration::from_millis((due - now_ms()).max(1) as u64),
                        _ => self.settings.poll_interval,
                    };
                    self.idle(&shutdown, wait.min(self.settings.poll_interval))
                        .await;
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = store_backoff.as_millis() as u64, "cannot claim work");
                    self.idle(&shutdown, store_backoff).await;
                    store_backoff = (store_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a row's task failed during shutdown");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = tasks.len(),
                "shutdown: releasing rows still in flight"
            );
            tasks.abort_all();
        }
        let _ = outbox.await;
        let _ = followups.await;
        let _ = reconcile.await;
        if let Some(p) = poller {
            let _ = p.await;
        }
        match self.store.release_all(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "shutdown: rows put back on the queue"),
            Err(e) => {
                tracing::error!(error = %e, "shutdown: cannot release leased rows; their leases will expire")
            }
        }
    }

    async fn idle(&self, shutdown: &CancellationToken, wait: Duration) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    #[tracing::instrument(skip_all, fields(chat_id = row.chat_id, queue_id = row.id))]
    async fn process(&self, row: QueueRow, token: &str) {
        // The lease runs from the claim, just before this; the commit is
        // retried while it holds, so a passing storage fault costs no repeat.
        let lease_ends = tokio::time::Instant::now()
            + self
                .settings
                .lease
                .saturating_sub(Duration::from_secs(2))
                .max(Duration::from_secs(1));
        let plan = self.plan(&row).await;
        for o in &plan.outcomes {
            tracing::info!(
                result = o.result.as_str(),
                rule = o.rule.as_deref().unwrap_or("-"),
                agent = o.agent.as_deref().unwrap_or("-"),
                http_status = o.http_status,
                reason = o.reason.as_deref().unwrap_or(""),
                "outcome"
            );
        }
        let settlement = Settlement {
            queue_id: row.id,
            owner: token,
            next: plan.next,
            last_error: plan.last_error,
            outcomes: plan.outcomes,
            assigned: plan.assigned,
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let settled = self.store.settle(&settlement).await;
            self.storage_result(&settled);
            match settled {
                Ok(true) => {
                    record_metrics(&settlement.outcomes, Some(row.enqueued_at_ms));
                    if let Some(o) = settlement.outcomes.last() {
                        *self.last_outcome.lock().expect("status lock") = Some(
                            format!(
                                "chat {} {} {}",
                                o.chat_id,
                                o.result.as_str(),
                                o.agent.as_deref().unwrap_or("")
                            )
                            .trim_end()
                            .to_string(),
                        );
                    }
                    if let Some(Assigned {
                        opened: Some((chat, agent)),
                        messages,
                        ..
                    }) = &settlement.assigned
                    {
                        self.opened(*chat, agent);
                        if !messages.is_empty() {
                            self.outbox_wake.notify_one();
                        }
                    }
                    return;
                }
                Ok(false) => {
                    tracing::warn!(
                        "lease was lost before the row was settled; another claim owns it now"
                    );
                    return;
                }
                Err(e) => {
                    if tokio::time::Instant::now() + delay >= lease_ends {
                        tracing::error!(error = %e, "giving up recording the outcome: the lease ends, and the chat will be processed again");
                        return;
                    }
                    tracing::error!(error = %e, "cannot record the outcome; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The plan for a row that must wait for a reload of the API key: back
    /// to pending, its attempt given back, no call made.
    fn held_for_auth(&self) -> Plan {
        Plan {
            next: Next::Retry {
                at_ms: now_ms(),
                count_attempt: false,
            },
            last_error: Some("waiting: HelpCrunch rejected the API key (401)".into()),
            outcomes: Vec::new(),
            assigned: None,
        }
    }

    async fn plan(&self, row: &QueueRow) -> Plan {
        let attrs = match row
            .attrs
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>)
        {
            None => serde_json::Map::new(),
            Some(Ok(serde_json::Value::Object(map))) => map,
            Some(Ok(serde_json::Value::Null)) => serde_json::Map::new(),
            Some(_) => {
                let mut o = NewOutcome::new(row.chat_id, OutcomeResult::Failed);
                o.error_code = Some("bad_attrs".into());
                o.reason = Some("queue.attrs is not a JSON object".into());
                return Plan::finish(Next::Dead, o);
            }
        };
        let snapshot = match row.snapshot.as_deref().map(serde_json::from_str::<Chat>) {
            Some(Ok(chat)) => Some(chat),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "queue.snapshot is not a chat object; ignoring it");
                None
            }
            None => None,
        };
        let fetch = match self.settings.fetch_chat {
            FetchChat::Always => true,
            FetchChat::Auto => snapshot.is_none(),
            FetchChat::Never => false,
        };
        let chat = if fetch {
            let call = self.client().chat(row.chat_id, Priority::Assign).await;
            match call.result {
                Ok(chat) => Some(chat),
                Err(e) => {
                    return self.failed_call(
                        row,
                        &e,
                        call.latency,
                        NewOutcome::new(row.chat_id, OutcomeResult::Failed),
                    );
                }
            }
        } else {
            snapshot
        };
        let context = match &chat {
            Some(chat) => {
                if chat.is_closed() {
                    let mut o = NewOutcome::new(row.chat_id, OutcomeResult::Skipped);
                    o.reason = Some("chat is closed".into());
                    return Plan::finish(Next::Done, o);
                }
                if let (Some(a), false) = (&chat.assignee, self.settings.reassign) {
                    let mut o = NewOutcome::new(row.chat_id, OutcomeResult::Skipped);
                    o.reason = Some(format!("chat is already assigned to agent {}", a.id));
                    return Plan::finish(Next::Done, o);
                }
                ChatContext::from_chat(chat, &attrs)
            }
            None => ChatContext::bare(row.chat_id, &attrs),
        };
        let mut context = context;
        if let Some(key) = context.customer_key() {
            match self.store.customer_last_agent(&key).await {
                Ok(agent) => context.last_agent = agent,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the customer's last agent; deciding without it")
                }
            }
        }
        self.assign(row, &context).await
    }

    /// Decides and assigns; after HelpCrunch rejects an agent, decides once
    /// more without that agent.
    async fn assign(&self, row: &QueueRow, context: &ChatContext) -> Plan {
        let mut outcomes = Vec::new();
        let mut rejected_once = false;
        loop {
            let rules = self.rules();
            let (decision, reserved) = self.decide_and_reserve(&rules, context);
            let mut outcome = describe(&rules, &decision, row.chat_id);
            let agent_idx = match decision.verdict {
                Verdict::Assign { agent, .. } => agent,
                Verdict::NoMatch => {
                    outcomes.push(outcome);
                    return Plan {
                        next: Next::Done,
                        last_error: None,
                        outcomes,
                        assigned: None,
                    };
                }
                Verdict::Nobody => {
                    outcome.result = OutcomeResult::Skipped;
                    outcomes.push(outcome);
                    return Plan {
                        next: Next::Done,
                        last_error: None,
                        outcomes,
                        assigned: None,
                    };
                }
                Verdict::NoCandidate { when_full, .. } => {
                    let reason = decision.reason(&rules);
                    if when_full == WhenFull::Wait {
                        let wait_reason = format!("waiting: {reason}");
                        // One outcome when a chat starts waiting, not one per retry.
                        if row.last_error.as_deref() != Some(&wait_reason) {
                            outcomes.push(outcome);
                        }
                        return Plan {
                            next: Next::Retry {
                                at_ms: now_ms()
                                    + self.wait_delay(&rules, &decision).as_millis() as i64,
                                count_attempt: false,
                            },
                            last_error: Some(wait_reason),
                            outcomes,
                            assigned: None,
                        };
                    }
                    outcomes.push(outcome);
                    return Plan {
                        next: Next::Done,
                        last_error: None,
                        outcomes,
                        assigned: None,
                    };
                }
            };
            let agent = &rules.agents[agent_idx];
            let call: Call<Chat> = self.client().assign(row.chat_id, agent.id).await;
            outcome.latency = Some(call.latency);
            match call.result {
                Ok(_) => {
                    outcome.http_status = Some(200);
                    outcomes.push(outcome);
                    return Plan {
                        next: Next::Done,
                        last_error: None,
                        outcomes,
                        assigned: Some(effects(&rules, &decision, context)),
                    };
                }
                Err(e) => {
                    self.undo_reservation(reserved);
                    if e.class() == ErrorClass::AgentRejected && !rejected_once {
                        rejected_once = true;
                        self.routing
                            .lock()
                            .expect("routing lock")
                            .state
                            .unusable
                            .insert(agent.name.clone());
                        tracing::warn!(agent = %agent.name, agent_id = agent.id, "HelpCrunch rejects this agent id; deciding again without it");
                        outcome.result = OutcomeResult::Failed;
                        outcome.http_status = e.status();
                        outcome.error_code = e.code().map(str::to_string);
                        outcome.reason = Some(format!(
                            "HelpCrunch rejected agent {} ({e}); deciding again without it",
                            agent.name
                        ));
                        outcomes.push(outcome);
                        continue;
                    }
                    let mut plan = self.failed_call(row, &e, call.latency, outcome);
                    let mut all = std::mem::take(&mut outcomes);
                    all.append(&mut plan.outcomes);
                    plan.outcomes = all;
                    return plan;
                }
            }
        }
    }

    /// Decides under the routing lock and applies what the decision moves
    /// (rotation, weights, the agent's open count) at once, so that
    /// concurrent tasks decide on current state. Returns what to give back
    /// if the assignment then fails.
    fn decide_and_reserve(
        &self,
        rules: &Rules,
        context: &ChatContext,
    ) -> (Decision, Option<Reservation>) {
        let mut routing = self.routing.lock().expect("routing lock");
        routing.state.entropy = rand::rng().random();
        let started = std::time::Instant::now();
        let decision = decide(rules, context, &routing.state, Timestamp::now());
        crate::metrics::metrics()
            .decision
            .observe(started.elapsed().as_secs_f64());
        let Verdict::Assign {
            agent,
            pool,
            weights,
            ..
        } = &decision.verdict
        else {
            return (decision, None);
        };
        let agent = rules.agents[*agent].name.clone();
        let pool = pool.map(|p| rules.pools[p].name.clone());
        let reserved = reserve(&mut routing.state, agent, pool, weights.as_deref());
        (decision, Some(reserved))
    }

    /// Gives back what a decision reserved. The rotation and weights go back
    /// only if no other decision has moved them since.
    fn undo_reservation(&self, reserved: Option<Reservation>) {
        let Some(r) = reserved else { return };
        let mut routing = self.routing.lock().expect("routing lock");
        let state = &mut routing.state;
        if let Some(n) = state.open.get_mut(&r.agent) {
            *n = n.saturating_sub(1);
        }
        let Some(pool) = r.pool else { return };
        if state.last_pick.get(&pool) == Some(&r.agent) {
            match r.previous_pick {
                Some(prev) => state.last_pick.insert(pool.clone(), prev),
                None => state.last_pick.remove(&pool),
            };
            if let Some(w) = r.previous_weights {
                state.weights.insert(pool, w);
            }
        }
    }

    /// Records in memory that `chat` is now open with `agent` (the open count
    /// was reserved at decision time); a chat that moves from another agent
    /// lowers that agent's count.
    fn opened(&self, chat: i64, agent: &str) {
        let mut routing = self.routing.lock().expect("routing lock");
        if let Some(before) = routing.open_chats.insert(chat, agent.to_string())
            && let Some(n) = routing.state.open.get_mut(&before)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Deletes finished rows and outcomes older than the retention.
    async fn prune(&self) {
        let before = now_ms() - self.settings.retention.as_millis() as i64;
        match self.store.prune(before).await {
            Ok((0, 0)) => {}
            Ok((rows, outcomes)) => tracing::info!(
                rows,
                outcomes,
                "pruned finished rows and outcomes past the retention"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot prune old rows; will try again later"),
        }
    }

    /// A webhook said which agent `chat` is open with now (`None`: nobody we
    /// route to, or closed). Already stored; this moves the in-memory
    /// counts, and a freed seat wakes the waiting chats.
    pub fn note_open(&self, chat: i64, agent: Option<&str>) {
        let freed = {
            let mut routing = self.routing.lock().expect("routing lock");
            let previous = match agent {
                Some(a) => routing.open_chats.insert(chat, a.to_string()),
                None => routing.open_chats.remove(&chat),
            };
            if previous.as_deref() == agent {
                return;
            }
            if let Some(prev) = &previous
                && let Some(n) = routing.state.open.get_mut(prev)
            {
                *n = n.saturating_sub(1);
            }
            if let Some(a) = agent {
                *routing.state.open.entry(a.to_string()).or_default() += 1;
            }
            previous.is_some()
        };
        if freed {
            self.wake();
        }
    }

    /// Why the database cannot be used right now, if it cannot.
    pub fn storage_error(&self) -> Option<String> {
        self.storage_error.lock().expect("storage lock").clone()
    }

    fn storage_result<T>(&self, result: &Result<T, crate::store::StoreError>) {
        let mut e = self.storage_error.lock().expect("storage lock");
        *e = result.as_ref().err().map(|err| err.to_string());
    }

    /// One line for systemd's STATUS=: queue depth and the last outcome.
    async fn status_line(&self) -> String {
        let depth = self.store.queue_depth().await.unwrap_or_default();
        let count = |s: &str| depth.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        let last = self
            .last_outcome
            .lock()
            .expect("status lock")
            .clone()
            .unwrap_or_else(|| "none yet".into());
        format!(
            "queue: {} pending, {} leased, {} dead; last: {last}",
            count("pending"),
            count("leased"),
            count("dead")
        )
    }

    /// Open chats per agent, as the decisions see them.
    pub fn open_counts(&self) -> Vec<(String, u32)> {
        let routing = self.routing.lock().expect("routing lock");
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
    async fn refresh_away(&self) {
        match self.store.load_away().await {
            Ok(away) => self.routing.lock().expect("routing lock").state.away = away_from_ms(away),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read away flags; keeping the last known ones")
            }
        }
    }

    /// How long a chat waits for a candidate: [`WAIT_RETRY`], or less if a
    /// member's shift starts sooner.
    fn wait_delay(&self, rules: &Rules, decision: &Decision) -> Duration {
        let now = Timestamp::now();
        let members: Vec<usize> = match decision.rule.map(|r| rules.rules[r].target) {
            Some(Target::Pool(p)) => rules.pools[p].members.clone(),
            Some(Target::Agent(a)) => vec![a],
            _ => Vec::new(),
        };
        members
            .iter()
            .filter_map(|&a| rules.agents[a].schedule)
            .filter_map(|s| rules.schedules[s].next_open(now))
            .filter_map(|z| Duration::try_from(z.timestamp().duration_since(now)).ok())
            .min()
            .map_or(WAIT_RETRY, |d| {
                d.clamp(Duration::from_millis(50), WAIT_RETRY)
            })
    }

    /// The plan after a failed call, by SPEC §6.
    fn failed_call(
        &self,
        row: &QueueRow,
        e: &ApiError,
        latency: Duration,
        mut outcome: NewOutcome,
    ) -> Plan {
        if matches!(e, ApiError::NotSent(_)) {
            return self.held_for_auth();
        }
        outcome.http_status = e.status();
        outcome.error_code = e.code().map(str::to_string);
        outcome.latency = Some(latency);
        let (next, result) = match e.class() {
            ErrorClass::AgentRejected | ErrorClass::Permanent => {
                (Next::Dead, OutcomeResult::Failed)
            }
            ErrorClass::Unauthorized => (
                Next::Retry {
                    at_ms: now_ms(),
                    count_attempt: false,
                },
                OutcomeResult::Retry,
            ),
            ErrorClass::RateLimited => (
                Next::Retry {
                    at_ms: now_ms(),
                    count_attempt: false,
                },
                OutcomeResult::Retry,
            ),
            ErrorClass::Transient if row.attempts >= self.settings.max_attempts as i64 => {
                (Next::Dead, OutcomeResult::Failed)
            }
            ErrorClass::Transient => (
                Next::Retry {
                    at_ms: now_ms() + retry_delay(row.attempts).as_millis() as i64,
                    count_attempt: true,
                },
                OutcomeResult::Retry,
            ),
        };
        outcome.result = result;
        let why = match (e.class(), next) {
            (ErrorClass::Transient, Next::Dead) => {
                format!("{e} (gave up after {} attempts)", row.attempts)
            }
            _ => e.to_string(),
        };
        outcome.reason = Some(why.clone());
        Plan {
            next,
            last_error: Some(why),
            outcomes: vec![outcome],
            assigned: None,
        }
    }
}

/// The decision state, and which agent each open chat is with (so that a
/// chat moving between agents moves its count).
struct Routing {
    state: RoutingState,
    open_chats: HashMap<i64, String>,
}

/// What a decision changed in memory, to give back if the call fails.
struct Reservation {
    pool: Option<String>,
    agent: String,
    previous_pick: Option<String>,
    previous_weights: Option<HashMap<String, i64>>,
}

/// Half of systemd's `WATCHDOG_USEC`, if the watchdog is on for this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Counts recorded outcomes; for an assignment, the time since the chat
/// was enqueued.
fn record_metrics(outcomes: &[NewOutcome], enqueued_at_ms: Option<i64>) {
    let m = crate::metrics::metrics();
    for o in outcomes {
        let labels = vec![
            ("result", o.result.as_str().to_string()),
            ("rule", o.rule.clone().unwrap_or_default()),
        ];
        m.outcomes.get_or_create(&labels).inc();
        if let (OutcomeResult::Assigned, Some(at)) = (o.result, enqueued_at_ms) {
            m.enqueue_to_assigned
                .observe((now_ms() - at).max(0) as f64 / 1000.0);
        }
    }
}

/// Moves the in-memory state as an assignment of `agent` (through `pool`)
/// would, and returns what to give back if the call fails.
fn reserve(
    state: &mut RoutingState,
    agent: String,
    pool: Option<String>,
    weights: Option<&[(String, i64)]>,
) -> Reservation {
    *state.open.entry(agent.clone()).or_default() += 1;
    let (previous_pick, previous_weights) = match &pool {
        Some(pool) => {
            let previous_weights = weights.map(|w| {
                let entry = state.weights.entry(pool.clone()).or_default();
                let before = entry.clone();
                entry.extend(w.iter().cloned());
                before
            });
            (
                state.last_pick.insert(pool.clone(), agent.clone()),
                previous_weights,
            )
        }
        None => (None, None),
    };
    Reservation {
        pool,
        agent,
        previous_pick,
        previous_weights,
    }
}

/// What a successful assignment moves: the rotation, the weights, the open
/// chat, the customer's agent, and the rule's note and reply.
fn effects(rules: &Rules, decision: &Decision, context: &ChatContext) -> Assigned {
    let Verdict::Assign {
        agent,
        pool,
        weights,
        ..
    } = &decision.verdict
    else {
        return Assigned::default();
    };
    let agent = &rules.agents[*agent];
    let pool_name = pool.map(|p| rules.pools[p].name.clone());
    let rule = decision.rule.map(|r| &rules.rules[r]);
    let render = |t: &Template| {
        t.render(|p| match p {
            Placeholder::Agent => agent.name.clone(),
            Placeholder::Rule => rule.map(|r| r.name.clone()).unwrap_or_default(),
            Placeholder::Pool => pool_name.clone().unwrap_or_default(),
            Placeholder::Chat => context.chat_id.to_string(),
            Placeholder::Customer => context.customer_label().to_string(),
            Placeholder::NextOpen => rule
                .and_then(|r| r.schedule)
                .and_then(|s| rules.schedules[s].next_open(Timestamp::now()))
                .map(|z| z.strftime("%A %-d %B, %H:%M %Z").to_string())
                .unwrap_or_default(),
        })
    };
    let mut messages = Vec::new();
    if let Some(note) = rule.and_then(|r| r.note.as_ref()) {
        messages.push(OutboxMessage {
            chat_id: context.chat_id,
            kind: "private",
            agent_id: Some(agent.id),
            text: render(note),
        });
    }
    if let Some(reply) = rule.and_then(|r| r.reply.as_ref()) {
        messages.push(OutboxMessage {
            chat_id: context.chat_id,
            kind: "message",
            agent_id: Some(rules.agents[reply.from].id),
            text: render(&reply.text),
        });
    }
    let followup = pool.and_then(|p| {
        let pool = &rules.pools[p];
        pool.reassign_after.map(|after| Followup {
            chat_id: context.chat_id,
            pool: pool.name.clone(),
            rule: rule.map(|r| r.name.clone()),
            agent: agent.name.clone(),
            hops: 0,
            tried: vec![agent.name.clone()],
            due_at_ms: now_ms() + after.as_millis() as i64,
        })
    });
    Assigned {
        followup,
        round_robin: pool_name.clone().map(|p| (p, agent.name.clone())),
        weights: pool_name.zip(weights.clone()),
        opened: Some((context.chat_id, agent.name.clone())),
        customer: context.customer_key().map(|k| (k, agent.name.clone())),
        messages,
    }
}

/// The outcome row a decision implies, before any API call.
fn describe(rules: &Rules, decision: &Decision, chat_id: i64) -> NewOutcome {
    let result = match decision.verdict {
        Verdict::Assign { .. } => OutcomeResult::Assigned,
        Verdict::NoCandidate { .. } => OutcomeResult::NoAgent,
        Verdict::Nobody => OutcomeResult::Skipped,
        Verdict::NoMatch => OutcomeResult::NoMatch,
    };
    let mut o = NewOutcome::new(chat_id, result);
    o.rule = decision.rule.map(|r| rules.rules[r].name.clone());
    let pool = match (
        &decision.verdict,
        decision.rule.map(|r| rules.rules[r].target),
    ) {
        (Verdict::Assign { pool, .. }, _) | (Verdict::NoCandidate { pool, .. }, _) => *pool,
        (_, Some(Target::Pool(p))) => Some(p),
        _ => None,
    };
    if let Some(p) = pool {
        o.pool = Some(rules.pools[p].name.clone());
        o.strategy = Some(rules.pools[p].strategy.name());
    }
    if let Verdict::Assign { agent, .. } = decision.verdict {
        o.agent = Some(rules.agents[agent].name.clone());
        o.agent_id = Some(rules.agents[agent].id);
    }
    o.reason = Some(decision.reason(rules));
    o
}

/// Exponential backoff with jitter: about 1 s, 2 s, 4 s ... capped at 5 min,
/// each scaled by a random factor in [0.5, 1) so retries spread out.
fn retry_delay(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    let base = FIRST_RETRY.saturating_mul(1 << exp.min(16)).min(MAX_RETRY);
    base.mul_f64(rand::rng().random_range(0.5..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        for _ in 0..50 {
            let d1 = retry_delay(1);
            assert!(d1 >= Duration::from_millis(500) && d1 < Duration::from_secs(1));
            let d4 = retry_delay(4);
            assert!(d4 >= Duration::from_secs(4) && d4 < Duration::from_secs(8));
            assert!(retry_delay(30) <= MAX_RETRY);
        }
    }
}
