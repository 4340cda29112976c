//! Prometheus metrics (`GET /metrics`), all prefixed `assignd_`.
//!
//! One registry per process, like Prometheus' own clients: counters and
//! histograms move where things happen; gauges of state (queue rows, the
//! oldest waiting row, open chats, readiness) are read when scraped.
//!
//! The registry encodes OpenMetrics; a scraper that does not ask for it
//! (promtool, curl, older Prometheus) gets the same families in the
//! Prometheus text format 0.0.4, which has no `info` type, no `# EOF` and
//! names a counter's family with its `_total`: see [`Format`].

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

use crate::store::FirstFact;

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub outcomes: Family<Labels, Counter>,
    pub api_calls: Family<Labels, Counter>,
    pub rate_limited: Counter,
    pub queue_reads: Family<Labels, Counter>,
    pub limiter_wait: Histogram,
    pub decision: Histogram,
    pub enqueue_to_assigned: Histogram,
    pub first_reply: Histogram,
    pub time_to_assignment: Histogram,
    pub reload_failures: Counter,
    pub webhooks: Family<Labels, Counter>,
    pub http_refused: Family<Labels, Counter>,
    pub queue_rows: Family<Labels, Gauge>,
    pub oldest_pending: Gauge<f64, AtomicU64>,
    pub open_chats: Family<Labels, Gauge>,
    pub ready: Gauge,
    pub database_read_only: Counter,
    pub database_promotions: Counter,
}

/// The exposition format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what promtool and curl read.
    Text,
    /// `application/openmetrics-text; version=1.0.0`, when asked for.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics if the scraper's `Accept` names it (with a non-zero
    /// quality), else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let asks = |range: &str| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        };
        match accept {
            Some(a) if a.split(',').any(asks) => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("assignd");
        let buckets = |start, factor, n| Histogram::new(exponential_buckets(start, factor, n));
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("ASSIGND_COMMIT")),
        ]);
        r.register("build", "Build information", build);
        Self {
            outcomes: r.add(
                "outcomes",
                "Outcomes recorded, by result and rule",
                Family::default(),
            ),
            api_calls: r.add(
                "api_calls",
                "HelpCrunch calls, by endpoint and status",
                Family::default(),
            ),
            rate_limited: r.add(
                "api_rate_limited",
                "HelpCrunch answers 429",
                Counter::default(),
            ),
            queue_reads: r.add(
                "queue_reads",
                "The claim loop's reads of the queue: when the next row is due (due), claims (claim)",
                Family::default(),
            ),
            limiter_wait: r.add(
                "limiter_wait_seconds",
                "Time calls waited for the rate limiter",
                buckets(0.001, 4.0, 10),
            ),
            decision: r.add(
                "decision_seconds",
                "Time to decide one chat",
                buckets(0.000_000_5, 4.0, 10),
            ),
            enqueue_to_assigned: r.add(
                "enqueue_to_assigned_seconds",
                "From enqueue to a successful assignment",
                buckets(0.005, 3.0, 12),
            ),
            first_reply: r.add(
                "first_reply_seconds",
                "From a chat's arrival to its first agent reply (message.chat.agent)",
                buckets(5.0, 2.0, 15),
            ),
            time_to_assignment: r.add(
                "time_to_assignment_seconds",
                "From a chat's arrival to its first assignment by someone other than assignd (chat.assigned); assignd's own: enqueue_to_assigned_seconds",
                buckets(5.0, 2.0, 15),
            ),
            reload_failures: r.add(
                "rules_reload_failures",
                "Reloads that kept the old config and rules",
                Counter::default(),
            ),
            webhooks: r.add(
                "webhooks",
                "Webhook requests, by outcome: accepted, unauthorized, bad_request, stale (older than 7 days), failed",
                Family::default(),
            ),
            http_refused: r.add(
                "http_refused",
                "Connections and requests the listener turned away, by reason: per_client (a client over its share of connections), evicted (closed to make room for another client), full (no room could be made), forwarded_per_client (a client behind a trusted proxy over its share of requests)",
                Family::default(),
            ),
            queue_rows: r.add("queue_rows", "Queue rows by state", Family::default()),
            oldest_pending: r.add(
                "queue_oldest_pending_seconds",
                "Age of the oldest unfinished (pending or leased) queue row, else 0",
                Gauge::default(),
            ),
            open_chats: r.add(
                "open_chats",
                "Open chats per agent, as assignd counts them",
                Family::default(),
            ),
            ready: r.add(
                "ready",
                "1 when ready (as /readyz), else 0",
                Gauge::default(),
            ),
            database_read_only: r.add(
                "database_read_only",
                "Statements the database refused as read-only (SQLSTATE 25006) and new connections refused for reaching a read-only server or an old primary: after a failover, until every connection reaches the new primary",
                Counter::default(),
            ),
            database_promotions: r.add(
                "database_promotions",
                "Times a new connection found the database on a newer timeline: a replica was promoted",
                Counter::default(),
            ),
            registry: r,
        }
    }

    /// Observes a chat's first reply, or its first assignment when someone
    /// else made it (assignd's own are timed when they settle).
    pub fn observe_first(&self, fact: &FirstFact) {
        match *fact {
            FirstFact::Reply(after) => self.first_reply.observe(after.as_secs_f64()),
            FirstFact::Assignment {
                after,
                by_assignd: false,
            } => self.time_to_assignment.observe(after.as_secs_f64()),
            FirstFact::Assignment { .. } => {}
        }
    }

    /// The exposition body in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Text => to_text(&out),
        }
    }
}

