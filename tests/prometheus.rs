//! `/metrics` against the real consumers: `promtool check metrics` on the
//! live body, and a real `prometheus` server that scrapes a daemon which
//! did real work (its own assignments, and an account whose people answer
//! and assign by webhook), loads the shipped alert rules, and answers every
//! query of the shipped Grafana dashboard with data; the dashboard charts
//! every histogram the daemon exposes.

mod common;
#[path = "support/dashboard.rs"]
mod dashboard;
#[path = "support/tools.rs"]
mod tools;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assignd::sandbox::People;
use common::*;
use serde_json::Value;

const CHATS: i64 = 12;
/// What a Prometheus 2.x server sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const WEBHOOK_KEY: &str = "whk-prometheus";

/// [`THREE_AGENTS`], but the chats of `people.example`'s customers are
/// left to the account's own routing.
const RULES: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }
carol = { id = 6694 }

[pools.support]
agents = ["alice", "bob", "carol"]
strategy = "round-robin"

[[rule]]
name = "the account's own"
match = { customer.email = "*@people.example" }
assign = "none"

[[rule]]
name = "everything"
assign = "pool:support"
"#;

/// The chat the account's routing assigns.
const THEIRS: i64 = 900;
/// Chats created while Prometheus scrapes, besides [`THEIRS`].
const NEW_CHATS: i64 = 4;

/// A daemon (a real child process) that has assigned [`CHATS`] chats, and
/// the address of its listener. The account's people answer every chat
/// they are given (first replies) and its routing takes the chats of
/// `people.example`'s customers, which assignd leaves alone; webhooks tell
/// the daemon both.
async fn busy_daemon() -> (TestApp, Daemon, String) {
    let app = TestApp::builder().rules(RULES).listen().migrated().await;
    std::fs::write(app.dir.path().join("webhook-key"), WEBHOOK_KEY).unwrap();
    app.edit_config(|c| c.replace("[http]\n", "[http]\nwebhook_key_file = \"webhook-key\"\n"));
    let daemon = app.spawn_guarded("daemon.log");
    let addr = app.listener_addr("daemon.log").await;
    app.sandbox
        .send_webhooks_to(format!("http://{addr}/webhooks/helpcrunch"), WEBHOOK_KEY);
    let people = People {
        seed: 11,
        assign_share: 1.0,
        assign_after: Duration::from_millis(200),
        reply_after: Some(Duration::from_millis(100)),
        ..People::default()
    };
    app.sandbox.set_people(Some(people)).unwrap();
    app.insert_raw(1..=CHATS).await;
    app.wait_drained(Duration::from_secs(30)).await;
    (app, daemon, addr)
}

/// New chats while Prometheus scrapes, so that rates have samples to
/// differ: [`NEW_CHATS`] for assignd, and one ([`THEIRS`]) the account's
/// routing assigns; then waits for a first reply in every chat.
async fn customer_traffic(app: &TestApp) {
    for id in THEIRS + 1..=THEIRS + NEW_CHATS {
        app.sandbox.create_chat(id, |c| c.assignee = None);
    }
    app.sandbox.create_chat(THEIRS, |c| {
        c.customer_email = "someone@people.example".into();
        c.assignee = None;
    });
    let every = (CHATS + NEW_CHATS + 1) as usize;
    let replied = || app.sandbox.first_replies().len() == every;
    wait_for(
        "a first reply in every chat",
        Duration::from_secs(30),
        replied,
    )
    .await;
}

