//! The shipped contrib/nginx/assignd.conf, run by the real nginx (as
//! shipped but for its ports and paths) terminating TLS in front of the
//! real daemon: webhooks pass and are assigned, what must stay inside
//! does not pass, and the upstream sees the client's address, the scheme
//! and the host, and a body only once nginx has all of it.
//!
//! nginx, openssl and curl must be on PATH (.ci/run installs them);
//! missing, a test fails under CI=true and says SKIPPED loudly elsewhere.

mod common;
#[path = "support/pki.rs"]
mod pki;
#[path = "support/tools.rs"]
mod tools;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use pki::{KeyKind, Pair};

const SITE: &str = "contrib/nginx/assignd.conf";
const HOST: &str = "assignd.example.com";
const WEBHOOK_KEY: &str = "whk-proxy-test";
const INTAKE_TOKEN: &str = "intake-proxy-test";

fn have_tools() -> bool {
    [
        ("nginx", "Debian package nginx"),
        ("openssl", "Debian package openssl"),
        ("curl", "Debian package curl"),
    ]
    .iter()
    .all(|(name, install)| tools::tool(name, install).is_some())
}

/// nginx in the foreground, one process, in a temp prefix; stopped when
/// dropped.
struct Nginx {
    _child: KillOnDrop,
    https: u16,
    http: u16,
    prefix: tempfile::TempDir,
}

impl Nginx {
    /// curl to `path` over HTTPS through nginx, trusting `ca`, by host name.
    async fn curl(&self, ca: &Path, path: &str, extra: &[String]) -> pki::Reply {
        let resolve = format!("{HOST}:{}:127.0.0.1", self.https);
        let url = format!("https://{HOST}:{}{path}", self.https);
        let mut args = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
        args.extend(extra.iter().map(String::as_str));
        args.push(&url);
        pki::curl(15, &args).await
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped site with its ports, upstream and file paths replaced.
/// Each replaced text must still be in the file, so this test follows it.
fn site(upstream: &str, https: u16, http: u16, pair: &Pair) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join(SITE)).unwrap();
    let live = "/etc/letsencrypt/live/assignd.example.com";
    for (from, to) in [
        ("listen 443 ssl;", format!("listen 127.0.0.1:{https} ssl;")),
        ("listen [::]:443 ssl;", String::new()),
        ("listen 80;", format!("listen 127.0.0.1:{http};")),
        ("listen [::]:80;", String::new()),
        ("server 127.0.0.1:9187;", format!("server {upstream};")),
        (
            &format!("{live}/fullchain.pem"),
            pair.cert.display().to_string(),
        ),
        (
            &format!("{live}/privkey.pem"),
            pair.key.display().to_string(),
        ),
    ] {
        assert!(
            text.contains(from),
            "{SITE} no longer has `{from}`: update this test"
        );
        text = text.replace(from, &to);
    }
    text
}

/// Runs nginx with the shipped site in front of `upstream`, TLS by `pair`;
/// `nginx -t` first.
async fn start_nginx(upstream: &str, pair: &Pair) -> Nginx {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    let (https, http) = (free_port(), free_port());
    std::fs::write(p.join("assignd.conf"), site(upstream, https, http, pair)).unwrap();
    // One process in the foreground (no master, so no user switch: temp
    // files stay writable), every path in the prefix.
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("    {t}_temp_path {}/{t};\n", p.display()))
        .collect();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 512; }}\n\
         http {{\n    access_log {d}/access.log;\n{temp}    include {d}/assignd.conf;\n}}\n",
        d = p.display()
    );
    std::fs::write(p.join("nginx.conf"), main).unwrap();
    let args = |extra: &[&str]| {
        let mut c = Command::new("nginx");
        c.arg("-p").arg(p).arg("-c").arg(p.join("nginx.conf"));
        c.arg("-e").arg(p.join("error.log")).args(extra);
        c
    };
    ok_stdout("nginx -t", &args(&["-t"]).output().unwrap());
    let child = args(&[]).stdin(Stdio::null()).spawn().unwrap();
    let nginx = Nginx {
        _child: KillOnDrop(child),
        https,
        http,
        prefix,
    };
    let up = || TcpStream::connect(("127.0.0.1", https)).is_ok();
    wait_until(Duration::from_secs(10), || nginx.error_log(), up).await;
    nginx
}

fn new_chat(id: i64) -> serde_json::Value {
    serde_json::json!({"id": id, "status": "new", "createdAt": "1607540767.414",
        "customer": {"id": 9, "email": "x@example.com"}, "assignee": null,
        "department": {"id": 1, "name": "Support"}, "communicatedAgents": []})
}

