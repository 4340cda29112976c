//! Assembles the running daemon from a config and runs it until shutdown:
//! the store, the one limiter, the client and the worker, plus SIGHUP reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::helpcrunch::{Client, ClientError};
use crate::limiter::Limiter;
use crate::notify;
use crate::rules::{self, Rules, RulesError};
use crate::secrets::{self, Secret, SecretError};
use crate::store::{Store, StoreError};
use crate::worker::{Settings, Worker};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "no HelpCrunch API key: set the systemd credential `helpcrunch-api-key`, `[helpcrunch] api_key_file`, or HELPCRUNCH_API_KEY"
    )]
    NoApiKey,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen on [http] listen: {0}")]
    Listen(std::io::Error),
}

impl DaemonError {
    /// Whether the error is the user's input (exit 2) rather than a runtime failure.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            DaemonError::Config(_)
                | DaemonError::Rules(_)
                | DaemonError::Secret(_)
                | DaemonError::NoApiKey
                | DaemonError::Client(ClientError::BadKey)
        )
    }
}

/// The pieces of a running daemon.
pub struct Runtime {
    pub store: Store,
    pub limiter: Arc<Limiter>,
    pub worker: Arc<Worker>,
}

/// Opens and migrates the database and builds the worker.
pub async fn assemble(
    config: &Config,
    rules: Arc<Rules>,
    key: &Secret,
) -> Result<Runtime, DaemonError> {
    let store = Store::open(&config.database_file(), config.database.synchronous).await?;
    if let Err(e) = prepare(&store).await {
        store.close().await;
        return Err(e.into());
    }
    let rl = &config.helpcrunch.rate_limit;
    let limiter = Arc::new(Limiter::new(rl.requests, rl.per.0, rl.burst()));
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
        ..Settings::from(&config.worker)
    };
    let worker = Worker::new(store.clone(), client, rules, settings).await?;
    Ok(Runtime {
        store,
        limiter,
        worker,
    })
}

/// Migrates the schema and takes back rows leased by dead processes.
async fn prepare(store: &Store) -> Result<(), StoreError> {
    store.migrate().await?;
    let orphans = store.release_orphans(process_alive).await?;
    if orphans > 0 {
        tracing::warn!(
            rows = orphans,
            "took back rows leased by a process that no longer runs"
        );
    }
    Ok(())
}

/// The longest wait between two attempts to open the database at start.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(15);

