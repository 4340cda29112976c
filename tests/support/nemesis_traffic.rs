//! The nemesis's traffic: producers of every kind (a plain SQL `INSERT`,
//! `assignd enqueue`, `POST /v1/enqueue`, signed `chat.new` webhooks) and
//! the life of chats in HelpCrunch (agents answer them, chats close, with
//! their webhooks). Only enqueues a producer saw acknowledged are owed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::world::{INTAKE_TOKEN, Stage, WEBHOOK_KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Producer {
    Sql,
    Cli,
    Http,
    Webhook,
}

/// One new chat's queue row, as a producer would write it.
struct NewChat {
    chat: i64,
    attrs: Option<Value>,
    priority: i64,
    snapshot: bool,
}

/// What the producers did.
#[derive(Debug, Default)]
pub struct Produced {
    /// Chats whose enqueue was acknowledged, and by which producer.
    pub acked: Vec<(i64, String)>,
    /// Enqueues tried and acknowledged, by producer.
    pub tried: BTreeMap<Producer, (usize, usize)>,
}

/// Chats not yet assigned beyond which producers pause: more arrive than
/// close, so without it a long run's backlog would grow without end.
const BACKLOG: usize = 25;

/// Produces new chats, 1 to 3 every 0.5–2 s, until `stop`, pausing while
/// [`BACKLOG`] chats wait: more than close, so that chats wait for seats.
pub async fn produce(stage: &Stage, seed: u64, stop: &CancellationToken) -> Produced {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut out = Produced::default();
    let mut next = 10_000;
    while !stop.is_cancelled() {
        let burst = rng.random_range(1..=3);
        for _ in 0..if waiting(stage) < BACKLOG { burst } else { 0 } {
            next += 1;
            let new = NewChat {
                chat: next,
                attrs: rng.random_bool(0.1).then(|| json!({"tier": "gold"})),
                priority: if rng.random_bool(0.1) {
                    rng.random_range(1..5)
                } else {
                    0
                },
                snapshot: rng.random_bool(0.5),
            };
            let via = match rng.random_range(0..100) {
                0..35 => Producer::Sql,
                35..50 => Producer::Cli,
                50..70 => Producer::Http,
                _ => Producer::Webhook,
            };
            stage.app.sandbox.create_chat(new.chat, |_| ());
            stage.chats.lock().unwrap().push(new.chat);
            let acked = enqueue(stage, &http, via, &new).await;
            let tried = out.tried.entry(via).or_default();
            tried.0 += 1;
            if acked {
                tried.1 += 1;
                out.acked.push((new.chat, format!("{via:?}")));
            }
        }
        let pause = Duration::from_millis(rng.random_range(500..2000));
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    out
}

/// The campaign's chats open in HelpCrunch without an assignee.
fn waiting(stage: &Stage) -> usize {
    let chats = stage.chats.lock().unwrap().clone();
    let sandbox = &stage.app.sandbox;
    chats
        .into_iter()
        .filter(|&c| {
            sandbox.assignee(c).is_none()
                && sandbox
                    .chat_json(c)
                    .is_some_and(|j| j["status"] != "closed")
        })
        .count()
}

/// Enqueues one chat `via` a producer; whether it was acknowledged.
async fn enqueue(stage: &Stage, http: &reqwest::Client, via: Producer, new: &NewChat) -> bool {
    let snapshot = || stage.app.sandbox.chat_json(new.chat).unwrap();
    match via {
        Producer::Sql => {
            let attrs = new.attrs.as_ref().map(Value::to_string);
            let snapshot = new.snapshot.then(|| snapshot().to_string());
            stage
                .insert(new.chat, attrs, snapshot, new.priority)
                .await
                .is_ok()
        }
        Producer::Cli => {
            let mut args = vec!["enqueue".to_string(), new.chat.to_string()];
            if new.attrs.is_some() {
                args.extend(["--attr".into(), "tier=gold".into()]);
            }
            args.extend(["--priority".into(), new.priority.to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut command = stage.app.command(&args);
            let out = tokio::task::spawn_blocking(move || command.output().unwrap());
            out.await.unwrap().status.success()
        }
        Producer::Http => {
            let body = json!({"chat_id": new.chat, "attrs": new.attrs, "priority": new.priority});
            // Retried on another daemon, as a producer would.
            for _ in 0..3 {
                let Some(base) = stage.any_live() else { break };
                let sent = http
                    .post(format!("{base}/v1/enqueue"))
                    .bearer_auth(INTAKE_TOKEN)
                    .json(&body)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().as_u16() == 202) {
                    return true;
                }
            }
            false
        }
        Producer::Webhook => {
            let event = envelope(&format!("new-{}", new.chat), "chat.new", snapshot());
            webhook(stage, http, &event, 3).await
        }
    }
}

fn envelope(id: &str, event: &str, data: Value) -> Vec<u8> {
    let now = crate::common::now_secs();
    serde_json::to_vec(
        &json!({"event": event, "eventData": data, "attempts": 0, "createdAt": now, "id": id}),
    )
    .unwrap()
}

/// Posts a signed event to a live daemon, trying `tries` times (HelpCrunch
/// retries a webhook that fails); whether one took it.
async fn webhook(stage: &Stage, http: &reqwest::Client, body: &[u8], tries: usize) -> bool {
    for _ in 0..tries {
        let Some(base) = stage.any_live() else {
            return false;
        };
        let sent = http
            .post(format!("{base}/webhooks/helpcrunch"))
            .header(
                "X-HelpCrunch-Signature",
                assignd::http::webhook_signature(WEBHOOK_KEY.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
    }
    false
}

/// What happened to chats in HelpCrunch.
#[derive(Debug, Default)]
pub struct Churned {
    pub closed: usize,
    pub answered: usize,
    /// Closes and answers whose webhook no daemon took.
    pub webhooks_lost: usize,
}

/// Until `stop`: every 0.3–0.9 s an open assigned chat is closed, or its
/// agent answers it (fewer closes than new chats: seats stay full and
/// chats wait; a chat may close the instant it is assigned); once `hurry`
/// is set, every chat assigned for a second or more closes, every 100 ms
/// (so that seats free and the backlog drains).
pub async fn churn(
    stage: &Stage,
    seed: u64,
    stop: &CancellationToken,
    hurry: &AtomicBool,
) -> Churned {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5bd1_e995);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut out = Churned::default();
    while !stop.is_cancelled() {
        let fast = hurry.load(Ordering::SeqCst);
        let pause = if fast {
            100
        } else {
            rng.random_range(300..900)
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let open = open_assigned(stage);
        if fast {
            let settled = open
                .iter()
                .filter(|c| c.2.elapsed() >= Duration::from_secs(1));
            for &(chat, _, _) in settled {
                out.webhooks_lost += usize::from(!close(stage, &http, chat).await);
                out.closed += 1;
            }
            continue;
        }
        if open.is_empty() {
            continue;
        }
        let (chat, agent, _) = open[rng.random_range(0..open.len())];
        let roll = rng.random_range(0..100);
        let delivered = if roll < 55 {
            out.closed += 1;
            close(stage, &http, chat).await
        } else if roll < 80 {
            stage
                .app
                .sandbox
                .update_chat(chat, |c| c.agents.push(agent));
            out.answered += 1;
            let data = json!({"chat": {"id": chat}, "agent": {"id": agent}});
            let event = envelope(
                &format!("answer-{chat}-{agent}"),
                "message.chat.agent",
                data,
            );
            webhook(stage, &http, &event, 1).await
        } else {
            true
        };
        out.webhooks_lost += usize::from(!delivered);
    }
    out
}

/// Closes a chat in HelpCrunch, then tells a daemon; whether one took it.
async fn close(stage: &Stage, http: &reqwest::Client, chat: i64) -> bool {
    stage.app.sandbox.close_chat(chat);
    let data = json!({"id": chat, "status": "closed"});
    webhook(
        stage,
        http,
        &envelope(&format!("close-{chat}"), "chat.closed", data),
        1,
    )
    .await
}

/// The campaign's chats that are open in HelpCrunch with an assignee:
/// (chat, agent, when it was last assigned).
fn open_assigned(stage: &Stage) -> Vec<(i64, i64, Instant)> {
    let mut assigned = HashMap::new();
    for p in stage.app.sandbox.put_history() {
        if let Some(a) = p.applied {
            assigned.insert(p.chat, a.at);
        }
    }
    let chats = stage.chats.lock().unwrap().clone();
    chats
        .into_iter()
        .filter_map(|c| {
            let chat = stage.app.sandbox.chat_json(c)?;
            let agent = chat["assignee"]["id"].as_i64()?;
            let at = *assigned.get(&c)?;
            (chat["status"] != "closed").then_some((c, agent, at))
        })
        .collect()
}
