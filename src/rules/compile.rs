//! Turning the parsed files (the TOML model of [`super::raw`]) into
//! [`Rules`]: names first ([`super::names`]), so files may refer to each other, then
//! schedules, agents, pools and rules, each checked where it is written.
//! The steps run in this order so that, of several errors, the same one is
//! always reported first.

use std::collections::{BTreeSet, HashMap};

use jiff::tz::TimeZone;
use toml::Spanned;

use super::Handback;
use super::keys::compile_match;
use super::matcher::Condition;
use super::names::{Names, compile_target, declare, lookup};
use super::raw::{File, OneOrMany, RawAgent, RawPool, RawReply, RawRule, RawSchedule, RawValue};
use super::schedule::{self, Schedule};
use super::template::{Placeholder, Template};
use super::{Agent, BusyReply, Pool, Reply, Rule, Rules, Strategy, WhenFull};
use crate::diag::{Location, SourceError};
use crate::domain::AgentId;
use crate::duration::HumanDuration;

pub(super) fn compile(files: &[File]) -> Result<Rules, SourceError> {
    let rules_tz = match files.iter().find(|f| f.raw.timezone.is_some()) {
        Some(f) => file_zone(f)?,
        None => TimeZone::UTC,
    };
    let mut names = declare(files)?;
    let schedules = compile_schedules(files, &mut names)?;
    let agents = compile_agents(files, &names)?;
    let mut pools = compile_pools(files, &mut names)?;
    super::escalate::compile(files, &names, &mut pools)?;
    let rules = compile_rules(files, &names)?;
    Ok(Rules {
        timezone: rules_tz,
        agents,
        schedules,
        pools,
        index: super::index::RuleIndex::build(&rules),
        rules,
        files: files.iter().map(|f| f.path.to_path_buf()).collect(),
        hourly_floor: 0,
    })
}

/// A file's own zone (else UTC), the default for its schedules and weekdays.
fn file_zone(f: &File) -> Result<TimeZone, SourceError> {
    match &f.raw.timezone {
        Some(tz) => zone(f, tz),
        None => Ok(TimeZone::UTC),
    }
}

fn compile_schedules(files: &[File], names: &mut Names) -> Result<Vec<Schedule>, SourceError> {
    let mut schedules = Vec::new();
    for f in files {
        let file_tz = file_zone(f)?;
        for (name, raw) in &f.raw.schedules {
            names
                .schedules
                .insert(name.get_ref().clone(), schedules.len());
            schedules.push(compile_schedule(
                f,
                name.get_ref(),
                raw.get_ref(),
                &file_tz,
            )?);
        }
    }
    Ok(schedules)
}

/// The agents, in name order.
fn compile_agents(files: &[File], names: &Names) -> Result<Vec<Agent>, SourceError> {
    let mut agents: Vec<Option<Agent>> = vec![None; names.agents.len()];
    let mut ids: HashMap<i64, (String, Location)> = HashMap::new();
    for f in files {
        for (name, raw) in &f.raw.agents {
            let agent = compile_agent(f, name, raw.get_ref(), names, &mut ids)?;
            agents[names.agents[name.get_ref()]] = Some(agent);
        }
    }
    Ok(agents
        .into_iter()
        .map(|a| a.expect("every name was filled"))
        .collect())
}

/// One agent; `ids` holds the ids seen so far, which must not repeat.
fn compile_agent(
    f: &File,
    name: &Spanned<String>,
    raw: &RawAgent,
    names: &Names,
    ids: &mut HashMap<i64, (String, Location)>,
) -> Result<Agent, SourceError> {
    if let Some(w) = &raw.weight
        && *w.get_ref() == 0
    {
        return Err(f.err(w.span(), "weight must be at least 1"));
    }
    let id = *raw.id.get_ref();
    if id <= 0 {
        return Err(f.err(
            raw.id.span(),
            format!("agent id {id} must be a positive HelpCrunch agent id"),
        ));
    }
    if let Some((other, at)) = ids.insert(id, (name.get_ref().clone(), f.location(raw.id.span()))) {
        return Err(f.err(
            raw.id.span(),
            format!(
                "agent id {id} of `{}` is also the id of `{other}` ({at})",
                name.get_ref()
            ),
        ));
    }
    let schedule = match &raw.schedule {
        Some(s) => Some(lookup(f, s, &names.schedules, "schedule")?),
        None => None,
    };
    Ok(Agent {
        name: name.get_ref().clone(),
        id: AgentId(id),
        skills: raw.skills.clone(),
        schedule,
        weight: raw.weight.as_ref().map_or(1, |w| *w.get_ref()),
        max_open: raw.max_open,
        max_per_hour: per_hour(f, raw.max_per_hour.as_ref())?,
    })
}

