//! The console's pages: agents (with today's chart), the queue, a chat's
//! decisions with `explain`, and the audit. Read-only: changes are in
//! `actions.rs`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use jiff::Timestamp;
use serde::Deserialize;

use super::html::{self, age, escape, td, when};
use super::{App, Viewer};
use crate::domain::ChatId;
use crate::helpcrunch::types::Chat;
use crate::rules::{Agent, Rules};
use crate::store::{ChatInput, ConsoleRow, QueueCursor, StoreError, away_from_ms};

/// Rows a page lists at most.
const LIMIT: u32 = 200;

/// The query of a page after an action: what was done, for the flash line.
#[derive(Deserialize, Default)]
pub(super) struct Done {
    #[serde(default)]
    pub done: Option<String>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub agent: Option<String>,
}

impl Done {
    /// The flash line; only fixed texts and known agent names.
    fn text(&self, rules: &Rules) -> Option<String> {
        let agent = self
            .agent
            .as_deref()
            .filter(|a| rules.agent_by_name(a).is_some());
        match (self.done.as_deref()?, agent) {
            ("away", Some(a)) => Some(format!("{a} is marked away.")),
            ("back", Some(a)) => Some(format!("{a} is marked back.")),
            ("retried", _) => Some(format!(
                "{} row(s) put back on the queue.",
                self.n.unwrap_or(0)
            )),
            _ => None,
        }
    }
}

/// Start of today in the host's time zone.
fn start_of_today() -> Timestamp {
    jiff::Zoned::now()
        .start_of_day()
        .map(|z| z.timestamp())
        .unwrap_or_else(|_| Timestamp::now())
}

