//! The listener under attack, from many client addresses at once (the
//! loopback network's 127.0.0.x, each attacker bound to its own): a
//! thousand idle sockets, headers sent a byte at a time, sign-ins that
//! promise a form and never send it, bodies trickled a byte at a time on
//! every route, header floods and wrong sign-in tokens, all reconnecting
//! as soon as they are closed. Meanwhile a prober asks `/healthz` and
//! delivers signed webhooks, each on a new connection as HelpCrunch does:
//! every probe must be answered and every webhook stored. The latencies
//! are printed; docs/benchmarks.md records them from the release build
//! (`ATTACK_SECS=60 cargo test --release --test attack -- --nocapture`).

#[path = "common/mod.rs"]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::*;

const WEBHOOK_KEY: &str = "whk-attack-test";
const CONSOLE_TOKEN: &str = "console-attack-test";

/// Client addresses the attack comes from (127.0.0.2 and up).
const ATTACKERS: u8 = 64;

/// Signed webhooks the prober delivers at once, each on its own connection.
const WEBHOOKS_AT_ONCE: usize = 3;

/// A probe with no answer by then counts as starved.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What each kind of attacker does, and how many of them run.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Sends a request's headers a byte a second.
    Slowloris,
    /// Declares a 100-byte sign-in form and never sends it.
    StalledSignIn,
    /// Declares 1 MiB on a route and sends a byte every 200 ms.
    Trickle(&'static str),
    /// Sends requests with 60 KiB of headers as fast as they are answered.
    HeaderFlood,
    /// Guesses the console token as fast as it is answered.
    WrongSignIn,
    /// Declares 1 MiB on the webhook route, sends 20 KB at once, stalls.
    StalledBody,
    /// Sends whole 1 MiB bodies with a wrong signature, one after another.
    LargeBodies,
}

/// Where a kind of attacker comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Spread over the 64 attacker addresses.
    Spread,
    /// All from one address, 127.0.0.99.
    One,
    /// Each from an address of its own (127.1.x.y): one connection each.
    Swarm,
}

const PLAN: &[(Kind, usize, Source)] = &[
    (Kind::Idle, 1000, Source::Spread),
    (Kind::Slowloris, 200, Source::Spread),
    (Kind::Slowloris, 512, Source::Swarm),
    (Kind::StalledSignIn, 100, Source::Spread),
    (Kind::Trickle("/webhooks/helpcrunch"), 60, Source::Spread),
    (Kind::Trickle("/v1/enqueue"), 20, Source::Spread),
    (Kind::Trickle("/console/signin"), 20, Source::Spread),
    (Kind::Trickle("/console/agents/away"), 20, Source::Spread),
    (Kind::StalledBody, 32, Source::One),
    (Kind::LargeBodies, 3, Source::Spread),
    (Kind::HeaderFlood, 8, Source::Spread),
    (Kind::WrongSignIn, 8, Source::Spread),
];

/// Raises this process's open-file limit to its hard limit: the attack
/// holds more sockets than the usual soft limit of 1,024. The daemon,
/// a child, inherits it.
fn raise_fd_limit() {
    let attackers: usize = PLAN.iter().map(|(_, n, _)| n).sum();
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
    let needed = (attackers + 1024) as libc::rlim_t;
    assert!(
        l.rlim_max >= needed,
        "the attack needs {needed} open files; the hard limit is {} (ulimit -Hn)",
        l.rlim_max
    );
}

async fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(dst).await
}

fn attacker_addr(from: Source, i: usize) -> IpAddr {
    match from {
        Source::Spread => IpAddr::from([127, 0, 0, 2 + (i % ATTACKERS as usize) as u8]),
        Source::One => IpAddr::from([127, 0, 0, 99]),
        Source::Swarm => IpAddr::from([127, 1, (i / 250) as u8, 1 + (i % 250) as u8]),
    }
}

