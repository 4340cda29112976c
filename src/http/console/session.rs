//! Console sessions and cross-site checks, with no server-side state: a
//! session cookie is `HEX(NAME).EXPIRES.NONCE.TAG`, the tag an HMAC-SHA256 of
//! the rest under a key derived from the console token, so any daemon of
//! the account accepts it, and a new token ends every session. A form's
//! CSRF field is another HMAC of the cookie, which a page on another site
//! cannot read or compute.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secrets::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "assignd_console";

/// How long a sign-in lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// Who signed in, from a valid cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    /// The cookie's value, which the CSRF field is bound to.
    cookie: String,
}

type Tag = Hmac<Sha256>;

fn tag(token: &Secret, purpose: &str, text: &str) -> Tag {
    let mut mac = Tag::new_from_slice(token.expose().as_bytes()).expect("any key length");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(text.as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A name as the audit records it: 1 to 40 letters, digits, spaces and
/// `.-_@`; anything else is refused rather than cleaned.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=40).contains(&n)
        && name.trim() == name
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || " .-_@".contains(c))
}

impl Session {
    /// A new session for `name` (already valid), from `now` (Unix seconds).
    pub fn issue(token: &Secret, name: &str, now: i64) -> String {
        let nonce: u64 = rand::random();
        let body = format!(
            "{}.{}.{nonce:016x}",
            hex(name.as_bytes()),
            now + SESSION_SECS
        );
        let mac = tag(token, "session", &body).finalize().into_bytes();
        format!("{body}.{}", hex(&mac))
    }

    /// The session a cookie value stands for, if its tag is right and it
    /// has not expired at `now`.
    pub fn verify(token: &Secret, cookie: &str, now: i64) -> Option<Self> {
        let (body, mac) = cookie.rsplit_once('.')?;
        tag(token, "session", body)
            .verify_slice(&unhex(mac)?)
            .ok()?;
        let mut parts = body.split('.');
        let name = String::from_utf8(unhex(parts.next()?)?).ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        (now < expires && valid_name(&name)).then(|| Self {
            name,
            cookie: cookie.to_string(),
        })
    }

    /// The CSRF field of this session's forms.
    pub fn csrf(&self, token: &Secret) -> String {
        hex(&tag(token, "csrf", &self.cookie).finalize().into_bytes())
    }

    /// Whether `given` is this session's CSRF field (constant time).
    pub fn csrf_ok(&self, token: &Secret, given: &str) -> bool {
        unhex(given).is_some_and(|g| tag(token, "csrf", &self.cookie).verify_slice(&g).is_ok())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a state-changing request looks cross-site, if it does. Browsers
/// that send `Sec-Fetch-Site` are judged by it alone (it survives a reverse
/// proxy that rewrites `Host`); for others, an `Origin` must name one of
/// `hosts` (the request's `Host`, and `X-Forwarded-Host` behind a proxy).
/// The CSRF field is checked as well.
pub fn cross_site(
    origin: Option<&str>,
    fetch_site: Option<&str>,
    hosts: &[&str],
) -> Option<String> {
    if let Some(site) = fetch_site {
        return (!matches!(site, "same-origin" | "none"))
            .then(|| format!("Sec-Fetch-Site is {site}"));
    }
    let origin = origin?;
    let named = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let own = named.is_some_and(|h| hosts.contains(&h));
    (!own).then(|| format!("Origin {origin} is not this console's"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_until_it_expires_or_the_token_changes() {
        let token = Secret::new("canary-console-token");
        let cookie = Session::issue(&token, "dana", 1000);
        assert!(!cookie.contains("canary"));
        let s = Session::verify(&token, &cookie, 1001).unwrap();
        assert_eq!(s.name, "dana");
        assert!(Session::verify(&token, &cookie, 1000 + SESSION_SECS).is_none());
        assert!(Session::verify(&Secret::new("other"), &cookie, 1001).is_none());
        let forged = cookie.replacen(&hex(b"dana"), &hex(b"eve"), 1);
        assert!(Session::verify(&token, &forged, 1001).is_none());
        assert!(Session::verify(&token, "garbage", 1001).is_none());
        assert!(Session::verify(&token, "a.b.c.zz", 1001).is_none());
    }

    #[test]
    fn the_csrf_field_belongs_to_its_session() {
        let token = Secret::new("t");
        let a = Session::verify(&token, &Session::issue(&token, "a", 0), 1).unwrap();
        let b = Session::verify(&token, &Session::issue(&token, "a", 0), 1).unwrap();
        assert!(a.csrf_ok(&token, &a.csrf(&token)));
        assert!(!a.csrf_ok(&token, &b.csrf(&token)));
        assert!(!a.csrf_ok(&token, ""));
        assert!(!a.csrf_ok(&token, "xyz"));
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let host = &["127.0.0.1:9187"][..];
        let own = Some("http://127.0.0.1:9187");
        assert_eq!(cross_site(own, Some("same-origin"), host), None);
        assert_eq!(cross_site(own, None, host), None);
        assert_eq!(cross_site(None, None, host), None);
        assert!(cross_site(Some("http://evil.example"), None, host).is_some());
        assert!(cross_site(None, Some("cross-site"), host).is_some());
        assert!(cross_site(None, Some("same-site"), host).is_some());
        assert!(cross_site(Some("null"), None, host).is_some());
        // Behind a proxy that rewrites Host: the browser's own word counts,
        // else X-Forwarded-Host.
        let proxied = Some("https://support.example.com");
        assert_eq!(cross_site(proxied, Some("same-origin"), host), None);
        assert!(cross_site(proxied, None, host).is_some());
        let forwarded = &["127.0.0.1:9187", "support.example.com"][..];
        assert_eq!(cross_site(proxied, None, forwarded), None);
    }

    #[test]
    fn names_are_checked_not_cleaned() {
        assert!(valid_name("dana.k@team-2"));
        assert!(!valid_name(""));
        assert!(!valid_name(" dana"));
        assert!(!valid_name("<script>"));
        assert!(!valid_name(&"x".repeat(41)));
    }
}