pub(super) async fn agents(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Response {
    viewer.render("Agents", agents_main(&app, &viewer, &done).await)
}

async fn agents_main(app: &App, viewer: &Viewer, done: &Done) -> Result<String, StoreError> {
    let store = &app.listener.store;
    let rules = app.listener.console.rules();
    let mut open: HashMap<String, u32> = HashMap::new();
    for agent in store.open_chats().await?.into_values() {
        *open.entry(agent).or_default() += 1;
    }
    let away = away_from_ms(store.load_away().await?);
    let today: HashMap<String, i64> = store
        .assignments_since(start_of_today().as_millisecond())
        .await?
        .into_iter()
        .collect();
    let now = Timestamp::now();
    let csrf = viewer.csrf();
    let rows: Vec<String> = rules
        .agents
        .iter()
        .map(|a| {
            let status = Status {
                open: open.get(&a.name).copied().unwrap_or(0),
                away: away
                    .get(&a.name)
                    .copied()
                    .filter(|u| u.is_none_or(|u| u > now)),
                today: today.get(&a.name).copied().unwrap_or(0),
            };
            agent_row(&rules, a, &status, now, &csrf)
        })
        .collect();
    let mut main = html::flash(done.text(&rules).as_deref());
    if let Some(running) = app.listener.console.experiment() {
        main.push_str(&format!(
            "<p class=\"experiment\">{}</p>\n",
            html::escape(&running)
        ));
    }
    main.push_str(&html::table(
        "agents",
        &["Agent", "Open chats", "Cap", "Shift", "State", "Today", ""],
        &rows,
        "The rules name no agents.",
    ));
    let bars: Vec<(String, u32)> = rules
        .agents
        .iter()
        .map(|a| {
            let n = today.get(&a.name).copied().unwrap_or(0);
            (a.name.clone(), u32::try_from(n).unwrap_or(u32::MAX))
        })
        .collect();
    main.push_str("<h2>Today</h2>\n");
    let caption = format!(
        "Assignments per agent since {}",
        start_of_today().strftime("%Y-%m-%d %H:%M UTC")
    );
    main.push_str(&html::bar_chart("today", &caption, &bars));
    Ok(main)
}

/// An agent's live figures.
struct Status {
    open: u32,
    /// Away (until when, if it ends by itself), or `None`: available.
    away: Option<Option<Timestamp>>,
    today: i64,
}

fn agent_row(rules: &Rules, a: &Agent, s: &Status, now: Timestamp, csrf: &str) -> String {
    let agent = [("csrf", csrf), ("agent", a.name.as_str())];
    let (class, state, action) = match s.away {
        Some(until) => {
            let state = match until {
                Some(t) => format!("away until {}", t.strftime("%Y-%m-%d %H:%M UTC")),
                None => "away until marked back".into(),
            };
            let form = html::button_form("back", "/console/agents/back", &agent, "", "Mark back");
            (" class=\"away\"", state, form)
        }
        None => {
            let until = "<label>until (UTC, optional) <input type=\"datetime-local\" name=\"until\" \
                         title=\"empty: until marked back\"></label>";
            let form =
                html::button_form("away", "/console/agents/away", &agent, until, "Mark away");
            ("", "available".to_string(), form)
        }
    };
    format!(
        "<tr data-agent=\"{}\"{class}>{}{}{}{}{}{}<td>{action}</td></tr>",
        escape(&a.name),
        td("name", &a.name),
        td("open", &s.open.to_string()),
        td("cap", &cap_text(rules, a)),
        td("shift", &shift_text(rules, a, now)),
        td("state", &state),
        td("today", &s.today.to_string()),
    )
}

/// The agent's own cap, else the caps of its pools.
fn cap_text(rules: &Rules, a: &Agent) -> String {
    if let Some(n) = a.max_open {
        return n.to_string();
    }
    let Some(me) = rules.agent_by_name(&a.name) else {
        return "—".into();
    };
    let caps: Vec<String> = rules
        .pools
        .iter()
        .filter(|p| p.members.contains(&me))
        .filter_map(|p| p.max_open.map(|n| format!("{n} ({})", p.name)))
        .collect();
    if caps.is_empty() {
        "—".into()
    } else {
        caps.join(", ")
    }
}

fn shift_text(rules: &Rules, a: &Agent, now: Timestamp) -> String {
    match a.schedule.map(|s| &rules.schedules[s]) {
        None => "always".into(),
        Some(s) if s.is_open(now) => format!("on shift ({})", s.name),
        Some(s) => format!("off shift ({})", s.name),
    }
}

/// Rows the queue page lists in each of its tables.
const PAGE: u32 = 100;

/// Where the queue page's tables start: `after` a waiting row
/// (`priority.enqueued_at.id`), `dead_before` a dead row's id. Each page
/// is one bounded index read, however long the queue.
#[derive(Deserialize, Default)]
pub(super) struct QueuePage {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    dead_before: Option<i64>,
}

impl QueuePage {
    /// The cursor `after` names; none (the first page) when it is not one.
    fn after(&self) -> Option<QueueCursor> {
        let mut parts = self.after.as_deref()?.split('.').map(str::parse::<i64>);
        let (Some(Ok(priority)), Some(Ok(enqueued_at_ms)), Some(Ok(id)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(QueueCursor {
            priority,
            enqueued_at_ms,
            id,
        })
    }

    /// The link to this page with `after` or `dead_before` moved on.
    fn link(&self, after: Option<QueueCursor>, dead_before: Option<i64>) -> String {
        let after = after
            .map(|c| format!("{}.{}.{}", c.priority, c.enqueued_at_ms, c.id))
            .or_else(|| self.after.clone());
        let mut query = Vec::new();
        if let Some(a) = after {
            query.push(format!("after={a}"));
        }
        if let Some(d) = dead_before.or(self.dead_before) {
            query.push(format!("dead_before={d}"));
        }
        format!("/console/queue?{}", query.join("&"))
    }
}

/// A "next page" link, when the page was full.
fn next_link(id: &str, href: Option<String>) -> String {
    href.map(|href| {
        format!(
            "<p class=\"pager\"><a id=\"{id}\" href=\"{}\">Next page</a></p>\n",
            escape(&href)
        )
    })
    .unwrap_or_default()
}

pub(super) async fn queue(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Query(done): Query<Done>,
    Query(page): Query<QueuePage>,
) -> Response {
    viewer.render("Queue", queue_main(&app, &viewer, &done, &page).await)
}

async fn queue_main(
    app: &App,
    viewer: &Viewer,
    done: &Done,
    page: &QueuePage,
) -> Result<String, StoreError> {
    let store = &app.listener.store;
    let rules = app.listener.console.rules();
    let now = Timestamp::now().as_millisecond();
    let mut main = html::flash(done.text(&rules).as_deref());
    main.push_str("<p class=\"counts\">");
    for (state, n) in store.queue_depth().await? {
        let _ = write!(main, "<span>{}: <b>{n}</b></span>", escape(&state));
    }
    main.push_str("</p>\n<h2>Waiting</h2>\n");
    let mut active = store.active_rows(page.after(), PAGE + 1).await?;
    let more = active.len() > PAGE as usize;
    active.truncate(PAGE as usize);
    let waiting: Vec<String> = active.iter().map(|r| waiting_row(r, now)).collect();
    let head = ["Chat", "State", "Priority", "Waiting for", "Reason"];
    main.push_str(&html::table(
        "waiting",
        &head,
        &waiting,
        "No chat is waiting.",
    ));
    let next = active.last().filter(|_| more).map(QueueCursor::after);
    main.push_str(&next_link(
        "next-waiting",
        next.map(|c| page.link(Some(c), None)),
    ));
    main.push_str(&dead_section(store, &viewer.csrf(), page).await?);
    Ok(main)
}

/// One waiting row of the queue page, with why it waits.
fn waiting_row(r: &ConsoleRow, now: i64) -> String {
    let reason = match (&r.last_error, r.state.as_str()) {
        (_, "leased") => "being decided now".to_string(),
        (Some(e), _) if r.next_attempt_at_ms > now => {
            format!(
                "{e} (next try in {})",
                age((r.next_attempt_at_ms - now) / 1000)
            )
        }
        (Some(e), _) => e.clone(),
        (None, _) => "new: due now".into(),
    };
    format!(
        "<tr data-row=\"{}\" data-chat=\"{}\">{}{}{}{}{}</tr>",
        r.id,
        escape(&r.chat_id),
        td("chat", &r.chat_id),
        td("state", &r.state),
        td("priority", &r.priority.to_string()),
        td("age", &age((now - r.enqueued_at_ms) / 1000)),
        td("reason", &reason),
    )
}

async fn dead_section(
    store: &crate::store::Store,
    csrf: &str,
    page: &QueuePage,
) -> Result<String, StoreError> {
    let mut dead = store.dead_rows(page.dead_before, PAGE + 1).await?;
    let more = dead.len() > PAGE as usize;
    dead.truncate(PAGE as usize);
    let rows: Vec<String> = dead
        .iter()
        .map(|r| {
            let id = r.id.to_string();
            let form = html::button_form(
                "retry",
                "/console/queue/retry",
                &[("csrf", csrf), ("id", &id)],
                "",
                "Retry",
            );
            format!(
                "<tr data-row=\"{id}\" data-chat=\"{}\">{}{}{}<td>{form}</td></tr>",
                escape(&r.chat_id),
                td("chat", &r.chat_id),
                td("when", &when(r.enqueued_at_ms)),
                td("reason", r.last_error.as_deref().unwrap_or("")),
            )
        })
        .collect();
    let mut out = String::from("<h2>Dead letters</h2>\n");
    if !dead.is_empty() {
        out.push_str(&html::button_form(
            "retry-all\" id=\"retry-all",
            "/console/queue/retry",
            &[("csrf", csrf), ("all", "1")],
            "",
            "Retry all",
        ));
    }
    let head = ["Chat", "Died", "Why", ""];
    out.push_str(&html::table("dead", &head, &rows, "No dead letters."));
    let next = dead
        .last()
        .filter(|_| more)
        .map(|r| page.link(None, Some(r.id)));
    out.push_str(&next_link("next-dead", next));
    Ok(out)
}

#[derive(Deserialize, Default)]
pub(super) struct ChatQuery {
    #[serde(default)]
    id: Option<String>,
}

pub(super) async fn chat(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    Query(q): Query<ChatQuery>,
) -> Response {
    let given = q.id.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let main = format!(
        "<form id=\"search\" method=\"get\" action=\"/console/chat\">\
         <input name=\"id\" inputmode=\"numeric\" placeholder=\"chat id\" value=\"{}\">\
         <button>Show</button></form>\n",
        escape(given.unwrap_or(""))
    );
    let found = match given.map(str::parse::<i64>) {
        None => Ok(String::new()),
        Some(Ok(id)) if id > 0 => chat_main(&app, ChatId(id)).await,
        Some(_) => Ok("<p class=\"error\">A chat id is a positive whole number.</p>".into()),
    };
    viewer.render("Chats", found.map(|found| main + &found))
}

async fn chat_main(app: &App, id: ChatId) -> Result<String, StoreError> {
    let store = &app.listener.store;
    let outcomes = store.chat_outcomes(id, LIMIT).await?;
    let rows: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "<tr>{}{}{}{}{}</tr>",
                td("at", &when(o.at_ms)),
                td("result", &o.result),
                td("rule", o.rule.as_deref().unwrap_or("")),
                td("agent", o.agent.as_deref().unwrap_or("")),
                td("reason", o.reason.as_deref().unwrap_or("")),
            )
        })
        .collect();
    let mut out = format!("<h2>Decisions for chat {id}</h2>\n");
    let head = ["When", "Result", "Rule", "Agent", "Reason"];
    out.push_str(&html::table(
        "decisions",
        &head,
        &rows,
        "No decision recorded for this chat.",
    ));
    out.push_str("<h2>What the rules decide now (explain)</h2>\n");
    out.push_str(&explain_section(app, id).await?);
    Ok(out)
}