/// Reads until the server closes (or answers, for request-per-connection kinds).
async fn until_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// One round of `kind` on `s`, until the server closes or answers.
async fn attack_once(kind: Kind, s: &mut TcpStream, dst: SocketAddr) -> std::io::Result<()> {
    let host = format!("Host: {dst}\r\n");
    match kind {
        Kind::Idle => until_closed(s).await,
        Kind::Slowloris => {
            let head = format!("POST /webhooks/helpcrunch HTTP/1.1\r\n{host}X-Slow: ");
            for b in head.bytes().chain(std::iter::repeat(b'a')) {
                s.write_all(&[b]).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Kind::StalledSignIn => {
            let head = format!(
                "POST /console/signin HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await?;
            until_closed(s).await;
        }
        Kind::Trickle(path) => {
            let head = format!(
                "POST {path} HTTP/1.1\r\n{host}X-HelpCrunch-Signature: {}\r\nContent-Length: {}\r\n\r\n",
                "0".repeat(40),
                assignd::http::MAX_BODY
            );
            s.write_all(head.as_bytes()).await?;
            loop {
                s.write_all(b"x").await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Kind::StalledBody | Kind::LargeBodies => {
            let head = format!(
                "POST /webhooks/helpcrunch HTTP/1.1\r\n{host}X-HelpCrunch-Signature: {}\r\nContent-Length: {}\r\n\r\n",
                "0".repeat(40),
                assignd::http::MAX_BODY
            );
            s.write_all(head.as_bytes()).await?;
            let sent = match kind {
                Kind::StalledBody => 20_000,
                _ => assignd::http::MAX_BODY,
            };
            s.write_all(&vec![b'x'; sent]).await?;
            until_closed(s).await;
        }
        Kind::HeaderFlood => {
            let junk: String = (0..60)
                .map(|i| format!("X-Junk-{i}: {}\r\n", "j".repeat(1000)))
                .collect();
            let head = format!("GET /healthz HTTP/1.1\r\n{host}{junk}\r\n");
            s.write_all(head.as_bytes()).await?;
            until_closed(s).await;
        }
        Kind::WrongSignIn => {
            let form = "name=eve&token=guess";
            let head = format!(
                "POST /console/signin HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            );
            s.write_all(head.as_bytes()).await?;
            until_closed(s).await;
        }
    }
    Ok(())
}

/// Attacks until `stop`, reconnecting whenever the server lets go.
async fn attacker(
    kind: Kind,
    src: IpAddr,
    dst: SocketAddr,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut s) = connect_from(src, dst).await {
            let _ = attack_once(kind, &mut s, dst).await;
            rounds.fetch_add(1, Ordering::Relaxed);
        }
        // Reconnect at once, but never spin on a refused connect.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request on a new connection from 127.0.0.1: the status, or None if
/// no whole answer came within [`PROBE_TIMEOUT`].
async fn probe(dst: SocketAddr, head: &str, body: &[u8]) -> Option<u16> {
    let exchange = async {
        let mut s = TcpStream::connect(dst).await.ok()?;
        let head = format!(
            "{head}\r\nHost: {dst}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.ok()?;
        s.write_all(body).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange).await.ok()?
}

fn signed_chat_new(chat: i64) -> (String, Vec<u8>) {
    let body = serde_json::to_vec(&serde_json::json!({
        "event": "chat.new", "id": format!("attack-{chat}"), "createdAt": now_secs(),
        "eventData": {"id": chat, "status": "new", "assignee": null,
            "customer": {"id": chat, "email": "a@example.com"}}
    }))
    .unwrap();
    let signature = assignd::http::webhook_signature(WEBHOOK_KEY.as_bytes(), &body);
    let head = format!(
        "POST /webhooks/helpcrunch HTTP/1.1\r\nContent-Type: application/json\r\nX-HelpCrunch-Signature: {signature}"
    );
    (head, body)
}

/// Latencies of answered probes, and the probes that went unanswered or
/// answered other than 200.
#[derive(Default)]
struct Probes {
    healthz: Vec<Duration>,
    webhook: Vec<Duration>,
    failed: Vec<String>,
    webhooks_sent: i64,
}

async fn run_probes(dst: SocketAddr, for_how_long: Duration) -> Probes {
    let mut p = Probes::default();
    let end = Instant::now() + for_how_long;
    let mut chat = 1_000_000;
    while Instant::now() < end {
        let started = Instant::now();
        match probe(dst, "GET /healthz HTTP/1.1", b"").await {
            Some(200) => p.healthz.push(started.elapsed()),
            other => p.failed.push(format!("/healthz: {other:?}")),
        }
        // HelpCrunch delivers several events at once, on connections of
        // their own.
        let deliveries = (0..WEBHOOKS_AT_ONCE).map(|_| {
            chat += 1;
            let (head, body) = signed_chat_new(chat);
            async move {
                let started = Instant::now();
                (chat, probe(dst, &head, &body).await, started.elapsed())
            }
        });
        for (chat, status, took) in
            futures_util::future::join_all(deliveries.collect::<Vec<_>>()).await
        {
            p.webhooks_sent += 1;
            match status {
                Some(200) => p.webhook.push(took),
                other => p.failed.push(format!("webhook {chat}: {other:?}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn summary(name: &str, v: &mut [Duration]) -> String {
    if v.is_empty() {
        return format!("{name}: none answered");
    }
    format!(
        "{name}: {} answered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        quantile(v, 0.50).as_secs_f64() * 1e3,
        quantile(v, 0.99).as_secs_f64() * 1e3,
        quantile(v, 1.0).as_secs_f64() * 1e3,
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn attacked_daemon() -> (TestApp, Daemon, SocketAddr) {
    let app = TestApp::builder().worker(NO_FETCH).migrated().await;
    let dir = app.dir.path();
    std::fs::write(dir.join("webhook-key"), WEBHOOK_KEY).unwrap();
    std::fs::write(dir.join("console-token"), CONSOLE_TOKEN).unwrap();
    app.edit_config(|c| {
        // No proxy is trusted: the prober, from 127.0.0.1, is a client like
        // HelpCrunch, not a proxy whose connections wait their turn.
        c + "\n[http]\nlisten = \"127.0.0.1:0\"\nwebhook_key_file = \"webhook-key\"\nconsole_token_file = \"console-token\"\ntrusted_proxies = []\n"
    });
    let daemon = app.spawn_guarded("attack.log");
    let addr = app.listener_addr("attack.log").await.parse().unwrap();
    (app, daemon, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_and_health_are_answered_under_attack() {
    raise_fd_limit();
    let secs = std::env::var("ATTACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let (app, mut daemon, dst) = attacked_daemon().await;
    // HelpCrunch has been delivering before the attack begins: the daemon
    // knows its address from a signed webhook.
    let (head, body) = signed_chat_new(999_999);
    assert_eq!(probe(dst, &head, &body).await, Some(200));
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    let mut n = 0;
    for &(kind, count, from) in PLAN {
        for i in 0..count {
            let (stop, rounds, src) = (stop.clone(), rounds.clone(), attacker_addr(from, i));
            n += 1;
            attackers.push(tokio::spawn(attacker(kind, src, dst, stop, rounds)));
        }
    }
    // Let the attack take hold before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The prober has a thread and runtime of its own, so that what it
    // measures is the daemon, not its turn among the attackers' tasks.
    let prober = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_probes(dst, Duration::from_secs(secs)))
    });
    let mut p = tokio::task::spawn_blocking(move || prober.join().unwrap())
        .await
        .unwrap();
    let rss = rss_kib(daemon.pid());
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    println!(
        "under attack for {secs} s ({n} attackers from {ATTACKERS} addresses, {} rounds done), daemon RSS {} MiB",
        rounds.load(Ordering::Relaxed),
        rss / 1024
    );
    println!(
        "{} probes failed: {:?}",
        p.failed.len(),
        &p.failed[..p.failed.len().min(10)]
    );
    println!("{}", summary("/healthz", &mut p.healthz));
    println!("{}", summary("signed webhook", &mut p.webhook));
    let metrics = probe_metrics(dst).await;
    println!("{metrics}");
    assert!(
        p.failed.is_empty(),
        "{} probes unanswered or refused: {:?}",
        p.failed.len(),
        &p.failed[..p.failed.len().min(20)]
    );
    // Nothing lost: every signed webhook's event and chat are stored.
    assert_eq!(app.count("webhook_events").await, p.webhooks_sent + 1);
    let queued = app.scalar("SELECT COUNT(*) FROM queue WHERE chat_id > 1000000");
    assert_eq!(queued.await, p.webhooks_sent);
    let status = terminate(&mut daemon.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", app.log("attack.log"));
}

/// The listener's own count of what it turned away, for the record.
async fn probe_metrics(dst: SocketAddr) -> String {
    let exchange = async {
        let mut s = TcpStream::connect(dst).await.ok()?;
        let head = format!("GET /metrics HTTP/1.1\r\nHost: {dst}\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("assignd_http_refused_total") || l.starts_with("assignd_webhooks_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