fn compile_pools(files: &[File], names: &mut Names) -> Result<Vec<Pool>, SourceError> {
    let mut pools = Vec::new();
    for f in files {
        for (name, raw) in &f.raw.pools {
            names.pools.insert(name.get_ref().clone(), pools.len());
            pools.push(compile_pool(f, name.get_ref(), raw.get_ref(), names)?);
        }
    }
    Ok(pools)
}

/// The rules, in file order; names are unique regardless of case.
fn compile_rules(files: &[File], names: &Names) -> Result<Vec<Rule>, SourceError> {
    let mut rules = Vec::new();
    let mut rule_names: HashMap<String, Location> = HashMap::new();
    for f in files {
        let file_tz = file_zone(f)?;
        for raw in &f.raw.rules {
            let raw = raw.get_ref();
            let here = f.location(raw.name.span());
            if let Some(first) = rule_names.insert(raw.name.get_ref().to_lowercase(), here.clone())
            {
                return Err(f.err(
                    raw.name.span(),
                    format!(
                        "rule name `{}` is already used at {first}",
                        raw.name.get_ref()
                    ),
                ));
            }
            rules.push(compile_rule(f, raw, names, &file_tz, here)?);
        }
    }
    Ok(rules)
}

fn compile_rule(
    f: &File,
    raw: &RawRule,
    names: &Names,
    tz: &TimeZone,
    location: Location,
) -> Result<Rule, SourceError> {
    let conditions = match &raw.matches {
        Some(m) => match m.get_ref() {
            RawValue::Table(entries) => compile_match(f, entries, names, tz)?,
            _ => {
                return Err(f.err(
                    m.span(),
                    "`match` must be a table, e.g. match = { department = \"Billing\" }",
                ));
            }
        },
        None => Vec::new(),
    };
    let target = compile_target(f, &raw.assign, names)?;
    let note = raw.note.as_ref().map(|n| template(f, n)).transpose()?;
    let reply = match &raw.reply {
        Some(r) => Some(compile_reply(f, r.get_ref(), names)?),
        None => None,
    };
    let schedule = conditions.iter().find_map(|c| match c {
        Condition::Within { schedule } | Condition::Outside { schedule } => Some(*schedule),
        _ => None,
    });
    check_next_open(f, raw, note.as_ref(), reply.as_ref(), schedule)?;
    check_position(f, raw, note.as_ref(), reply.as_ref())?;
    Ok(Rule {
        name: raw.name.get_ref().clone(),
        priority: raw.priority,
        conditions,
        target,
        require_skills: raw.require_skills.clone(),
        note,
        reply,
        schedule,
        location,
    })
}

fn compile_reply(f: &File, raw: &RawReply, names: &Names) -> Result<Reply, SourceError> {
    Ok(Reply {
        from: lookup(f, &raw.from, &names.agents, "agent")?,
        text: template(f, &raw.text)?,
    })
}

/// `{next_open}` names the opening of the rule's schedule, so a rule that
/// uses it must have one.
fn check_next_open(
    f: &File,
    raw: &RawRule,
    note: Option<&Template>,
    reply: Option<&Reply>,
    schedule: Option<usize>,
) -> Result<(), SourceError> {
    let uses_next_open = note
        .into_iter()
        .chain(reply.map(|r| &r.text))
        .any(|t| t.uses(Placeholder::NextOpen));
    if !uses_next_open || schedule.is_some() {
        return Ok(());
    }
    let span = raw
        .note
        .as_ref()
        .map(|n| n.span())
        .or(raw.reply.as_ref().map(|r| r.span()))
        .unwrap_or(0..0);
    Err(f.err(
        span,
        "`{next_open}` needs the rule to match `within` or `outside` a schedule",
    ))
}

