//! `assignd run`: loads the config, builds the [`Application`] (waiting for
//! the database if need be), and runs it until SIGTERM/SIGINT, with SIGHUP
//! reloading secrets and rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::app::{Application, BuildError, Runtime};
use crate::config::{Config, ConfigError};
use crate::helpcrunch::{Client, ClientError};
use crate::http::{ListenerKeys, ListenerSecrets};
use crate::notify::{self, NotifyState};
use crate::rules::{self, Rules, RulesError};
use crate::secrets::{self, Secret, SecretError};
use crate::worker::JobFailed;

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
    /// Assembling the daemon failed (client, database, listener).
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}; exiting so that the service manager restarts assignd")]
    Job(JobFailed),
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
                | DaemonError::Build(BuildError::Client(ClientError::BadKey))
                | DaemonError::Build(BuildError::Tls(_))
                | DaemonError::Build(BuildError::Password(_))
        )
    }
}

/// The longest wait between two attempts to open the database at start.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(15);

/// [`Application::build`], retried while the database cannot be used
/// (read-only, locked, full, missing its directory): exiting would only
/// make systemd start us again and again, while waiting says why in the log
/// and in `systemctl status`, and starts working as soon as the fault
/// clears. Returns None if SIGTERM/SIGINT arrives first.
async fn build_when_possible(
    config: &Config,
    rules: Arc<Rules>,
    key: &Secret,
    secrets: Arc<ListenerSecrets>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Application>, DaemonError> {
    tokio::pin!(stop);
    let mut wait = Duration::from_secs(1);
    loop {
        let e = match Application::build(config, rules.clone(), key, secrets.clone()).await {
            Ok(app) => return Ok(Some(app)),
            Err(BuildError::Store(e)) => e,
            Err(e) => return Err(e.into()),
        };
        tracing::error!(
            error = %e,
            database = %config.database(),
            retry_in_s = wait.as_secs(),
            "waiting for the database"
        );
        // Not ready yet; keep systemd's start timeout and watchdog from
        // killing a daemon that is waiting on purpose.
        let extend = (wait + Duration::from_secs(30)).as_micros();
        notify::notify(&[
            NotifyState::Status(&format!("waiting for the database: {e}")),
            NotifyState::ExtendTimeoutUsec(u32::try_from(extend).unwrap_or(u32::MAX)),
            NotifyState::Watchdog,
        ]);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return Ok(None),
        }
        wait = (wait * 2).min(STORAGE_RETRY_MAX);
    }
}

/// The webhook key and the intake and console tokens, by the secrets'
/// lookup order.
pub fn listener_secrets_of(config: &Config) -> Result<ListenerKeys, DaemonError> {
    let http = &config.http;
    Ok(ListenerKeys {
        webhook_key: secrets::load(secrets::WEBHOOK_KEY, http.webhook_key_file.as_deref())?,
        intake_token: secrets::load(secrets::INTAKE_TOKEN, http.intake_token_file.as_deref())?,
        console_token: secrets::load(secrets::CONSOLE_TOKEN, http.console_token_file.as_deref())?,
    })
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
pub async fn run(config_path: PathBuf, shadow: bool) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut config, rules, key) = load(&config_path)?;
    if shadow {
        config.worker.mode = crate::config::Mode::Shadow;
    }
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let secrets = ListenerSecrets::of(listener_secrets_of(&config)?);
    let stop = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let app = build_when_possible(&config, Arc::new(rules), &key, secrets, stop).await?;
    let Some(app) = app else {
        tracing::info!("stopped before the database could be opened");
        return Ok(());
    };
    let runtime = app.runtime.clone();
    announce(&config, &app).await;
    let secrets = app.secrets.clone();
    let mut give_back = tokio::time::interval(crate::memory::GIVE_BACK_EVERY);
    let stop = async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&config_path, &runtime, &secrets).await,
                _ = give_back.tick() => crate::memory::give_back(),
            }
        }
    };
    // The loop ends by itself only when a job of it failed: then the
    // daemon stops and exits non-zero, so that systemd restarts it.
    let result = app.run_until_stopped(stop).await;
    // Bounded: connections to a database that is down may never close.
    let closed = tokio::time::timeout(Duration::from_millis(300), runtime.store.close());
    if closed.await.is_err() {
        tracing::warn!("the database connections did not close in time; exiting anyway");
    }
    if let Err(failed) = result {
        notify::notify(&[NotifyState::Status(&format!("failed: {failed}"))]);
        return Err(DaemonError::Job(failed));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Says in the database, the log and to systemd that assignd is running.
async fn announce(config: &Config, app: &Application) {
    let store = &app.runtime.store;
    let loaded = format!("loaded at {:.0}", jiff::Timestamp::now());
    let _ = store.set_daemon_state("rules", &loaded).await;
    let _ = store.set_daemon_state("rules_reload_error", "").await;
    tracing::info!(
        database = %config.database(),
        rules = %config.rules.path.display(),
        limit = format!("{} per {}", config.helpcrunch.rate_limit.requests, config.helpcrunch.rate_limit.per),
        "assignd running"
    );
    if let Some(bound) = app.http_addr() {
        tracing::info!(%bound, "HTTP listener ready");
    }
    notify::notify(&[
        NotifyState::Ready,
        NotifyState::Status("processing the queue"),
    ]);
}

async fn reload(config_path: &Path, runtime: &Runtime, listener: &ListenerSecrets) {
    notify::reloading();
    reload_inner(config_path, runtime, listener).await;
    notify::notify(&[NotifyState::Ready]);
}

async fn reload_inner(config_path: &Path, runtime: &Runtime, listener: &ListenerSecrets) {
    match load(config_path).and_then(|(c, r, k)| listener_secrets_of(&c).map(|s| (c, r, k, s))) {
        Ok((config, rules, key, keys)) => {
            listener.replace(keys);
            reload_tls(runtime, config.http.tls_files());
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
            let rules = Arc::new(rules);
            runtime.worker.set_rules(rules.clone());
            reload_b_rules(runtime, &config, &rules);
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
            // A renewed certificate is read even so: it must not expire
            // behind a broken rule file.
            reload_tls(runtime, None);
            tracing::error!(error = %e, "reload failed; keeping the old config and rules");
            crate::metrics::metrics().reload_failures.inc();
            let _ = runtime
                .store
                .set_daemon_state("rules_reload_error", &e.to_string())
                .await;
        }
    }
}

/// Reads arm b's rules again, checked against arm a's; the split itself
/// is fixed at start, so an arm b that comes or goes takes a restart.
fn reload_b_rules(runtime: &Runtime, config: &Config, rules: &Rules) {
    let b = match crate::experiment::load_b_rules(&config.experiment) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => return tracing::error!(error = %e, "reload: keeping arm b's old rules"),
    };
    match crate::experiment::check_b_rules(rules, &b) {
        Ok(()) => runtime.worker.set_rules_b(Some(Arc::new(b))),
        Err(e) => tracing::error!(error = %e, "reload: keeping arm b's old rules"),
    }
}

/// Reads the listener's certificate and key again (from `files` when the
/// config now names others); new connections get the new pair. A pair that
/// does not load leaves the old one serving. Switching between TLS and
/// plain HTTP takes a restart.
fn reload_tls(runtime: &Runtime, files: Option<crate::config::TlsFiles>) {
    let Some(tls) = &runtime.tls else {
        return;
    };
    match tls.reload(files) {
        Ok(files) => tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate"),
        Err(e) => {
            tracing::error!(error = %e, "reload: keeping the old TLS certificate");
            crate::metrics::metrics().reload_failures.inc();
        }
    }
}