/// [`assemble`], retried while the database cannot be used (read-only,
/// locked, full, missing its directory): exiting would only make systemd
/// start us again and again, while waiting says why in the log and in
/// `systemctl status`, and starts working as soon as the fault clears.
/// Returns None if SIGTERM/SIGINT arrives first.
async fn assemble_when_possible(
    config: &Config,
    rules: Arc<Rules>,
    key: &Secret,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Runtime>, DaemonError> {
    tokio::pin!(stop);
    let mut wait = Duration::from_secs(1);
    loop {
        match assemble(config, rules.clone(), key).await {
            Ok(runtime) => return Ok(Some(runtime)),
            Err(DaemonError::Store(e)) => {
                tracing::error!(
                    error = %e,
                    database = %config.database_file().display(),
                    retry_in_s = wait.as_secs(),
                    "waiting for the database"
                );
                // Not ready yet; keep systemd's start timeout and watchdog
                // from killing a daemon that is waiting on purpose.
                notify::notify(&format!(
                    "STATUS=waiting for the database: {e}\nEXTEND_TIMEOUT_USEC={}\nWATCHDOG=1",
                    (wait + Duration::from_secs(30)).as_micros()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut stop => return Ok(None),
                }
                wait = (wait * 2).min(STORAGE_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The webhook key and intake token, by the secrets' lookup order.
fn listener_secrets_of(config: &Config) -> Result<(Option<Secret>, Option<Secret>), DaemonError> {
    Ok((
        secrets::load(
            secrets::WEBHOOK_KEY,
            config.http.webhook_key_file.as_deref(),
        )?,
        secrets::load(
            secrets::INTAKE_TOKEN,
            config.http.intake_token_file.as_deref(),
        )?,
    ))
}

/// Whether a process with this id runs (signal 0 checks without sending).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads the config, its rules and its API key.
pub fn load(config_path: &Path) -> Result<(Config, Rules, Secret), DaemonError> {
    let config = Config::load(config_path)?;
    let rules = rules::load_path(&config.rules.path)?;
    let key = config.api_key()?.ok_or(DaemonError::NoApiKey)?;
    Ok((config, rules, key))
}

/// `assignd run`: serves until SIGTERM/SIGINT; SIGHUP reloads secrets and
/// rules, keeping the old ones if the new ones are invalid.
pub async fn run(config_path: PathBuf) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (config, rules, key) = load(&config_path)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let stop = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let Some(runtime) = assemble_when_possible(&config, Arc::new(rules), &key, stop).await? else {
        tracing::info!("stopped before the database could be opened");
        return Ok(());
    };
    let store = runtime.store.clone();
    let _ = store
        .set_daemon_state("rules", &format!("loaded at {:.0}", jiff::Timestamp::now()))
        .await;
    let _ = store.set_daemon_state("rules_reload_error", "").await;
    let shutdown = CancellationToken::new();
    tracing::info!(
        database = %config.database_file().display(),
        rules = %config.rules.path.display(),
        limit = format!("{} per {}", config.helpcrunch.rate_limit.requests, config.helpcrunch.rate_limit.per),
        "assignd running"
    );
    let worker = runtime.worker.clone();
    let loop_task = tokio::spawn(worker.clone().run(shutdown.clone()));
    let (webhook_key, intake_token) = listener_secrets_of(&config)?;
    let listener_secrets = crate::http::ListenerSecrets::new(webhook_key, intake_token);
    let http = match config.http.listen {
        Some(addr) => {
            let listener = crate::http::Listener {
                store: store.clone(),
                worker: worker.clone(),
                secrets: listener_secrets.clone(),
            };
            let (bound, task) = crate::http::serve(listener, addr, shutdown.clone())
                .await
                .map_err(DaemonError::Listen)?;
            tracing::info!(%bound, "HTTP listener ready");
            Some(task)
        }
        None => None,
    };
    notify::notify("READY=1\nSTATUS=processing the queue");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&config_path, &runtime, &listener_secrets).await,
        }
    }
    tracing::info!("shutting down: no new work; finishing rows in flight");
    notify::notify("STOPPING=1");
    shutdown.cancel();
    let _ = loop_task.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn reload(config_path: &Path, runtime: &Runtime, listener: &crate::http::ListenerSecrets) {
    notify::reloading();
    reload_inner(config_path, runtime, listener).await;
    notify::notify("READY=1");
}

async fn reload_inner(
    config_path: &Path,
    runtime: &Runtime,
    listener: &crate::http::ListenerSecrets,
) {
    match load(config_path).and_then(|(c, r, k)| listener_secrets_of(&c).map(|s| (c, r, k, s))) {
        Ok((config, rules, key, (webhook_key, intake_token))) => {
            listener.replace(webhook_key, intake_token);
            match Client::new(
                &config.helpcrunch.base_url,
                &key,
                config.helpcrunch.timeout.0,
                runtime.limiter.clone(),
            ) {
                Ok(client) => runtime.worker.set_client(client),
                Err(e) => tracing::error!(error = %e, "reload: keeping the old API client"),
            }
            let counts = format!(
                "{} rules, {} agents, {} pools",
                rules.rules.len(),
                rules.agents.len(),
                rules.pools.len()
            );
            runtime.worker.set_rules(Arc::new(rules));
            tracing::info!(%counts, "reloaded config and rules");
            let _ = runtime
                .store
                .set_daemon_state(
                    "rules",
                    &format!("loaded at {:.0} ({counts})", jiff::Timestamp::now()),
                )
                .await;
            let _ = runtime
                .store
                .set_daemon_state("rules_reload_error", "")
                .await;
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the old config and rules");
            crate::metrics::metrics().reload_failures.inc();
            let _ = runtime
                .store
                .set_daemon_state("rules_reload_error", &e.to_string())
                .await;
        }
    }
}
