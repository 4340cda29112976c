//! `assignd init`: read the team from the account and write a config and a
//! rules file to start from, never over an existing file and never with the
//! key in them; then say what is left to do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;

use super::Failure;
use super::init_files::{self, Layout, Team};
use crate::config::{self, Config};
use crate::secrets::{self, Secret};

#[derive(clap::Args)]
pub(super) struct Args {
    /// Where to write assignd.toml and rules/10-team.toml.
    #[arg(long, value_name = "DIR", default_value = "/etc/assignd")]
    dir: PathBuf,
    /// HelpCrunch's API address.
    #[arg(long, value_name = "URL", default_value = config::DEFAULT_BASE_URL)]
    base_url: String,
    /// A file holding the API key (else the credential helpcrunch-api-key,
    /// else the environment variable HELPCRUNCH_API_KEY); the config points
    /// at it.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let dir = absolute(&args.dir)?;
    let key_file = args.api_key_file.as_deref().map(absolute).transpose()?;
    let layout = Layout::new(&dir, key_file.clone());
    refuse_existing(&layout)?;
    if !args.base_url.starts_with("https://") && !args.base_url.starts_with("http://") {
        return Err(Failure::Invalid(anyhow!(
            "--base-url `{}` must start with https:// or http://",
            args.base_url
        )));
    }
    let key = api_key(key_file.as_deref())?;
    let team = read_team(&args.base_url, &key).await?;
    let timezone = jiff::tz::TimeZone::system()
        .iana_name()
        .unwrap_or("UTC")
        .to_string();
    let config_text = init_files::config_text(&layout, &args.base_url);
    let rules_text = init_files::rules_text(&team, &timezone, false);
    loads(&layout, &config_text, &rules_text)?;
    write_files(&layout, &config_text, &rules_text)?;
    println!("wrote {}", layout.config.display());
    println!(
        "wrote {} ({} agents in pool `{}`; {})",
        layout.rules.display(),
        team.members.len(),
        init_files::POOL,
        departments_summary(&team)
    );
    print!("{}", next_steps(&layout));
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path)
        .map_err(|e| Failure::Invalid(anyhow!("cannot resolve {}: {e}", path.display())))
}

/// Refuses, before anything is asked or written, a file in the way: one of
/// those to write, or rules already in the rules directory (they would be
/// merged with the new ones).
fn refuse_existing(layout: &Layout) -> Result<(), Failure> {
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    for file in [&layout.config, &layout.rules] {
        if exists(file) {
            return Err(Failure::Invalid(anyhow!(
                "{} already exists: `assignd init` never writes over a file (move it away, or give another --dir); nothing was written",
                file.display()
            )));
        }
    }
    if exists(&layout.rules_dir) && !layout.rules_dir.is_dir() {
        return Err(Failure::Invalid(anyhow!(
            "{} exists and is not a directory; nothing was written",
            layout.rules_dir.display()
        )));
    }
    let rules = std::fs::read_dir(&layout.rules_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "toml"));
    match rules {
        Some(other) => Err(Failure::Invalid(anyhow!(
            "{} already holds rules ({}), which the new ones would be merged with: move them away, or give another --dir; nothing was written",
            layout.rules_dir.display(),
            other.display()
        ))),
        None => Ok(()),
    }
}

/// The key by the daemon's lookup order, with `--api-key-file` as the file.
fn api_key(file: Option<&Path>) -> Result<Secret, Failure> {
    secrets::load(secrets::API_KEY, file)
        .map_err(|e| Failure::Invalid(e.into()))?
        .ok_or_else(|| {
            Failure::Invalid(anyhow!(
                "no HelpCrunch API key: give --api-key-file FILE, set HELPCRUNCH_API_KEY, or the credential helpcrunch-api-key (HelpCrunch: Settings → Developers → REST API)"
            ))
        })
}

/// `GET /agents`, then `GET /departments`, through a limiter of their own.
async fn read_team(base_url: &str, key: &Secret) -> Result<Team, Failure> {
    let client = super::online_client(base_url, key, Duration::from_secs(10))?;
    let agents = client.agents().await.map_err(|e| {
        Failure::Runtime(anyhow!(
            "cannot read the team from {base_url} (GET /agents): {e}{}",
            if e.class() == crate::helpcrunch::ErrorClass::Unauthorized {
                " (HelpCrunch rejects the API key: check it)"
            } else {
                ""
            }
        ))
    })?;
    if agents.is_empty() {
        return Err(Failure::Runtime(anyhow!(
            "the account at {base_url} lists no agents: there is nobody to route chats to; nothing was written"
        )));
    }
    let departments = client.departments().await.map_err(|e| {
        Failure::Runtime(anyhow!(
            "cannot read the departments from {base_url} (GET /departments): {e}"
        ))
    })?;
    Ok(Team::new(&agents, &departments))
}

/// The files must load as `check` and `run` load them, before they are written.
fn loads(layout: &Layout, config_text: &str, rules_text: &str) -> Result<(), Failure> {
    let broken = |what: &Path, e: &dyn std::fmt::Display| {
        Failure::Runtime(anyhow!(
            "the {} made from this account does not load ({e}); nothing was written",
            what.display()
        ))
    };
    Config::parse(&layout.config, config_text).map_err(|e| broken(&layout.config, &e))?;
    crate::rules::load_sources(&[(layout.rules.clone(), rules_text.to_string())])
        .map_err(|e| broken(&layout.rules, &e))?;
    Ok(())
}

