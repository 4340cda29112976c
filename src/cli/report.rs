//! `assignd report [--since DURATION] [--json] [--html FILE]`: what
//! happened in a window of history, from the database only (SPEC §2; the
//! figures are described in `docs/report.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};

use super::{Failure, open_existing_store};
use crate::config::Config;
use crate::report::{self, ChatFigures, Report, Wait, human_ms};
use crate::rules;

/// How many dead letters the report lists at most.
const DEAD_LETTERS: u32 = 100;

pub(super) struct Args {
    pub since: Duration,
    pub json: bool,
    pub html: Option<PathBuf>,
    pub compare: bool,
}

/// `--since`: a duration like "7d" or "36h".
pub(super) fn parse_since(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("`--since` must be longer than zero".into());
    }
    Ok(d)
}

pub(super) async fn run(config_path: &Path, args: Args) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::Invalid(e.into()))?;
    let rules = rules::load_path(&config.rules.path).map_err(|e| Failure::Invalid(e.into()))?;
    // Whole seconds: the window as people read it.
    let until =
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
    let since = SignedDuration::try_from(args.since)
        .ok()
        .and_then(|d| until.checked_sub(d).ok())
        .ok_or_else(|| Failure::Invalid(anyhow::anyhow!("`--since` reaches too far back")))?;
    if args.compare {
        return compare(&config, &rules, (since, until), &args).await;
    }
    let report = read(&config, report::Tally::new(&rules, since, until)).await?;
    if let Some(path) = &args.html {
        std::fs::write(path, report::html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report).context("cannot write JSON")?;
        println!("{text}");
    } else if let Some(path) = &args.html {
        println!("wrote {}", path.display());
    } else {
        print_text(&report);
    }
    Ok(())
}

/// `--compare`: the window's chats in their arms, compared.
async fn compare(
    config: &Config,
    rules: &rules::Rules,
    (since, until): (Timestamp, Timestamp),
    args: &Args,
) -> Result<(), Failure> {
    let store = open_existing_store(config).await?;
    let mut chats = Vec::new();
    let (from, to) = (since.as_millisecond(), until.as_millisecond());
    let read = store.compare_chats(from, to, |c| chats.push(c)).await;
    store.close().await;
    read.context("cannot read the window's chats")?;
    // Arm b's after-hours rules too: its chats are classed by its own rules.
    let rules_b = crate::experiment::load_b_rules(&config.experiment)
        .map_err(|e| Failure::Invalid(e.into()))?;
    let mut after_hours = report::after_hours_rules(rules);
    after_hours.extend(
        rules_b
            .as_ref()
            .map(report::after_hours_rules)
            .unwrap_or_default(),
    );
    let (a, b) = report::arms::arms(&chats, &after_hours).map_err(anyhow::Error::from)?;
    let options = report::compare::Options::default();
    let compared = report::compare::compare(&a, &b, &options).map_err(anyhow::Error::from)?;
    let window = format!("{since:.0} to {until:.0}");
    if let Some(path) = &args.html {
        let page = report::compare::html::render(&compared, &window);
        std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&compared).context("cannot write JSON")?;
        println!("{text}");
    } else if let Some(path) = &args.html {
        println!("wrote {}", path.display());
    } else {
        println!("{window}\n{}", report::compare::text(&compared));
    }
    Ok(())
}

/// The window's outcomes, then its chats, counted as they are read, and
/// its dead letters.
async fn read(config: &Config, mut tally: report::Tally<'_>) -> Result<Report, Failure> {
    let store = open_existing_store(config).await?;
    let (from, to) = tally.window_ms();
    let counted = async {
        store.report_outcomes(from, to, |o| tally.add(&o)).await?;
        store.report_chats(from, to, |c| tally.add_chat(&c)).await
    }
    .await;
    let dead = store.report_dead_letters(from, to, DEAD_LETTERS).await;
    store.close().await;
    counted.context("cannot read the outcomes and chats")?;
    let dead = dead.context("cannot read the dead letters")?;
    Ok(tally.finish(&dead))
}

/// Text from the database with its control characters (a terminal's escape
/// sequences) shown as spaces.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn waits(w: &Wait) -> String {
    match (w.p50_ms, w.p95_ms) {
        (Some(p50), Some(p95)) => format!("p50 {} p95 {}", human_ms(p50), human_ms(p95)),
        _ => "-".into(),
    }
}

fn print_text(r: &Report) {
    let t = &r.totals;
    println!(
        "report: {} to {} (days in {})",
        r.since, r.until, r.timezone
    );
    println!(
        "assignments: {}  reassignments: {}  escalations: {}  hand-backs: {}",
        t.assignments, t.reassignments, t.escalations, t.handbacks
    );
    println!(
        "after hours: {} ({:.1}%)",
        t.after_hours,
        t.after_hours_share * 100.0
    );
    println!(
        "time in queue: {} ({} chats)",
        waits(&r.queue_wait),
        r.queue_wait.count
    );
    print_chats(&r.chats);
    println!("\nagents:");
    for a in &r.agents {
        println!(
            "  {:<16} {:>5} assigned  {:>3} reassigned  {:>3} escalated  {:>3} handed back  {:>3} after hours  wait {}",
            plain(&a.agent),
            a.assignments,
            a.reassignments,
            a.escalations,
            a.handbacks,
            a.after_hours,
            waits(&a.queue_wait)
        );
    }
    print_tables(r);
}

/// The measure of routing over the chats that arrived.
fn print_chats(c: &ChatFigures) {
    println!(
        "first agent reply: {} ({} of {} chats replied, {:.1}%)",
        waits(&c.first_reply),
        c.replied,
        c.arrived,
        c.reply_share * 100.0
    );
    let by = &c.time_to_assignment;
    let chats = |n: usize| format!("{n} chat{}", if n == 1 { "" } else { "s" });
    println!(
        "time to assignment: by assignd {} ({}), by others {} ({})",
        waits(&by.assignd),
        chats(by.assignd.count),
        waits(&by.other),
        chats(by.other.count)
    );
    let a = &c.after_hours;
    println!(
        "after-hours reply rate: {} of {} chats ({:.1}%)",
        a.replied,
        a.chats,
        a.reply_rate * 100.0
    );
}

/// Pools, days and dead letters.
fn print_tables(r: &Report) {
    println!("\npools:");
    for p in &r.pools {
        let f = &p.fairness;
        println!(
            "  {:<16} {:>5} assigned  max {} min {} jain {:.3}  {} escalated  wait {}",
            plain(&f.pool),
            p.assignments,
            f.max,
            f.min,
            f.jain,
            p.escalations,
            waits(&p.queue_wait)
        );
    }
    println!("\ndays:");
    for d in &r.days {
        let n: u32 = d.assignments.values().sum();
        println!(
            "  {}  {:>5} assigned  wait {}",
            d.date,
            n,
            waits(&d.queue_wait)
        );
    }
    println!("\ndead letters: {}", r.dead_letters.len());
    for d in &r.dead_letters {
        println!(
            "  row {} chat {}  {}  {}",
            d.row,
            d.chat_id,
            d.at.as_deref().unwrap_or("-"),
            plain(d.reason.as_deref().unwrap_or("-"))
        );
    }
}
