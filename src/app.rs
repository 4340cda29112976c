//! The one application builder: `assignd run`, the demo, the integration
//! tests and the benchmarks all assemble assignd here, the same way
//! (config → store, limiter, client, rules, worker, listener), and run it
//! until a shutdown future they pass in resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{DatabaseBudget, Membership};
use crate::config::{Config, PasswordError};
use crate::helpcrunch::{Client, ClientError};
use crate::http::{Listener, ListenerSecrets, ServerTls, TlsError};
use crate::limiter::Limiter;
use crate::rules::Rules;
use crate::secrets::Secret;
use crate::store::{Backend, ModeEntry, Store, StoreError};
use crate::worker::{JobFailed, Settings, Worker};

/// Why [`Application::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database password cannot be used; waiting would not help.
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("cannot listen on [http] listen: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("[experiment] b_rules: {0}")]
    BRules(#[from] crate::rules::RulesError),
    #[error("{0}")]
    Arms(String),
    /// Another daemon of the database runs in the other mode.
    #[error(
        "another daemon runs this database in {0} mode: every daemon of a database runs in one mode (stop them, then start them all in the new one)"
    )]
    MixedModes(String),
}

/// The pieces of a running daemon, cheap to clone: a SIGHUP reload, the
/// demo's report and the tests reach in through them.
#[derive(Clone)]
pub struct Runtime {
    pub store: Store,
    pub limiter: Arc<Limiter>,
    pub worker: Arc<Worker>,
    /// This daemon among the daemons of its database.
    pub cluster: Arc<Membership>,
    /// The listener's certificate when it serves HTTPS, re-read on SIGHUP.
    pub tls: Option<Arc<ServerTls>>,
}

/// An assembled daemon, its listener bound and serving; the processing
/// loop starts with [`Application::run_until_stopped`].
pub struct Application {
    pub runtime: Runtime,
    pub secrets: Arc<ListenerSecrets>,
    http: Option<(SocketAddr, JoinHandle<()>)>,
    /// Stops the listener; the loop has its own token, made when it starts.
    stop_listener: CancellationToken,
}

impl Application {
    /// Opens and migrates the database, builds the limiter, the client and
    /// the worker, and binds `[http] listen` if it is set (port 0 picks a
    /// free port: see [`Application::http_addr`]).
    pub async fn build(
        config: &Config,
        rules: Arc<Rules>,
        key: &Secret,
        secrets: Arc<ListenerSecrets>,
    ) -> Result<Self, BuildError> {
        // Before the database: a certificate that cannot load is the
        // config's fault, said at once rather than after a migration.
        let tls = match (config.http.listen, config.http.tls_files()) {
            (Some(_), Some(files)) => Some(Arc::new(ServerTls::load(files)?)),
            _ => None,
        };
        let runtime = assemble(config, rules, key, tls).await?;
        let stop_listener = CancellationToken::new();
        let http = match config.http.listen {
            Some(addr) => {
                let listener = Listener {
                    store: runtime.store.clone(),
                    intake: runtime.worker.intake(),
                    health: runtime.worker.health(),
                    secrets: secrets.clone(),
                    console: runtime.worker.console(),
                    trusted_proxies: crate::http::TrustedProxies::new(
                        config.http.trusted_proxies.clone(),
                    ),
                    console_site: crate::http::ConsoleSite::new(config.http.public_https()),
                    tls: runtime.tls.clone(),
                };
                let served = crate::http::serve(listener, addr, stop_listener.clone()).await;
                match served {
                    Ok(served) => Some(served),
                    Err(e) => {
                        runtime.store.close().await;
                        return Err(BuildError::Listen(e));
                    }
                }
            }
            None => None,
        };
        Ok(Self {
            runtime,
            secrets,
            http,
            stop_listener,
        })
    }

    /// Where the listener listens, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// Processes the queue until `stop` resolves (or a job of the loop
    /// fails: then the error says which), then stops the loop and the
    /// listener within the shutdown deadline. The store stays open for the
    /// caller to read or close.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> Result<(), JobFailed> {
        let shutdown = CancellationToken::new();
        // The heartbeat and the lease outlive the drain, so that no other
        // daemon takes rows this one still works on.
        let stop_membership = CancellationToken::new();
        let membership = self.runtime.cluster.clone().run(stop_membership.clone());
        let membership = tokio::spawn(membership);
        let mut worker = tokio::spawn(self.runtime.worker.clone().run(shutdown.clone()));
        let ended = tokio::select! {
            _ = stop => None,
            done = &mut worker => Some(done),
        };
        tracing::info!("shutting down: no new work; finishing rows in flight");
        crate::notify::notify(&[crate::notify::NotifyState::Stopping]);
        shutdown.cancel();
        self.stop_listener.cancel();
        let result = match ended {
            Some(done) => done,
            None => worker.await,
        };
        stop_membership.cancel();
        let _ = membership.await;
        if let Some((_, http)) = self.http {
            let _ = http.await;
        }
        result.unwrap_or_else(|join| {
            Err(JobFailed {
                job: "processing",
                cause: join.to_string(),
            })
        })
    }
}

