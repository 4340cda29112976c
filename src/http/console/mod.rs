//! The console for team leads (SPEC §12), at `/console/` on the listener,
//! served only when a console token is configured (404 otherwise).
//!
//! Pages are rendered on the server and every change is a plain form POST,
//! so the console needs no script and no asset from outside. A change
//! needs a live session (a cookie, HttpOnly, SameSite=Strict, and its row
//! in the database), the session's CSRF field, and no sign of a
//! cross-site request, all checked before its form is read; it goes
//! through the same store calls as the CLI, recorded in the audit with who
//! made it.

// A refusal is the answer itself (`Result<_, Response>`, as axum's
// extractors do); answers are built once per request, so size is no cost.
#![allow(clippy::result_large_err)]

mod actions;
mod form;
mod html;
mod pages;
mod session;
mod signin;
mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::App;
use crate::secrets::Secret;
use form::ConsoleForm;
use session::Session;
pub use signin::Site;
pub use throttle::FREE as SIGN_IN_FREE_TRIES;

/// The console's routes, merged into the listener's router.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index))
        .route("/console/style.css", get(style))
        .route("/console/signin", get(signin::page).post(signin::signin))
        .route("/console/signout", post(signin::signout))
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

/// The console token, taken before anything else of a request: a console
/// that is not configured answers 404 and reads no body.
pub(super) struct On(pub Secret);

impl FromRequestParts<Arc<App>> for On {
    type Rejection = Response;

    async fn from_request_parts(_: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        token(app).map(On)
    }
}

/// A page's viewer: the session and token, or where to go instead.
pub(super) struct Viewer {
    pub session: Session,
    pub token: Secret,
}

impl Viewer {
    async fn of(app: &App, headers: &HeaderMap) -> Result<Self, Response> {
        let token = token(app)?;
        match signin::session_of(app, &token, headers).await? {
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
        let viewer = Viewer::of(app, &parts.headers).await?;
        super::conns::authenticated(&parts.extensions);
        Ok(viewer)
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
        let Some(session) = signin::session_of(app, &token, &parts.headers).await? else {
            return Err(refuse(StatusCode::UNAUTHORIZED, "sign in first"));
        };
        // A signed-in form draws on the budget strangers cannot take.
        parts.extensions.insert(super::body::Proven);
        super::conns::authenticated(&parts.extensions);
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
