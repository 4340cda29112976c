//! The HTTP listener: signed webhooks, the enqueue API, health and readiness.

mod common;

use std::time::{Duration, Instant};

use assignd::secrets::Secret;
use common::*;
use serde_json::{Value, json};

const WEBHOOK_KEY: &str = "whk-test-key";
const INTAKE_TOKEN: &str = "intake-test-token";

/// HMAC-SHA1 hex by an independent implementation (Python's hmac module).
fn sign(body: &[u8]) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha1).hexdigest())", WEBHOOK_KEY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Served {
    app: TestApp,
    daemon: InProcess,
    base: String,
    http: reqwest::Client,
}

async fn serve(rules: &str) -> Served {
    let app = TestApp::builder()
        .rules(rules)
        .worker("concurrency = 1")
        .listen()
        .build()
        .await;
    let secrets = assignd::http::ListenerSecrets::new(
        Some(Secret::new(WEBHOOK_KEY)),
        Some(Secret::new(INTAKE_TOKEN)),
    );
    let daemon = app.start_serving(secrets).await;
    let addr = daemon.http_addr.expect("the listener runs");
    Served {
        app,
        daemon,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

impl Served {
    async fn webhook(&self, body: &[u8], signature: Option<&str>) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}/webhooks/helpcrunch", self.base))
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("X-HelpCrunch-Signature", s);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The status line's code for a webhook that declares a body one byte
    /// over the limit.
    async fn oversize_status(&self) -> u16 {
        let signed = format!("X-HelpCrunch-Signature: {}", "0".repeat(40));
        let length = assignd::http::MAX_BODY + 1;
        self.status_before_body("/webhooks/helpcrunch", &signed, length)
            .await
    }

    /// The answer to a POST that declares `length` bytes and sends none:
    /// only a refusal can come before the body.
    async fn status_before_body(&self, path: &str, header: &str, length: usize) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{header}\r\nContent-Length: {length}\r\n\r\n",
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 64];
        let n = conn.read(&mut answer).await.unwrap();
        let line = String::from_utf8_lossy(&answer[..n]).to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    }

    /// `POST /v1/enqueue` of `body` with the intake token.
    async fn enqueue(&self, body: &Value) -> reqwest::Response {
        let url = format!("{}/v1/enqueue", self.base);
        let req = self.http.post(url).bearer_auth(INTAKE_TOKEN).json(body);
        req.send().await.unwrap()
    }

    async fn stop(self) {
        self.daemon.stop().await;
    }
}

