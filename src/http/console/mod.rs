//! The console for team leads (SPEC §12), at `/console/` on the listener,
//! served only when a console token is configured (404 otherwise).
//!
//! Pages are rendered on the server and every change is a plain form POST,
//! so the console needs no script and no asset from outside. A change
//! needs a session cookie (HttpOnly, SameSite=Strict), the session's CSRF
//! field, and no sign of a cross-site request; it goes through the same
//! store calls as the CLI, recorded in the audit with who made it.

// A refusal is the answer itself (`Result<_, Response>`, as axum's
// extractors do); answers are built once per request, so size is no cost.
#![allow(clippy::result_large_err)]

mod actions;
mod html;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::App;
use crate::domain::AuditAction;
use crate::secrets::Secret;
use crate::store::NewAudit;
pub use session::{COOKIE, Session};

/// Taken by each sign-in with a wrong token for its pause.
static WRONG_TOKEN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The console's routes, merged into the listener's router.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index))
        .route("/console/style.css", get(style))
        .route("/console/signin", get(signin_page).post(signin))
        .route("/console/signout", post(signout))
        .route("/console/agents", get(pages::agents))
        .route("/console/agents/away", post(actions::away))
        .route("/console/agents/back", post(actions::back))
        .route("/console/queue", get(pages::queue))
        .route("/console/queue/retry", post(actions::retry))
        .route("/console/chat", get(pages::chat))
        .route("/console/audit", get(pages::audit))
}

/// Headers of every console answer: nothing cached, nothing framed, no
/// resource but the daemon's own, no referrer sent to another site. (Not
/// `no-referrer`: under it Chromium sends `Origin: null` on the console's
/// own forms, which a browser without `Sec-Fetch-Site` would be refused for.)
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (k, v) in set {
        h.insert(k, HeaderValue::from_static(v));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    secure((status, axum::response::Html(body)).into_response())
}

fn see_other(to: &str) -> Response {
    secure(Redirect::to(to).into_response())
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The console token, or the 404 of a console that is not configured.
fn token(app: &App) -> Result<Secret, Response> {
    app.listener.secrets.console_token().ok_or_else(not_found)
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The session of the request's cookie, if it is valid.
fn session_of(token: &Secret, headers: &HeaderMap) -> Option<Session> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie_value(h, COOKIE))
        .and_then(|c| Session::verify(token, c, now_secs()))
}

/// A page's viewer: the session and token, or where to go instead.
pub(super) struct Viewer {
    pub session: Session,
    pub token: Secret,
}

impl Viewer {
    fn of(app: &App, headers: &HeaderMap) -> Result<Self, Response> {
        let token = token(app)?;
        match session_of(&token, headers) {
            Some(session) => Ok(Self { session, token }),
            None => Err(see_other("/console/signin")),
        }
    }

    fn csrf(&self) -> String {
        self.session.csrf(&self.token)
    }

    /// A page for this viewer with `main` as read, or the answer of a
    /// database that cannot be read.
    fn render(&self, title: &str, main: Result<String, crate::store::StoreError>) -> Response {
        match main {
            Ok(main) => self.page(title, &main),
            Err(e) => {
                tracing::error!(error = %e, "console: cannot read the database");
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database cannot be read right now; try again",
                )
            }
        }
    }

    /// A whole page for this viewer.
    fn page(&self, title: &str, main: &str) -> Response {
        let csrf = self.csrf();
        let body = html::page(title, Some((&self.session.name, &csrf)), main);
        html(StatusCode::OK, body)
    }

    /// Who a change is recorded as.
    fn actor(&self) -> String {
        format!("console:{}", self.session.name)
    }
}

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        Viewer::of(app, &parts.headers)
    }
}

/// The maker of a change, before its form is read: a session (else 401)
/// and no cross-site sign (else 403). [`Editor::confirm`] then checks the
/// form's CSRF field (else 403). Nothing is changed on a refusal.
pub(super) struct Editor(Viewer);

