//! Log levels reach journald: when stderr is the stream that `JOURNAL_STREAM`
//! names, every line of the real `assignd run` starts with its sd-daemon
//! priority (`<3>` error, `<4>` warning, `<6>` info), so that
//! `journalctl -p warning` finds warnings; anywhere else, lines stay plain.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// What `JOURNAL_STREAM` says about the daemon's stderr.
enum Journal {
    /// The device and inode of the log file that stderr writes to.
    IsStderr,
    /// Those of another file: as when stderr was redirected after systemd
    /// connected it to the journal.
    IsElsewhere,
    Unset,
}

fn dev_ino(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// Runs `assignd run`, provokes a warning (a queue row whose snapshot is
/// not a chat object) and an error (HelpCrunch rejects the API key), stops
/// it with SIGTERM, and returns what it wrote to stderr.
async fn daemon_log(journal: Journal) -> String {
    let app = TestApp::builder().migrated().await;
    let log_path = app.dir.path().join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = app.command(&["run"]);
    command
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log);
    match journal {
        Journal::IsStderr => command.env("JOURNAL_STREAM", dev_ino(&log_path)),
        Journal::IsElsewhere => command.env("JOURNAL_STREAM", dev_ino(&app.config_path)),
        Journal::Unset => &mut command,
    };
    let mut daemon = command.spawn().unwrap();

    app.execute("INSERT INTO queue (chat_id, snapshot) VALUES (7, 'not a chat')")
        .await;
    app.wait_drained(Duration::from_secs(10)).await;
    app.sandbox.set_key_valid(false);
    app.insert_raw([8]).await;
    wait_for(
        "the rejected key in the log",
        Duration::from_secs(10),
        || app.log("run.log").contains("rejects the API key"),
    )
    .await;
    let status = terminate(&mut daemon, Duration::from_secs(10));
    let text = app.log("run.log");
    assert!(status.success(), "{text}");
    text
}

/// The one line of `log` that contains `needle`.
fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_lines_start_with_their_priority() {
    let log = daemon_log(Journal::IsStderr).await;
    let warning = line_with(&log, "queue.snapshot is not a chat object");
    assert!(warning.starts_with("<4>WARN "), "{warning}");
    let error = line_with(&log, "rejects the API key");
    assert!(error.starts_with("<3>ERROR "), "{error}");
    let info = line_with(&log, "assignd running");
    // No timestamp: journald stamps each line itself.
    assert!(info.starts_with("<6>INFO "), "{info}");
    let unprefixed: Vec<&str> = log.lines().filter(|l| !l.starts_with('<')).collect();
    assert!(
        unprefixed.is_empty(),
        "lines without a priority: {unprefixed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_journal_stream_lines_are_plain() {
    let log = daemon_log(Journal::Unset).await;
    assert_plain(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_stream_of_another_file_is_not_ours() {
    let log = daemon_log(Journal::IsElsewhere).await;
    assert_plain(&log);
}

/// No priority prefix; a timestamp first, as a person reading a file wants.
fn assert_plain(log: &str) {
    let warning = line_with(log, "queue.snapshot is not a chat object");
    assert!(warning.contains(" WARN "), "{warning}");
    let prefixed: Vec<&str> = log.lines().filter(|l| l.starts_with('<')).collect();
    assert!(prefixed.is_empty(), "{prefixed:?}");
    let info = line_with(log, "assignd running");
    assert!(info.starts_with("20") && info.contains(" INFO "), "{info}");
}
