//! Processes, signals, webhooks and waiting: what tests do to a daemon
//! from outside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A webhook body as HelpCrunch sends it: `event` with `data`, under `id`.
pub fn webhook_event(id: &str, event: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"event": event, "eventData": data, "attempts": 0,
        "lastAttemptAt": now_secs(), "createdAt": now_secs(), "id": id}),
    )
    .unwrap()
}

/// Now, in seconds since the epoch, as HelpCrunch dates its events.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Posts the webhook event `body` to the listener at `base`, signed with
/// `key`; returns the status.
pub async fn post_webhook(http: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> u16 {
    http.post(format!("{base}/webhooks/helpcrunch"))
        .header(
            "X-HelpCrunch-Signature",
            assignd::http::webhook_signature(key.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Asserts that a finished command (`what`) exited 0, showing what it
/// printed if not; its stdout.
pub fn ok_stdout(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Asserts that `text` contains every one of `needles`.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` in: {text}");
    }
}

/// `kill SIG PID` (e.g. `-HUP`), which must succeed.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// SIGHUP: reload the config and rules.
pub fn hup(pid: u32) {
    signal(pid, "-HUP");
}

/// Polls `done` every 50 ms until it holds; after `timeout`, panics with `why()`.
pub async fn wait_until(
    timeout: Duration,
    why: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{}", why());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_until`], saying `what` it waited for.
pub async fn wait_for(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    wait_until(timeout, || format!("timed out waiting for {what}"), done).await;
}

/// Sends SIGTERM and waits for the exit status, at most `timeout`.
pub fn terminate(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    signal(child.id(), "-TERM");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("assignd did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

/// A tmpfs mounted for one test; unmounted however the test ends.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// `mount -o remount,OPTION`: `ro` fails while a file on it is open
    /// for writing, so a read-only fault is made while the daemon is down.
    pub fn remount(&self, option: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.0)
            .output();
        ok_stdout(&format!("remount {option}"), &out.unwrap());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A child process (a server a test runs: nginx, prometheus) killed and
/// reaped when dropped, so that a failing test leaves none behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon started with [`TestApp::spawn_guarded`]: killed (SIGKILL) when
/// dropped, so that a failing test leaves no process behind.
pub struct Daemon {
    pub child: Child,
    /// Its log file (stderr), in the app's temp dir.
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        signal(self.pid(), "-KILL");
        let _ = self.child.wait();
    }

    /// Panics with its log if it has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{what}: assignd (pid {}) exited with {status}; its log:\n{}",
                self.pid(),
                self.log_text()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl TestApp {
    /// Starts `assignd run` with `RUST_LOG=info`, logging to `log_name` in
    /// the temp dir, killed when the returned [`Daemon`] is dropped.
    pub fn spawn_guarded(&self, log_name: &str) -> Daemon {
        let log = self.dir.path().join(log_name);
        let child = self
            .command(&["run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// Points `[database] url` at `url` (e.g. a PostgreSQL database)
    /// instead of the SQLite file.
    pub fn use_database(&self, url: &str) {
        self.edit_config(|c| {
            c.replace("url = \"sqlite://assignd.db\"", &format!("url = \"{url}\""))
        });
    }
}