trait Add {
    /// Registers `metric` (a handle: clones share its value) and returns it.
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M;
}

impl Add for Registry {
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.register(name, help, metric.clone());
        metric
    }
}

/// OpenMetrics text to the Prometheus text format 0.0.4: the samples are
/// the same; the family headers of counters and infos take their samples'
/// names, infos become gauges, and `# UNIT` and `# EOF` go.
fn to_text(open_metrics: &str) -> String {
    let types: HashMap<&str, &str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?.split_once(' ')?)));
        match header {
            _ if line == "# EOF" || line.starts_with("# UNIT ") => continue,
            Some((prefix, (family, rest))) => {
                let kind = types.get(family).copied().unwrap_or("unknown");
                let (name, rest) = match (kind, prefix) {
                    ("counter", _) => (format!("{family}_total"), rest),
                    ("info", "# TYPE ") => (format!("{family}_info"), "gauge"),
                    ("info", _) => (format!("{family}_info"), rest),
                    ("unknown", "# TYPE ") => (family.to_string(), "untyped"),
                    _ => (family.to_string(), rest),
                };
                out.push_str(&format!("{prefix}{name} {rest}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_METRICS: &str = "\
# HELP assignd_outcomes Outcomes recorded.
# TYPE assignd_outcomes counter
assignd_outcomes_total{result=\"assigned\"} 3
# HELP assignd_decision_seconds Time to decide.
# TYPE assignd_decision_seconds histogram
# UNIT assignd_decision_seconds seconds
assignd_decision_seconds_sum 0.5
assignd_decision_seconds_count 2
assignd_decision_seconds_bucket{le=\"+Inf\"} 2
# HELP assignd_build Build information.
# TYPE assignd_build info
assignd_build_info{version=\"0.1.0\"} 1
# EOF
";

    #[test]
    fn text_format_names_families_by_their_samples() {
        let text = to_text(OPEN_METRICS);
        assert!(text.contains("# HELP assignd_outcomes_total Outcomes recorded.\n"));
        assert!(text.contains("# TYPE assignd_outcomes_total counter\n"));
        assert!(text.contains("# TYPE assignd_build_info gauge\n"));
        assert!(text.contains("assignd_build_info{version=\"0.1.0\"} 1\n"));
        assert!(text.contains("# TYPE assignd_decision_seconds histogram\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT") && !text.contains(" info\n"));
    }

    #[test]
    fn open_metrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        let refused = "application/openmetrics-text;q=0, text/plain";
        assert_eq!(Format::from_accept(Some(refused)), Format::Text);
    }

    #[test]
    fn the_live_registry_renders_both_formats() {
        let m = metrics();
        let om = m.render(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = m.render(Format::Text);
        assert!(text.contains("# TYPE assignd_build_info gauge"), "{text}");
        assert!(text.contains("commit=\""), "{text}");
        assert!(!text.contains("# EOF"));
    }
}
