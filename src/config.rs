//! The daemon's configuration file (SPEC §3): parsed, defaulted, validated.
//!
//! Unknown keys are errors (with the nearest known key suggested) and every
//! error names the file, line and column. Relative paths are resolved against
//! the directory of the config file, so a config can travel with its rules.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::SourceError;
use crate::duration::HumanDuration;
use crate::secrets::{self, Secret, SecretError};

pub const DEFAULT_PATH: &str = "/etc/assignd/assignd.toml";

/// HelpCrunch's API, `[helpcrunch] base_url` when not given.
pub const DEFAULT_BASE_URL: &str = "https://api.helpcrunch.com/v1";

/// The SQLite file when `[database] url` does not name one and systemd's
/// `StateDirectory=` is not set (the CLI run by hand): the service's own
/// state directory, so that `assignd status` works from any directory.
pub const DEFAULT_DATABASE: &str = "/var/lib/assignd/assignd.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SourceError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub helpcrunch: HelpCrunch,
    pub database: Database,
    pub rules: Rules,
    pub worker: Worker,
    pub http: Http,
    pub load: Load,
    pub poller: Poller,
    pub log: Log,
    pub experiment: Experiment,
    /// Where the file was read from; relative paths are resolved against it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HelpCrunch {
    pub base_url: String,
    pub api_key_file: Option<PathBuf>,
    pub timeout: HumanDuration,
    pub rate_limit: RateLimit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: HumanDuration,
    pub burst: Spanned<NonZeroU32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    pub url: Option<Spanned<String>>,
    /// The PostgreSQL password (see [`Config::database_login`]), so that
    /// none need be written in the url.
    pub password_file: Option<PathBuf>,
    pub synchronous: Synchronous,
    pub retention: HumanDuration,
    /// What sits between the daemon and PostgreSQL.
    pub pooler: Pooler,
}

