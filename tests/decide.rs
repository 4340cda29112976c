//! The pure decision function, through the public API: same inputs, same answer.

use std::path::PathBuf;

use assignd::helpcrunch::types::Chat;
use assignd::rules::{self, ChatContext, RoutingState, Rules, Verdict, decide};
use jiff::Timestamp;

const RULES: &str = r#"
timezone = "Europe/Kyiv"

[agents]
alice = { id = 1, skills = ["billing"] }
bob   = { id = 2, skills = ["billing", "uk"] }
carol = { id = 3, schedule = "early" }
dave  = { id = 4 }

[schedules.office]
hours = { mon-fri = "09:00-18:00" }

[schedules.early]
hours = { mon-fri = "06:00-15:00" }

[schedules.night]
hours = { all = "22:00-06:00" }

[pools.billing]
agents = ["alice", "bob"]
when_full = "next"

[pools.day]
agents = ["alice", "bob", "carol"]

[pools.night]
agents = ["dave"]

[[rule]]
name = "vip"
match = { customer.email = "*@bigcorp.com" }
assign = "alice"

[[rule]]
name = "ukrainian billing"
match = { department = "Billing", attr.language = ["uk", "ru"] }
assign = "pool:billing"
require_skills = ["uk"]

[[rule]]
name = "night"
match = { within = "night" }
assign = "pool:night"

[[rule]]
name = "office"
match = { within = "office" }
assign = "pool:day"

[[rule]]
name = "closed hours"
match = { outside = "office" }
assign = "none"
"#;

fn rules() -> Rules {
    rules::load_sources(&[(PathBuf::from("rules.toml"), RULES.to_string())]).unwrap()
}

fn chat(json: &str, attrs: serde_json::Value) -> ChatContext {
    let chat: Chat = serde_json::from_str(json).unwrap();
    chat.rules_context(attrs.as_object().unwrap())
}

