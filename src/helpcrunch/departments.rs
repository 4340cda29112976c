//! `GET /departments`: reported by a third-party client of the API, not in
//! HelpCrunch's documentation pages. Its answer is read leniently (a
//! `{"data": [...]}` page or a bare list; ids as numbers or digit strings;
//! agents as ids or agent objects), and an answer of any other shape, like
//! a 404, means that the account has no department list to read.

use serde_json::Value;

use crate::domain::AgentId;

/// A department as the account lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentRef {
    pub id: i64,
    /// Its name, unless the answer gives none.
    pub name: Option<String>,
    /// Its agents, when the answer lists them.
    pub agents: Vec<AgentId>,
}

impl DepartmentRef {
    /// Its name, or its id when it has none.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("department {}", self.id))
    }
}

/// What `GET /departments` told about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departments {
    Listed(Vec<DepartmentRef>),
    /// No list to read, and why (a 404, an answer of another shape).
    Unavailable(String),
}

/// One page of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DepartmentPage {
    pub departments: Vec<DepartmentRef>,
    /// The total the page's `meta` gives, if any.
    pub total: Option<usize>,
    /// Whether the answer is a page (`{"data": [...]}`) that `offset` may
    /// continue, rather than the whole list.
    pub paged: bool,
}

/// The page in `body`, or `None` when it is not a list of departments.
pub(super) fn parse_page(body: &Value) -> Option<DepartmentPage> {
    let (items, paged) = match body {
        Value::Array(items) => (items, false),
        Value::Object(o) => (
            o.get("data").or_else(|| o.get("departments"))?.as_array()?,
            true,
        ),
        _ => return None,
    };
    let departments: Vec<DepartmentRef> = items.iter().filter_map(department).collect();
    if departments.is_empty() && !items.is_empty() {
        return None;
    }
    let total = body
        .pointer("/meta/total")
        .and_then(number)
        .and_then(|n| usize::try_from(n).ok());
    Some(DepartmentPage {
        departments,
        total,
        paged,
    })
}

fn department(v: &Value) -> Option<DepartmentRef> {
    let id = number(v.get("id")?)?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let agents = v
        .get("agents")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| number(a.get("id").unwrap_or(a)))
                .map(AgentId)
                .collect()
        })
        .unwrap_or_default();
    Some(DepartmentRef { id, name, agents })
}

/// An id or a count: a number, or a string of digits.
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(page: &DepartmentPage) -> Vec<(i64, String)> {
        page.departments.iter().map(|d| (d.id, d.label())).collect()
    }

    #[test]
    fn a_page_and_a_bare_list_are_read() {
        let page = parse_page(&json!({"data": [
            {"id": 1, "name": "Support", "agents": [{"id": 7, "name": "A"}, 8, "9"]},
            {"id": "2", "name": "Billing"}
        ], "meta": {"total": "2"}}))
        .unwrap();
        assert_eq!(names(&page), [(1, "Support".into()), (2, "Billing".into())]);
        assert_eq!(
            page.departments[0].agents,
            [AgentId(7), AgentId(8), AgentId(9)]
        );
        assert_eq!((page.total, page.paged), (Some(2), true));
        let bare = parse_page(&json!([{"id": 3, "name": " Sales "}, {"id": 4}])).unwrap();
        assert_eq!(
            names(&bare),
            [(3, "Sales".into()), (4, "department 4".into())]
        );
        assert_eq!(bare.departments[1].name, None);
        assert_eq!((bare.total, bare.paged), (None, false));
        let empty = parse_page(&json!({"data": []})).unwrap();
        assert!(empty.departments.is_empty());
    }

    #[test]
    fn other_shapes_are_no_list() {
        for body in [
            json!({"errors": [{"code": "not_found", "message": "x"}]}),
            json!({"data": {"id": 1}}),
            json!({"data": [{"name": "no id"}, 5]}),
            json!("departments"),
            json!(null),
        ] {
            assert_eq!(parse_page(&body), None, "{body}");
        }
    }
}
