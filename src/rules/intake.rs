//! The queue order known at intake: the rule priority a new queue row takes
//! before it is first claimed, from what the row carries.
//!
//! The decision raises a waiting row to its rule's `priority`, but only
//! once the row is claimed and decided. A row that already carries what a
//! rule reads (its `attrs`, a snapshot of the chat) can be ranked when it
//! arrives, with the same conditions the decision tests, so that a VIP chat
//! enqueued behind a backlog goes with the next call instead of behind it.

use jiff::Timestamp;

use super::matcher::{Condition, Field};
use super::{ChatContext, Rules};

/// What a new queue row carries of what the rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Its `attrs` only: the chat's own fields (department, customer,
    /// status, message, ...) are read from HelpCrunch when it is decided.
    Attrs,
    /// Everything the decision will read: a snapshot of the chat, or a
    /// daemon that never reads the chat (`fetch_chat = "never"`), whose
    /// decision sees the attributes alone as this does.
    Everything,
}

/// What a rule's `match` says of a context that may lack some fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Holds,
    Fails,
    /// It reads a field the row does not carry, and nothing it can read fails.
    Unknown,
}

/// The `priority` of the first rule whose `match` holds on `chat`, when
/// what the row carries is enough to know which rule that is: rules are
/// walked in order as the decision walks them; a rule with a condition
/// that fails on what the row carries is passed over; the first rule all
/// of whose conditions read carried fields and hold gives its priority.
/// `None` when a rule before any such one reads a field the row does not
/// carry and could still match (the decision may stop there), or when no
/// rule matches. Schedules and weekdays are read at `now`, the instant of
/// intake. Within `any` and `not`, an alternative the row carries can
/// decide alone; otherwise a condition that reads a field the row lacks
/// is unknown.
pub fn intake_priority(
    rules: &Rules,
    chat: &ChatContext,
    carried: Carried,
    now: Timestamp,
) -> Option<i64> {
    for rule in &rules.rules {
        match known(&rule.conditions, chat, carried, rules, now) {
            Known::Holds => return Some(rule.priority),
            Known::Fails => continue,
            Known::Unknown => return None,
        }
    }
    None
}

/// Whether every condition holds, as far as the carried fields tell: a
/// condition that fails decides, whatever the others would say.
fn known(
    conditions: &[Condition],
    chat: &ChatContext,
    carried: Carried,
    rules: &Rules,
    now: Timestamp,
) -> Known {
    let mut all = Known::Holds;
    for c in conditions {
        match known_one(c, chat, carried, rules, now) {
            Known::Fails => return Known::Fails,
            Known::Unknown => all = Known::Unknown,
            Known::Holds => {}
        }
    }
    all
}

/// One condition: the decision's own test where it reads only carried
/// fields; else `any` holds when one alternative it can read holds, `not`
/// fails when one excluded case it can read holds, and the rest is unknown.
fn known_one(
    c: &Condition,
    chat: &ChatContext,
    carried: Carried,
    rules: &Rules,
    now: Timestamp,
) -> Known {
    if reads_only_carried(c, carried) {
        return if c.holds(chat, &rules.schedules, now) {
            Known::Holds
        } else {
            Known::Fails
        };
    }
    let (Condition::Any(groups) | Condition::Not(groups)) = c else {
        return Known::Unknown;
    };
    let mut each = groups.iter().map(|g| known(g, chat, carried, rules, now));
    let some_holds = each.clone().any(|k| k == Known::Holds);
    let all_fail = each.all(|k| k == Known::Fails);
    match (c, some_holds, all_fail) {
        (Condition::Any(_), true, _) | (Condition::Not(_), _, true) => Known::Holds,
        (Condition::Any(_), _, true) | (Condition::Not(_), true, _) => Known::Fails,
        _ => Known::Unknown,
    }
}

