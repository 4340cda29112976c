//! The command line (SPEC §2). This is the binary's edge: errors become one
//! sentence on stderr and an exit status (0 ok, 1 runtime failure, 2 bad
//! usage or invalid configuration).

mod agent;
mod check;
mod completions;
mod counts;
mod day;
mod demo;
mod demo_shadow;
mod explain;
mod init;
mod init_files;
mod queue;
mod report;
mod simulate;
mod simulate_history;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::BuildError;
use crate::config::{self, Config, LogFormat};
use crate::daemon::{self, DaemonError};
use crate::store::Store;

#[derive(Parser)]
#[command(
    name = "assignd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ASSIGND_COMMIT"), ")"),
    about = "Rule-based auto-assignment of HelpCrunch chats"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "ASSIGND_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM/SIGINT; SIGHUP reloads.
    Run {
        /// Shadow mode: decide and record everything, write nothing to HelpCrunch.
        #[arg(long)]
        shadow: bool,
    },
    /// Validate the configuration and rules, print a summary and warnings.
    Check {
        /// Also ask HelpCrunch (GET /agents) whether every agent id exists.
        #[arg(long)]
        online: bool,
    },
    /// Put chats on the queue.
    Enqueue {
        #[arg(required = true)]
        chat_ids: Vec<i64>,
        /// An attribute for `attr.*` matches, KEY=VALUE; repeatable.
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Higher is taken first.
        #[arg(long, default_value_t = 0)]
        priority: i64,
    },
    /// Print the decision for one chat, step by step, without assigning it.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["chat_id", "chat"])))]
    Explain {
        /// The chat to fetch with GET /chats/{id}.
        chat_id: Option<i64>,
        /// A chat object (as GET /chats/{id} returns it) from a file, or `-` for stdin.
        #[arg(long)]
        chat: Option<String>,
        /// Decide as at this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<jiff::Timestamp>,
        /// An enqueue-time attribute, KEY=VALUE; repeatable.
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Replay chats (JSON lines, or the ones this daemon saw) through the rules; compare two rule sets.
    Simulate(simulate::Command),
    /// Queue depth, waiting chats, recent outcomes, assignments today, API health.
    Status {
        /// One JSON document with the same facts, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Assignments, fairness, time in queue and dead letters of a window, from the database.
    Report {
        /// How far back the window reaches (e.g. "7d", "36h").
        #[arg(long, default_value = "7d", value_parser = report::parse_since)]
        since: std::time::Duration,
        /// One JSON document with the same figures, for scripts.
        #[arg(long)]
        json: bool,
        /// Also write one self-contained HTML page with charts to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Compare the arms (shadow against reality, a against b, left
        /// against a): each measure, its difference, a 95% interval, a verdict.
        #[arg(long)]
        compare: bool,
    },
    /// Inspect the queue; put dead rows back.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Mark an agent unavailable, or available again.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Run the built-in HelpCrunch sandbox alone.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The API key the sandbox accepts.
        #[arg(long, default_value = "sandbox-key")]
        api_key: String,
        /// Requests allowed per minute (sliding window); 0 for no limit.
        #[arg(long, default_value_t = 120)]
        requests_per_minute: u32,
        /// Rules whose agents the sandbox knows (default: the built-in example rules).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Run the real daemon against the built-in sandbox with sample chats and print a report.
    Demo {
        /// Rules to use instead of the built-in example rules.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// How many sample chats to enqueue.
        #[arg(long, default_value_t = 200)]
        chats: u32,
    },
    /// Read the team from HelpCrunch and write a config and rules to start from.
    ///
    /// Writes DIR/assignd.toml and DIR/rules/10-team.toml (every agent in one
    /// round-robin pool; office hours, after hours and the departments as
    /// commented examples), never over an existing file (exit 2, nothing
    /// written) and never with the key in them; then prints the next steps.
    Init(init::Args),
    /// Print shell completions (bash, zsh, fish, ...) to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
}

#[derive(Subcommand)]
enum QueueAction {
    /// Rows, newest first, with their reasons.
    List {
        #[arg(long, value_parser = ["pending", "leased", "done", "dead"])]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON document with the same rows, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Put dead rows, or chats that ended no_match, back on the queue.
    ///
    /// Revived rows start over: attempts 0, due now, no lease. A row whose chat already
    /// has a pending or leased row stays as it is.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["ids", "dead", "no_match"])))]
    Retry {
        /// Row ids (as `queue list` shows them): each comes back if it is dead, or done
        /// with a last outcome of no_match.
        #[arg(conflicts_with_all = ["dead", "no_match"])]
        ids: Vec<i64>,
        /// Every dead row.
        #[arg(long)]
        dead: bool,
        /// Every done row whose last outcome is no_match (no rule matched it), each
        /// chat's newest row only; e.g. after fixing rules that matched nothing.
        #[arg(long)]
        no_match: bool,
    },
}

#[derive(Subcommand)]
enum AgentAction {
    /// Mark NAME away: no chats until marked back (or until --until).
    Away {
        name: String,
        /// When the absence ends (RFC 3339, e.g. 2026-11-23T09:00:00+02:00).
        #[arg(long)]
        until: Option<jiff::Timestamp>,
    },
    /// Mark NAME available again; chats waiting for a candidate are tried at once.
    Back { name: String },
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// A failure and the exit status it calls for.
enum Failure {
    /// Bad usage or invalid configuration: exit 2.
    Invalid(anyhow::Error),
    /// Something failed while running: exit 1.
    Runtime(anyhow::Error),
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        if e.is_invalid_input() {
            Failure::Invalid(e.into())
        } else {
            Failure::Runtime(e.into())
        }
    }
}

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Self {
        DaemonError::from(e).into()
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The servers keep Rust's default: SIGPIPE ignored.
    if !matches!(cli.command, Command::Run { .. } | Command::Sandbox { .. }) {
        quiet_on_closed_pipe();
    }
    if matches!(cli.command, Command::Run { .. }) {
        crate::memory::tune();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("assignd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(e)) => {
            eprintln!("assignd: {}", describe(&e));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("assignd: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// A command whose output is piped into `head` ends quietly when the pipe
/// closes, as other Unix tools do, instead of panicking in `println!`:
/// SIGPIPE gets its default action back (Rust ignores it). Sockets are
/// unaffected (Rust sends with MSG_NOSIGNAL).
fn quiet_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition at start-up, before
    // any thread is spawned, has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An error and its causes on one line, like `{:#}`, but without a cause
/// whose text the message above it already contains: our error types quote
/// their source, and saying it three times helps nobody.
pub fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::Invalid(e.into()))
}

/// Refuses, in one sentence, a database in the built-in default directory
/// (no `[database] url`, not under systemd) when that directory is missing:
/// SQLite would only say "unable to open database file".
fn default_database_dir_exists(config: &Config) -> Result<(), Failure> {
    let Some(dir) = config.missing_default_database_dir() else {
        return Ok(());
    };
    let file = config.source.as_deref().map_or_else(
        || "the config file".to_string(),
        |p| p.display().to_string(),
    );
    Err(Failure::Runtime(anyhow::anyhow!(
        "the database directory {} does not exist (the assignd service creates it when it first starts): start the service, create the directory, or set `[database] url` in {file}",
        dir.display()
    )))
}

/// Who a command's change is recorded as in the audit: `cli:USER@HOST`
/// (the user behind sudo, when there is one).
fn cli_actor() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| format!("uid {}", unsafe_uid()));
    format!("cli:{user}@{}", crate::cluster::hostname())
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// A client for the few calls of `init` and `check --online`, with a
/// limiter of its own at a tenth of the account's default pace.
fn online_client(
    base_url: &str,
    key: &crate::secrets::Secret,
    timeout: std::time::Duration,
) -> Result<crate::helpcrunch::Client, Failure> {
    use std::num::NonZeroU32;
    let limiter = std::sync::Arc::new(crate::limiter::Limiter::new(
        NonZeroU32::new(12).expect("nonzero"),
        std::time::Duration::from_secs(60),
        NonZeroU32::new(5).expect("nonzero"),
    ));
    crate::helpcrunch::Client::new(base_url, key, timeout, limiter)
        .map_err(|e| Failure::Invalid(e.into()))
}

/// Opens (with its password) and migrates the configured database.
async fn open_store(config: &Config) -> Result<Store, Failure> {
    default_database_dir_exists(config)?;
    let location = config
        .database_login()
        .map_err(|e| Failure::Invalid(e.into()))?;
    let store = Store::connect(&location, config.database.synchronous)
        .await
        .with_context(|| format!("cannot open the database {location}"))?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// [`open_store`] for commands that only read what a daemon wrote: a
/// SQLite file that does not exist yet is one sentence, not a new file.
async fn open_existing_store(config: &Config) -> Result<Store, Failure> {
    default_database_dir_exists(config)?;
    if let crate::config::DatabaseLocation::Sqlite(path) = config.database()
        && !path.exists()
    {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "no database at {} (has `assignd run` or `assignd migrate` been run?)",
            path.display()
        )));
    }
    open_store(config).await
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run { shadow } => {
            let config = load_config(&cli.config)?;
            default_database_dir_exists(&config)?;
            init_logging(config.log.format, "info");
            daemon::run(cli.config, shadow).await?;
        }
        Command::Check { online } => check::run(&cli.config, online).await?,
        Command::Enqueue {
            chat_ids,
            attrs,
            priority,
        } => queue::enqueue(&load_config(&cli.config)?, &chat_ids, attrs, priority).await?,
        Command::Explain {
            chat_id,
            chat,
            at,
            attrs,
            json,
        } => {
            let args = explain::Args {
                chat_id,
                chat_file: chat,
                at,
                json,
                attrs: attrs
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            };
            explain::run(&cli.config, args).await?;
        }
        Command::Simulate(args) => simulate::dispatch(&cli.config, args).await?,
        Command::Status { json } => {
            let config = load_config(&cli.config)?;
            status::run(&config, json).await?;
        }
        Command::Report {
            since,
            json,
            html,
            compare,
        } => {
            let args = report::Args {
                since,
                json,
                html,
                compare,
            };
            report::run(&cli.config, args).await?
        }
        Command::Queue { action } => queue::run(&load_config(&cli.config)?, action).await?,
        Command::Agent { action } => agent::run(&load_config(&cli.config)?, action).await?,
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            open_store(&config).await?;
            println!("database {} is up to date", config.database());
        }
        Command::Sandbox {
            listen,
            api_key,
            requests_per_minute,
            rules,
        } => {
            init_logging(LogFormat::Text, "info");
            demo::sandbox(listen, api_key, requests_per_minute, rules).await?;
        }
        Command::Demo { rules, chats } => {
            init_logging(LogFormat::Text, "warn");
            demo::run(rules, chats).await?;
        }
        Command::Init(args) => init::run(args).await?,
        Command::Completions { shell } => completions::completions(shell)?,
        Command::Man => completions::man()?,
    }
    Ok(())
}

/// Logs to stderr, with each line's level visible to journald (see
/// [`crate::logging`]).
fn init_logging(format: LogFormat, default_level: &str) {
    crate::logging::init(format, default_level);
}
