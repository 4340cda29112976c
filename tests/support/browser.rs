//! Real-browser tests: Node.js runs a script of `tests/browser/` that drives
//! Debian's headless Chromium with playwright-core.
//!
//! Needs `node` and `chromium` on PATH and `tests/browser/node_modules`
//! (`npm ci --prefix tests/browser`); .ci/run installs them. Missing, a
//! failure under CI (`CI=true`) and a loud skip elsewhere.
//!
//! A script talks JSON lines: each line it prints on stdout is one object,
//! `{"step": NAME, ...}` when it waits for the test (which answers with one
//! JSON line on the script's stdin, see [`Script::reply`]), or
//! `{"done": RESULT}` at the end. What it prints on stderr is shown when it
//! fails.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use super::tools::{in_ci, tool};

/// Where the scripts and their node_modules are.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What a browser test needs, found.
#[derive(Debug, Clone)]
pub struct Browser {
    pub node: PathBuf,
    pub chromium: PathBuf,
}

/// Node.js, Chromium and playwright-core, or `None` (after a loud message)
/// when one is missing outside CI; under CI a missing one fails the test.
pub fn browser() -> Option<Browser> {
    let node = tool("node", "Debian/NodeSource: apt-get install nodejs")?;
    let chromium = tool("chromium", "Debian: apt-get install chromium")?;
    let playwright = scripts_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        let why = "playwright-core is not installed in tests/browser/node_modules \
                   (npm ci --prefix tests/browser)";
        if in_ci() {
            panic!("CI: {why}; .ci/run installs it");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: {why}; this test did not run ***\n"
        );
        return None;
    }
    Some(Browser { node, chromium })
}

/// What a running script said.
#[derive(Debug)]
pub enum Said {
    /// It waits for a [`Script::reply`].
    Step(String, Value),
    /// Its result; it has finished.
    Done(Value),
}

/// A running `node tests/browser/NAME.mjs`, killed when dropped.
pub struct Script {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
}

impl Browser {
    /// Starts `node tests/browser/NAME.mjs` with `env` (and `CHROMIUM`).
    pub fn start(&self, name: &str, env: &[(&str, String)]) -> Script {
        let mut command = tokio::process::Command::new(&self.node);
        command
            .arg(scripts_dir().join(format!("{name}.mjs")))
            .current_dir(scripts_dir())
            .env("CHROMIUM", &self.chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {name}.mjs: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Script {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// Runs a script that takes no steps to its end: its result.
    pub async fn run(&self, name: &str, env: &[(&str, String)], timeout: Duration) -> Value {
        let mut script = self.start(name, env);
        match script.next(timeout).await {
            Said::Done(result) => result,
            Said::Step(step, _) => {
                script
                    .fail(&format!("asked for an unexpected step `{step}`"))
                    .await
            }
        }
    }
}

impl Script {
    /// The script's next step or its result, waiting at most `timeout`;
    /// fails the test with its stderr if it exits without one or prints
    /// something else.
    pub async fn next(&mut self, timeout: Duration) -> Said {
        loop {
            let line = match tokio::time::timeout(timeout, self.stdout.next_line()).await {
                Err(_) => self.fail(&format!("said nothing for {timeout:?}")).await,
                Ok(Err(e)) => self.fail(&format!("stdout: {e}")).await,
                Ok(Ok(None)) => self.fail("exited without a result").await,
                Ok(Ok(Some(line))) => line,
            };
            if line.trim().is_empty() {
                continue;
            }
            let Ok(Value::Object(mut said)) = serde_json::from_str::<Value>(&line) else {
                self.fail(&format!("printed a line that is not a JSON object: {line}"))
                    .await
            };
            if let Some(result) = said.remove("done") {
                let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
                let stderr = self.stderr_text().await;
                match status {
                    Ok(Ok(s)) if s.success() => {}
                    other => panic!(
                        "{}.mjs printed its result but then exited with {other:?}; its stderr:\n{stderr}",
                        self.name
                    ),
                }
                println!("--- {}.mjs stderr ---\n{stderr}--- end ---", self.name);
                return Said::Done(result);
            }
            if let Some(Value::String(step)) = said.remove("step") {
                return Said::Step(step, Value::Object(said));
            }
            self.fail(&format!("printed neither a step nor a result: {line}"))
                .await
        }
    }

    /// Answers the step the script waits on.
    pub async fn reply(&mut self, reply: &Value) {
        let mut line = serde_json::to_string(reply).unwrap();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("stdin");
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            self.fail(&format!("cannot take the reply: {e}")).await;
        }
        let _ = stdin.flush().await;
    }

    async fn stderr_text(&mut self) -> String {
        match self.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Kills the script and fails the test with `why` and its stderr.
    pub async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let stderr = self.stderr_text().await;
        panic!("{}.mjs {why}; its stderr:\n{stderr}", self.name)
    }
}