fn plain() -> ChatContext {
    chat(
        r#"{"id": 1, "customer": {"id": 9, "email": "ann@example.com"}, "department": {"id": 7, "name": "Support"}}"#,
        serde_json::json!({}),
    )
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn rule_name(r: &Rules, d: &assignd::rules::Decision) -> String {
    d.rule.map(|i| r.rules[i].name.clone()).unwrap_or_default()
}

fn agent_name(r: &Rules, d: &assignd::rules::Decision) -> Option<String> {
    match d.verdict {
        Verdict::Assign { agent, .. } => Some(r.agents[agent].name.clone()),
        _ => None,
    }
}

#[test]
fn within_and_outside_on_both_sides_of_the_dst_change_in_kyiv() {
    let r = rules();
    let s = RoutingState::default();
    for (t, expect, local) in [
        // Friday before the change (UTC+2).
        ("2026-03-27T06:59:00Z", "closed hours", "Fri 08:59"),
        ("2026-03-27T07:00:00Z", "office", "Fri 09:00"),
        // Monday after the change (UTC+3): the same wall-clock times are an hour earlier in UTC.
        ("2026-03-30T05:59:00Z", "closed hours", "Mon 08:59"),
        ("2026-03-30T06:00:00Z", "office", "Mon 09:00"),
        ("2026-03-30T14:59:00Z", "office", "Mon 17:59"),
        ("2026-03-30T15:00:00Z", "closed hours", "Mon 18:00"),
        // Autumn: DST ends on Sunday 2026-10-25.
        ("2026-10-23T15:00:00Z", "closed hours", "Fri 18:00 UTC+3"),
        ("2026-10-26T15:00:00Z", "office", "Mon 17:00 UTC+2"),
    ] {
        let d = decide(&r, &plain(), &s, at(t));
        assert_eq!(rule_name(&r, &d), expect, "at {t} ({local} in Kyiv)");
    }
}

#[test]
fn night_schedule_across_midnight() {
    let r = rules();
    let s = RoutingState::default();
    for (t, expect) in [
        ("2026-06-03T18:59:00Z", "closed hours"), // 21:59 local Wednesday
        ("2026-06-03T19:00:00Z", "night"),        // 22:00
        ("2026-06-03T21:30:00Z", "night"),        // 00:30 Thursday
        ("2026-06-04T02:59:00Z", "night"),        // 05:59
        ("2026-06-04T03:00:00Z", "closed hours"), // 06:00
    ] {
        let d = decide(&r, &plain(), &s, at(t));
        assert_eq!(rule_name(&r, &d), expect, "at {t}");
    }
    let d = decide(&r, &plain(), &s, at("2026-06-03T21:30:00Z"));
    assert_eq!(agent_name(&r, &d).as_deref(), Some("dave"));
}

#[test]
fn first_matching_rule_wins_with_globs_lists_and_attrs() {
    let r = rules();
    let s = RoutingState::default();
    let noon = at("2026-06-03T09:00:00Z"); // Wednesday 12:00 local
    let [vip, billing_uk, billing_en] = [
        (
            r#"{"id": 2, "customer": {"id": 1, "email": "CEO@BigCorp.com"}, "department": {"id": 8, "name": "Billing"}}"#,
            serde_json::json!({"language": "uk"}),
        ),
        (
            r#"{"id": 3, "customer": {"id": 1, "email": "x@y.com"}, "department": {"id": 8, "name": "billing"}}"#,
            serde_json::json!({"language": "UK"}),
        ),
        (
            r#"{"id": 4, "department": {"id": 8, "name": "Billing"}}"#,
            serde_json::json!({"language": "en"}),
        ),
    ]
    .map(|(json, attrs)| chat(json, attrs));
    // The deciding rule and the agent.
    let route = |c: &ChatContext| {
        let d = decide(&r, c, &s, noon);
        (rule_name(&r, &d), agent_name(&r, &d))
    };
    assert_eq!(route(&vip), ("vip".into(), Some("alice".into())));
    // Only bob has the `uk` skill.
    assert_eq!(
        route(&billing_uk),
        ("ukrainian billing".into(), Some("bob".into()))
    );
    assert_eq!(route(&billing_en).0, "office");
}

#[test]
fn shifts_away_and_overflow_shape_the_candidates() {
    let r = rules();
    let mut s = RoutingState::default();
    // 16:00 local Wednesday: carol's early shift (06-15) is over.
    let late = at("2026-06-03T13:00:00Z");
    s.last_pick.insert("day".into(), "bob".into());
    let d = decide(&r, &plain(), &s, late);
    assert_eq!(
        agent_name(&r, &d).as_deref(),
        Some("alice"),
        "carol is off shift, so after bob comes alice"
    );
    // 10:00 local: carol is on shift and next after bob.
    let d = decide(&r, &plain(), &s, at("2026-06-03T07:00:00Z"));
    assert_eq!(agent_name(&r, &d).as_deref(), Some("carol"));

    // bob away: the uk billing chat finds no candidate and overflows (`next`) to the office rule.
    s.away.insert("bob".into(), None);
    let billing_uk = chat(
        r#"{"id": 3, "department": {"id": 8, "name": "Billing"}}"#,
        serde_json::json!({"language": "uk"}),
    );
    let d = decide(&r, &billing_uk, &s, late);
    assert_eq!(rule_name(&r, &d), "office");
    assert_eq!(agent_name(&r, &d).as_deref(), Some("alice"));

    // Everyone in the day pool unavailable: the default `wait`.
    s.away.insert("alice".into(), None);
    let d = decide(&r, &plain(), &s, late);
    assert!(matches!(d.verdict, Verdict::NoCandidate { .. }), "{d:?}");
    assert!(
        d.reason(&r)
            .contains("pool `day` has no available agent (when_full = wait)"),
        "{}",
        d.reason(&r)
    );
}

#[test]
fn same_inputs_same_decision() {
    let r = rules();
    let s = RoutingState::default();
    let t = at("2026-06-03T09:00:00Z");
    let first = decide(&r, &plain(), &s, t);
    for _ in 0..100 {
        assert_eq!(decide(&r, &plain(), &s, t), first);
    }
}

#[test]
fn check_reports_the_hours_a_routed_pool_has_nobody_on_shift() {
    let text = r#"
timezone = "Europe/Kyiv"
[agents]
carol = { id = 3, schedule = "early" }
erin  = { id = 5, schedule = "late" }
[schedules.early]
hours = { mon-fri = "06:00-15:00" }
[schedules.late]
hours = { mon-fri = "14:00-22:00" }
[pools.day]
agents = ["carol", "erin"]
[[rule]]
name = "all"
assign = "pool:day"
"#;
    let r = rules::load_sources(&[(PathBuf::from("r.toml"), text.to_string())]).unwrap();
    let monday: jiff::Zoned = "2026-06-01T00:00:00+03:00[Europe/Kyiv]".parse().unwrap();
    let gaps = r.uncovered_hours(0, &monday);
    assert_eq!(
        gaps.len(),
        5 * 8 + 2 * 24,
        "22:00-06:00 on weekdays, all weekend"
    );
    let warnings = r.warnings_for_week(&monday);
    let w = warnings
        .iter()
        .find(|w| w.starts_with("pool `day`"))
        .unwrap();
    assert!(
        w.starts_with(
            "pool `day` has no agent on shift mon 00:00-06:00, mon 22:00-24:00, tue 00:00-06:00"
        ),
        "{w}"
    );
    assert!(
        w.contains("sat 00:00-24:00, sun 00:00-24:00 (rule `all` routes to it)"),
        "{w}"
    );
}

/// TOML folds `attr.p = "1", attr.q = "2"` into one `attr` table; inside
/// `any` each of those keys is still an alternative of its own, as quoted
/// keys are, and `explain` names the nested keys that decided.
#[test]
fn dotted_keys_inside_any_are_alternatives_and_explain_names_them() {
    let text = r#"
[agents]
alice = { id = 1 }

[[rule]]
name = "either"
match = { any = { attr.p = "1", attr.q = "1", customer.email = "*@corp.example" } }
assign = "alice"

[[rule]]
name = "quoted"
match = { any = { "attr.p" = "2", "attr.q" = "2" } }
assign = "alice"

[[rule]]
name = "not both"
match = { not = { attr.p = "3", attr.q = "3" } }
assign = "alice"

[[rule]]
name = "rest"
match = {}
assign = "none"
"#;
    let r = rules::load_sources(&[(PathBuf::from("r.toml"), text.to_string())]).unwrap();
    let s = RoutingState::default();
    let noon = at("2026-06-03T09:00:00Z");
    let with = |attrs| {
        chat(
            r#"{"id": 1, "customer": {"email": "x@home.example"}}"#,
            attrs,
        )
    };
    let picked = |attrs| rule_name(&r, &decide(&r, &with(attrs), &s, noon));
    // One alternative is enough, dotted or quoted.
    assert_eq!(picked(serde_json::json!({"p": "1"})), "either");
    assert_eq!(picked(serde_json::json!({"q": "1"})), "either");
    assert_eq!(picked(serde_json::json!({"q": "2"})), "quoted");
    // `not` excludes the case where its whole table holds.
    assert_eq!(picked(serde_json::json!({"p": "3", "q": "3"})), "rest");
    assert_eq!(picked(serde_json::json!({"p": "3"})), "not both");

    let (_, e) =
        rules::explain::explain(&r, &with(serde_json::json!({"p": "3", "q": "3"})), &s, noon);
    let seen = |i: usize| e.rules[i].seen.clone().unwrap_or_default();
    assert_eq!(e.rules[0].failed_key.as_deref(), Some("any"));
    assert!(
        seen(0).contains("attr.p saw \"3\"; attr.q saw \"3\""),
        "{}",
        seen(0)
    );
    assert!(
        seen(0).contains("customer.email saw \"x@home.example\""),
        "{}",
        seen(0)
    );
    assert!(seen(1).contains("attr.q saw \"3\""), "{}", seen(1));
    assert_eq!(e.rules[2].failed_key.as_deref(), Some("not"));
    assert!(
        seen(2).contains("attr.p saw \"3\", attr.q saw \"3\""),
        "{}",
        seen(2)
    );
}
