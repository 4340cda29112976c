//! `assignd simulate --history DURATION [--against RULES] [--diff N]
//! [--json]`: the chats this daemon really saw in the window, replayed over
//! time through the rules ([`crate::timeline::history`]), side by side with
//! a second rule set and with what really happened (docs/simulate.md).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::counts::{get, keys};
use super::{Failure, open_existing_store};
use crate::config::Config;
use crate::domain::{AuditAction, ChatId};
use crate::report::{Wait, human_ms};
use crate::rules::{self, Rules};
use crate::simulate::{Replay, summarize};
use crate::store::{AuditRow, History};
use crate::timeline::history::{self as replay, Difference, Figures, Mark, Recording, Window};

/// How far before the window the replay starts, so that the chats still
/// open and the rotations at its start are as they were.
const WARM_UP: SignedDuration = SignedDuration::from_hours(24);
/// How far before the replay the audit is read for absences still running.
const ABSENCE_MARGIN: SignedDuration = SignedDuration::from_hours(7 * 24);

pub(super) struct Args {
    pub window: Duration,
    pub rules: Option<PathBuf>,
    pub against: Option<PathBuf>,
    pub diff: usize,
    pub json: bool,
}

/// `--history`: a duration like "7d" or "24h", longer than zero.
pub(super) fn parse_history(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("`--history` must be longer than zero".into());
    }
    Ok(d)
}

fn load(path: &Path) -> Result<Rules, Failure> {
    rules::load_path(path).map_err(|e| Failure::Invalid(e.into()))
}

/// One rule set's figures, with where its rules came from.
struct Side {
    label: String,
    figures: Figures,
}

pub(super) async fn run(config_path: &Path, args: Args) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::Invalid(e.into()))?;
    let rules_path = args.rules.clone().unwrap_or(config.rules.path.clone());
    let base = load(&rules_path)?;
    let other = match &args.against {
        Some(p) => Some((p.display().to_string(), load(p)?)),
        None => None,
    };
    let window = window(&config, args.window)?;
    let (history, marks) = read(&config, &window).await?;
    let chats = recordings(&history);
    if !chats.iter().any(|c| c.arrived_at >= window.start) {
        return empty(&args, &window);
    }
    let real =
        replay::real_outcomes(history.outcomes.iter().map(|(c, res, rule, agent, why)| {
            (*c, res.as_str(), text(rule), text(agent), text(why))
        }));
    let absences = replay::absences(&marks.iter().map(mark).collect::<Vec<_>>(), window.end);
    let started = Instant::now();
    let run = |rules: &Rules| replay::replay(rules, &chats, &absences, &window, &real);
    let a = run(&base);
    let b = other.map(|(label, rules)| Side {
        label,
        figures: run(&rules),
    });
    let took = started.elapsed();
    let reality = replay::reality_of(&a.replay.outcomes, &real);
    let (total, first) = match &b {
        Some(b) => replay::differences(
            &a.replay.outcomes,
            &b.figures.replay.outcomes,
            true,
            args.diff,
        ),
        None => replay::differences(&a.replay.outcomes, &reality, false, args.diff),
    };
    let a = Side {
        label: rules_path.display().to_string(),
        figures: a,
    };
    let sides: Vec<Side> = std::iter::once(a).chain(b).collect();
    let real = summarize(&base, reality.len(), reality);
    let diff = Diffs { total, first };
    if args.json {
        print_json(&args, &window, &sides, &real, &diff, took)
    } else {
        print_text(&args, &window, &sides, &real, &diff, took);
        Ok(())
    }
}

/// The recorded chats and outcomes from the replay's start, and the
/// away and back marks from a margin before it.
async fn read(config: &Config, window: &Window) -> Result<(History, Vec<AuditRow>), Failure> {
    let store = open_existing_store(config).await?;
    let read = async {
        let history = store.history_since(window.from.as_millisecond()).await?;
        let since = window
            .from
            .checked_sub(ABSENCE_MARGIN)
            .unwrap_or(window.from);
        let marks = store.absences_since(since.as_millisecond()).await?;
        Ok::<_, crate::store::StoreError>((history, marks))
    };
    let read = read.await;
    store.close().await;
    Ok(read.context("cannot read the chat history")?)
}

/// The window: `length` up to now, the warm-up before it,
/// and the limiter's pace from the config.
fn window(config: &Config, length: Duration) -> Result<Window, Failure> {
    // Not rounded: what happened in the last second is replayed too.
    let end = Timestamp::now();
    let start = SignedDuration::try_from(length)
        .ok()
        .and_then(|d| end.checked_sub(d).ok())
        .ok_or_else(|| Failure::Invalid(anyhow::anyhow!("`--history` reaches too far back")))?;
    let rate = &config.helpcrunch.rate_limit;
    Ok(Window {
        from: start.checked_sub(WARM_UP).unwrap_or(start),
        start,
        end,
        pace: Some(rate.per.0 / rate.requests.get()),
    })
}

fn text(t: &Option<String>) -> Option<&str> {
    t.as_deref()
}