/// `busy_reply`: nobody is assigned yet, so `{agent}` has no value; the
/// wait must be longer than zero.
fn busy_reply(f: &File, raw: &RawPool, names: &Names) -> Result<Option<BusyReply>, SourceError> {
    let Some(b) = &raw.busy_reply else {
        return Ok(None);
    };
    let b = b.get_ref();
    let text = template(f, &b.text)?;
    if text.uses(Placeholder::Agent) {
        return Err(f.err(
            b.text.span(),
            "`{agent}` cannot be used in busy_reply: nobody is assigned yet",
        ));
    }
    if b.after.get_ref().0.is_zero() {
        return Err(f.err(b.after.span(), "`after` must be longer than zero"));
    }
    Ok(Some(BusyReply {
        from: lookup(f, &b.from, &names.agents, "agent")?,
        text,
        after: b.after.get_ref().0,
    }))
}

/// `{position}` is a waiting chat's place in the queue: only a pool's
/// `busy_reply` is sent while the chat waits.
fn check_position(
    f: &File,
    raw: &RawRule,
    note: Option<&Template>,
    reply: Option<&Reply>,
) -> Result<(), SourceError> {
    let span = match (note, reply) {
        (Some(n), _) if n.uses(Placeholder::Position) => raw.note.as_ref().map(|n| n.span()),
        (_, Some(r)) if r.text.uses(Placeholder::Position) => raw.reply.as_ref().map(|r| r.span()),
        _ => return Ok(()),
    };
    Err(f.err(
        span.unwrap_or(0..0),
        "`{position}` can only be used in a pool's busy_reply (the chat waits there)",
    ))
}

/// Parses a template, locating errors inside the string. The offset is
/// exact for strings without escapes, which templates rarely have.
fn template(f: &File, text: &Spanned<String>) -> Result<Template, SourceError> {
    Template::parse(text.get_ref()).map_err(|e| {
        let start = text.span().start + 1 + e.offset;
        f.err(start..start, e.message)
    })
}

fn zone(f: &File, name: &Spanned<String>) -> Result<TimeZone, SourceError> {
    TimeZone::get(name.get_ref()).map_err(|_| {
        f.err(
            name.span(),
            format!(
                "unknown time zone `{}` (use an IANA name like \"Europe/Kyiv\")",
                name.get_ref()
            ),
        )
    })
}

fn compile_schedule(
    f: &File,
    name: &str,
    raw: &RawSchedule,
    file_tz: &TimeZone,
) -> Result<Schedule, SourceError> {
    let tz = match &raw.timezone {
        Some(tz) => zone(f, tz)?,
        None => file_tz.clone(),
    };
    let mut days: [Vec<schedule::Range>; 7] = Default::default();
    for (key, value) in &raw.hours {
        let indexes = schedule::parse_days(key.get_ref()).map_err(|e| f.err(key.span(), e))?;
        let texts = match value.get_ref() {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        };
        for text in texts {
            let range = schedule::parse_range(text).map_err(|e| f.err(value.span(), e))?;
            for &d in &indexes {
                days[d].push(range);
            }
        }
    }
    Ok(Schedule {
        name: name.to_string(),
        tz,
        days,
        holidays: holidays(f, &raw.holidays)?,
    })
}

fn holidays(f: &File, raw: &[Spanned<String>]) -> Result<BTreeSet<jiff::civil::Date>, SourceError> {
    raw.iter()
        .map(|h| {
            h.get_ref().parse::<jiff::civil::Date>().map_err(|_| {
                f.err(
                    h.span(),
                    format!("holiday `{}` is not a date like 2026-12-25", h.get_ref()),
                )
            })
        })
        .collect()
}

