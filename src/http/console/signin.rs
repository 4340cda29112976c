//! Signing in and out, and the session a request carries. A sign-in is
//! checked in this order, each before anything costlier: the console is on
//! (else 404), no cross-site sign (403), the client may try now (else 429
//! with `Retry-After`, from [`Throttle`]), the form is small (413); only
//! then is the form read, under the listener's read deadline. Right and
//! wrong tokens are answered as soon as they are known.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::session::{self, COOKIE, Session};
use super::throttle::{Outcome, Throttle};
use super::{App, ConsoleForm, Editor, On, cross_site, html, refuse, see_other, token};
use crate::domain::AuditAction;
use crate::http::ClientAddr;
use crate::secrets::Secret;
use crate::store::{NewAudit, NewConsoleSession, StoreError, now_ms};

/// What the console knows of where it is served, and its sign-in record.
pub struct Site {
    /// `[http] public_url` is https: the cookie is `Secure`.
    https: bool,
    throttle: Mutex<Throttle>,
}

impl Site {
    pub fn new(public_https: bool) -> Self {
        Self {
            https: public_https,
            throttle: Mutex::new(Throttle::default()),
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        // The record is a counter map; a panic mid-update leaves it usable.
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The live session of the request's cookie, if any; a database that
/// cannot be read is the 503 page. A use is written at most once a minute
/// ([`session::touch_due`]), which keeps an idle session from ending.
pub(super) async fn session_of(
    app: &App,
    token: &Secret,
    headers: &HeaderMap,
) -> Result<Option<Session>, Response> {
    let Some(cookie) = cookie_of(headers) else {
        return Ok(None);
    };
    let Some(key) = Session::key(token, cookie) else {
        return Ok(None);
    };
    let store = &app.listener.store;
    let now = now_ms();
    let row = match store.console_session(&key, now).await {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(e) => return Err(unavailable(&e, "read")),
    };
    if session::touch_due(row.last_seen_ms, now) {
        let ends = session::ends_at(row.expires_at_ms, now);
        if let Err(e) = store.touch_console_session(&key, now, ends).await {
            tracing::warn!(error = %e, "console: cannot note a session's use; it may end early");
        }
    }
    Ok(Some(Session::of(cookie, key, row.name)))
}

fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie_value(h, COOKIE))
}

fn unavailable(e: &StoreError, what: &str) -> Response {
    tracing::error!(error = %e, "console: cannot {what} the database");
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the database cannot be {what} right now; try again"),
    )
}

/// A sign-in under way: the throttle let this client try now. Dropped
/// unsettled (the form never came), it counts as neither right nor wrong.
pub(super) struct Attempt {
    app: Arc<App>,
    who: IpAddr,
    outcome: Outcome,
}

impl FromRequestParts<Arc<App>> for Attempt {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        if let Some(why) = cross_site(&parts.headers) {
            tracing::warn!(why, "console: refused a cross-site sign-in");
            return Err(refuse(StatusCode::FORBIDDEN, "cross-site request refused"));
        }
        let Ok(client) = ClientAddr::from_request_parts(parts, app).await;
        let who = client.key();
        let begun = app
            .listener
            .console_site
            .throttle()
            .begin(who, Instant::now());
        match begun {
            Ok(()) => Ok(Self {
                app: app.clone(),
                who,
                outcome: Outcome::Neither,
            }),
            Err(wait) => Err(too_early(who, wait)),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let site = &self.app.listener.console_site;
        site.throttle().end(self.who, Instant::now(), self.outcome);
    }
}

/// 429 with the wait in whole seconds, rounded up.
fn too_early(who: IpAddr, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    // Debug only: these come as fast as a guesser sends them; the wrong
    // tokens that earned the wait were each logged as a warning.
    tracing::debug!(client = %who, retry_after = secs, "console: a sign-in came too early");
    let why = format!("Too many sign-in attempts; try again in {secs} s.");
    let mut r = html(StatusCode::TOO_MANY_REQUESTS, signin_form(Some(&why)));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

fn signin_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"signin-error\">{}</p>",
                super::html::escape(e)
            )
        })
        .unwrap_or_default();
    let main = format!(
        "{error}<form id=\"signin\" method=\"post\" action=\"/console/signin\">\
         <label>Your name (recorded with every change)<input name=\"name\" required maxlength=\"40\" autocomplete=\"username\"></label>\
         <label>Console token<input name=\"token\" type=\"password\" required autocomplete=\"current-password\"></label>\
         <button type=\"submit\">Sign in</button></form>"
    );
    super::html::page("Sign in", None, &main)
}

pub(super) async fn page(State(app): State<Arc<App>>) -> Response {
    match token(&app) {
        Ok(_) => html(StatusCode::OK, signin_form(None)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    token: String,
}

pub(super) async fn signin(
    On(token): On,
    mut attempt: Attempt,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<SignIn>,
) -> Response {
    if !crate::http::same_secret(form.token.as_bytes(), token.expose().as_bytes()) {
        tracing::warn!(client = %attempt.who, "console: a sign-in with a wrong token");
        attempt.outcome = Outcome::Wrong;
        return html(StatusCode::UNAUTHORIZED, signin_form(Some("Wrong token.")));
    }
    let name = form.name.trim();
    if !session::valid_name(name) {
        let why = "Give a name of 1 to 40 letters, digits, spaces or . - _ @.";
        return html(StatusCode::BAD_REQUEST, signin_form(Some(why)));
    }
    let now = now_ms();
    let issued = Session::issue(&token, now);
    let actor = format!("console:{name}");
    let audit = NewAudit {
        actor: &actor,
        action: AuditAction::SignIn,
        subject: name,
        until_ms: None,
        detail: "",
    };
    let row = NewConsoleSession {
        key: &issued.key,
        name,
        now_ms: now,
        expires_ms: issued.expires_ms,
        ends_ms: issued.ends_ms,
    };
    let store = &attempt.app.listener.store;
    if let Err(e) = store.open_console_session(&row, &audit).await {
        return unavailable(&e, "written");
    }
    attempt.outcome = Outcome::Right;
    tracing::info!(name, "console: signed in");
    let max_age = session::SESSION_MS / 1000;
    let secure = secure(&attempt.app, &headers);
    with_cookie(
        see_other("/console/agents"),
        &issued.cookie,
        max_age,
        secure,
    )
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Ends the session on the server, for every daemon, and clears the cookie.
pub(super) async fn signout(
    State(app): State<Arc<App>>,
    editor: Editor,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<CsrfOnly>,
) -> Response {
    let viewer = match editor.confirm(&form.csrf) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(e) = app
        .listener
        .store
        .end_console_session(&viewer.session.key)
        .await
    {
        return unavailable(&e, "written");
    }
    tracing::info!(name = %viewer.session.name, "console: signed out");
    with_cookie(see_other("/console/signin"), "", 0, secure(&app, &headers))
}

/// Whether the cookie is `Secure`: `[http] public_url` is https, or a
/// proxy says the browser came over HTTPS (`X-Forwarded-Proto: https`).
fn secure(app: &App, headers: &HeaderMap) -> bool {
    app.listener.console_site.https
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn with_cookie(mut response: Response, value: &str, max_age: i64, secure: bool) -> Response {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
