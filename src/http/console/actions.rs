//! The console's changes: mark an agent away or back, retry dead letters.
//! Each is checked by [`Editor`] and the same store call as the CLI, which
//! records it in the audit with the signed-in name; the worker is woken so
//! that the next decision sees it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use serde::Deserialize;

use super::{App, ConsoleForm, Editor, Viewer, refuse, see_other};

#[derive(Deserialize)]
pub(super) struct AgentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    agent: String,
    /// `datetime-local` (`YYYY-MM-DDTHH:MM`, read as UTC) or RFC 3339;
    /// empty: until marked back.
    #[serde(default)]
    until: String,
}

/// `until` as the form sends it.
fn parse_until(text: &str) -> Result<Option<Timestamp>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(Some(t));
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| Some(z.timestamp()))
        .ok_or_else(|| format!("`{text}` is not a date and time (YYYY-MM-DDTHH:MM, UTC)"))
}

/// The checks of a change to an agent: the form's CSRF field, and an
/// agent the rules know.
fn confirm_agent(app: &App, editor: Editor, form: &AgentForm) -> Result<Viewer, Response> {
    let viewer = editor.confirm(&form.csrf)?;
    if app
        .listener
        .console
        .rules()
        .agent_by_name(&form.agent)
        .is_none()
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "no such agent in the rules",
        ));
    }
    Ok(viewer)
}

fn failed(e: &crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "console: cannot write the change");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database cannot be written right now; nothing changed",
    )
}

fn agent_done(what: &str, agent: &str) -> Response {
    let q = query_string(&[("done", what), ("agent", agent)]);
    see_other(&format!("/console/agents?{q}"))
}

/// `a=b&c=d`, each value form-encoded.
fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) async fn away(
    State(app): State<Arc<App>>,
    editor: Editor,
    ConsoleForm(form): ConsoleForm<AgentForm>,
) -> Response {
    let viewer = match confirm_agent(&app, editor, &form) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let until = match parse_until(&form.until) {
        Ok(Some(t)) if t <= Timestamp::now() => {
            return refuse(StatusCode::BAD_REQUEST, "`until` is in the past");
        }
        Ok(u) => u,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let store = &app.listener.store;
    let until_ms = until.map(|t| t.as_millisecond());
    if let Err(e) = store.set_away(&form.agent, until_ms, &viewer.actor()).await {
        return failed(&e);
    }
    tracing::info!(agent = %form.agent, by = %viewer.session.name, "console: agent marked away");
    agent_done("away", &form.agent)
}

pub(super) async fn back(
    State(app): State<Arc<App>>,
    editor: Editor,
    ConsoleForm(form): ConsoleForm<AgentForm>,
) -> Response {
    let viewer = match confirm_agent(&app, editor, &form) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(e) = app
        .listener
        .store
        .set_back(&form.agent, &viewer.actor())
        .await
    {
        return failed(&e);
    }
    // Chats waiting for a candidate were made due: decide them now.
    app.listener.console.wake();
    tracing::info!(agent = %form.agent, by = %viewer.session.name, "console: agent marked back");
    agent_done("back", &form.agent)
}

#[derive(Deserialize)]
pub(super) struct RetryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    all: Option<String>,
}

pub(super) async fn retry(
    State(app): State<Arc<App>>,
    editor: Editor,
    ConsoleForm(form): ConsoleForm<RetryForm>,
) -> Response {
    let viewer = match editor.confirm(&form.csrf) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ids = match (form.id, form.all.as_deref()) {
        (Some(id), _) => Some(vec![id]),
        (None, Some("1")) => None,
        _ => return refuse(StatusCode::BAD_REQUEST, "give a row id or all=1"),
    };
    let store = &app.listener.store;
    let n = match store.retry_dead(ids.as_deref(), &viewer.actor()).await {
        Ok(n) => n,
        Err(e) => return failed(&e),
    };
    app.listener.console.wake();
    tracing::info!(rows = n, by = %viewer.session.name, "console: dead letters retried");
    see_other(&format!("/console/queue?done=retried&n={n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reads_the_form_and_rfc3339() {
        assert_eq!(parse_until(" ").unwrap(), None);
        let t = parse_until("2026-12-03T18:30").unwrap().unwrap();
        assert_eq!(t.to_string(), "2026-12-03T18:30:00Z");
        let t = parse_until("2026-12-03T18:30:00+01:00").unwrap().unwrap();
        assert_eq!(t.to_string(), "2026-12-03T17:30:00Z");
        assert!(parse_until("tomorrow").is_err());
    }

    #[test]
    fn redirect_values_are_encoded() {
        assert_eq!(
            query_string(&[("done", "away"), ("agent", "a b&c")]),
            "done=away&agent=a%20b%26c"
        );
    }
}