fn new_chat(id: i64) -> Value {
    json!({"id": id, "status": "new", "createdAt": "1607540767.414", "customer": {"id": 9, "email": "x@example.com"}, "assignee": null, "department": {"id": 1, "name": "Support"}, "communicatedAgents": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_chat_new_is_enqueued_once_however_often_delivered() {
    let s = serve(THREE_AGENTS).await;
    let body = webhook_event("6f1c-1", "chat.new", new_chat(31));
    for _ in 0..3 {
        let (status, _) = s.webhook(&body, Some(&sign(&body))).await;
        assert_eq!(status, 200);
    }
    s.app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(s.app.count("queue WHERE chat_id = 31").await, 1);
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM webhook_events").await, 1);
    assert_eq!(s.app.sandbox.assign_calls().len(), 1);
    // The snapshot saved the GET.
    assert!(s.app.sandbox.requests().iter().all(|r| r.method != "GET"));
    s.stop().await;
}

/// A signed event created longer ago than its id is remembered (7 days)
/// is refused and counted, so a captured event cannot be replayed once its
/// id is forgotten; a fresh one, and one that gives no date, are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_older_than_its_remembered_id_is_refused() {
    let s = serve(THREE_AGENTS).await;
    let ten_days_ago = common::now_secs() - 10 * 86_400;
    for created in [json!(ten_days_ago), json!(format!("{ten_days_ago}.414"))] {
        let body = serde_json::to_vec(&json!({"event": "chat.new", "eventData": new_chat(41),
            "attempts": 0, "createdAt": created, "id": "replayed-1"}))
        .unwrap();
        let (status, text) = s.webhook(&body, Some(&sign(&body))).await;
        assert_eq!(status, 410, "{text}");
        assert!(text.contains("more than 7 days ago"), "{text}");
    }
    assert_eq!(s.app.count("queue WHERE chat_id = 41").await, 0);
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM webhook_events").await, 0);
    let undated = serde_json::to_vec(&json!({"event": "chat.new", "eventData": new_chat(42),
        "attempts": 0, "id": "undated-1"}))
    .unwrap();
    assert_eq!(s.webhook(&undated, Some(&sign(&undated))).await.0, 200);
    let fresh = webhook_event("fresh-1", "chat.new", new_chat(41));
    assert_eq!(s.webhook(&fresh, Some(&sign(&fresh))).await.0, 200);
    assert_eq!(s.app.count("queue WHERE chat_id = 41").await, 1);
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    let counted = sample(
        &scrape(&text),
        "assignd_webhooks_total",
        &[("outcome", "stale")],
    );
    assert_eq!(counted, 2.0, "{text}");
    s.stop().await;
}

/// Issue 21: a row from the listener takes its rule's priority at intake,
/// from the chat in a `chat.new` event or the attributes of an enqueue
/// request (the higher of the request's and the rule's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_ranks_new_rows_by_their_rule() {
    let rules = support_rules(
        &ABC,
        "",
        "[[rule]]\nname = \"vip\"\nmatch = { attr.tier = \"vip\" }\npriority = 10\nassign = \"pool:support\"\n\n\
         [[rule]]\nname = \"support desk\"\nmatch = { department = \"Support\" }\npriority = 7\nassign = \"pool:support\"\n\n\
         [[rule]]\nname = \"all\"\nassign = \"pool:support\"\n",
    );
    let s = serve(&rules).await;
    let body = webhook_event("rank-1", "chat.new", new_chat(33));
    assert_eq!(s.webhook(&body, Some(&sign(&body))).await.0, 200);
    let items = json!([
        {"chat_id": 34, "attrs": {"tier": "vip"}},
        {"chat_id": 35, "attrs": {"tier": "vip"}, "priority": 20},
        {"chat_id": 36},
    ]);
    assert_eq!(s.enqueue(&items).await.status().as_u16(), 202);
    s.app.wait_drained(Duration::from_secs(10)).await;
    let ranked: Vec<(i64, String, Option<String>)> = s
        .app
        .rows("SELECT chat_id, CAST(priority AS TEXT), NULL FROM queue ORDER BY chat_id")
        .await;
    let ranked: Vec<(i64, &str)> = ranked.iter().map(|(c, p, _)| (*c, p.as_str())).collect();
    // 36 carries no department: the `support desk` rule reads one, so its
    // rule is known only once the chat is read.
    assert_eq!(ranked, [(33, "7"), (34, "10"), (35, "20"), (36, "0")]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_rejected_and_store_nothing() {
    let s = serve(THREE_AGENTS).await;
    let body = webhook_event("e-2", "chat.new", new_chat(32));
    let good = sign(&body);
    assert_eq!(
        s.webhook(&body, Some("0000000000000000000000000000000000000000"))
            .await
            .0,
        401,
        "wrong signature"
    );
    assert_eq!(s.webhook(&body, None).await.0, 401, "no signature");
    // Signed over the same JSON re-serialized with other spacing: not the raw body.
    let reserialized =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    assert_eq!(
        s.webhook(&reserialized, Some(&good)).await.0,
        401,
        "signature of other bytes"
    );
    // The 413 comes from the declared length, before the body is read; a
    // client still writing 1 MiB may meet the closed connection instead of
    // the answer, so the request declares the size and sends no body.
    assert_eq!(s.oversize_status().await, 413, "oversize");
    // A request that cannot be signed is refused before its body is
    // waited for: the body is never sent and the answer still comes.
    let hook = "/webhooks/helpcrunch";
    for header in [
        "X-Other: 1",
        "X-HelpCrunch-Signature: 00",
        "X-HelpCrunch-Signature: zz",
    ] {
        assert_eq!(
            s.status_before_body(hook, header, 100).await,
            401,
            "{header}"
        );
    }
    let broken = b"{\"event\": \"chat.new\", \"eventData\": ".to_vec();
    let (status, text) = s.webhook(&broken, Some(&sign(&broken))).await;
    assert_eq!(status, 400, "malformed JSON");
    assert!(text.contains("not a HelpCrunch event"), "{text}");
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM webhook_events").await, 0);
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM queue").await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enqueue_api_needs_the_token_and_ignores_duplicates() {
    let s = serve(THREE_AGENTS).await;
    let url = format!("{}/v1/enqueue", s.base);
    let r = s
        .http
        .post(&url)
        .json(&json!({"chat_id": 41}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .post(&url)
        .bearer_auth("wrong")
        .json(&json!({"chat_id": 41}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The token is checked before the body is waited for.
    let wrong = "Authorization: Bearer wrong";
    assert_eq!(s.status_before_body("/v1/enqueue", wrong, 1000).await, 401);
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM queue").await, 0);

    let list = json!([{"chat_id": 41, "attrs": {"language": "uk"}, "priority": 5}, {"chat_id": 42}, {"chat_id": 41}]);
    let r = s.enqueue(&list).await;
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"enqueued": 2, "already_queued": 1}));
    let r = s
        .http
        .post(&url)
        .bearer_auth(INTAKE_TOKEN)
        .body("{\"chat\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    s.app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(s.app.sandbox.assign_calls().len(), 2);
    s.stop().await;
}

/// `chat.closed` frees a seat, so a chat waiting for capacity is assigned;
/// `chat.assigned` for the daemon's own assignment changes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_chat_frees_a_seat_for_a_waiting_one() {
    let rules = "[agents]\nalice = { id = 4188, max_open = 1 }\n[pools.p]\nagents = [\"alice\"]\n[[rule]]\nname = \"all\"\nassign = \"pool:p\"\n";
    let s = serve(rules).await;
    s.app.insert_raw([51, 52]).await;
    s.daemon.runtime.worker.wake();
    let waiting = "queue WHERE chat_id = 52 AND last_error LIKE 'waiting:%'";
    let timeout = Duration::from_secs(10);
    s.app
        .wait_count(waiting, 1, timeout, "chat 52 never waited")
        .await;
    // HelpCrunch reports the daemon's own assignment: no new decision.
    let assigned = webhook_event(
        "e-a",
        "chat.assigned",
        json!({"id": 51, "assignee": {"id": 4188}}),
    );
    assert_eq!(s.webhook(&assigned, Some(&sign(&assigned))).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.app.sandbox.assign_calls().len(), 1);
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM queue").await, 2);

    let closed = webhook_event("e-c", "chat.closed", json!({"id": 51, "status": "closed"}));
    let sent = Instant::now();
    assert_eq!(s.webhook(&closed, Some(&sign(&closed))).await.0, 200);
    s.app.wait_drained(Duration::from_secs(4)).await;
    println!(
        "the waiting chat was assigned {:?} after chat.closed",
        sent.elapsed()
    );
    assert_eq!(s.app.sandbox.assignee(52), Some(4188));
    assert_eq!(s.app.scalar("SELECT COUNT(*) FROM open_chats").await, 1);

    for path in ["/readyz", "/healthz"] {
        let r = s.http.get(format!("{}{path}", s.base)).send().await;
        assert_eq!(r.unwrap().status().as_u16(), 200, "{path}");
    }
    s.stop().await;
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format")
}

fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_chats_are_processed() {
    let s = serve(THREE_AGENTS).await;
    let get = || async {
        s.http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape(&get().await);
    let assigned_before = sample(&before, "assignd_outcomes_total", &[("result", "assigned")]);
    let puts_before = sample(
        &before,
        "assignd_api_calls_total",
        &[("endpoint", "PUT /chats/assignee"), ("status", "200")],
    );

    s.app.insert_raw([61, 62, 63]).await;
    s.daemon.runtime.worker.wake();
    s.app.wait_drained(Duration::from_secs(10)).await;

    let text = get().await;
    let after = scrape(&text);
    // The registry is per process and tests share it: counters only grow.
    assert!(
        sample(&after, "assignd_outcomes_total", &[("result", "assigned")])
            >= assigned_before + 3.0,
        "{text}"
    );
    assert!(
        sample(
            &after,
            "assignd_api_calls_total",
            &[("endpoint", "PUT /chats/assignee"), ("status", "200")]
        ) >= puts_before + 3.0
    );
    assert!(sample(&after, "assignd_queue_rows", &[("state", "done")]) >= 3.0);
    assert!(sample(&after, "assignd_open_chats", &[]) >= 3.0);
    assert!(text.contains("assignd_build_info{version=\""), "{text}");
    for h in [
        "assignd_decision_seconds",
        "assignd_limiter_wait_seconds",
        "assignd_enqueue_to_assigned_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {h} histogram")), "{h}");
    }
    s.stop().await;
}