/// The `explain` text for the chat, as `assignd explain ID` prints it
/// (with the attributes it was enqueued with): a chat still queued is
/// explained from its row's snapshot, which the worker will decide on;
/// any other is read from HelpCrunch (one background call through the
/// limiter), or from its last stored snapshot when HelpCrunch cannot be
/// asked.
async fn explain_section(app: &App, id: ChatId) -> Result<String, StoreError> {
    let store = &app.listener.store;
    let input = store.chat_input(id).await?.unwrap_or_default();
    let attrs = input
        .attrs
        .as_deref()
        .and_then(|a| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(a).ok())
        .unwrap_or_default();
    let (chat, source) = match chat_to_explain(app, id, &input).await {
        Ok(found) => found,
        Err(why) => {
            return Ok(format!(
                "<p class=\"error\" id=\"explain-error\">{}</p>",
                escape(&why)
            ));
        }
    };
    let rules = app.listener.console.rules();
    let now = Timestamp::now();
    let mut context = chat.rules_context(&attrs);
    let state = crate::explain::routing_state(store, &mut context, now).await?;
    let (_, explanation) = crate::rules::explain::explain(&rules, &context, &state, now);
    let note = crate::explain::skip_note(&chat, app.listener.console.reassign())
        .map(|n| format!("<p class=\"note\" id=\"skip\">note: {}</p>", escape(&n)))
        .unwrap_or_default();
    Ok(format!(
        "<p class=\"source\">From {}, at {}.</p><pre id=\"explain\">{}</pre>\n{note}",
        escape(&source),
        now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        escape(&explanation.to_text())
    ))
}

