//! The console over plain HTTP, for the tests that drive a real daemon's
//! console without a browser: sign in, read a page, post a form, sign out.
#![allow(dead_code)]

use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// A client that shows redirects instead of following them.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A sign-in on `base` as `from` (an `X-Forwarded-For` address: the
/// default trusted proxy is loopback, so tests can pose as clients).
pub async fn sign_in_from(base: &str, token: &str, from: Option<&str>) -> reqwest::Response {
    let mut req = http()
        .post(format!("{base}/console/signin"))
        .form(&[("name", "dana"), ("token", token)]);
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

/// Signs in on `base`; the session cookie (`name=value`), or the status.
pub async fn sign_in(base: &str, token: &str) -> Result<String, StatusCode> {
    let r = sign_in_from(base, token, None).await;
    if r.status() != StatusCode::SEE_OTHER {
        return Err(r.status());
    }
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(token), "the cookie carries no token");
    Ok(cookie.split(';').next().unwrap().to_string())
}

/// `GET path` with `cookie`.
pub async fn get(base: &str, path: &str, cookie: &str) -> reqwest::Response {
    http()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// Where a page sends `cookie`: `None` if it is shown (200), else the
/// redirect's target.
pub async fn sent_to(base: &str, path: &str, cookie: &str) -> Option<String> {
    let r = get(base, path, cookie).await;
    if r.status() == StatusCode::OK {
        return None;
    }
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "GET {path}");
    Some(r.headers()["location"].to_str().unwrap().to_string())
}

/// The CSRF field of a page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field")
        + 19;
    page[at..at + 64].to_string()
}

/// POSTs a console form; the status.
pub async fn post(
    base: &str,
    path: &str,
    cookie: &str,
    origin: &str,
    form: &[(&str, &str)],
) -> u16 {
    http()
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .header("origin", origin)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Signs out through `base` with the session's own form; the status.
pub async fn sign_out(base: &str, cookie: &str) -> u16 {
    let page = get(base, "/console/agents", cookie)
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    post(base, "/console/signout", cookie, base, &[("csrf", &csrf)]).await
}