/// A connection pooler in front of PostgreSQL (`[database] pooler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// The server itself, or a pooler that keeps a client on one server
    /// connection (PgBouncer's `pool_mode = session`).
    #[default]
    None,
    /// PgBouncer (or another pooler) in `pool_mode = transaction`: no
    /// session state lasts beyond a transaction, so nothing may rely on it
    /// (`store::Store::connect`).
    Pgbouncer,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchChat {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Worker {
    pub concurrency: NonZeroU32,
    pub poll_interval: HumanDuration,
    pub lease: HumanDuration,
    pub max_attempts: NonZeroU32,
    pub fetch_chat: FetchChat,
    pub reassign: bool,
    pub mode: Mode,
    /// In shadow mode, the share of the account's limit assignd's reads
    /// take: the account's own routing and people use the rest.
    pub shadow_api_share: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Load {
    pub refresh: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Poller {
    pub enabled: bool,
    pub interval: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
}

impl Default for HelpCrunch {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key_file: None,
            timeout: HumanDuration::from_secs(10),
            rate_limit: RateLimit::default(),
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests: NonZeroU32::new(120).unwrap(),
            per: HumanDuration::from_secs(60),
            burst: Spanned::new(0..0, NonZeroU32::MIN),
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            synchronous: Synchronous::Full,
            retention: HumanDuration::from_secs(30 * 86400),
            pooler: Pooler::None,
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/etc/assignd/rules"),
        }
    }
}

impl Default for Worker {
    fn default() -> Self {
        Self {
            concurrency: NonZeroU32::new(4).unwrap(),
            poll_interval: HumanDuration::from_secs(5),
            lease: HumanDuration::from_secs(60),
            max_attempts: NonZeroU32::new(10).unwrap(),
            fetch_chat: FetchChat::Auto,
            reassign: false,
            mode: Mode::Live,
            shadow_api_share: 0.5,
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Self {
            refresh: HumanDuration::from_secs(300),
        }
    }
}

impl Default for Poller {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: HumanDuration::from_secs(30),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, reporting errors against `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| SourceError::from_toml(path, text, &e))?;
        config.source = Some(path.to_path_buf());
        config.validate(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.rules.path = base.join(&config.rules.path);
        for file in [
            &mut config.helpcrunch.api_key_file,
            &mut config.http.webhook_key_file,
            &mut config.http.intake_token_file,
            &mut config.http.console_token_file,
            &mut config.http.tls_cert_file,
            &mut config.http.tls_key_file,
            &mut config.database.password_file,
            &mut config.experiment.b_rules,
        ]
        .into_iter()
        .flatten()
        {
            *file = base.join(&*file);
        }
        if let Some(url) = &mut config.database.url
            && !is_postgres(url.get_ref())
        {
            let resolved = database_path(url.get_ref())
                .map(|p| base.join(p))
                .expect("validated above");
            *url = Spanned::new(url.span(), format!("sqlite://{}", resolved.display()));
        }
        Ok(config)
    }

    /// Cross-field checks that serde cannot express.
    fn validate(&self, path: &Path, text: &str) -> Result<(), SourceError> {
        let rl = &self.helpcrunch.rate_limit;
        if rl.burst.get_ref().get() > rl.requests.get() {
            return Err(SourceError::new(
                path,
                text,
                rl.burst.span(),
                format!(
                    "burst ({}) cannot exceed requests ({}): the limit must hold in every window",
                    rl.burst.get_ref(),
                    rl.requests
                ),
            ));
        }
        for (name, d) in [
            ("rate_limit.per", rl.per),
            ("timeout", self.helpcrunch.timeout),
            ("worker.poll_interval", self.worker.poll_interval),
            ("worker.lease", self.worker.lease),
        ] {
            if d.0.is_zero() {
                return Err(SourceError::new(
                    path,
                    text,
                    0..0,
                    format!("{name} must be longer than zero"),
                ));
            }
        }
        // A decision's call is sent only while it can land within the lease
        // it was made under (`worker::assign::send_by`): half a second for
        // the call to go, half a second for the clocks.
        let (lease, timeout) = (self.worker.lease.0, self.helpcrunch.timeout.0);
        if lease < timeout + Duration::from_secs(1) {
            return Err(SourceError::new(
                path,
                text,
                0..0,
                format!(
                    "worker.lease ({lease:?}) must exceed helpcrunch.timeout ({timeout:?}) by at least 1s: an assignment is sent only while the lease surely outlasts its answer"
                ),
            ));
        }
        if !self.helpcrunch.base_url.starts_with("http://")
            && !self.helpcrunch.base_url.starts_with("https://")
        {
            return Err(SourceError::new(
                path,
                text,
                0..0,
                format!(
                    "helpcrunch.base_url `{}` must start with https:// or http://",
                    self.helpcrunch.base_url
                ),
            ));
        }
        self.http.validate(path, text)?;
        self.experiment.validate(path, text)?;
        let share = self.worker.shadow_api_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(SourceError::new(
                path,
                text,
                0..0,
                format!("worker.shadow_api_share ({share}) must be above 0 and at most 1"),
            ));
        }
        if let Some(url) = &self.database.url {
            let checked = if is_postgres(url.get_ref()) {
                postgres_url(url.get_ref()).map(drop)
            } else {
                database_path(url.get_ref()).map(drop)
            };
            if let Err(why) = checked {
                return Err(SourceError::new(path, text, url.span(), why));
            }
        }
        self.password_needs_postgres(path, text)
    }

    /// A password file or a pooler beside SQLite would be silently unused:
    /// refused, so that the operator knows.
    fn password_needs_postgres(&self, path: &Path, text: &str) -> Result<(), SourceError> {
        let url = self.database.url.as_ref();
        if url.is_some_and(|u| is_postgres(u.get_ref())) {
            return Ok(());
        }
        let why = if self.database.password_file.is_some() {
            "database.password_file is set, but the database is SQLite, which takes no password: remove password_file, or set a postgres:// url"
        } else if self.database.pooler != Pooler::None {
            "database.pooler is set, but the database is SQLite, which has no pooler: remove pooler, or set a postgres:// url"
        } else {
            return Ok(());
        };
        Err(SourceError::new(
            path,
            text,
            url.map_or(0..0, Spanned::span),
            why,
        ))
    }

    /// Where the state lives: a PostgreSQL server when `[database] url`
    /// says `postgres://`, else the SQLite file of [`Config::database_file`].
    pub fn database(&self) -> DatabaseLocation {
        match &self.database.url {
            Some(url) if is_postgres(url.get_ref()) => {
                let mut url = postgres_url(url.get_ref()).expect("validated at load");
                url.pooler = self.database.pooler;
                DatabaseLocation::Postgres(url)
            }
            _ => DatabaseLocation::Sqlite(self.database_file()),
        }
    }

    /// The SQLite file: `[database] url`, else `$STATE_DIRECTORY/assignd.db`
    /// (set by systemd's `StateDirectory=`), else [`DEFAULT_DATABASE`]. Not
    /// used with a PostgreSQL url.
    fn database_file(&self) -> PathBuf {
        match &self.database.url {
            Some(url) if !is_postgres(url.get_ref()) => {
                database_path(url.get_ref()).expect("validated at load")
            }
            _ => default_database_file(state_directory()),
        }
    }

    /// The directory of [`DEFAULT_DATABASE`] when that is the database in
    /// use and the directory does not exist, so that the CLI can say so in
    /// one sentence instead of SQLite's "unable to open database file".
    pub fn missing_default_database_dir(&self) -> Option<PathBuf> {
        if self.database.url.is_some() || state_directory().is_some() {
            return None;
        }
        let dir = Path::new(DEFAULT_DATABASE).parent()?;
        (!dir.is_dir()).then(|| dir.to_path_buf())
    }

    /// The HelpCrunch API key, by the lookup order of [`crate::secrets`].
    pub fn api_key(&self) -> Result<Option<Secret>, SecretError> {
        secrets::load(secrets::API_KEY, self.helpcrunch.api_key_file.as_deref())
    }
}

/// Where the daemon's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

impl std::fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseLocation::Sqlite(path) => write!(f, "{}", path.display()),
            DatabaseLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// A `postgres://` url. It may carry a password, so it prints without
/// one; [`PostgresUrl::expose`] gives the whole url to the driver only.
/// The password given apart from the url ([`Config::database_login`])
/// travels with it to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    shown: String,
    /// Whether the url itself carries a password (`user:pw@` or `?password=`).
    has_password: bool,
    password: Option<Secret>,
    pooler: Pooler,
}

impl PostgresUrl {
    pub fn expose(&self) -> &str {
        &self.url
    }
    /// The password to connect with, when given apart from the url.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    /// The pooler between the daemon and the server (`[database] pooler`).
    pub fn pooler(&self) -> Pooler {
        self.pooler
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Checks a `postgres://` url's form; an error never repeats the url (it
/// may hold a password).
fn postgres_url(url: &str) -> Result<PostgresUrl, String> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("database url is not a valid postgres:// url: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) && !url.contains("host=") {
        return Err("database url names no host: postgres://USER@HOST[:PORT]/DATABASE".into());
    }
    let has_password = parsed.password().is_some()
        || parsed
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("********"));
    }
    mask_query_passwords(&mut parsed);
    Ok(PostgresUrl {
        url: url.to_owned(),
        shown: parsed.to_string(),
        has_password,
        password: None,
        pooler: Pooler::None,
    })
}

