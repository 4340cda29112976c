//! The listener serving HTTPS itself (`[http] tls_cert_file` and
//! `tls_key_file`), for real: the `assignd` binary with certificates the
//! real openssl makes at test time, curl and `openssl s_client` as its
//! clients, SIGHUP swapping the certificate, and clients that connect and
//! never handshake.
//!
//! openssl and curl must be on PATH (.ci/run installs them); missing, a
//! test fails under CI=true and says SKIPPED loudly elsewhere.

mod common;
#[path = "support/pki.rs"]
mod pki;
#[path = "support/tools.rs"]
mod tools;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use assignd::config::TlsFiles;
use assignd::http::{CLOSE_GRACE, HANDSHAKE_TIMEOUT, MAX_PER_CLIENT, ServerTls};
use common::*;
use pki::{KeyKind, Pair};

const WEBHOOK_KEY: &str = "whk-tls-test";
const LOG: &str = "daemon.log";

/// Whether openssl and curl are there to run the test with.
fn have_tools() -> bool {
    let openssl = tools::tool("openssl", "Debian package openssl").is_some();
    openssl && tools::tool("curl", "Debian package curl").is_some()
}

/// A daemon serving HTTPS with the pair in its `tls/` directory.
struct Served {
    app: TestApp,
    daemon: Daemon,
    addr: String,
}

/// The real daemon with `pair` installed as `tls/cert.pem` and
/// `tls/key.pem`, and a webhook key.
async fn start(pair: &Pair) -> Served {
    let app = TestApp::builder().listen().build().await;
    let dir = app.dir.path();
    std::fs::create_dir(dir.join("tls")).unwrap();
    install(dir, pair);
    std::fs::write(dir.join("webhook-key"), WEBHOOK_KEY).unwrap();
    // `.listen()` makes `[http]` the config's last table.
    app.edit_config(|c| {
        format!(
            "{c}webhook_key_file = \"webhook-key\"\n\
             tls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"tls/key.pem\"\n"
        )
    });
    let daemon = app.spawn_guarded(LOG);
    let addr = app.listener_addr(LOG).await;
    Served { app, daemon, addr }
}

/// Puts `pair` where the config points, each file replaced at once, as a
/// deploy hook's `mv` does.
fn install(dir: &Path, pair: &Pair) {
    for (from, to) in [(&pair.cert, "cert.pem"), (&pair.key, "key.pem")] {
        let tmp = dir.join("tls").join(format!("{to}.new"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("tls").join(to)).unwrap();
    }
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// SIGHUP, then waits until the log says `needle` for the `nth` time.
    async fn reload(&mut self, needle: &str, nth: usize) {
        hup(self.daemon.pid());
        let log = self.daemon.log.clone();
        let seen = move || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.matches(needle).count() >= nth
        };
        wait_until(
            Duration::from_secs(10),
            || format!("no `{needle}` after SIGHUP:\n{}", self.daemon.log_text()),
            seen,
        )
        .await;
    }

    /// Asserts that `/healthz` answers over TLS trusting `ca` only.
    async fn assert_serves(&mut self, ca: &Path, what: &str) {
        let r = pki::get(ca, &self.url("/healthz")).await;
        self.daemon.assert_running(what);
        assert!(
            r.ok && r.status == 200 && r.body.trim() == "ok",
            "{what}: {r:?}\n{}",
            self.daemon.log_text()
        );
    }
}

fn new_chat(id: i64) -> serde_json::Value {
    serde_json::json!({"id": id, "status": "new", "createdAt": "1607540767.414",
        "customer": {"id": 9, "email": "x@example.com"}, "assignee": null,
        "department": {"id": 1, "name": "Support"}, "communicatedAgents": []})
}

/// POSTs `body` to `url` signed as HelpCrunch signs it, trusting `ca`;
/// `extra` are more curl arguments.
pub async fn post_signed(ca: &Path, url: &str, body: &[u8], extra: &[&str]) -> pki::Reply {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let signature = assignd::http::webhook_signature(WEBHOOK_KEY.as_bytes(), body);
    let header = format!("X-HelpCrunch-Signature: {signature}");
    let data = format!("@{}", file.path().display());
    let mut args = vec!["--cacert", ca.to_str().unwrap(), "-H", &header];
    args.extend([
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &data,
    ]);
    args.extend(extra);
    args.push(url);
    pki::curl(15, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_https_and_swaps_its_certificate_on_sighup() {
    if !have_tools() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    // A leaf and its CA in one file, as certbot's fullchain.pem.
    let first = pki::chain(pki_dir.path(), "first");
    let mut s = start(&first).await;
    s.assert_serves(&first.ca, "first certificate").await;
    let seen = pki::handshake_info(&s.addr).await;
    assert_contains(&seen, &["CN = first", "ALPN protocol: http/1.1"]);
    let r = pki::get(&first.ca, &s.url("/healthz")).await;
    assert_eq!(r.version, "1.1", "{r:?}");

    let body = webhook_event("tls-1", "chat.new", new_chat(41));
    let r = post_signed(&first.ca, &s.url("/webhooks/helpcrunch"), &body, &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.daemon.log_text());
    let sandbox = &s.app.sandbox;
    wait_for("chat 41 assigned", Duration::from_secs(10), || {
        sandbox.assignee(41).is_some()
    })
    .await;

    let plain = pki::curl(5, &[&format!("http://{}/healthz", s.addr)]).await;
    assert!(
        !plain.ok && plain.status != 200,
        "plain HTTP on the TLS port: {plain:?}"
    );

    // A renewed pair: an RSA key in the PKCS#1 form this time.
    let second = pki::self_signed(pki_dir.path(), "second", KeyKind::RsaPkcs1);
    install(s.app.dir.path(), &second);
    s.reload("reloaded the TLS certificate", 1).await;
    s.assert_serves(&second.ca, "after the reload").await;
    assert_contains(&pki::handshake_info(&s.addr).await, &["CN = second"]);
    let old = pki::get(&first.ca, &s.url("/healthz")).await;
    assert!(!old.ok, "the old certificate is still served: {old:?}");

    // A broken certificate, then a pair whose key is not the certificate's:
    // each is refused and the second pair goes on serving.
    let tls = s.app.dir.path().join("tls");
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    std::fs::write(tls.join("cert.pem"), broken).unwrap();
    s.reload("keeping the old TLS certificate", 1).await;
    s.assert_serves(&second.ca, "after a broken certificate")
        .await;
    std::fs::copy(&first.cert, tls.join("cert.pem")).unwrap();
    s.reload("keeping the old TLS certificate", 2).await;
    s.assert_serves(&second.ca, "after a mismatched pair").await;
    let log = s.daemon.log_text();
    assert_contains(&log, &["not valid base64", "do not make a usable pair"]);
    for secret in [&first.key, &second.key] {
        let pem = std::fs::read_to_string(secret).unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "key material in the log:\n{log}");
        }
    }
}

