//! The PostgreSQL password given apart from the url (SPEC §3, "Secrets"):
//! by `[database] password_file` or the systemd credential
//! `database-password`, against a real server that requires `scram-sha-256`
//! over TCP. The real binary connects, migrates, assigns and reports with
//! it, and a canary password never shows in what it prints, logs, serves
//! or stores.

mod common;
#[path = "support/postgres.rs"]
mod postgres;

use std::process::Command;
use std::time::Duration;

use common::*;

const CANARY: &str = "canary-dbpw-5f3a9c";
const WRONG: &str = "canary-wrong-81e2d0";

/// How the daemon is given the password.
#[derive(Clone, Copy)]
enum Given {
    File,
    Credential,
}

/// An app on a fresh database of `server` whose role's password is
/// [`CANARY`], given to assignd as `given` with the value `password`.
async fn app_with(server: &postgres::PgServer, given: Given, password: &str) -> (TestApp, String) {
    let url = server.password_database(CANARY).await;
    let app = TestApp::builder().listen().build().await;
    app.use_database(&url);
    match given {
        Given::File => {
            std::fs::write(app.dir.path().join("db-password"), format!("{password}\n")).unwrap();
            app.edit_config(|c| {
                c.replace(
                    &format!("url = \"{url}\""),
                    &format!("url = \"{url}\"\npassword_file = \"db-password\""),
                )
            });
        }
        Given::Credential => {
            let creds = app.dir.path().join("credentials");
            std::fs::create_dir(&creds).unwrap();
            std::fs::write(creds.join("database-password"), password).unwrap();
        }
    }
    let db = url.rsplit('/').next().unwrap().to_string();
    (app, db)
}

/// `assignd ARGS` as the service would run it when given `given`.
fn assignd(app: &TestApp, given: Given, args: &[&str]) -> Command {
    let mut c = app.command(args);
    if let Given::Credential = given {
        c.env("CREDENTIALS_DIRECTORY", app.dir.path().join("credentials"));
    }
    c
}

/// Runs `assignd ARGS`: (exit code, stdout + stderr).
fn exec(app: &TestApp, given: Given, args: &[&str]) -> (i32, String) {
    let out = assignd(app, given, args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `assignd run` logging at `level` to `daemon.log`, killed if the test fails.
fn spawn(app: &TestApp, given: Given, level: &str) -> Daemon {
    let log = app.dir.path().join("daemon.log");
    let child = assignd(app, given, &["run"])
        .env("RUST_LOG", level)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Daemon { child, log }
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in [CANARY, WRONG] {
        assert!(!text.contains(canary), "{what} shows the password: {text}");
    }
}

/// Migrates, runs the daemon until it assigned a chat, and reads `status`
/// and `/metrics`, all with the password given as `given`; nothing shows it.
async fn works_with(given: Given) {
    let Some(server) = postgres::server() else {
        return;
    };
    let (app, db) = app_with(server, given, CANARY).await;
    let (code, migrated) = exec(&app, given, &["migrate"]);
    assert_eq!(code, 0, "migrate: {migrated}");
    let (code, enqueued) = exec(&app, given, &["enqueue", "1001", "1002"]);
    assert_eq!(code, 0, "enqueue: {enqueued}");
    let mut daemon = spawn(&app, given, "debug");
    wait_for("two assignments", Duration::from_secs(30), || {
        app.sandbox.assign_calls().len() >= 2
    })
    .await;
    let addr = app.listener_addr("daemon.log").await;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    let (code, status) = exec(&app, given, &["status"]);
    assert_eq!(code, 0, "status: {status}");
    assert_contains(&status, &["done 2", "assigned alice"]);
    let (code, json) = exec(&app, given, &["status", "--json"]);
    assert_eq!(code, 0, "status --json: {json}");
    assert_contains(&json, &[&format!("@127.0.0.1:{}/{db}", server.port)]);
    assert!(terminate(&mut daemon.child, Duration::from_secs(15)).success());
    let logged = app.log("daemon.log");
    assert_contains(&logged, &["assignd running"]);
    for (what, text) in [
        ("migrate", migrated),
        ("enqueue", enqueued),
        ("the daemon's log", logged),
        ("/metrics", metrics),
        ("status", status),
        ("status --json", json),
        ("the database", server.dump(&db)),
        ("the server's log", server.log()),
    ] {
        assert_no_canary(what, &text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_logs_in_without_a_password_in_the_url() {
    works_with(Given::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_logs_in_without_a_password_in_the_url() {
    works_with(Given::Credential).await;
}

/// A wrong password: the commands fail saying the login was refused, and
/// the daemon waits for the database saying why; neither value shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_clearly_without_showing_it() {
    let Some(server) = postgres::server() else {
        return;
    };
    for given in [Given::File, Given::Credential] {
        let (app, _) = app_with(server, given, WRONG).await;
        let (code, said) = exec(&app, given, &["status"]);
        assert_eq!(code, 1, "{said}");
        assert_contains(&said, &["password authentication failed"]);
        assert_no_canary("status", &said);
        let mut daemon = spawn(&app, given, "info");
        wait_for(
            "the refused login in the log",
            Duration::from_secs(20),
            || {
                app.log("daemon.log")
                    .contains("password authentication failed")
            },
        )
        .await;
        assert!(terminate(&mut daemon.child, Duration::from_secs(15)).success());
        let logged = app.log("daemon.log");
        assert_contains(&logged, &["waiting for the database"]);
        assert_no_canary("the daemon's log", &logged);
    }
}

/// What is refused before any connection: a password both in the url and
/// apart from it (both places named, neither value), and a password file
/// that cannot be read (named). No server needed.
#[tokio::test]
async fn a_second_password_or_a_missing_file_is_refused_by_name() {
    let app = TestApp::builder().build().await;
    let url = format!("postgres://app:{WRONG}@127.0.0.1:1/x");
    app.use_database(&url);
    let creds = app.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let cred = creds.join("database-password");
    std::fs::write(&cred, CANARY).unwrap();
    for args in [&["status"][..], &["migrate"], &["run"]] {
        let (code, said) = exec(&app, Given::Credential, args);
        assert_eq!(code, 2, "{args:?}: {said}");
        assert_contains(
            &said,
            &["given twice", "[database] url", &cred.display().to_string()],
        );
        assert_no_canary("the refusal", &said);
    }
    app.edit_config(|c| {
        c.replace(&url, "postgres://app@127.0.0.1:1/x").replace(
            "[database]\n",
            "[database]\npassword_file = \"no-such-file\"\n",
        )
    });
    let missing = app.dir.path().join("no-such-file").display().to_string();
    for args in [&["status"][..], &["run"]] {
        let (code, said) = exec(&app, Given::File, args);
        assert_eq!(code, 2, "{args:?}: {said}");
        assert_contains(&said, &["cannot read the database-password", &missing]);
    }
}
