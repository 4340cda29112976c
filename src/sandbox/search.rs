//! The sandbox's `POST /chats/search`.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{BadRequest, Sandbox, SandboxChat, Shared, invalid};

/// One search filter, as a test of a chat.
type ChatTest = Box<dyn Fn(&SandboxChat) -> bool>;

/// Runs after each search is answered, before the answer leaves: a test
/// changes chats between two pages of one read, as agents and customers
/// do in HelpCrunch meanwhile.
pub type SearchHook = Box<dyn FnMut(&SandboxChats<'_>) + Send>;

/// The sandbox's chats, as a [`SearchHook`] sees them.
pub struct SandboxChats<'a>(&'a Shared);

impl SandboxChats<'_> {
    /// Changes a chat, as [`Sandbox::update_chat`] does.
    pub fn update(&self, chat_id: i64, f: impl FnOnce(&mut SandboxChat)) {
        self.0.change_chat(chat_id, f);
    }

    /// The ids of the chats that exist so far and pass `test`, in order.
    pub fn ids(&self, test: impl Fn(&SandboxChat) -> bool) -> Vec<i64> {
        let chats = self.0.chats.lock().expect("chats lock");
        let mut ids: Vec<i64> = chats.values().filter(|c| test(c)).map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }
}

impl Sandbox {
    /// Sets (or with `None` removes) the hook run after each search.
    pub fn between_searches(&self, hook: Option<SearchHook>) {
        *self.shared.between_searches.lock().expect("hook lock") = hook;
    }
}

/// `POST /chats/search`, then the hook a test may have set.
pub(super) fn search(s: &Shared, body: Option<&Value>) -> Response {
    let answer = search_now(s, body);
    if let Some(hook) = s.between_searches.lock().expect("hook lock").as_mut() {
        hook(&SandboxChats(s));
    }
    answer
}

/// `POST /chats/search` over the chats that exist so far (created or
/// touched): `=`, `!=`, `>`, `>=`, `<`, `<=` on `chats.assignee`,
/// `chats.status`, `chats.createdAt` and `chats.updatedAt`, joined by AND
/// or OR.
fn search_now(s: &Shared, body: Option<&Value>) -> Response {
    let Some(body) = body else {
        return invalid("filter", "This value should not be blank.");
    };
    let filters = body
        .get("filter")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let any = body.get("comparison").and_then(Value::as_str) == Some("OR");
    // The first bad filter answers, as HelpCrunch names only one.
    let tests = match filters
        .iter()
        .enumerate()
        .map(|(i, f)| test(i, f))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(tests) => tests,
        Err(bad) => return bad.into_response(),
    };
    let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .min(100) as usize;
    let desc = body.get("order").and_then(Value::as_str) == Some("desc");
    let chats = s.chats.lock().expect("chats lock");
    let found = matching(&chats, &tests, any, desc);
    let total = found.len();
    let data: Vec<Value> = found
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|c| c.to_json(&s.agents))
        .collect();
    axum::Json(json!({"data": data, "meta": {"total": total}})).into_response()
}

/// Filter `i` as a test, or the 400 that names what is wrong with it.
fn test(i: usize, f: &Value) -> Result<ChatTest, BadRequest> {
    let field = f.get("field").and_then(Value::as_str).unwrap_or("");
    let op = f
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("=")
        .to_string();
    let value = f.get("value").unwrap_or(&Value::Null);
    let key = format!("filter[{i}].value");
    match field {
        "chats.assignee" | "chats.createdAt" | "chats.updatedAt" => {
            let Some(want) = value.as_i64() else {
                return Err(BadRequest::field(
                    key,
                    "This value should be of type numeric.",
                ));
            };
            let have: fn(&SandboxChat) -> Option<i64> = match field {
                "chats.assignee" => |c| c.assignee,
                "chats.createdAt" => |c| Some(c.created_at),
                _ => |c| Some(c.updated_at),
            };
            Ok(Box::new(move |c: &SandboxChat| compare(&op, have(c), want)))
        }
        "chats.status" => {
            let Some(want) = value.as_str().map(str::to_string) else {
                return Err(BadRequest::field(
                    key,
                    "This value should be of type string.",
                ));
            };
            let negate = op == "!=";
            Ok(Box::new(move |c: &SandboxChat| {
                (c.status == want) != negate
            }))
        }
        _ => Err(BadRequest::field(
            format!("filter[{i}].field"),
            "This value is not valid.",
        )),
    }
}

/// A numeric filter; a chat without an assignee passes only `!=`.
fn compare(op: &str, have: Option<i64>, want: i64) -> bool {
    match (op, have) {
        ("=", h) => h == Some(want),
        ("!=", h) => h != Some(want),
        (">", Some(h)) => h > want,
        (">=", Some(h)) => h >= want,
        ("<", Some(h)) => h < want,
        ("<=", Some(h)) => h <= want,
        _ => false,
    }
}

/// The chats that pass all `tests` (any of them with `any`; no tests pass
/// every chat), oldest first or newest first with `desc`.
fn matching<'a>(
    chats: &'a HashMap<i64, SandboxChat>,
    tests: &[ChatTest],
    any: bool,
    desc: bool,
) -> Vec<&'a SandboxChat> {
    let mut found: Vec<&SandboxChat> = chats
        .values()
        .filter(|c| {
            tests.is_empty()
                || if any {
                    tests.iter().any(|t| t(c))
                } else {
                    tests.iter().all(|t| t(c))
                }
        })
        .collect();
    found.sort_by_key(|c| (c.created_at, c.id));
    if desc {
        found.reverse();
    }
    found
}
