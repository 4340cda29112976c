//! The demo's whole day: a Wednesday of chats on a simulated clock
//! ([`crate::timeline`]), through the same decision code as the daemon, so
//! that whatever the time is now the demo shows round-robin across the day
//! team, a lunch break that escalates, a shift that ends and hands chats
//! back, and the after-hours path with its reply.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::{SignedDuration, Timestamp};

use crate::domain::ChatId;
use crate::rules::context::Text;
use crate::rules::{ChatContext, Rules};
use crate::timeline::{Absence, Arrival, Entry, Event, Scenario};

/// The simulated day: a Wednesday, not a holiday.
const DAY: Date = jiff::civil::date(2026, 6, 3);
const FIRST_CHAT: i64 = 5001;

/// An instant of the simulated day in the rules' zone.
fn at(rules: &Rules, hour: i8, minute: i8) -> Timestamp {
    DAY.to_datetime(Time::constant(hour, minute, 0, 0))
        .to_zoned(rules.timezone.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn minutes(n: i64) -> Duration {
    Duration::from_secs(n as u64 * 60)
}

/// A chat every 9 minutes from 07:30 to 22:30, one in five to Billing, a
/// VIP at 10:10, and a few just before 14:00 that nobody answers in time.
fn arrivals(rules: &Rules) -> Vec<Arrival> {
    let start = at(rules, 7, 30);
    let mut out: Vec<Arrival> = (0..101)
        .map(|i| {
            let when = start + SignedDuration::from_mins(9 * i);
            sample(FIRST_CHAT + i, when, i, None)
        })
        .collect();
    for (n, minute) in [50, 53, 56].into_iter().enumerate() {
        let mut late = sample(
            FIRST_CHAT + 200 + n as i64,
            at(rules, 13, minute),
            n as i64,
            None,
        );
        late.answer_after = Some(minutes(20));
        out.push(late);
    }
    out.push(sample(
        FIRST_CHAT + 300,
        at(rules, 10, 10),
        0,
        Some("ceo@bigcorp.com"),
    ));
    out
}

fn sample(id: i64, when: Timestamp, i: i64, email: Option<&str>) -> Arrival {
    let email = email.map_or_else(|| format!("c{id}@example.com"), str::to_string);
    let mut context = ChatContext {
        chat_id: ChatId(id),
        customer_email: Some(Text::new(email)),
        customer_name: Some(Text::new(format!("Customer {id}"))),
        customer_id: Some(Text::new(id.to_string())),
        ..ChatContext::default()
    };
    if i % 5 == 4 {
        context.department_name = Some(Text::new("Billing"));
    }
    Arrival {
        context,
        at: when,
        priority: 0,
        open_for: minutes(25 + (i * 7) % 30),
        answer_after: Some(minutes(2 + i % 4)),
    }
}

/// The day's scenario over `rules`: lunch breaks that leave the support
/// team empty from 12:10 to 12:40.
pub(super) fn scenario(rules: &Rules) -> Scenario {
    let away = |agent: &str, from: (i8, i8), until: (i8, i8)| Absence {
        agent: agent.into(),
        from: at(rules, from.0, from.1),
        until: at(rules, until.0, until.1),
    };
    Scenario {
        arrivals: arrivals(rules),
        absences: vec![
            away("alice", (12, 0), (12, 40)),
            away("carol", (12, 5), (12, 45)),
            away("bob", (12, 10), (12, 40)),
        ],
        start: at(rules, 7, 0),
        end: at(rules, 23, 59),
        tick: Duration::from_secs(15),
    }
}

/// Prints the day's highlights and its totals.
pub(super) fn print(rules: &Rules, entries: &[Entry]) {
    let date = DAY.strftime("%A %-d %B %Y");
    let zone = rules.timezone.iana_name().unwrap_or("UTC");
    println!();
    println!("a whole day on a simulated clock ({date}, {zone}), same decisions as the daemon:");
    for e in highlights(entries) {
        let time = e.at.to_zoned(rules.timezone.clone()).strftime("%H:%M");
        println!("  {time}  chat {}  {}", e.chat, describe(e));
    }
    print_totals(rules, entries);
}

fn describe(e: &Entry) -> String {
    match &e.event {
        Event::Assigned { agent, .. } => format!("-> {agent}: {}", e.reason),
        Event::Waiting => format!("waits: {}", e.reason),
        Event::Unassigned => format!("unassigned: {}", e.reason),
        Event::Reply { from, text } => format!("reply from {from}: \"{text}\""),
        Event::BusyReply { from, text } => format!("busy reply from {from}: \"{text}\""),
        Event::HandedBack { .. } => e.reason.clone(),
    }
}

/// The first three round-robin picks of the day team, the first busy
/// reply and escalation, the first hand-back of each kind (with where the
/// chat went), and the first after-hours assignment with its reply.
fn highlights(entries: &[Entry]) -> Vec<&Entry> {
    let first = |f: &dyn Fn(&Entry) -> bool| entries.iter().find(|e| f(e));
    let assigned = |e: &Entry| matches!(e.event, Event::Assigned { .. });
    let replied = |chat: ChatId| {
        entries
            .iter()
            .any(|e| e.chat == chat && matches!(e.event, Event::Reply { .. }))
    };
    let mut out: Vec<&Entry> = entries
        .iter()
        .filter(|e| assigned(e) && e.reason.contains("round-robin") && !replied(e.chat))
        .take(3)
        .collect();
    out.extend(first(&|e| matches!(e.event, Event::BusyReply { .. })));
    out.extend(first(&|e| {
        matches!(
            e.event,
            Event::Assigned {
                escalated: true,
                ..
            }
        )
    }));
    for kind in ["away", "shift ended"] {
        let handed = first(&|e| matches!(&e.event, Event::HandedBack { why, .. } if why == kind));
        if let Some(h) = handed {
            out.push(h);
            out.extend(first(&|e| e.chat == h.chat && e.at >= h.at && assigned(e)));
        }
    }
    if let Some(reply) = first(&|e| matches!(e.event, Event::Reply { .. })) {
        out.extend(first(&|e| e.chat == reply.chat && assigned(e)));
        out.push(reply);
    }
    out.sort_by_key(|e| e.at);
    out.dedup_by_key(|e| (e.at, e.chat, describe(e)));
    out
}

fn print_totals(rules: &Rules, entries: &[Entry]) {
    let mut per_agent: BTreeMap<&str, u32> =
        rules.agents.iter().map(|a| (a.name.as_str(), 0)).collect();
    let count = |f: &dyn Fn(&Event) -> bool| entries.iter().filter(|e| f(&e.event)).count();
    for e in entries {
        if let Event::Assigned { agent, .. } = &e.event {
            *per_agent.entry(agent.as_str()).or_default() += 1;
        }
    }
    let chats: std::collections::HashSet<ChatId> = entries.iter().map(|e| e.chat).collect();
    let agents: Vec<String> = per_agent.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!(
        "  the day: {} chats; assignments per agent: {}",
        chats.len(),
        agents.join(", ")
    );
    println!(
        "  {} escalated, {} handed back, {} busy replies, {} replies from rules (after hours)",
        count(&|e| matches!(
            e,
            Event::Assigned {
                escalated: true,
                ..
            }
        )),
        count(&|e| matches!(e, Event::HandedBack { .. })),
        count(&|e| matches!(e, Event::BusyReply { .. })),
        count(&|e| matches!(e, Event::Reply { .. })),
    );
}
