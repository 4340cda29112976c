//! Memory over a long run, compressed (issue 23): tens of thousands of
//! chats through the release `assignd run`, whose RSS must not grow with
//! the chats it has seen.
//!
//! Signed `chat.new` webhooks go in as fast as seats free up (at most
//! `SOAK_WINDOW` chats outstanding, at most `SOAK_RATE` a second); alice
//! and bob take two open chats each (`max_open = 2`); each chat, once the
//! sandbox shows it assigned, is closed there and its `chat.closed`
//! webhook sent, which frees the seat. One chat in `SOAK_RACE` (25) is closed
//! right after its `chat.new` instead, racing its decision and PUT (its
//! seat then comes back by reconciliation, every 2 s). The daemon's RSS
//! (VmRSS, and its anonymous and file-backed parts) is sampled every
//! 500 ms against the chats sent so far; the least-squares slope over the
//! second half says how much it still grows per 1,000 chats.
//!
//! Run: `cargo bench --bench soak` (`SOAK_CHATS`, 30,000 by default;
//! `SOAK_REFRESH` for another `[load] refresh` than 2 s;
//! `SOAK_BACKEND=postgres` for two daemons on a PostgreSQL database, every
//! webhook to the first: the second's memory must not grow with the chats
//! it assigned and that closed through the first).
//! Results are in docs/benchmarks.md.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use assignd::sandbox::Sandbox;

#[path = "../tests/support/postgres.rs"]
mod postgres;
mod support;

const KEY: &str = "whk-soak";

