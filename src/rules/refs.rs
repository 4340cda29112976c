//! The account's objects that rules name by value, so that `check
//! --online` can ask the account whether they exist: departments.

use super::Rules;
use super::matcher::{Condition, Field, Pattern};

/// A department that a rule's `match` names exactly (not by a wildcard, a
/// regex or a substring, which need not name one department).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDepartment {
    /// The name or id, lower-case, as the match compares it.
    pub value: String,
    /// The first rule that names it.
    pub rule: String,
}

impl NamedDepartment {
    /// Whether the department `id` called `name` is the one meant.
    pub fn names(&self, id: i64, name: &str) -> bool {
        self.value == name.to_lowercase() || self.value == id.to_string()
    }
}

/// Every department named in a `department` match, nested ones (`any`,
/// `not`) included, once each, in rule order.
pub fn departments(rules: &Rules) -> Vec<NamedDepartment> {
    let mut out: Vec<NamedDepartment> = Vec::new();
    for rule in &rules.rules {
        let mut values = Vec::new();
        collect(&rule.conditions, &mut values);
        for value in values {
            if !out.iter().any(|d| d.value == value) {
                out.push(NamedDepartment {
                    value,
                    rule: rule.name.clone(),
                });
            }
        }
    }
    out
}

fn collect(conditions: &[Condition], out: &mut Vec<String>) {
    for c in conditions {
        match c {
            Condition::Field {
                field: Field::Department,
                pattern,
                ..
            } => exact(pattern, out),
            Condition::Any(groups) | Condition::Not(groups) => {
                groups.iter().for_each(|g| collect(g, out));
            }
            _ => {}
        }
    }
}

fn exact(pattern: &Pattern, out: &mut Vec<String>) {
    match pattern {
        Pattern::Exact(v) => out.push(v.clone()),
        Pattern::AnyOf(ps) => ps.iter().for_each(|p| exact(p, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_department_names_and_ids_in_every_nesting() {
        let text = r#"
[agents]
a = { id = 1 }
[[rule]]
name = "one"
match = { department = "Billing" }
assign = "a"
[[rule]]
name = "two"
match = { department = ["billing", 7, "Sal*"], any = [{ department = "VIP" }], not = { department = { regex = "x" } } }
assign = "a"
[[rule]]
name = "three"
match = { customer.name = "Billing" }
assign = "a"
"#;
        let rules = crate::rules::load_sources(&[("r.toml".into(), text.into())]).unwrap();
        let found: Vec<(String, String)> = departments(&rules)
            .into_iter()
            .map(|d| (d.value, d.rule))
            .collect();
        let want = [("billing", "one"), ("7", "two"), ("vip", "two")];
        assert_eq!(
            found,
            want.map(|(v, r)| (v.to_string(), r.to_string())).to_vec()
        );
        let billing = &departments(&rules)[0];
        assert!(billing.names(2, "BILLING") && !billing.names(2, "Sales"));
        assert!(departments(&rules)[1].names(7, "Other"));
    }
}
