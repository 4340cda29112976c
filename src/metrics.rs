//! Prometheus metrics (`GET /metrics`), all prefixed `assignd_`.
//!
//! One registry per process, like Prometheus' own clients: counters and
//! histograms move where things happen; gauges of state (queue rows, open
//! chats) are read when scraped.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub outcomes: Family<Labels, Counter>,
    pub api_calls: Family<Labels, Counter>,
    pub rate_limited: Counter,
    pub limiter_wait: Histogram,
    pub decision: Histogram,
    pub enqueue_to_assigned: Histogram,
    pub reload_failures: Counter,
    pub webhooks: Family<Labels, Counter>,
    pub queue_rows: Family<Labels, Gauge>,
    pub open_chats: Family<Labels, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("assignd");
        let outcomes = Family::<Labels, Counter>::default();
        registry.register(
            "outcomes",
            "Outcomes recorded, by result and rule",
            outcomes.clone(),
        );
        let api_calls = Family::<Labels, Counter>::default();
        registry.register(
            "api_calls",
            "HelpCrunch calls, by endpoint and status",
            api_calls.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "api_rate_limited",
            "HelpCrunch answers 429",
            rate_limited.clone(),
        );
        let limiter_wait = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register(
            "limiter_wait_seconds",
            "Time calls waited for the rate limiter",
            limiter_wait.clone(),
        );
        let decision = Histogram::new(exponential_buckets(0.000_000_5, 4.0, 10));
        registry.register(
            "decision_seconds",
            "Time to decide one chat",
            decision.clone(),
        );
        let enqueue_to_assigned = Histogram::new(exponential_buckets(0.005, 3.0, 12));
        registry.register(
            "enqueue_to_assigned_seconds",
            "From enqueue to a successful assignment",
            enqueue_to_assigned.clone(),
        );
        let reload_failures = Counter::default();
        registry.register(
            "rules_reload_failures",
            "Reloads that kept the old config and rules",
            reload_failures.clone(),
        );
        let webhooks = Family::<Labels, Counter>::default();
        registry.register("webhooks", "Webhook requests, by outcome", webhooks.clone());
        let queue_rows = Family::<Labels, Gauge>::default();
        registry.register("queue_rows", "Queue rows by state", queue_rows.clone());
        let open_chats = Family::<Labels, Gauge>::default();
        registry.register(
            "open_chats",
            "Open chats per agent, as assignd counts them",
            open_chats.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            outcomes,
            api_calls,
            rate_limited,
            limiter_wait,
            decision,
            enqueue_to_assigned,
            reload_failures,
            webhooks,
            queue_rows,
            open_chats,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