/// The chat object to explain, and where it came from; or why there is none.
async fn chat_to_explain(
    app: &App,
    id: ChatId,
    input: &ChatInput,
) -> Result<(Chat, String), String> {
    let stored = input
        .snapshot
        .as_deref()
        .and_then(|s| serde_json::from_str::<Chat>(s).ok());
    if let (Some(chat), true) = (&stored, input.active == 1) {
        return Ok((
            chat.clone(),
            "the snapshot of its queue row, which waits to be decided".into(),
        ));
    }
    match (app.listener.console.chat(id).await, stored) {
        (Ok(chat), _) => Ok((chat, "the chat as HelpCrunch returns it now".into())),
        (Err(e), Some(chat)) => Ok((
            chat,
            format!("its last stored snapshot (HelpCrunch could not be asked: {e})"),
        )),
        (Err(e), None) => Err(format!(
            "No snapshot is stored for chat {id}, and HelpCrunch could not be asked: {e}"
        )),
    }
}

pub(super) async fn audit(State(app): State<Arc<App>>, viewer: Viewer) -> Response {
    viewer.render("Audit", audit_main(&app).await)
}

async fn audit_main(app: &App) -> Result<String, StoreError> {
    let since = Timestamp::now().as_millisecond() - 30 * 86_400_000;
    let rows = app
        .listener
        .store
        .audit_since(since, i64::from(LIMIT))
        .await?;
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let until = r.until_ms.map(|u| format!("until {}", when(u)));
            let detail = [until.as_deref().unwrap_or(""), r.detail.as_str()].join(" ");
            format!(
                "<tr>{}{}{}{}{}</tr>",
                td("at", &when(r.at_ms)),
                td("who", &r.actor),
                td("action", r.action.as_str()),
                td("subject", &r.subject),
                td("detail", detail.trim()),
            )
        })
        .collect();
    let head = ["When", "Who", "Action", "Subject", "Detail"];
    let mut main = String::from(
        "<p>Changes made from the console and the CLI in the last 30 days (as far as \
         <code>database.retention</code> keeps them), newest first.</p>\n",
    );
    main.push_str(&html::table(
        "audit",
        &head,
        &rows,
        "No change recorded yet.",
    ));
    Ok(main)
}