/// Masks every query parameter that carries a password (`?password=`, as
/// the driver also takes it, and `sslpassword=`), keeping the rest.
fn mask_query_passwords(url: &mut reqwest::Url) {
    let secret = |k: &str| k.to_ascii_lowercase().contains("password");
    if !url.query_pairs().any(|(k, _)| secret(&k)) {
        return;
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if secret(&k) {
                "********".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
}

/// The first directory of `$STATE_DIRECTORY` (systemd's `StateDirectory=`
/// may list several, separated by ':'), if it is set and not empty.
fn state_directory() -> Option<PathBuf> {
    let dirs = std::env::var_os("STATE_DIRECTORY")?;
    let first = dirs.to_string_lossy().split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// `assignd.db` in the state directory, else [`DEFAULT_DATABASE`].
fn default_database_file(state_directory: Option<PathBuf>) -> PathBuf {
    match state_directory {
        Some(dir) => dir.join("assignd.db"),
        None => PathBuf::from(DEFAULT_DATABASE),
    }
}

/// `sqlite:///abs/path.db`, `sqlite://relative.db` or `sqlite:relative.db`.
fn database_path(url: &str) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| format!("database url `{url}` must start with sqlite:// or postgres://"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() || rest.contains(":memory:") {
        return Err(format!(
            "database url `{url}` must name a file: the queue has to survive a restart"
        ));
    }
    Ok(PathBuf::from(rest))
}

impl RateLimit {
    pub fn burst(&self) -> NonZeroU32 {
        *self.burst.get_ref()
    }
}

mod experiment;
mod http;
mod password;
pub use experiment::{Experiment, Mode};
pub use http::{Http, TlsFiles};
pub use password::PasswordError;

#[cfg(test)]
mod tests;
