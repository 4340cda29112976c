//! The console on several daemons (SPEC §11, §12): three `assignd run` on
//! one PostgreSQL database, each with its own listener. A session signed in
//! on one daemon is good on the others (its row is in the database) and a
//! sign-out on one ends it on all; a change made through any of them is
//! seen by all (the away flag is in the database), the chats that follow
//! go to the other agent whichever daemon decides them, and the audit names
//! who made each change. Also the refusals, over plain HTTP: no console
//! without a token, a wrong token, no session, a wrong CSRF field, a
//! foreign origin.

mod common;
#[path = "support/console_http.rs"]
mod console_http;
#[path = "support/postgres.rs"]
mod postgres;

use std::time::Duration;

use common::*;
use console_http::*;
use reqwest::StatusCode;

const TOKEN: &str = "canary-console-5d1e9a";
const API_KEY: &str = "canary-api-key-77c2";

/// A page's body, asserting 200 and that no secret is on it.
async fn page(base: &str, path: &str, cookie: &str) -> String {
    let r = get(base, path, cookie).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    let text = r.text().await.unwrap();
    for secret in [TOKEN, API_KEY] {
        assert!(!text.contains(secret), "{path} shows a secret");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_sessions_away_flags_and_the_audit() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.database().await;
    let team = [("alice", 1), ("bob", 2)];
    let rules = support_rules(
        &team,
        "",
        "[[rule]]\nname = \"all\"\nassign = \"pool:support\"\n",
    );
    let app = TestApp::builder()
        .rules(&rules)
        .agents(agents(&team))
        .key(API_KEY)
        .listen()
        .build()
        .await;
    app.use_database(&url);
    app.edit_config(|c| c + "console_token_file = \"console-token\"\n");
    std::fs::write(app.dir.path().join("console-token"), format!("{TOKEN}\n")).unwrap();
    let mut daemons = Vec::new();
    let mut bases = Vec::new();
    for i in 1..=3 {
        let log = format!("d{i}.log");
        daemons.push(app.spawn_guarded(&log));
        bases.push(format!("http://{}", app.listener_addr(&log).await));
    }

    // Refusals: no change without a session, a CSRF field, or from another site.
    assert_eq!(
        sign_in(&bases[0], "wrong-token").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    let cookie = sign_in(&bases[0], TOKEN).await.unwrap();
    // Through a TLS proxy the cookie is Secure as well.
    let proxied = http()
        .post(format!("{}/console/signin", bases[1]))
        .header("x-forwarded-proto", "https")
        .form(&[("name", "dana"), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    let set = proxied.headers()["set-cookie"].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let agents_page = page(&bases[1], "/console/agents", &cookie).await;
    assert!(
        agents_page.contains("<span>dana</span>"),
        "signed in on daemon 1, seen on daemon 2"
    );
    let csrf = csrf_of(&agents_page);
    let away = [("csrf", csrf.as_str()), ("agent", "alice"), ("until", "")];
    let own = |i: usize| bases[i].clone();
    assert_eq!(
        post(&bases[2], "/console/agents/away", "", &own(2), &away).await,
        401
    );
    let bad = [("csrf", "00"), ("agent", "alice"), ("until", "")];
    assert_eq!(
        post(&bases[2], "/console/agents/away", &cookie, &own(2), &bad).await,
        403
    );
    let evil = "http://evil.example";
    assert_eq!(
        post(&bases[2], "/console/agents/away", &cookie, evil, &away).await,
        403
    );
    let pg_pool = sqlx::PgPool::connect(&url).await.unwrap();
    let away_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM agent_away")
            .fetch_one(&pg_pool)
            .await
            .unwrap()
    };
    assert_eq!(away_rows().await, 0, "nothing changed by a refused request");

    // Marked away through daemon 3: every following chat goes to bob,
    // whichever daemon decides it.
    assert_eq!(
        post(&bases[2], "/console/agents/away", &cookie, &own(2), &away).await,
        303
    );
    assert_eq!(away_rows().await, 1);
    let shown = page(&bases[0], "/console/agents", &cookie).await;
    assert!(
        shown.contains("away until marked back"),
        "daemon 1 shows the flag set on daemon 3"
    );
    sqlx::query("INSERT INTO queue (chat_id) SELECT g FROM generate_series(1, 30) AS g")
        .execute(&pg_pool)
        .await
        .unwrap();
    let assigned = |agent: &'static str| {
        let pool = pg_pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM outcomes WHERE result = 'assigned' AND agent = $1",
            )
            .bind(agent)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while assigned("bob").await + assigned("alice").await < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "30 chats not assigned in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        assigned("alice").await,
        0,
        "no chat for the agent marked away"
    );
    // Back through daemon 2; the audit, read on daemon 1, names dana for both.
    let back = [("csrf", csrf.as_str()), ("agent", "alice")];
    assert_eq!(
        post(&bases[1], "/console/agents/back", &cookie, &own(1), &back).await,
        303
    );
    assert_eq!(away_rows().await, 0);
    let audit = page(&bases[0], "/console/audit", &cookie).await;
    for action in ["sign_in", "away", "back"] {
        assert!(
            audit.contains(&format!("<td class=\"action\">{action}</td>")),
            "the audit lists {action}: {audit}"
        );
    }
    assert!(audit.contains("console:dana"));

    // Signed out through daemon 2, the session is over on every daemon: a
    // copy of the cookie kept from before opens nothing.
    assert_eq!(sign_out(&bases[1], &cookie).await, 303);
    for base in &bases {
        let to = sent_to(base, "/console/agents", &cookie).await;
        assert_eq!(to.as_deref(), Some("/console/signin"), "{base}");
    }
    assert_eq!(
        post(&bases[0], "/console/agents/away", &cookie, &own(0), &away).await,
        401
    );
    for mut d in daemons {
        d.assert_running("after the console test");
        terminate(&mut d.child, Duration::from_secs(15));
    }
    for i in 1..=3 {
        assert!(
            !app.log(&format!("d{i}.log")).contains(TOKEN),
            "a log shows the token"
        );
    }
}

/// Without a console token the console does not exist: 404 everywhere.
#[tokio::test]
async fn no_token_no_console() {
    let app = TestApp::builder().listen().migrated().await;
    let daemon = app.start_in_process().await;
    let base = format!("http://{}", daemon.http_addr.unwrap());
    for path in [
        "/console/",
        "/console/signin",
        "/console/agents",
        "/console/style.css",
    ] {
        let r = http().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = http()
        .post(format!("{base}/console/signin"))
        .form(&[("name", "dana"), ("token", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    daemon.stop().await;
}