/// alice and bob, two open chats each, in one pool that takes every chat.
const RULES: &str = "[agents]\nalice = { id = 1, max_open = 2 }\nbob = { id = 2, max_open = 2 }\n[pools.p]\nagents = [\"alice\", \"bob\"]\n[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sample: chats sent so far, and the daemon's memory in KiB.
#[derive(Clone, Copy)]
struct Sample {
    chats: i64,
    rss: u64,
    anon: u64,
    file: u64,
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run it with `cargo bench --bench soak`");
        return;
    }
    let chats = env_or("SOAK_CHATS", 30_000);
    let sandbox = Arc::new(support::sandbox().await);
    let postgres = std::env::var("SOAK_BACKEND").as_deref() == Ok("postgres");
    let url = match postgres {
        true => match postgres::server() {
            Some(server) => server.database().await,
            None => return println!("PostgreSQL: skipped, no server binaries"),
        },
        false => "sqlite://soak.db".to_string(),
    };
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut daemon, addr) = spawn(first.path(), &sandbox, &url).await;
    // PostgreSQL: a second daemon on the same database, which no webhook
    // reaches: the chats it assigns close through the first, which leads.
    let mut other = match postgres {
        true => Some(spawn(second.path(), &sandbox, &url).await),
        false => None,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let soak = Soak::new(addr.clone(), sandbox.clone());
    let started = Instant::now();
    let mut watched = vec![(daemon.id(), addr.as_str(), first.path())];
    if let Some((d, a)) = &other {
        watched.push((d.id(), a.as_str(), second.path()));
    }
    let samplers: Vec<_> = watched
        .iter()
        .map(|(pid, _, _)| {
            let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
            let task = tokio::spawn(sample(*pid, soak.sent.clone(), samples.clone()));
            (task, samples)
        })
        .collect();
    let closer = tokio::spawn(soak.clone().close_assigned());
    soak.send_all(chats).await;
    soak.settle(Duration::from_secs(30)).await;
    closer.abort();
    let elapsed = started.elapsed();
    for ((pid, addr, dir), (task, samples)) in watched.iter().zip(samplers) {
        task.abort();
        let samples = samples.lock().unwrap().clone();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        let open = open_gauge(addr).await;
        println!("daemon pid {pid}: assignd_open_chats sums to {open} at the end");
        report(chats, elapsed, &samples, status(*pid), fds, &sandbox, dir);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    if let Some((d, _)) = &mut other {
        let _ = d.kill();
        let _ = d.wait();
    }
}

/// `assignd run` in `dir` on the database `url`, its listener taking
/// signed webhooks.
async fn spawn(dir: &Path, sandbox: &Sandbox, url: &str) -> (std::process::Child, String) {
    std::fs::write(dir.join("webhook-key"), format!("{KEY}\n")).unwrap();
    let refresh = std::env::var("SOAK_REFRESH").unwrap_or_else(|_| "2s".into());
    let sections = format!(
        "[database]\nurl = \"{url}\"\n\n[load]\nrefresh = \"{refresh}\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\nwebhook_key_file = \"webhook-key\"\n"
    );
    support::spawn_configured(dir, sandbox, (RULES, &sections), 600_000).await
}

/// The sum of the daemon's `assignd_open_chats` gauges: its open chats as
/// it counts them in memory.
async fn open_gauge(addr: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return f64::NAN;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("assignd_open_chats{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// The sender and the closer share the chats still open.
#[derive(Clone)]
struct Soak {
    addr: String,
    sandbox: Arc<Sandbox>,
    http: reqwest::Client,
    sent: Arc<AtomicI64>,
    open: Arc<std::sync::Mutex<HashSet<i64>>>,
}

impl Soak {
    fn new(addr: String, sandbox: Arc<Sandbox>) -> Self {
        Self {
            addr,
            sandbox,
            http: reqwest::Client::new(),
            sent: Arc::default(),
            open: Arc::default(),
        }
    }

    fn outstanding(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    /// Sends `chat.new` for chats 1..=n, paced by the free seats.
    async fn send_all(&self, n: i64) {
        let window = env_or("SOAK_WINDOW", 12) as usize;
        let race = env_or("SOAK_RACE", 25);
        let every = Duration::from_secs_f64(1.0 / env_or("SOAK_RATE", 400) as f64);
        let mut next = Instant::now();
        for chat in 1..=n {
            while self.outstanding() >= window {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep_until(next.into()).await;
            next += every;
            self.open.lock().unwrap().insert(chat);
            self.webhook("chat.new", chat).await;
            self.sent.store(chat, Ordering::Relaxed);
            if chat % race == 0 {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis((chat % 7) as u64)).await;
                    me.close(chat).await;
                });
            }
        }
    }

    /// Closes each chat the sandbox shows assigned, as its agent would.
    async fn close_assigned(self) {
        loop {
            let open: Vec<i64> = self.open.lock().unwrap().iter().copied().collect();
            for chat in open {
                if self.sandbox.assignee(chat).is_some() {
                    self.close(chat).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn close(&self, chat: i64) {
        if self.open.lock().unwrap().remove(&chat) && self.sandbox.close_chat(chat) {
            self.webhook("chat.closed", chat).await;
        }
    }

    /// Waits until every chat was closed, or `limit` passed.
    async fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.outstanding() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn webhook(&self, event: &str, chat: i64) {
        let body = serde_json::to_vec(&serde_json::json!({
            "event": event, "id": format!("soak-{event}-{chat}"),
            "eventData": {"id": chat, "status": if event == "chat.new" { "new" } else { "closed" },
                "assignee": null,
                "customer": {"id": chat, "email": format!("c{chat}@example.com")},
                "department": {"id": 1, "name": "Support"}}
        }))
        .unwrap();
        let signature = assignd::http::webhook_signature(KEY.as_bytes(), &body);
        let url = format!("http://{}/webhooks/helpcrunch", self.addr);
        for _ in 0..50 {
            let sent = self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-HelpCrunch-Signature", &signature)
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{event} for chat {chat} never accepted");
    }
}

fn status(pid: u32) -> Sample {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        text.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        chats: 0,
        rss: kib("VmRSS:"),
        anon: kib("RssAnon:"),
        file: kib("RssFile:"),
    }
}

/// Samples the daemon's memory every 500 ms into `into`, until aborted.
async fn sample(pid: u32, sent: Arc<AtomicI64>, into: Arc<std::sync::Mutex<Vec<Sample>>>) {
    loop {
        let s = Sample {
            chats: sent.load(Ordering::Relaxed),
            ..status(pid)
        };
        into.lock().unwrap().push(s);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

fn report(
    chats: i64,
    elapsed: Duration,
    samples: &[Sample],
    end: Sample,
    fds: usize,
    sandbox: &Sandbox,
    dir: &Path,
) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let half: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.chats > chats / 2)
        .map(|s| (s.chats as f64 / 1000.0, s.rss as f64))
        .collect();
    let anon: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.chats > chats / 2)
        .map(|s| (s.chats as f64 / 1000.0, s.anon as f64))
        .collect();
    let start = samples.first().copied().unwrap_or(end);
    let peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let assigned: HashSet<i64> = sandbox
        .assign_calls()
        .into_iter()
        .filter(|c| c.2 == 200)
        .map(|c| c.0)
        .collect();
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    println!(
        "soak: {chats} chats in {elapsed:.1?} ({:.0}/s), {} assigned, {} samples, {} ERROR lines",
        chats as f64 / elapsed.as_secs_f64(),
        assigned.len(),
        samples.len(),
        log.matches(" ERROR ").count()
    );
    println!(
        "  RSS: start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB (anonymous {:.1} -> {:.1}, file-backed {:.1} -> {:.1}); fds at the end {fds}",
        mib(start.rss),
        mib(peak),
        mib(end.rss),
        mib(start.anon),
        mib(end.anon),
        mib(start.file),
        mib(end.file)
    );
    let tenths: Vec<String> = (1..=10)
        .filter_map(|k| {
            let at = chats * k / 10;
            let s = samples.iter().find(|s| s.chats >= at)?;
            Some(format!("{:.1}k {:.1}", at as f64 / 1000.0, mib(s.rss)))
        })
        .collect();
    println!("  RSS (MiB) by chats sent: {}", tenths.join(", "));
    println!(
        "  slope over the second half: RSS {:.1} KiB per 1,000 chats (anonymous {:.1})",
        slope(&half),
        slope(&anon)
    );
}
