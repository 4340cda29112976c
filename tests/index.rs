//! The rule index skips only rules a chat cannot match: for any rule set
//! and chat, the decision with the index equals the one that walks and
//! reports every rule.

use std::path::PathBuf;

use assignd::rules::context::Text;
use assignd::rules::{ChatContext, Observer, RoutingState, decide, decide_observed, load_sources};
use jiff::Timestamp;
use proptest::prelude::*;

/// Sees every rule, so the index is not used.
struct Walk;
impl Observer for Walk {}

/// Conditions built from a small alphabet, so chats often match them.
fn condition() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "sales", "Support", "vip", "ann", "ORDER #5", "ß", "k", "s",
    ]);
    (0..12usize, word.clone(), word).prop_map(|(kind, a, b)| match kind {
        0 => format!(r#"department = "{a}""#),
        1 => format!(r#"department = ["{a}", "{b}"]"#),
        2 => format!(r#"customer.email = "*{a}""#),
        3 => format!(r#"customer.email = "{a}*""#),
        4 => format!(r#"customer.name = {{ contains = "{a}" }}"#),
        5 => format!(r#"message = {{ regex = "(?i){a}\\d*" }}"#),
        6 => format!(r#"message = {{ regex = "({a}|{b})s?" }}"#),
        7 => format!(r#"attr.tier = ["{a}", "{b}"]"#),
        8 => format!(r#"attr.tier = {{ contains = "{a}" }}"#),
        9 => format!(r#"customer.name = ["{a}*", {{ contains = "{b}" }}]"#),
        10 => r#"customer.email = { exists = true }"#.to_string(),
        _ => format!(r#"message = "{a}""#),
    })
}

fn rule_set() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::collection::vec(condition(), 0..3), 1..20).prop_map(|rules| {
        let mut text = String::from("[agents]\na = { id = 1 }\nb = { id = 2 }\n");
        for (i, conditions) in rules.iter().enumerate() {
            // One condition per key, as TOML allows.
            let mut keys = Vec::new();
            let conditions: Vec<&String> = conditions
                .iter()
                .filter(|c| {
                    let key = c.split(" = ").next().unwrap_or_default();
                    let fresh = !keys.contains(&key);
                    keys.push(key);
                    fresh
                })
                .collect();
            let conditions: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
            let target = if i % 2 == 0 { "a" } else { "b" };
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\nmatch = {{ {} }}\nassign = \"{target}\"\n",
                conditions.join(", ")
            ));
        }
        text
    })
}

fn chat() -> impl Strategy<Value = ChatContext> {
    let value = prop::option::of(prop::sample::select(vec![
        "Sales",
        "support",
        "VIP ann",
        "ann@vip",
        "Order #512",
        "STRASSE",
        "straße",
        "\u{212A}",
        "ſ",
        "sales and support",
        "",
    ]));
    (
        value.clone(),
        value.clone(),
        value.clone(),
        value.clone(),
        value,
    )
        .prop_map(|(department, email, name, message, tier)| {
            let text = |v: Option<&str>| v.map(Text::new);
            let mut chat = ChatContext {
                chat_id: assignd::domain::ChatId(1),
                department_name: text(department),
                customer_email: text(email),
                customer_name: text(name),
                message: text(message),
                ..ChatContext::default()
            };
            if let Some(t) = tier {
                chat.attrs.insert("tier".into(), vec![Text::new(t)]);
            }
            chat
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn the_index_never_changes_a_decision(text in rule_set(), chat in chat()) {
        let rules = load_sources(&[(PathBuf::from("index.toml"), text.clone())]).unwrap();
        let state = RoutingState::default();
        let now: Timestamp = "2026-06-03T09:00:00Z".parse().unwrap();
        let fast = decide(&rules, &chat, &state, now);
        let walked = decide_observed(&rules, &chat, &state, now, &mut Walk);
        prop_assert_eq!(fast, walked, "rules:\n{}", text);
    }
}
