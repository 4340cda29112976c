//! The operator kit in `contrib/`: the Prometheus alerting rules pass
//! `promtool check rules` and their unit tests, every alert has its runbook
//! section in docs/alerts.md, the Grafana dashboard parses, has a query
//! in every panel, and its queries are valid PromQL, and the reverse-proxy
//! configs proxy what the internet needs and nothing else (tests/proxy.rs
//! runs the nginx one for real).
//!
//! promtool (Debian: `apt-get install prometheus`) must be on PATH; without
//! it the promtool tests say SKIPPED on stderr, or fail when CI=true.
//! Caddy is validated when `caddy` is on PATH and skipped otherwise, even
//! under CI: Debian stable's main archive does not reliably carry it.

#[path = "support/dashboard.rs"]
mod dashboard;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dashboard::{dashboard, dashboard_exprs, panels, substitute};

const RULES: &str = "contrib/prometheus/assignd.rules.yml";
const RULE_TESTS: &str = "assignd.rules.test.yml";
const RUNBOOK: &str = "docs/alerts.md";

/// The alerts operators were promised; deleting one must be deliberate.
const ALERTS: [&str; 8] = [
    "AssigndBacklogOld",
    "AssigndDeadLettersGrowing",
    "AssigndRateLimited",
    "AssigndAuthFailing",
    "AssigndNotReady",
    "AssigndNotAssigning",
    "AssigndDatabaseReadOnly",
    "AssigndDown",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Whether promtool can run: missing, it fails the test under CI=true
/// and says SKIPPED loudly otherwise.
fn have_promtool() -> bool {
    tools::tool("promtool", "Debian package prometheus").is_some()
}

/// Runs `promtool args...` in `dir` and fails, with its output, unless it
/// exits 0.
fn promtool(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e}"));
    assert!(
        out.status.success(),
        "promtool {args:?} in {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    out
}

/// The `alert:` names of a rules file, in order, repeats kept.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().trim_matches('"').to_string())
        .collect()
}

/// The anchors after `#` of every `runbook_url:` of a rules file.
fn runbook_anchors(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("runbook_url:"))
        .map(|url| {
            let url = url.trim().trim_matches('"');
            let (_, anchor) = url
                .split_once('#')
                .unwrap_or_else(|| panic!("no anchor: {url}"));
            anchor.to_string()
        })
        .collect()
}

/// The `## ` headings of a Markdown text.
fn headings(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_string())
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, other
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    if have_promtool() {
        promtool(&root(), &["check", "rules", RULES]);
    }
}

#[test]
fn alert_rules_unit_tests_pass() {
    if have_promtool() {
        let out = promtool(
            &root().join("contrib/prometheus"),
            &["test", "rules", RULE_TESTS],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("SUCCESS"), "{stdout}");
    }
}

#[test]
fn every_promised_alert_is_defined() {
    let names: BTreeSet<String> = alert_names(&read(RULES)).into_iter().collect();
    for alert in ALERTS {
        assert!(names.contains(alert), "{RULES} lost the alert {alert}");
    }
}

#[test]
fn every_alert_has_a_runbook_section() {
    let rules = read(RULES);
    let sections = headings(&read(RUNBOOK));
    for alert in alert_names(&rules) {
        assert!(
            sections.contains(&alert),
            "{RUNBOOK} has no `## {alert}` section"
        );
    }
    let anchors: BTreeSet<String> = sections.iter().map(|h| anchor(h)).collect();
    for target in runbook_anchors(&rules) {
        assert!(
            anchors.contains(&target),
            "runbook_url #{target}: no such section in {RUNBOOK}"
        );
    }
    assert_eq!(
        runbook_anchors(&rules).len(),
        alert_names(&rules).len(),
        "an alert without runbook_url"
    );
}

