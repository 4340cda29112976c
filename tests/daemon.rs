//! The real `assignd run` process: signals, reload, systemd notifications.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn recv_until(socket: &UnixDatagram, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&msg);
            seen.push('|');
            if msg.contains(want) {
                return seen;
            }
        }
    }
    panic!("no `{want}` from assignd; got: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_keeps_old_ones_when_invalid() {
    let app = TestApp::builder().worker("concurrency = 1").build().await;
    app.migrate().await;
    let socket_path = app.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    let log = std::fs::File::create(app.dir.path().join("run.log")).unwrap();
    let mut daemon = app
        .command(&["run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    recv_until(&notify, "READY=1", Duration::from_secs(10));

    app.insert_raw([1]).await;
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assignee(1), Some(4188), "alice first");
    // The processing loop pings the watchdog at half WATCHDOG_USEC, with a status.
    let seen = recv_until(
        &notify,
        "last: chat 1 assigned alice",
        Duration::from_secs(5),
    );
    assert!(
        seen.contains("WATCHDOG=1\nSTATUS=queue: 0 pending, 0 leased, 0 dead"),
        "{seen}"
    );

    // Invalid rules: the reload fails, the old rules stay, status says why.
    std::fs::write(
        app.dir.path().join("rules.toml"),
        "[[rule]]\nname = \"x\"\nassign = \"pool:nobody\"\n",
    )
    .unwrap();
    hup(daemon.id());
    let seen = recv_until(&notify, "READY=1", Duration::from_secs(10));
    assert!(seen.contains("RELOADING=1\nMONOTONIC_USEC="), "{seen}");
    app.insert_raw([2]).await;
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assignee(2), Some(4761), "old rules: bob next");
    let status = app.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("rules_reload_error:") && text.contains("unknown pool `nobody`"),
        "{text}"
    );

    // Valid new rules apply to the next chat.
    let carol_only =
        "[agents]\ncarol = { id = 6694 }\n[[rule]]\nname = \"all to carol\"\nassign = \"carol\"\n";
    std::fs::write(app.dir.path().join("rules.toml"), carol_only).unwrap();
    hup(daemon.id());
    recv_until(&notify, "READY=1", Duration::from_secs(10));
    app.insert_raw([3]).await;
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assignee(3), Some(6694));
    let status = app.command(&["status"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&status.stdout).contains("rules_reload_error"));

    let code = terminate(&mut daemon, Duration::from_secs(10));
    recv_until(&notify, "STOPPING=1", Duration::from_secs(2));
    assert!(code.success(), "{}", app.log("run.log"));
    assert_eq!(app.count("queue WHERE state = 'leased'").await, 0);
}

/// SIGTERM while a backlog drains: exit 0 well within 10 s, no row left leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly() {
    // A slow API budget keeps rows in flight when the signal comes.
    let app = TestApp::builder()
        .worker("concurrency = 4")
        .rate("requests = 20\nper = \"1s\"")
        .build()
        .await;
    app.migrate().await;
    app.insert_raw(1..=200).await;
    let mut daemon = app.spawn_daemon("run.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.count("queue WHERE state = 'done'").await < 5 {
        let log = app.log("run.log");
        assert!(Instant::now() < deadline, "no progress: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let code = terminate(&mut daemon, Duration::from_secs(10));
    assert!(code.success(), "{}", app.log("run.log"));
    println!("stopped {:?} after SIGTERM", started.elapsed());
    assert_eq!(app.count("queue WHERE state = 'leased'").await, 0);
    let pending_with_spent_attempts = app
        .count("queue WHERE state = 'pending' AND attempts > 0")
        .await;
    assert_eq!(
        pending_with_spent_attempts, 0,
        "released rows get their attempt back"
    );
    let finished = app.count("queue WHERE state = 'done'").await;
    assert!(finished < 200, "the backlog was still draining");
}

/// The shipped unit: `systemd-analyze verify` prints nothing and
/// `systemd-analyze security` rates it 1.5 or lower, when the tool exists.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("skipped: systemd-analyze is not installed on this machine");
        return;
    };
    if !version.status.success() {
        println!("skipped: systemd-analyze does not run here");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/assignd.service"
    ))
    .unwrap();
    // Point the unit at the binary this test built, so verify can check it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assignd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/assignd", env!("CARGO_BIN_EXE_assignd")),
    )
    .unwrap();

    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=15"])
        .arg(&path)
        .output();
    let text = ok_stdout("systemd-analyze security", &security.unwrap());
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for assignd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    println!("systemd-analyze security: exposure {level}");
    assert!(level <= 1.5, "exposure {level}");
}

/// `assignd run` with `[http] listen`: the enqueue API works with the
/// token from its file, and SIGHUP rotates the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_and_sighup_rotates_its_token() {
    let app = TestApp::builder().build().await;
    std::fs::write(app.dir.path().join("intake-token"), "first-token\n").unwrap();
    let config = std::fs::read_to_string(&app.config_path).unwrap()
        + "\n[http]\nlisten = \"127.0.0.1:0\"\nintake_token_file = \"intake-token\"\n";
    std::fs::write(&app.config_path, config).unwrap();
    let mut daemon = app.spawn_daemon("run.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let log = app.log("run.log");
        if let Some(rest) = log.split("HTTP listener ready bound=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no listener: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let http = reqwest::Client::new();
    let post = |token: &'static str| {
        let http = http.clone();
        let url = format!("http://{addr}/v1/enqueue");
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"chat_id": 71}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("first-token").await, 202);
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.sandbox.assignee(71), Some(4188));

    std::fs::write(app.dir.path().join("intake-token"), "second-token\n").unwrap();
    hup(daemon.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while post("first-token").await != 401 {
        assert!(Instant::now() < deadline, "the old token still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post("second-token").await, 202);
    assert!(terminate(&mut daemon, Duration::from_secs(10)).success());
    assert!(
        !app.log("run.log").contains("second-token"),
        "a secret in the log"
    );
}
