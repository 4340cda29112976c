//! The processing loop: claim rows, build each chat's context, decide, call
//! HelpCrunch, and settle the row with its outcomes in one transaction.
//!
//! Delivery is at least once: a row is leased, and a crash before it is
//! settled lets the lease expire and the row be claimed again. The only
//! state shared between tasks is the routing state (round-robin positions,
//! unusable agents), which is decided and reserved under one lock so that
//! concurrent tasks never pick from a stale rotation.
//!
//! `run.rs` is the loop and its shutdown; `process.rs` takes one row from
//! claim to settlement; `routing.rs` keeps the routing state in memory;
//! `jobs.rs` runs the peer jobs, whose rounds are in `outbox.rs`,
//! `reassign.rs`, `reconcile.rs` and `poller.rs`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cluster::Membership;
use crate::config::Worker as WorkerConfig;
use crate::config::{FetchChat, Mode};
use crate::experiment::Split;
use crate::helpcrunch::Client;
use crate::rules::Rules;
use crate::store::Store;

mod assign;
mod busy;
mod experiment;
mod handback;
mod handles;
mod jobs;
mod listen;
mod outbox;
mod plan;
mod policy;
mod poller;
mod process;
mod rank;
mod reassign;
mod reconcile;
mod routing;
mod run;
mod waiting;

pub use handles::{Console, Health, Intake};
pub use policy::{DRAIN_TIMEOUT, WAIT_RETRY};
pub use run::JobFailed;

use routing::Routing;

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
    /// Live, or shadow: nothing written to HelpCrunch (SPEC §14).
    pub mode: Mode,
    /// The experiment's shares, if one runs.
    pub split: Option<Split>,
    /// Read the open chats from HelpCrunch before the first decision (the
    /// database's seats were forgotten: it ran in the other mode).
    pub reconcile_first: bool,
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
            mode: c.mode,
            split: None,
            reconcile_first: false,
        }
    }
}

pub struct Worker {
    store: Store,
    client: RwLock<Client>,
    rules: RwLock<Arc<Rules>>,
    /// Arm b's rules, when an A/B experiment runs.
    rules_b: RwLock<Option<Arc<Rules>>>,
    routing: Mutex<Routing>,
    settings: Settings,
    /// Identifies this process's leases.
    owner: String,
    /// This daemon among the daemons of its database.
    cluster: Arc<Membership>,
    batches: AtomicU64,
    wake: Notify,
    /// Whether new rows of other processes wake the claim loop now
    /// (`listen.rs`): it need not poll the queue meanwhile.
    listening: std::sync::atomic::AtomicBool,
    /// Whether this daemon said that LISTEN cannot work (`listen.rs`).
    listen_unavailable: std::sync::atomic::AtomicBool,
    /// A rate slot a row's task did not use (it made no call), for the
    /// next claim; `slot_back` tells the loop.
    spare_slot: Mutex<Option<crate::limiter::Slot>>,
    slot_back: Notify,
    /// When the hand-back job last pruned its marks (Unix ms).
    handback_pruned: std::sync::atomic::AtomicI64,
    outbox_wake: Notify,
    /// Wakes the follow-up job when a settlement wrote a follow-up, which
    /// may be due before the job's next look.
    followups_wake: Notify,
    /// The last outcome, for systemd's STATUS= line.
    last_outcome: Mutex<Option<String>>,
    /// Reads of chats that wait for a seat (`waiting.rs`).
    waiting_reads: Mutex<waiting::WaitingReads>,
    /// The last database failure, until the next success: not ready meanwhile.
    storage_error: Mutex<Option<String>>,
    /// Why the loop stopped on its own (a job failed): never ready again.
    failure: Mutex<Option<String>>,
}