#[test]
fn every_dashboard_panel_has_a_query() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    assert!(all.len() >= 12, "{} panels", all.len());
    for p in all.into_iter().filter(|p| p["type"] != "row") {
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .filter(|e| !e.trim().is_empty())
            .collect();
        assert!(
            !exprs.is_empty(),
            "panel {:?} has no target with an expr",
            p["title"]
        );
    }
}

#[test]
fn dashboard_uses_only_known_variables() {
    let dashboard = dashboard();
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    for (title, expr) in dashboard_exprs(&dashboard) {
        assert!(expr.contains(r#"instance=~"$instance""#), "{title}: {expr}");
        let bare = substitute(&expr);
        assert!(!bare.contains('$'), "{title}: unknown variable in {expr}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    if !have_promtool() {
        return;
    }
    // promtool parses the expressions of a rules file: one recording rule
    // per dashboard query.
    let rules: String = dashboard_exprs(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            format!(
                "      - record: dashboard:query_{i}\n        expr: {:?}\n",
                substitute(expr)
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    promtool(dir.path(), &["check", "rules", "dashboard.rules.yml"]);
}

/// The paths a reverse-proxy config lets through, in the order written.
fn proxied_paths(config: &str) -> Vec<String> {
    config
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            l.strip_prefix("location")
                .or_else(|| l.strip_prefix("@public path"))
        })
        .flat_map(|rest| rest.split_whitespace().map(str::to_string))
        .filter(|w| w.starts_with('/'))
        .collect()
}

#[test]
fn the_proxy_configs_pass_webhooks_console_and_health_only() {
    for file in ["contrib/nginx/assignd.conf", "contrib/caddy/Caddyfile"] {
        let text = read(file);
        let paths = proxied_paths(&text);
        for needed in ["/webhooks/helpcrunch", "/console/", "/healthz"] {
            assert!(
                paths.iter().any(|p| p.starts_with(needed)),
                "{file} does not pass {needed}: {paths:?}"
            );
        }
        for inside in ["/metrics", "/readyz", "/v1/enqueue"] {
            assert!(
                !paths.iter().any(|p| p.starts_with(inside)),
                "{file} exposes {inside}"
            );
        }
        // The daemon's default listener, on loopback.
        assert!(text.contains("127.0.0.1:9187"), "{file}");
    }
}

#[test]
fn the_nginx_config_limits_what_reaches_the_daemon() {
    let text = read("contrib/nginx/assignd.conf");
    for directive in [
        "client_max_body_size 1m;",
        "client_header_timeout ",
        "client_body_timeout ",
        "send_timeout ",
        "limit_conn_zone $binary_remote_addr",
        "limit_req_zone $binary_remote_addr",
        "limit_conn assignd_conn",
        "limit_req zone=",
        "proxy_request_buffering on;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $host;",
    ] {
        assert!(
            text.contains(directive),
            "contrib/nginx/assignd.conf lacks `{directive}`"
        );
    }
}

#[test]
fn the_caddyfile_is_valid_when_caddy_is_installed() {
    let Some(caddy) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("caddy"))
            .find(|p| p.is_file())
    }) else {
        // Not tools::tool: Debian stable's main archive does not reliably
        // carry Caddy, so CI does not require it.
        eprintln!(
            "\n*** SKIPPED: `caddy` not found; contrib/caddy/Caddyfile was not validated ***\n"
        );
        return;
    };
    let version = Command::new(&caddy).arg("version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let mut text = read("contrib/caddy/Caddyfile");
    if before_request_buffers(&version) {
        // The older spelling the file's comment gives for these versions.
        let old = "buffer_requests\n\t\t\tmax_buffer_size 1MiB";
        text = text.replace("request_buffers 1MiB", old);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(caddy)
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "caddy validate: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `caddy version` names a Caddy older than 2.6.4, which spells
/// request buffering `buffer_requests` + `max_buffer_size`.
fn before_request_buffers(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    (major, minor, patch) < (2, 6, 4)
}
