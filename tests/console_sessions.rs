//! Console sessions and sign-in against the real `assignd run`, over plain
//! HTTP (issue 22): a sign-out, a new token and idle time end a session on
//! the server, whatever copy of the cookie is kept; a stalled sign-in holds
//! nothing; a guesser is told to wait (429, `Retry-After`) while others
//! sign in; an https `public_url` makes the cookie `Secure`.

mod common;
#[path = "support/console_http.rs"]
mod console_http;

use std::time::Duration;

use common::*;
use console_http::*;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "canary-console-1b7e42";
const LOG: &str = "run.log";

/// The real daemon with the console on (plus `extra` in `[http]`); the
/// app, the daemon and the listener's base url.
async fn start(extra: &str) -> (TestApp, Daemon, String) {
    let app = TestApp::builder().listen().build().await;
    app.edit_config(|c| format!("{c}console_token_file = \"console-token\"\n{extra}"));
    std::fs::write(app.dir.path().join("console-token"), format!("{TOKEN}\n")).unwrap();
    let daemon = app.spawn_guarded(LOG);
    let base = format!("http://{}", app.listener_addr(LOG).await);
    (app, daemon, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_copied_before_sign_out_opens_nothing_after() {
    let (app, _daemon, base) = start("").await;
    let cookie = sign_in(&base, TOKEN).await.unwrap();
    assert_eq!(sent_to(&base, "/console/agents", &cookie).await, None);
    // The database holds a hash of the session's id, not the cookie.
    let pool = app.producer().await;
    let key: String = sqlx::query_scalar("SELECT id FROM console_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    let id = cookie.split('=').nth(1).unwrap().split('.').next().unwrap();
    assert!(
        !cookie.contains(&key) && !key.contains(id),
        "{key} / {cookie}"
    );

    assert_eq!(sign_out(&base, &cookie).await, 303);
    let to = sent_to(&base, "/console/agents", &cookie).await;
    assert_eq!(to.as_deref(), Some("/console/signin"));
    let away = [("csrf", "00"), ("agent", "alice"), ("until", "")];
    let status = post(&base, "/console/agents/away", &cookie, &base, &away).await;
    assert_eq!(status, 401, "a change with the copied cookie");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the session's row is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_console_token_ends_every_session() {
    let (app, daemon, base) = start("").await;
    let cookie = sign_in(&base, TOKEN).await.unwrap();
    assert_eq!(sent_to(&base, "/console/agents", &cookie).await, None);
    std::fs::write(app.dir.path().join("console-token"), "a-new-token\n").unwrap();
    hup(daemon.pid());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sent_to(&base, "/console/agents", &cookie).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old session still opens the console after a new token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to = sent_to(&base, "/console/agents", &cookie).await;
    assert_eq!(to.as_deref(), Some("/console/signin"));
    assert_eq!(sign_in(&base, TOKEN).await, Err(StatusCode::UNAUTHORIZED));
    let fresh = sign_in(&base, "a-new-token").await.unwrap();
    assert_eq!(sent_to(&base, "/console/agents", &fresh).await, None);
}

/// Moves every session `minutes` into the past, as if the browser had
/// been away that long.
async fn idle_for(app: &TestApp, minutes: i64) {
    let pool = app.producer().await;
    sqlx::query(
        "UPDATE console_sessions SET created_at = created_at - $1, last_seen = last_seen - $1,
             expires_at = expires_at - $1, ends_at = ends_at - $1",
    )
    .bind(minutes * 60_000)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

async fn last_seen(app: &TestApp) -> i64 {
    app.scalar("SELECT last_seen FROM console_sessions").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_used_is_kept_and_an_idle_one_ends() {
    let (app, _daemon, base) = start("").await;
    let cookie = sign_in(&base, TOKEN).await.unwrap();
    // Used every 29 minutes, for longer than the idle limit: kept, each
    // use written once.
    for _ in 0..3 {
        idle_for(&app, 29).await;
        let before = last_seen(&app).await;
        assert_eq!(sent_to(&base, "/console/agents", &cookie).await, None);
        let seen = last_seen(&app).await;
        assert!(seen >= before + 29 * 60_000, "the use was noted");
        // A view within the minute writes nothing.
        assert_eq!(sent_to(&base, "/console/queue", &cookie).await, None);
        assert_eq!(last_seen(&app).await, seen);
    }
    idle_for(&app, 31).await;
    let to = sent_to(&base, "/console/agents", &cookie).await;
    assert_eq!(to.as_deref(), Some("/console/signin"));
}

/// Headers of a sign-in that promises a body it never sends.
async fn stalled_sign_in(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /console/signin HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sign_ins_hold_nothing() {
    let (_app, mut daemon, base) = start("").await;
    let addr = base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..100 {
        stalled.push(stalled_sign_in(&addr).await);
    }
    // Well within the 10 s a body may take: nothing waits for theirs.
    let health = http()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .expect("/healthz answers beside 100 stalled sign-ins");
    assert_eq!(health.status(), StatusCode::OK);
    let other = sign_in_from(&base, TOKEN, Some("203.0.113.20")).await;
    assert_eq!(
        other.status(),
        StatusCode::SEE_OTHER,
        "another client signs in"
    );
    // A form larger than a sign-in's is refused before it is read.
    let big = http()
        .post(format!("{base}/console/signin"))
        .header("x-forwarded-for", "203.0.113.21")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name=dana&token={}", "x".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    daemon.assert_running("after the stalled sign-ins");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_is_told_to_wait_and_others_are_not() {
    let (_app, _daemon, base) = start("").await;
    let guesser = Some("198.51.100.7");
    for i in 0..6 {
        let r = sign_in_from(&base, &format!("guess-{i}"), guesser).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    for token in ["guess-6", TOKEN] {
        let r = sign_in_from(&base, token, guesser).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&wait), "Retry-After: {wait}");
        assert!(!r.headers().contains_key("set-cookie"));
    }
    let other = sign_in_from(&base, TOKEN, Some("198.51.100.8")).await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
    // After the wait, the guesser may try again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = sign_in_from(&base, TOKEN, guesser).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_public_url_makes_the_cookie_secure() {
    let (_app, _daemon, base) = start("public_url = \"https://assignd.example.com\"\n").await;
    let r = sign_in_from(&base, TOKEN, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}