async fn get_metrics(addr: &str, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_checks_the_live_metrics_clean() {
    let Some(promtool) = tools::tool("promtool", "Debian package prometheus") else {
        return;
    };
    let (_app, _daemon, addr) = busy_daemon().await;
    let (content_type, body) = get_metrics(&addr, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\nthe body:\n{body}",
        out.status
    );
    for family in [
        "assignd_queue_oldest_pending_seconds",
        "assignd_build_info{",
        "assignd_ready 1",
    ] {
        assert!(body.contains(family), "no {family} in\n{body}");
    }

    let (content_type, body) = get_metrics(&addr, Some(PROMETHEUS_ACCEPT)).await;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

/// A `prometheus` server on a free loopback port, killed when dropped.
struct PrometheusServer {
    _child: KillOnDrop,
    base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Starts `prometheus` scraping `target` every second, with the shipped
/// alert rules loaded.
fn start_prometheus(binary: &Path, target: &str) -> PrometheusServer {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo("contrib/prometheus/assignd.rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: assignd\n    static_configs:\n      - targets: ['{target}']\n",
        rules.display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    PrometheusServer {
        _child: KillOnDrop(child),
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl PrometheusServer {
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The API's `data` for GET `path` with `query`, or why not.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        match body["status"].as_str() {
            Some("success") => Ok(body["data"].clone()),
            _ => Err(body.to_string()),
        }
    }

    /// The instant vector of `expr`, as (labels, value) pairs.
    async fn query(&self, expr: &str) -> Result<Vec<(Value, f64)>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        let series = data["result"].as_array().cloned().unwrap_or_default();
        Ok(series
            .into_iter()
            .map(|s| {
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (s["metric"].clone(), value.unwrap_or(f64::NAN))
            })
            .collect())
    }

    /// Waits until `expr` returns a series whose value satisfies `good`.
    async fn wait_for(&self, expr: &str, good: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Err("not asked yet".to_string());
        while Instant::now() < deadline {
            last = self.query(expr).await;
            if let Ok(series) = &last
                && let Some((_, v)) = series.iter().find(|(_, v)| good(*v))
            {
                return *v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "`{expr}` never as expected; last answer {last:?}\nprometheus log:\n{}",
            self.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_daemon_and_the_dashboard_has_data() {
    let Some(prometheus) = tools::tool("prometheus", "Debian package prometheus") else {
        return;
    };
    let (app, _daemon, addr) = busy_daemon().await;
    let server = start_prometheus(&prometheus, &addr);
    server.wait_for("up{job=\"assignd\"}", |v| v == 1.0).await;
    let assigned = "sum(assignd_outcomes_total{result=\"assigned\"})";
    server.wait_for(assigned, |v| v == CHATS as f64).await;
    customer_traffic(&app).await;
    let n = server
        .wait_for(assigned, |v| v == (CHATS + NEW_CHATS) as f64)
        .await;
    println!("prometheus sees {n} assigned outcomes");
    server.wait_for("assignd_ready", |v| v == 1.0).await;
    let replies = "sum(assignd_first_reply_seconds_count)";
    let every = (CHATS + NEW_CHATS + 1) as f64;
    server.wait_for(replies, |v| v == every).await;
    let theirs = "sum(assignd_time_to_assignment_seconds_count)";
    server.wait_for(theirs, |v| v == 1.0).await;
    server
        .wait_for("count(assignd_build_info{commit!=\"\"})", |v| v == 1.0)
        .await;
    // Rates over the dashboard's 1m windows need a few scrapes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let queries: Vec<(String, String)> = dashboard::dashboard_exprs(&dashboard::dashboard())
        .into_iter()
        .map(|(title, expr)| (title, dashboard::substitute(&expr)))
        .collect();
    assert!(queries.len() >= 10, "the dashboard's queries: {queries:?}");
    println!("{} dashboard queries evaluated", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in queries {
        // A quantile of rates that did not move is NaN: no data either.
        match server.query(&expr).await {
            Ok(series) if !series.is_empty() && series.iter().all(|s| !s.1.is_nan()) => {}
            other => empty.push(format!("{title}: `{expr}` -> {other:?}")),
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    // Every histogram the daemon exposes is charted.
    let (_, body) = get_metrics(&addr, None).await;
    let exprs = dashboard::dashboard_exprs(&dashboard::dashboard());
    let histograms: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    assert!(histograms.len() >= 5, "{histograms:?}");
    for name in histograms {
        let bucket = format!("{name}_bucket");
        let charted = exprs.iter().any(|(_, e)| e.contains(&bucket));
        assert!(charted, "no dashboard panel charts {name}");
    }
    let groups = server.api("/api/v1/rules", &[]).await.unwrap();
    let rules: Vec<&Value> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(!rules.is_empty(), "the shipped rules are loaded: {groups}");
    for rule in rules {
        assert_eq!(rule["health"], "ok", "rule evaluates: {rule}");
    }
}
