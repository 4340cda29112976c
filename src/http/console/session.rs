//! Console sessions and cross-site checks: the pure part. A session lives
//! in the database (`console_sessions`, through the store), so a sign-out
//! on any daemon of the account ends it on all; the cookie is
//! `ID.TAG`, a random id and an HMAC-SHA256 of it under a key derived
//! from the console token, so a new token ends every session at once and
//! a guessed or altered id is refused before the database is asked. The
//! database keeps only a hash of the id ([`Issued::key`]): its rows open
//! nothing. A form's CSRF field is another HMAC of the cookie, which a
//! page on another site cannot read or compute.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::secrets::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "assignd_console";

/// How long a sign-in lasts at most, however busy.
pub const SESSION_MS: i64 = 12 * 3_600_000;

/// A session not used for this long has ended.
pub const IDLE_MS: i64 = 30 * 60_000;

/// A session's use is written at most this often: a page view within it
/// writes nothing, so the idle end is this much early at worst.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// Who signed in, from a valid cookie and its live row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    /// The row's key: the hash of the cookie's id.
    pub key: String,
    /// The cookie's value, which the CSRF field is bound to.
    cookie: String,
}

/// A new session: the cookie for the browser, and the row's key and times
/// for the database.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cookie: String,
    pub key: String,
    pub expires_ms: i64,
    pub ends_ms: i64,
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

/// The row key of a session id: its SHA-256, so the table holds nothing a
/// cookie could be made from.
fn key_of_id(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes()))
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

/// When a session used at `now_ms` ends unless used again: after
/// [`IDLE_MS`], never past its absolute end.
pub fn ends_at(expires_ms: i64, now_ms: i64) -> i64 {
    (now_ms + IDLE_MS).min(expires_ms)
}

/// Whether a use at `now_ms` is to be written, the last written at
/// `last_seen_ms`.
pub fn touch_due(last_seen_ms: i64, now_ms: i64) -> bool {
    now_ms - last_seen_ms >= TOUCH_EVERY_MS
}

impl Session {
    /// A new session signed in at `now_ms`.
    pub fn issue(token: &Secret, now_ms: i64) -> Issued {
        let id = hex(&rand::random::<[u8; 16]>());
        let mac = tag(token, "session", &id).finalize().into_bytes();
        let expires_ms = now_ms + SESSION_MS;
        Issued {
            cookie: format!("{id}.{}", hex(&mac)),
            key: key_of_id(&id),
            expires_ms,
            ends_ms: ends_at(expires_ms, now_ms),
        }
    }

    /// The row key a cookie value stands for, if its tag is right under
    /// this token; whether the row is live is the database's to say.
    pub fn key(token: &Secret, cookie: &str) -> Option<String> {
        let (id, mac) = cookie.split_once('.')?;
        tag(token, "session", id).verify_slice(&unhex(mac)?).ok()?;
        Some(key_of_id(id))
    }

    /// The session of a checked cookie whose row names `name`.
    pub fn of(cookie: &str, key: String, name: String) -> Self {
        Self {
            name,
            key,
            cookie: cookie.to_string(),
        }
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
    fn a_cookie_names_its_row_only_under_its_token() {
        let token = Secret::new("canary-console-token");
        let issued = Session::issue(&token, 1000);
        assert!(!issued.cookie.contains("canary"));
        assert_eq!(
            Session::key(&token, &issued.cookie),
            Some(issued.key.clone())
        );
        // The row key is not the cookie, nor anything in it.
        assert!(!issued.cookie.contains(&issued.key));
        assert!(Session::key(&Secret::new("other"), &issued.cookie).is_none());
        let (id, mac) = issued.cookie.split_once('.').unwrap();
        let forged = format!(
            "{}{}.{mac}",
            &id[..31],
            if id.ends_with('0') { '1' } else { '0' }
        );
        assert!(Session::key(&token, &forged).is_none());
        assert!(Session::key(&token, "garbage").is_none());
        assert!(Session::key(&token, "ab.zz").is_none());
        assert_ne!(Session::issue(&token, 1000).key, issued.key);
    }

    #[test]
    fn a_session_ends_when_idle_or_at_its_absolute_end() {
        let token = Secret::new("t");
        let issued = Session::issue(&token, 0);
        assert_eq!(issued.expires_ms, SESSION_MS);
        assert_eq!(issued.ends_ms, IDLE_MS);
        // Used every 29 minutes, it lasts until its absolute end, no longer.
        let mut now = 0;
        let mut ends = issued.ends_ms;
        while now + 29 * 60_000 < ends {
            now += 29 * 60_000;
            assert!(touch_due(now - 29 * 60_000, now));
            ends = ends_at(issued.expires_ms, now);
        }
        assert_eq!(ends, SESSION_MS);
        // Page views within a minute of the last write write nothing.
        assert!(!touch_due(1000, 1000 + TOUCH_EVERY_MS - 1));
        assert!(touch_due(1000, 1000 + TOUCH_EVERY_MS));
    }

    #[test]
    fn the_csrf_field_belongs_to_its_session() {
        let token = Secret::new("t");
        let session = |i: &Issued| Session::of(&i.cookie, i.key.clone(), "a".into());
        let a = session(&Session::issue(&token, 0));
        let b = session(&Session::issue(&token, 0));
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