/// curl arguments that POST `body` from a file in `dir`, with `headers`.
fn post(dir: &Path, body: &[u8], headers: &[String]) -> Vec<String> {
    let file = dir.join(format!("body-{}", body.len()));
    std::fs::write(&file, body).unwrap();
    let mut args = vec!["--data-binary".to_string(), format!("@{}", file.display())];
    for h in headers {
        args.extend(["-H".to_string(), h.clone()]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_shipped_config_passes_webhooks_and_keeps_the_rest_inside() {
    if !have_tools() {
        return;
    }
    let app = TestApp::builder().listen().build().await;
    let dir = app.dir.path();
    std::fs::write(dir.join("webhook-key"), WEBHOOK_KEY).unwrap();
    std::fs::write(dir.join("intake-token"), INTAKE_TOKEN).unwrap();
    app.edit_config(|c| {
        format!("{c}webhook_key_file = \"webhook-key\"\nintake_token_file = \"intake-token\"\n")
    });
    let mut daemon = app.spawn_guarded("daemon.log");
    let upstream = app.listener_addr("daemon.log").await;
    let pair = pki::self_signed(dir, "nginx", KeyKind::EcPkcs8);
    let nginx = start_nginx(&upstream, &pair).await;

    let health = nginx.curl(&pair.ca, "/healthz", &[]).await;
    assert_eq!(
        (health.status, health.body.trim()),
        (200, "ok"),
        "{health:?}\n{}",
        nginx.error_log()
    );

    let body = webhook_event("proxy-1", "chat.new", new_chat(51));
    let signature = assignd::http::webhook_signature(WEBHOOK_KEY.as_bytes(), &body);
    let headers = [format!("X-HelpCrunch-Signature: {signature}")];
    let args = post(dir, &body, &headers);
    let r = nginx.curl(&pair.ca, "/webhooks/helpcrunch", &args).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", daemon.log_text());
    let sandbox = &app.sandbox;
    wait_for(
        "chat 51 assigned through nginx",
        Duration::from_secs(10),
        || sandbox.assignee(51).is_some(),
    )
    .await;

    assert_kept_inside(&app, &nginx, &pair.ca, &upstream).await;
    // Only POST reaches the webhook; 1 MiB is the most nginx passes on.
    let r = nginx.curl(&pair.ca, "/webhooks/helpcrunch", &[]).await;
    assert_eq!(r.status, 403, "{r:?}");
    let big = post(dir, &vec![b'x'; 2 << 20], &headers);
    let r = nginx.curl(&pair.ca, "/webhooks/helpcrunch", &big).await;
    assert_eq!(r.status, 413, "{r:?}");
    let plain = pki::curl(5, &[&format!("http://127.0.0.1:{}/healthz", nginx.http)]).await;
    assert_eq!(plain.status, 301, "port 80 redirects: {plain:?}");
    daemon.assert_running("behind nginx");
}

/// What stays inside does not pass nginx: metrics, readiness, the enqueue
/// API (though the daemon itself serves them).
async fn assert_kept_inside(app: &TestApp, nginx: &Nginx, ca: &Path, upstream: &str) {
    for path in ["/metrics", "/readyz"] {
        let r = nginx.curl(ca, path, &[]).await;
        assert_eq!(r.status, 404, "{path} through nginx: {r:?}");
    }
    let bearer = [format!("Authorization: Bearer {INTAKE_TOKEN}")];
    let enqueue = post(app.dir.path(), br#"{"chat_id": 77}"#, &bearer);
    let r = nginx.curl(ca, "/v1/enqueue", &enqueue).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(app.count("queue WHERE chat_id = 77").await, 0);
    let direct = pki::curl(5, &[&format!("http://{upstream}/metrics")]).await;
    assert_eq!(
        direct.status, 200,
        "the daemon itself serves /metrics: {direct:?}"
    );
}

/// One request as an upstream saw it: its head, its body, and when its
/// first byte arrived.
struct Seen {
    head: String,
    body: Vec<u8>,
    first_byte: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A one-request-per-connection HTTP upstream that records what arrives.
fn recording_upstream() -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Some(seen) = read_request(&stream) else {
                continue;
            };
            let _ = (&stream).write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
            );
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).ok()?;
    let first_byte = Instant::now();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut seen = Seen {
        head,
        body: Vec::new(),
        first_byte,
    };
    let length = seen
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap_or(0));
    seen.body.resize(length, 0);
    reader.read_exact(&mut seen.body).ok()?;
    Some(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nginx_config_names_the_client_and_holds_bodies_until_whole() {
    if !have_tools() {
        return;
    }
    let (upstream, seen) = recording_upstream();
    let pki_dir = tempfile::tempdir().unwrap();
    let pair = pki::self_signed(pki_dir.path(), "nginx", KeyKind::EcPkcs8);
    let nginx = start_nginx(&upstream, &pair).await;

    // A client's own X-Forwarded-For is replaced by the address nginx saw.
    let spoof = ["-H".to_string(), "X-Forwarded-For: 203.0.113.9".to_string()];
    let r = nginx.curl(&pair.ca, "/healthz", &spoof).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.error_log());
    let got = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        got.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "{}",
        got.head
    );
    assert_eq!(
        got.header("x-forwarded-proto"),
        Some("https"),
        "{}",
        got.head
    );
    assert_eq!(got.header("x-forwarded-host"), Some(HOST), "{}", got.head);
    assert_eq!(got.header("host"), Some(HOST), "{}", got.head);

    // A body sent in two halves 2 s apart reaches the upstream whole, and
    // nothing of the request arrives before its last byte.
    let started = Instant::now();
    let reply = trickle(&nginx).await;
    let got = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{reply}\n{}",
        nginx.error_log()
    );
    assert_eq!(got.body, b"1234567890");
    let held = got.first_byte - started;
    assert!(
        held >= Duration::from_millis(1800),
        "the upstream saw the request after {held:?}"
    );
}