fn at(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

fn recordings(h: &History) -> Vec<Recording> {
    let answers: HashMap<ChatId, i64> = h.answers.iter().copied().collect();
    h.chats
        .iter()
        .filter_map(|r| {
            Some(Recording {
                chat_id: r.chat_id,
                arrived_at: at(r.arrived_at_ms)?,
                snapshot: r.snapshot.clone(),
                attrs: r.attrs.clone(),
                priority: r.priority,
                closed_at: r.closed_at_ms.and_then(at),
                answered_at: answers.get(&r.chat_id).copied().and_then(at),
            })
        })
        .collect()
}

fn mark(row: &AuditRow) -> Mark {
    Mark {
        at: at(row.at_ms).unwrap_or(Timestamp::UNIX_EPOCH),
        agent: row.subject.clone(),
        away: row.action == AuditAction::Away,
        until: row.until_ms.and_then(at),
    }
}

fn span(w: &Window) -> String {
    let f = |t: Timestamp| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
    format!("from {} to {}", f(w.start), f(w.end))
}

fn empty(args: &Args, w: &Window) -> Result<(), Failure> {
    let what = format!(
        "no chats recorded {}: the history is written as the daemon decides chats",
        span(w)
    );
    if args.json {
        println!("{}", json!({"chats": 0, "message": what}));
    } else {
        println!("{what}");
    }
    Ok(())
}

struct Diffs {
    total: usize,
    first: Vec<Difference>,
}

fn print_json(
    args: &Args,
    w: &Window,
    sides: &[Side],
    real: &Replay,
    diff: &Diffs,
    took: Duration,
) -> Result<(), Failure> {
    let side = |s: &Side| json!({"rules": s.label, "result": s.figures});
    let value = json!({
        "since": w.start.to_string(),
        "until": w.end.to_string(),
        "rules": sides[0].label,
        "result": sides[0].figures,
        "against": sides.get(1).map(side),
        "real": real,
        "differences": {
            "between": if sides.len() > 1 { "rules and against" } else { "replay and reality" },
            "count": diff.total,
            "first": diff.first,
        },
        "replay_ms": took.as_millis() as u64,
        "diff": args.diff,
    });
    let text = serde_json::to_string_pretty(&value).context("cannot write JSON")?;
    println!("{text}");
    Ok(())
}

fn print_text(
    args: &Args,
    w: &Window,
    sides: &[Side],
    real: &Replay,
    diff: &Diffs,
    took: Duration,
) {
    let n = sides[0].figures.replay.chats;
    println!(
        "{n} chats arrived {}, replayed in {} ms",
        span(w),
        took.as_millis()
    );
    let names = ["A", "B"];
    for (name, s) in names.iter().zip(sides) {
        println!("  {name}: {}", s.label);
    }
    println!("  real: what the daemon did");
    let mut head = format!("  {:<22}", "");
    for name in names.iter().take(sides.len()).chain(["real"].iter()) {
        head += &format!(" {name:>8}");
    }
    println!("{head}");
    let maps = |f: fn(&Replay) -> &BTreeMap<String, u32>| {
        let mut all: Vec<&BTreeMap<String, u32>> =
            sides.iter().map(|s| f(&s.figures.replay)).collect();
        all.push(f(real));
        all
    };
    section("results", &maps(|r| &r.per_result));
    section("per rule", &maps(|r| &r.per_rule));
    section("per agent", &maps(|r| &r.per_agent));
    print_figures(sides, real);
    print_diffs(args, sides.len() > 1, diff);
}

/// One block of counts, a column per side; `*` marks a row where they differ.
fn section(title: &str, maps: &[&BTreeMap<String, u32>]) {
    println!("{title}:");
    let mut all: Vec<String> = Vec::new();
    for pair in maps.windows(2) {
        all.extend(keys(pair[0], pair[1]));
    }
    all.sort();
    all.dedup();
    for k in all {
        let values: Vec<u32> = maps.iter().map(|m| get(m, &k)).collect();
        let cells: String = values.iter().map(|v| format!(" {v:>8}")).collect();
        let mark = if values.windows(2).any(|p| p[0] != p[1]) {
            "  *"
        } else {
            ""
        };
        println!("  {k:<22}{cells}{mark}");
    }
}

fn print_figures(sides: &[Side], real: &Replay) {
    let row = |name: &str, cells: Vec<String>, real: String| {
        let cells: String = cells.iter().map(|c| format!(" {c:>8}")).collect();
        println!("  {name:<22}{cells} {real:>8}");
    };
    let each = |f: &dyn Fn(&Figures) -> String| sides.iter().map(|s| f(&s.figures)).collect();
    println!("fairness (Jain's index):");
    for (i, pool) in real.fairness.iter().enumerate() {
        let jain = |f: &Figures| {
            f.replay
                .fairness
                .get(i)
                .map_or("-".into(), |p| format!("{:.3}", p.jain))
        };
        row(&pool.pool, each(&jain), format!("{:.3}", pool.jain));
    }
    let wait = |w: &Wait, p95: bool| {
        let v = if p95 { w.p95_ms } else { w.p50_ms };
        v.map_or("-".into(), human_ms)
    };
    println!("over time:");
    row(
        "time in queue p50",
        each(&|f| wait(&f.queue_wait, false)),
        "-".into(),
    );
    row(
        "time in queue p95",
        each(&|f| wait(&f.queue_wait, true)),
        "-".into(),
    );
    row(
        "escalations",
        each(&|f| f.escalations.to_string()),
        "-".into(),
    );
    row("hand-backs", each(&|f| f.handbacks.to_string()), "-".into());
    let share = |f: &Figures| {
        f.agreement
            .map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
    };
    row("agreement with real", each(&share), "-".into());
}

fn print_diffs(args: &Args, against: bool, diff: &Diffs) {
    let (between, a, b) = if against {
        ("A and B", "A", "B")
    } else {
        ("the replay (A) and what really happened", "A", "real")
    };
    println!("chats decided differently by {between}: {}", diff.total);
    if diff.total > diff.first.len() {
        println!("  (the first {}; --diff N for more)", args.diff);
    }
    let who = |s: &replay::Side| s.agent.clone().unwrap_or_else(|| s.result.clone());
    for d in &diff.first {
        println!("  chat {}: {a} {}, {b} {}", d.chat_id, who(&d.a), who(&d.b));
        println!("    {a}: {}", d.a.reason);
        println!("    {b}: {}", d.b.reason);
    }
}