/// Writes both files, each only if it does not exist; on a failure removes
/// what it made, so that nothing is left half-written.
fn write_files(layout: &Layout, config_text: &str, rules_text: &str) -> Result<(), Failure> {
    let mut made: Vec<(PathBuf, bool)> = Vec::new();
    let result = (|| {
        for dir in [&layout.dir, &layout.rules_dir] {
            if !dir.is_dir() {
                std::fs::create_dir(dir).map_err(|e| (dir.clone(), e))?;
                made.push((dir.clone(), true));
            }
        }
        for (file, text) in [(&layout.rules, rules_text), (&layout.config, config_text)] {
            write_new(file, text).map_err(|e| (file.clone(), e))?;
            made.push((file.clone(), false));
        }
        Ok(())
    })();
    let Err((path, e)) = result else {
        return Ok(());
    };
    for (p, is_dir) in made.iter().rev() {
        let _ = if *is_dir {
            std::fs::remove_dir(p)
        } else {
            std::fs::remove_file(p)
        };
    }
    let error = anyhow!("cannot write {}: {e}; nothing was written", path.display());
    Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
        Failure::Invalid(error)
    } else {
        Failure::Runtime(error)
    })
}

/// Creates `path` with `text`, failing if anything is there already.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn departments_summary(team: &Team) -> String {
    match &team.departments {
        Ok(list) if list.is_empty() => "the account has no departments".into(),
        Ok(list) => format!("{} departments as commented examples", list.len()),
        Err(why) => format!("the account lists no departments: {why}"),
    }
}

/// Where the shipped unit reads its config and credentials from.
const UNIT_DIR: &str = "/etc/assignd";

/// What is left to do: the key file, webhooks, HelpCrunch's own
/// assignment, then check and start.
fn next_steps(layout: &Layout) -> String {
    let key = layout.api_key_file.display();
    let creds = layout.credentials.display();
    let key_step = if layout.api_key_file.is_file() {
        format!("  1. The API key is read from {key}.\n")
    } else {
        format!(
            "  1. Put the API key where the config points (it is never written into these files):\n\
             \x20      sudo install -d -m 0700 {creds}\n\
             \x20      sudo sh -c 'umask 077; printf %s \"$HELPCRUNCH_API_KEY\" > {key}'\n"
        )
    };
    let events = crate::http::WEBHOOK_EVENTS.join(", ");
    let mut text = format!(
        "\nNext steps:\n{key_step}\
         \x20 2. Webhooks: set [http] public_url in {config} to how HelpCrunch reaches the\n\
         \x20    listener (127.0.0.1:9187, behind your reverse proxy); `assignd check` then prints\n\
         \x20    the address. In HelpCrunch (Settings → Developers → Webhooks) add\n\
         \x20      <public_url>/webhooks/helpcrunch\n\
         \x20    with the events {events};\n\
         \x20    put its HTTP Webhook Signing Key where the service loads it:\n\
         \x20      sudo sh -c 'umask 077; printf %s \"$WEBHOOK_SIGNING_KEY\" > {creds}/webhook-key'\n\
         \x20 3. Check, then start (in shadow mode: it decides and records, writes nothing):\n\
         \x20      assignd check --config {config} --online\n\
         \x20      sudo systemctl enable --now assignd\n\
         \x20 4. After some days of traffic, compare what it would have done with what happened:\n\
         \x20      assignd report --compare --config {config} --since 7d\n\
         \x20 5. To go live: set the auto-assignment of every department assignd routes to\n\
         \x20    \"Manual\" in HelpCrunch (Settings → Departments), or it competes with assignd;\n\
         \x20    set [worker] mode = \"live\" (or start with a share: [experiment] share = 0.2)\n\
         \x20    and restart: sudo systemctl restart assignd\n",
        config = layout.config.display(),
    );
    if layout.dir != Path::new(UNIT_DIR) {
        text.push_str(&format!(
            "The unit reads {UNIT_DIR}/assignd.toml and its credentials from {UNIT_DIR}/credentials/:\n\
             move these files there, or point it here in a drop-in (systemctl edit assignd:\n\
             Environment=ASSIGND_CONFIG={} and LoadCredential= lines).\n",
            layout.config.display()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_the_way_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        assert!(refuse_existing(&layout).is_ok());
        std::fs::create_dir(&layout.rules_dir).unwrap();
        std::fs::write(layout.rules_dir.join("README"), "").unwrap();
        assert!(refuse_existing(&layout).is_ok());
        std::fs::write(layout.rules_dir.join("20-more.toml"), "").unwrap();
        let Err(Failure::Invalid(e)) = refuse_existing(&layout) else {
            panic!("rules in the way");
        };
        assert!(e.to_string().contains("20-more.toml"), "{e}");
        std::fs::remove_file(layout.rules_dir.join("20-more.toml")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &layout.config).unwrap();
        let Err(Failure::Invalid(e)) = refuse_existing(&layout) else {
            panic!("a dangling link in the way");
        };
        assert!(e.to_string().contains("assignd.toml"), "{e}");
    }
}
