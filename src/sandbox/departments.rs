//! The sandbox's `GET /departments`, reported outside HelpCrunch's
//! documentation: some accounts have it, some answer 404.

use std::collections::HashMap;

use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::answers::not_found;
use super::{Shared, chats};

/// A department the sandbox lists, with the ids of its agents.
#[derive(Debug, Clone)]
pub struct SandboxDepartment {
    pub id: i64,
    pub name: String,
    pub agents: Vec<i64>,
}

/// The departments the generated chats belong to, without agents.
pub(super) fn defaults() -> Vec<SandboxDepartment> {
    chats::DEPARTMENTS
        .iter()
        .map(|(id, name)| SandboxDepartment {
            id: *id,
            name: name.to_string(),
            agents: Vec::new(),
        })
        .collect()
}

/// `offset` and `limit` (at most 100) of a list request.
pub(super) fn paging(uri: &Uri) -> (usize, usize) {
    let query: HashMap<&str, &str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let number = |key: &str, default: usize| {
        query
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (number("offset", 0), number("limit", 100).min(100))
}

/// A page of departments, each with its agents as agent objects; 404 for
/// an account without them.
pub(super) fn departments(s: &Shared, uri: &Uri) -> Response {
    let Some(list) = &s.departments else {
        return not_found();
    };
    let (offset, limit) = paging(uri);
    let data: Vec<Value> = list
        .iter()
        .skip(offset)
        .take(limit)
        .map(|d| {
            let agents: Vec<Value> = s
                .agents
                .iter()
                .filter(|a| d.agents.contains(&a.id))
                .map(|a| chats::agent_json(a.id, Some(&a.name)))
                .collect();
            json!({"id": d.id, "name": d.name, "agents": agents})
        })
        .collect();
    axum::Json(json!({"data": data, "meta": {"total": list.len()}})).into_response()
}