/// POSTs a 10-byte body through nginx in two halves 2 s apart, over a raw
/// TLS connection; nginx's answer.
async fn trickle(nginx: &Nginx) -> String {
    let request = format!(
        "POST /webhooks/helpcrunch HTTP/1.1\\r\\nHost: {HOST}\\r\\nContent-Length: 10\\r\\n\
         Connection: close\\r\\n\\r\\n"
    );
    let script = format!(
        "(printf '{request}12345'; sleep 2; printf '67890') | openssl s_client -quiet \
         -connect 127.0.0.1:{} -servername {HOST} 2>/dev/null",
        nginx.https
    );
    let out = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Behind the shipped nginx every connection comes from 127.0.0.1, a
/// trusted proxy: the daemon counts sign-in guesses by the client nginx
/// names in `X-Forwarded-For`, so one guesser is throttled and another
/// client behind the same proxy still signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_a_guesser_is_throttled_by_its_own_address_alone() {
    if !have_tools() {
        return;
    }
    let app = TestApp::builder().listen().build().await;
    let dir = app.dir.path();
    std::fs::write(dir.join("console-token"), "console-proxy-test").unwrap();
    app.edit_config(|c| format!("{c}console_token_file = \"console-token\"\n"));
    let _daemon = app.spawn_guarded("daemon.log");
    let upstream = app.listener_addr("daemon.log").await;
    let pair = pki::self_signed(dir, "nginx", KeyKind::EcPkcs8);
    let nginx = start_nginx(&upstream, &pair).await;
    let sign_in = |from: &str, token: &str| {
        let form = format!("name=dana&token={token}");
        let browser = "Sec-Fetch-Site: same-origin".to_string();
        let mut args = post(dir, form.as_bytes(), &[browser]);
        args.extend(["--interface".to_string(), from.to_string()]);
        args
    };
    let mut statuses = Vec::new();
    // The free tries, one more wrong token that earns a wait, and one too early.
    for _ in 0..assignd::http::SIGN_IN_FREE_TRIES + 2 {
        let r = nginx
            .curl(&pair.ca, "/console/signin", &sign_in("127.0.0.2", "guess"))
            .await;
        statuses.push(r.status);
    }
    let last = statuses.last().copied();
    assert_eq!(last, Some(429), "the guesser is throttled: {statuses:?}");
    let r = nginx
        .curl(&pair.ca, "/console/signin", &sign_in("127.0.0.2", "guess"))
        .await;
    assert!(
        r.body.contains("Too many sign-in attempts"),
        "the daemon's 429: {r:?}"
    );
    // Another client behind the same proxy is not held up by the guesser.
    let r = nginx
        .curl(
            &pair.ca,
            "/console/signin",
            &sign_in("127.0.0.3", "console-proxy-test"),
        )
        .await;
    assert_eq!(r.status, 303, "another client signs in: {r:?}");
}
