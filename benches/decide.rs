//! The decision's cost on a 50-rule set (SPEC §11: at most 1 µs per chat).
//!
//! Run: `cargo bench --bench decide`. Results are in docs/benchmarks.md.

use std::hint::black_box;
use std::path::PathBuf;

use assignd::helpcrunch::types::Chat;
use assignd::rules::{self, ChatContext, RoutingState, Rules, decide};
use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use jiff::Timestamp;

/// 49 rules that a typical chat fails, each on a different kind of
/// condition, then a catch-all to a round-robin pool of five.
fn fifty_rules() -> Rules {
    let mut text = String::from(
        r#"
timezone = "Europe/Kyiv"
[agents]
a1 = { id = 1, skills = ["billing"] }
a2 = { id = 2 }
a3 = { id = 3, schedule = "office" }
a4 = { id = 4 }
a5 = { id = 5, max_open = 50 }
[schedules.office]
hours = { mon-fri = "09:00-18:00", sat = "10:00-14:00" }
holidays = ["2026-12-25"]
[pools.support]
agents = ["a1", "a2", "a3", "a4", "a5"]
"#,
    );
    for i in 0..49 {
        let cond = match i % 7 {
            0 => format!(r#"department = "Department {i}""#),
            1 => format!(r#"customer.email = "*@corp{i}.example""#),
            2 => format!(r#"attr.language = ["l{i}", "m{i}"]"#),
            3 => format!(r#"message = {{ regex = "(?i)order #{i}\\d+" }}"#),
            4 => format!(r#"customer.name = {{ contains = "vip {i}" }}"#),
            5 => format!(r#"department = "Sales", attr.tier = "t{i}""#),
            _ => format!(r#"status = "pending", created_with = "api{i}""#),
        };
        text.push_str(&failing_rule(i, &cond, "pool:support"));
    }
    text.push_str("[[rule]]\nname = \"everything else\"\nassign = \"pool:support\"\n");
    rules::load_sources(&[(PathBuf::from("bench.toml"), text)]).unwrap()
}

/// Rule `r{i}`, which matches on `cond` and assigns to `target`.
fn failing_rule(i: usize, cond: &str, target: &str) -> String {
    format!("[[rule]]\nname = \"r{i}\"\nmatch = {{ {cond} }}\nassign = \"{target}\"\n")
}

/// A Wednesday, noon in Kyiv: inside the office hours.
fn now() -> Timestamp {
    "2026-06-03T09:00:00Z".parse().unwrap()
}

/// Times one decision; `black_box` keeps the compiler from folding the
/// rules and the chat into the loop.
fn time_decide(
    b: &mut Bencher,
    rules: &Rules,
    chat: &ChatContext,
    state: &RoutingState,
    now: Timestamp,
) {
    b.iter(|| decide(black_box(rules), black_box(chat), state, now));
}

fn chat() -> ChatContext {
    let chat: Chat = serde_json::from_str(
        r#"{"id": 42, "status": "new", "createdWith": "customer_message", "lastMessageText": "Hello, where is my parcel?",
            "customer": {"id": 7, "name": "Ann Example", "email": "ann@example.com"},
            "department": {"id": 1, "name": "Support"}}"#,
    )
    .unwrap();
    let attrs = serde_json::json!({"language": "en", "tier": "basic"});
    chat.rules_context(attrs.as_object().unwrap())
}

fn bench(c: &mut Criterion) {
    let rules = fifty_rules();
    let chat = chat();
    let mut state = RoutingState::default();
    state.last_pick.insert("support".into(), "a2".into());
    let now = now();
    c.bench_function("decide: 50 rules, the last one matches", |b| {
        time_decide(b, &rules, &chat, &state, now)
    });
    let one = {
        let mut r = rules.clone();
        r.rules.drain(..49);
        r.reindex();
        r
    };
    c.bench_function("decide: the catch-all alone (the pool pick)", |b| {
        time_decide(b, &one, &chat, &state, now)
    });
    let vip = {
        let mut v = chat.clone();
        v.customer_email = Some(assignd::rules::context::Text::new("ann@corp1.example"));
        v
    };
    c.bench_function("decide: 50 rules, the second one matches", |b| {
        time_decide(b, &rules, &vip, &state, now)
    });
}

/// 49 failing rules of one kind of condition, then a catch-all: the cost of
/// each kind, to see where a mixed set spends its time.
fn by_kind(c: &mut Criterion) {
    let kinds = [
        ("department (exact)", r#"department = "Department X""#),
        (
            "customer.email (glob)",
            r#"customer.email = "*@corpX.example""#,
        ),
        ("attr (list)", r#"attr.language = ["lX", "mX"]"#),
        (
            "message (regex)",
            r#"message = { regex = "(?i)order #X\\d+" }"#,
        ),
        (
            "customer.name (contains)",
            r#"customer.name = { contains = "vip X" }"#,
        ),
    ];
    let chat = chat();
    let state = RoutingState::default();
    let now = now();
    let mut group = c.benchmark_group("decide: 49 failing rules of one kind");
    for (name, cond) in kinds {
        let mut text = String::from("[agents]\na = { id = 1 }\n");
        for i in 0..49 {
            text.push_str(&failing_rule(i, &cond.replace('X', &i.to_string()), "a"));
        }
        text.push_str("[[rule]]\nname = \"last\"\nassign = \"a\"\n");
        let rules = rules::load_sources(&[(PathBuf::from("kind.toml"), text)]).unwrap();
        group.bench_function(name, |b| time_decide(b, &rules, &chat, &state, now));
    }
    group.finish();
}

criterion_group!(benches, bench, by_kind);
criterion_main!(benches);