impl FromRequestParts<Arc<App>> for Editor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let token = token(app)?;
        if let Some(why) = cross_site(&parts.headers) {
            tracing::warn!(why, "console: refused a cross-site request");
            return Err(refuse(StatusCode::FORBIDDEN, "cross-site request refused"));
        }
        let Some(session) = session_of(&token, &parts.headers) else {
            return Err(refuse(StatusCode::UNAUTHORIZED, "sign in first"));
        };
        Ok(Self(Viewer { session, token }))
    }
}

impl Editor {
    /// The viewer, if `csrf` is their session's CSRF field.
    fn confirm(self, csrf: &str) -> Result<Viewer, Response> {
        let Viewer { session, token } = self.0;
        if !session.csrf_ok(&token, csrf) {
            tracing::warn!(name = %session.name, "console: refused a change with a wrong CSRF field");
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "the form is stale or forged; reload the page",
            ));
        }
        Ok(Viewer { session, token })
    }
}

fn cross_site(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hosts: Vec<&str> = [get("host"), get("x-forwarded-host")]
        .into_iter()
        .flatten()
        .collect();
    session::cross_site(get("origin"), get("sec-fetch-site"), &hosts)
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let main = format!(
        "<p class=\"error\" id=\"refused\">{}</p><p><a href=\"/console/\">Back to the console</a></p>",
        html::escape(why)
    );
    html(status, html::page("Refused", None, &main))
}

async fn index(_: Viewer) -> Response {
    see_other("/console/agents")
}

async fn style(State(app): State<Arc<App>>) -> Response {
    if let Err(r) = token(&app) {
        return r;
    }
    let css = include_str!("style.css");
    let mut r = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

fn signin_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"signin-error\">{}</p>",
                html::escape(e)
            )
        })
        .unwrap_or_default();
    let main = format!(
        "{error}<form id=\"signin\" method=\"post\" action=\"/console/signin\">\
         <label>Your name (recorded with every change)<input name=\"name\" required maxlength=\"40\" autocomplete=\"username\"></label>\
         <label>Console token<input name=\"token\" type=\"password\" required autocomplete=\"current-password\"></label>\
         <button type=\"submit\">Sign in</button></form>"
    );
    html::page("Sign in", None, &main)
}

async fn signin_page(State(app): State<Arc<App>>) -> Response {
    match token(&app) {
        Ok(_) => html(StatusCode::OK, signin_form(None)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    token: String,
}

async fn signin(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let token = match token(&app) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if cross_site(&headers).is_some() {
        return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    if !super::same_secret(form.token.as_bytes(), token.expose().as_bytes()) {
        tracing::warn!("console: a sign-in with a wrong token");
        // Wrong guesses wait their turn, one at a time: at most about three
        // a second however many are sent at once.
        let _turn = WRONG_TOKEN.lock().await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return html(StatusCode::UNAUTHORIZED, signin_form(Some("Wrong token.")));
    }
    let name = form.name.trim();
    if !session::valid_name(name) {
        let why = "Give a name of 1 to 40 letters, digits, spaces or . - _ @.";
        return html(StatusCode::BAD_REQUEST, signin_form(Some(why)));
    }
    let actor = format!("console:{name}");
    let audit = NewAudit {
        actor: &actor,
        action: AuditAction::SignIn,
        subject: name,
        until_ms: None,
        detail: "",
    };
    if let Err(e) = app.listener.store.record_audit(&audit).await {
        tracing::error!(error = %e, "console: cannot record a sign-in");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database cannot be written right now",
        );
    }
    tracing::info!(name, "console: signed in");
    let cookie = Session::issue(&token, name, now_secs());
    let secure = behind_tls(&headers);
    with_cookie(
        see_other("/console/agents"),
        &cookie,
        session::SESSION_SECS,
        secure,
    )
}

/// Whether the browser reached the console over HTTPS through a proxy
/// (`X-Forwarded-Proto: https`): then the cookie is `Secure` too, never
/// sent over plain HTTP.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
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

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn signout(editor: Editor, headers: HeaderMap, Form(form): Form<CsrfOnly>) -> Response {
    match editor.confirm(&form.csrf) {
        Ok(_) => with_cookie(see_other("/console/signin"), "", 0, behind_tls(&headers)),
        Err(r) => r,
    }
}