impl Worker {
    /// Builds a worker; loads the round-robin positions from the database.
    pub async fn new(
        store: Store,
        client: Client,
        rules: Arc<Rules>,
        settings: Settings,
        cluster: Arc<Membership>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let routing = load_routing(&store).await?;
        // One key for everything this process claims: release_orphans reads
        // the pid from it, and shutdown releases by it.
        let owner = cluster.owner().to_string();
        let client = client.read_only(settings.mode == Mode::Shadow);
        Ok(Arc::new(Self {
            store,
            client: RwLock::new(client),
            rules: RwLock::new(rules),
            rules_b: RwLock::new(None),
            routing: Mutex::new(routing),
            settings,
            owner,
            cluster,
            batches: AtomicU64::new(0),
            wake: Notify::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
            listen_unavailable: std::sync::atomic::AtomicBool::new(false),
            spare_slot: Mutex::new(None),
            slot_back: Notify::new(),
            handback_pruned: std::sync::atomic::AtomicI64::new(0),
            outbox_wake: Notify::new(),
            followups_wake: Notify::new(),
            last_outcome: Mutex::new(None),
            waiting_reads: Mutex::default(),
            storage_error: Mutex::new(None),
            failure: Mutex::new(None),
        }))
    }

    /// Reads the routing state again from the database (rotation, weights,
    /// open chats, away flags, the seats of calls whose answer is not
    /// known), replacing what is in memory: when this daemon starts to
    /// work a database another worked until now. The hourly counts are read
    /// again before the next decision that needs them.
    pub(crate) async fn reload_state(&self) -> Result<(), crate::store::StoreError> {
        let fresh = load_routing(&self.store).await?;
        let mut routing = lock(&self.routing);
        let unusable = std::mem::take(&mut routing.state.unusable);
        *routing = fresh;
        routing.state.unusable = unusable;
        Ok(())
    }

    /// Tells the loop that work may be waiting (a chat was just enqueued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// `worker.reassign`: whether chats that have an assignee are decided.
    pub fn reassign(&self) -> bool {
        self.settings.reassign
    }

    pub fn rules(&self) -> Arc<Rules> {
        read(&self.rules).clone()
    }

    /// Applies a reloaded rule set to the next decision. Agents HelpCrunch
    /// rejected get another chance, since the reload may have fixed their ids.
    /// The hourly counts are read again: the memory keeps only as many
    /// assignments as the old caps could count, and a new cap may count more.
    pub fn set_rules(&self, rules: Arc<Rules>) {
        *write(&self.rules) = rules;
        self.share_hourly_counts();
        let mut routing = lock(&self.routing);
        routing.state.unusable.clear();
        routing.recent_loaded = false;
    }

    /// Replaces the API client (a reloaded key) and resumes work stopped by
    /// a 401.
    pub fn set_client(&self, client: Client) {
        // The one place a client is taken: shadow mode's guard goes with it.
        let client = client.read_only(self.shadow());
        let limiter = client.limiter().clone();
        *write(&self.client) = client;
        if limiter.reopen() {
            tracing::info!("API key reloaded; taking work again");
        }
        self.wake();
    }

    /// False after HelpCrunch rejected the API key, until a reload.
    pub fn api_authorized(&self) -> bool {
        !self.client().limiter().is_closed()
    }

    pub fn client(&self) -> Client {
        read(&self.client).clone()
    }

    /// Why the processing loop stopped on its own, if it did: the daemon is
    /// then not ready, and exits non-zero.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Why the database cannot be used right now, if it cannot.
    pub fn storage_error(&self) -> Option<String> {
        lock(&self.storage_error).clone()
    }

    fn storage_result<T>(&self, result: &Result<T, crate::store::StoreError>) {
        let mut e = lock(&self.storage_error);
        *e = result.as_ref().err().map(|err| err.to_string());
    }

    /// One line for systemd's STATUS=: queue depth and the last outcome.
    async fn status_line(&self) -> String {
        let depth = self.store.queue_depth().await.unwrap_or_default();
        let count = |s: &str| depth.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        let last = lock(&self.last_outcome)
            .clone()
            .unwrap_or_else(|| "none yet".into());
        format!(
            "queue: {} pending, {} leased, {} dead; last: {last}",
            count("pending"),
            count("leased"),
            count("dead")
        )
    }
}

/// The routing state as the database holds it, with a seat for every call
/// whose answer is not known yet.
async fn load_routing(store: &Store) -> Result<Routing, crate::store::StoreError> {
    let stored = store.load_routing().await?;
    let open_chats = store.open_chats().await?;
    let mut routing = Routing::new(stored.into_state(), open_chats);
    for intent in store.intents().await? {
        routing.reserved(intent.chat_id, &intent.agent);
    }
    routing.recount();
    Ok(routing)
}

/// Locks a mutex even if a panicking task poisoned it: the state behind it
/// is plain data, valid between any two statements, and one row's bug must
/// not stop every other row.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