/// A client that connects and never sends a ClientHello holds a
/// connection slot for [`HANDSHAKE_TIMEOUT`] at most, and never the
/// accept loop: others are served meanwhile, and a stranger's silent
/// clients beyond its share are closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_handshake_block_nobody_for_long() {
    if !have_tools() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pair = pki::self_signed(pki_dir.path(), "silent", KeyKind::EcSec1);
    let mut s = start(&pair).await;
    let addr = s.addr.clone();
    let connect = || std::net::TcpStream::connect(&addr).unwrap();
    let mut silent: Vec<_> = (0..30).map(|_| connect()).collect();
    let opened = Instant::now();
    let t = Instant::now();
    s.assert_serves(&pair.ca, "beside 30 silent clients").await;
    assert!(
        t.elapsed() < HANDSHAKE_TIMEOUT / 2,
        "a free slot waited {:?}: the handshake blocks the accept loop",
        t.elapsed()
    );

    // A stranger's silent clients beyond its share are closed at once,
    // and the ones it holds never keep a newcomer waiting.
    let mut strangers = Vec::new();
    for _ in 0..MAX_PER_CLIENT + 20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
        strangers.push(socket.connect(addr.parse().unwrap()).await.unwrap());
    }
    let t = Instant::now();
    s.assert_serves(&pair.ca, "beside a stranger's silent clients")
        .await;
    let waited = t.elapsed();
    println!(
        "served beside {} silent clients after {waited:?}",
        silent.len() + strangers.len()
    );
    assert!(
        waited < HANDSHAKE_TIMEOUT,
        "waited {waited:?} behind silent clients"
    );

    // The daemon hung up on the first silent client when its time ran out.
    let first = &mut silent[0];
    first
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT + Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    match first.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "a silent client still connected after {:?}: {other:?}",
            opened.elapsed()
        ),
    }
    assert!(opened.elapsed() >= HANDSHAKE_TIMEOUT - Duration::from_millis(200));

    // SIGTERM drops handshakes still waiting at once: no close grace for them.
    let _waiting: Vec<_> = (0..10).map(|_| connect()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let status = terminate(&mut s.daemon.child, Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", s.daemon.log_text());
    assert!(t.elapsed() < CLOSE_GRACE, "exit took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_load_stops_the_start_and_fails_check_naming_the_file() {
    if !have_tools() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let mut pair = pki::self_signed(pki_dir.path(), "start", KeyKind::EcPkcs8);
    pair.key = pki_dir.path().join("absent.key");
    let app = TestApp::builder().listen().build().await;
    app.edit_config(|c| {
        format!(
            "{c}tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            pair.cert.display(),
            pair.key.display()
        )
    });
    let mut child = app
        .command(&["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "assignd run did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_contains(&stderr, &["tls_key_file", "absent.key"]);
    // `assignd check` (the unit's ExecStartPre) says the same.
    let (code, _, stderr) = app.exec(&["check"]);
    assert_eq!(code, 2, "{stderr}");
    assert_contains(&stderr, &["tls_key_file", "absent.key"]);
}

/// Every key form openssl writes loads (PKCS#8, SEC1 and PKCS#1; EC and
/// RSA), as does a chain; a key that is not the certificate's does not.
#[test]
fn every_key_form_loads_and_a_mismatched_pair_does_not() {
    if tools::tool("openssl", "Debian package openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = |p: &Pair| TlsFiles {
        cert: p.cert.clone(),
        key: p.key.clone(),
    };
    let kinds = [
        KeyKind::EcPkcs8,
        KeyKind::EcSec1,
        KeyKind::RsaPkcs8,
        KeyKind::RsaPkcs1,
    ];
    let pairs: Vec<Pair> = kinds
        .iter()
        .map(|k| pki::self_signed(dir.path(), &format!("{k:?}"), *k))
        .collect();
    for (kind, pair) in kinds.iter().zip(&pairs) {
        ServerTls::load(files(pair)).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    ServerTls::load(files(&pki::chain(dir.path(), "chain"))).unwrap();
    for (cert, key) in [(&pairs[0], &pairs[3]), (&pairs[0], &pairs[1])] {
        let crossed = TlsFiles {
            cert: cert.cert.clone(),
            key: key.key.clone(),
        };
        let err = ServerTls::load(crossed)
            .err()
            .expect("a crossed pair loads");
        assert!(
            err.to_string().contains("do not make a usable pair"),
            "{err}"
        );
    }
}