/// Whether the condition, nested groups included, reads only what the row
/// carries (schedules and weekdays read the clock, which intake has).
fn reads_only_carried(c: &Condition, carried: Carried) -> bool {
    match c {
        Condition::Field { field, .. } => {
            carried == Carried::Everything || matches!(field, Field::Attr(_))
        }
        Condition::Within { .. } | Condition::Outside { .. } | Condition::Weekday { .. } => true,
        Condition::Any(groups) | Condition::Not(groups) => groups
            .iter()
            .flatten()
            .all(|c| reads_only_carried(c, carried)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChatId;
    use crate::rules::context::{Text, attrs_from_json};
    use crate::rules::{RoutingState, decide, load_sources};

    fn rules() -> Rules {
        load_sources(&[("r.toml".into(), RULES.to_string())]).unwrap()
    }

    const RULES: &str = r#"
[agents]
alice = { id = 1 }

[[rule]]
name = "outage"
match = { message = { contains = "down" }, attr.plan = "enterprise" }
priority = 20
assign = "alice"

[[rule]]
name = "vip"
match = { attr.tier = "gold" }
priority = 10
assign = "alice"

[[rule]]
name = "newsletter"
match = { any = [{ attr.source = "newsletter" }, { customer.email = "*@news.example" }] }
priority = -5
assign = "alice"

[[rule]]
name = "billing"
match = { department = "billing" }
priority = 5
assign = "alice"

[[rule]]
name = "rest"
assign = "alice"
"#;

    fn chat(attrs: serde_json::Value) -> ChatContext {
        let serde_json::Value::Object(map) = attrs else {
            panic!("attrs must be an object")
        };
        ChatContext {
            chat_id: ChatId(7),
            attrs: attrs_from_json(&map),
            ..ChatContext::default()
        }
    }

    fn at() -> Timestamp {
        "2026-06-03T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn attributes_alone_rank_a_row_when_no_earlier_rule_could_match() {
        let r = rules();
        let p = |attrs, carried| intake_priority(&r, &chat(attrs), carried, at());
        // `outage` reads the message, which the row lacks, but its
        // attribute fails: passed over; `vip` holds on attributes alone.
        let gold = serde_json::json!({"tier": "gold"});
        assert_eq!(p(gold.clone(), Carried::Attrs), Some(10));
        // With the plan that `outage` wants, the message decides: unknown.
        let both = serde_json::json!({"tier": "gold", "plan": "enterprise"});
        assert_eq!(p(both, Carried::Attrs), None);
        // No attribute of `vip`: `newsletter` reads the customer's email,
        // which the row lacks, and may hold: unknown, so no rank.
        assert_eq!(p(serde_json::json!({}), Carried::Attrs), None);
        assert_eq!(
            p(serde_json::json!({"tier": "GOLD"}), Carried::Attrs),
            Some(10)
        );
        // A row that carries nothing else, for a daemon that never reads
        // the chat: the missing fields have no value, as in the decision.
        assert_eq!(p(serde_json::json!({}), Carried::Everything), Some(0));
        assert_eq!(
            p(
                serde_json::json!({"source": "newsletter"}),
                Carried::Everything
            ),
            Some(-5)
        );
        // An `any` holds on an alternative the row carries.
        let newsletter = serde_json::json!({"source": "newsletter"});
        assert_eq!(p(newsletter, Carried::Attrs), Some(-5));
    }

    /// With everything carried, the rank is the priority of the rule the
    /// decision picks, since both test the same conditions in the same order.
    #[test]
    fn with_everything_carried_the_rank_is_the_deciding_rules_priority() {
        let r = rules();
        let state = RoutingState::default();
        let cases = [
            (
                serde_json::json!({"plan": "enterprise"}),
                Some("the server is down"),
            ),
            (serde_json::json!({"plan": "enterprise"}), Some("hello")),
            (serde_json::json!({"tier": "gold"}), None),
            (serde_json::json!({}), Some("down")),
            (serde_json::json!({"source": "newsletter"}), None),
        ];
        for (attrs, message) in cases {
            let mut c = chat(attrs);
            c.message = message.map(Text::new);
            for department in [None, Some("Billing")] {
                c.department_name = department.map(Text::new);
                let decided = decide(&r, &c, &state, at())
                    .rule
                    .map(|i| r.rules[i].priority);
                assert_eq!(
                    intake_priority(&r, &c, Carried::Everything, at()),
                    decided,
                    "{c:?}"
                );
            }
        }
    }

    #[test]
    fn an_excluded_case_the_row_carries_fails_the_rule() {
        let text = "[agents]\na = { id = 1 }\n\
            [[rule]]\nname = \"real\"\npriority = 4\nassign = \"a\"\n\
            match = { not = [{ attr.kind = \"spam\" }, { message = { contains = \"unsubscribe\" } }] }\n\
            [[rule]]\nname = \"rest\"\nassign = \"a\"\n";
        let r = load_sources(&[("r.toml".into(), text.to_string())]).unwrap();
        let p = |attrs, carried| intake_priority(&r, &chat(attrs), carried, at());
        assert_eq!(
            p(serde_json::json!({"kind": "spam"}), Carried::Attrs),
            Some(0)
        );
        assert_eq!(p(serde_json::json!({}), Carried::Attrs), None);
        assert_eq!(p(serde_json::json!({}), Carried::Everything), Some(4));
    }

    #[test]
    fn a_schedule_is_read_at_intake() {
        let text = "[schedules.office]\nhours = { all = \"09:00-17:00\" }\n\
            [agents]\na = { id = 1 }\n\
            [[rule]]\nname = \"day\"\nmatch = { within = \"office\" }\npriority = 3\nassign = \"a\"\n\
            [[rule]]\nname = \"night\"\npriority = 1\nassign = \"a\"\n";
        let r = load_sources(&[("r.toml".into(), text.to_string())]).unwrap();
        let c = chat(serde_json::json!({}));
        let night: Timestamp = "2026-06-03T22:00:00Z".parse().unwrap();
        assert_eq!(intake_priority(&r, &c, Carried::Attrs, at()), Some(3));
        assert_eq!(intake_priority(&r, &c, Carried::Attrs, night), Some(1));
    }
}