fn compile_pool(f: &File, name: &str, raw: &RawPool, names: &Names) -> Result<Pool, SourceError> {
    check_reassign(f, raw)?;
    if raw.agents.get_ref().is_empty() {
        return Err(f.err(raw.agents.span(), format!("pool `{name}` has no agents")));
    }
    let mut members = Vec::new();
    for a in raw.agents.get_ref() {
        let i = lookup(f, a, &names.agents, "agent")?;
        if !members.contains(&i) {
            members.push(i);
        }
    }
    members.sort_unstable();
    Ok(Pool {
        name: name.to_string(),
        members,
        strategy: strategy(f, raw.strategy.as_ref())?,
        when_full: when_full(f, raw.when_full.as_ref())?,
        max_open: raw.max_open,
        reassign_after: raw.reassign_after.as_ref().map(|r| r.get_ref().0),
        max_reassign: raw.max_reassign.as_ref().map_or(1, |m| *m.get_ref()),
        max_per_hour: per_hour(f, raw.max_per_hour.as_ref())?,
        sticky_for: sticky_for(f, raw.sticky_for.as_ref())?,
        handback: handback(f, raw.handback.as_ref())?,
        // Filled in once every pool has a name: a step may name a later one.
        escalate: Vec::new(),
        busy_reply: busy_reply(f, raw, names)?,
    })
}

/// `max_per_hour`: a whole number of assignments, at least 1 (a cap of 0
/// would be an agent who never gets a chat: leave them out of the pool).
fn per_hour(f: &File, raw: Option<&Spanned<i64>>) -> Result<Option<u32>, SourceError> {
    let Some(n) = raw else { return Ok(None) };
    match u32::try_from(*n.get_ref()) {
        Ok(cap) if cap >= 1 => Ok(Some(cap)),
        _ => Err(f.err(
            n.span(),
            format!(
                "`max_per_hour` must be a whole number of assignments from 1 to {}, not {}",
                u32::MAX,
                n.get_ref()
            ),
        )),
    }
}

fn sticky_for(
    f: &File,
    raw: Option<&Spanned<HumanDuration>>,
) -> Result<std::time::Duration, SourceError> {
    let Some(d) = raw else {
        return Ok(super::DEFAULT_STICKY_FOR);
    };
    if d.get_ref().0.is_zero() {
        return Err(f.err(d.span(), "`sticky_for` must be longer than zero"));
    }
    Ok(d.get_ref().0)
}

/// `handback`: "none" (the default), "unanswered" or "all".
fn handback(f: &File, raw: Option<&Spanned<String>>) -> Result<Handback, SourceError> {
    let Some(h) = raw else {
        return Ok(Handback::None);
    };
    Handback::ALL
        .into_iter()
        .find(|m| m.name() == h.get_ref())
        .ok_or_else(|| {
            f.err(
                h.span(),
                format!(
                    "unknown handback `{}` (use none, unanswered or all)",
                    h.get_ref()
                ),
            )
        })
}

fn check_reassign(f: &File, raw: &RawPool) -> Result<(), SourceError> {
    if let (Some(m), None) = (&raw.max_reassign, &raw.reassign_after) {
        return Err(f.err(m.span(), "`max_reassign` needs `reassign_after`"));
    }
    if let Some(r) = &raw.reassign_after
        && r.get_ref().0.is_zero()
    {
        return Err(f.err(r.span(), "`reassign_after` must be longer than zero"));
    }
    Ok(())
}

fn strategy(f: &File, raw: Option<&Spanned<String>>) -> Result<Strategy, SourceError> {
    let Some(s) = raw else {
        return Ok(Strategy::RoundRobin);
    };
    if let Some(st) = Strategy::ALL.iter().find(|st| st.name() == s.get_ref()) {
        return Ok(*st);
    }
    let known: Vec<&str> = Strategy::ALL.iter().map(|st| st.name()).collect();
    Err(f.err(
        s.span(),
        format!(
            "unknown strategy `{}` (use {})",
            s.get_ref(),
            known.join(", ")
        ),
    ))
}

fn when_full(f: &File, raw: Option<&Spanned<String>>) -> Result<WhenFull, SourceError> {
    let Some(w) = raw else {
        return Ok(WhenFull::Wait);
    };
    match w.get_ref().as_str() {
        "wait" => Ok(WhenFull::Wait),
        "next" => Ok(WhenFull::Next),
        "leave" => Ok(WhenFull::Leave),
        other => Err(f.err(
            w.span(),
            format!("unknown when_full `{other}` (use wait, next or leave)"),
        )),
    }
}