/// Opens and migrates the database and builds the worker.
async fn assemble(
    config: &Config,
    rules: Arc<Rules>,
    key: &Secret,
    tls: Option<Arc<ServerTls>>,
) -> Result<Runtime, BuildError> {
    let store = Store::connect(&config.database_login()?, config.database.synchronous).await?;
    let cluster = match join(&store).await {
        Ok(cluster) => cluster,
        Err(e) => {
            store.close().await;
            return Err(e.into());
        }
    };
    let rl = &config.helpcrunch.rate_limit;
    let mut limiter = Limiter::new(rl.requests, rl.per.0, rl.burst());
    if let Some(share) = shadow_requests(config) {
        limiter = limiter.with_send_cap(share, rl.per.0);
    }
    if store.backend() == Backend::Postgres {
        // Every daemon of the account takes its calls from one budget.
        limiter = limiter.with_shared(Arc::new(DatabaseBudget(store.clone())));
    } else {
        // One daemon calls per file, and only while its hold certainly lasts.
        limiter = limiter.with_fence(cluster.clone());
    }
    let limiter = Arc::new(limiter);
    let client = Client::new(
        &config.helpcrunch.base_url,
        key,
        config.helpcrunch.timeout.0,
        limiter.clone(),
    )?;
    let settings = Settings {
        retention: config.database.retention.0,
        load_refresh: config.load.refresh.0,
        poll_new_chats: config.poller.enabled.then_some(config.poller.interval.0),
        split: crate::experiment::Split::of(&config.experiment),
        ..Settings::from(&config.worker)
    };
    let rules_b = crate::experiment::load_b_rules(&config.experiment)?;
    if let Some(b) = &rules_b {
        crate::experiment::check_b_rules(&rules, b).map_err(BuildError::Arms)?;
    }
    let switched = enter_mode(&store, &cluster, config.worker.mode).await?;
    let settings = Settings {
        // Live after a shadow: the real seats are read before any decision.
        reconcile_first: switched && config.worker.mode == crate::config::Mode::Live,
        ..settings
    };
    let worker = Worker::new(store.clone(), client, rules, settings, cluster.clone()).await?;
    worker.set_rules_b(rules_b.map(Arc::new));
    Ok(Runtime {
        store,
        limiter,
        worker,
        cluster,
        tls,
    })
}

/// Runs the database in `mode`; whether it switched from the other (its
/// seats, follow-ups and hand-back marks forgotten: the first decision
/// waits for a reconciliation). Refused while another daemon of the
/// database is live in the other mode (checked and recorded at once: see
/// [`Store::enter_mode`]).
async fn enter_mode(
    store: &Store,
    cluster: &Membership,
    mode: crate::config::Mode,
) -> Result<bool, BuildError> {
    let mode = match mode {
        crate::config::Mode::Live => "live",
        crate::config::Mode::Shadow => "shadow",
    };
    let within = crate::cluster::GONE_AFTER;
    match store.enter_mode(mode, cluster.owner(), within).await? {
        ModeEntry::Refused(was) => Err(BuildError::MixedModes(was)),
        ModeEntry::Entered { from: Some(was) } => {
            tracing::warn!(was = %was, now = mode, "this database ran in another mode: its seats, follow-ups and hand-back marks are forgotten and read again from HelpCrunch");
            Ok(true)
        }
        ModeEntry::Entered { from: None } => Ok(false),
    }
}

/// In shadow mode, the requests a window this daemon really sends: its
/// `shadow_api_share` of the account's limit (the account's own routing
/// and people call the API meanwhile). Its pace stays the live one: the
/// assignments it only records take their slots too.
fn shadow_requests(config: &Config) -> Option<std::num::NonZeroU32> {
    if config.worker.mode != crate::config::Mode::Shadow {
        return None;
    }
    let requests = config.helpcrunch.rate_limit.requests;
    let share = (f64::from(requests.get()) * config.worker.shadow_api_share).floor() as u32;
    Some(std::num::NonZeroU32::new(share).unwrap_or(std::num::NonZeroU32::MIN))
}

/// Migrates the schema and registers this daemon among the database's.
async fn join(store: &Store) -> Result<Arc<Membership>, StoreError> {
    store.migrate().await?;
    // Its own connections: a heartbeat that waited behind decisions queued
    // for the routing lock would make this daemon look gone.
    Membership::join(store.dedicated().await?).await
}
