//! Whole-set checks that run after a rule set compiled: a set that can
//! never assign a chat is an error, not a quiet way to finish every queued
//! chat unassigned (an empty or truncated file, a forgotten directory, a
//! set of `assign = "none"` rules).
//!
//! "Can assign" is judged from the rules alone and errs towards yes: a rule
//! can assign unless it provably never matches, is never reached, or names
//! a target that can never have a candidate. Anything that depends on the
//! chat or on the moment (a pattern, a shift, capacity in use) counts as
//! "might".

use std::path::PathBuf;

use super::matcher::{Condition, Pattern};
use super::{Pool, Rule, Rules, Target, WhenFull};
use crate::diag::{Location, SourceError};

/// Fails unless at least one rule of `rules` can assign some chat.
/// `sources` are the files the set was compiled from, in merge order.
pub(super) fn ensure_can_assign(
    rules: &Rules,
    sources: &[(PathBuf, String)],
) -> Result<(), SourceError> {
    if rules.rules.is_empty() {
        return Err(no_rules(sources));
    }
    let mut reasons = Vec::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        match why_never_assigns(rules, i) {
            None => return Ok(()),
            Some(why) => reasons.push(format!("rule `{}` {why}", rule.name)),
        }
    }
    // A long set would make an unreadable line: the first few say enough.
    let more = reasons.len().saturating_sub(MAX_REASONS);
    reasons.truncate(MAX_REASONS);
    if more > 0 {
        reasons.push(format!("and {more} more"));
    }
    Err(SourceError {
        location: rules.rules[0].location.clone(),
        message: format!(
            "no rule can assign a chat ({}), so every chat would end unassigned; \
             add a rule that assigns an agent or a pool that can take chats",
            reasons.join("; ")
        ),
    })
}

const MAX_REASONS: usize = 5;

/// The error for a set without a single `[[rule]]`, placed at the end of
/// the last file, where a rule would go (and where a cut-short file ends).
fn no_rules(sources: &[(PathBuf, String)]) -> SourceError {
    let names: Vec<String> = sources
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let verb = if names.len() == 1 {
        "defines"
    } else {
        "define"
    };
    let location = match sources.last() {
        Some((path, text)) => Location::at(path, text, text.len()),
        None => Location::at(std::path::Path::new("(no file)"), "", 0),
    };
    SourceError {
        location,
        message: format!(
            "no rules: {} {verb} no [[rule]], so every chat would end no_match; \
             add at least one [[rule]] that assigns an agent or a pool",
            names.join(", ")
        ),
    }
}

/// Why rule `index` can never assign a chat, or `None` when it might.
fn why_never_assigns(rules: &Rules, index: usize) -> Option<String> {
    let rule = &rules.rules[index];
    if let Some(earlier) = rules.rules[..index]
        .iter()
        .find(|r| stops_every_chat(rules, r))
    {
        return Some(format!(
            "is never reached: rule `{}` before it takes every chat",
            earlier.name
        ));
    }
    if let Some(key) = rule.conditions.iter().find(|c| never_holds(rules, c)) {
        return Some(format!("never matches: its `{}` can never hold", key.key()));
    }
    match rule.target {
        Target::Nobody => Some("assigns none".into()),
        Target::Agent(a) => {
            agent_blocker(rules, a, None, &rule.require_skills).map(|why| format!("assigns {why}"))
        }
        Target::Pool(p) => pool_blocker(rules, &rules.pools[p], &rule.require_skills),
    }
}

/// A rule without conditions that never hands a chat on to later rules:
/// only a pool with `when_full = "next"` does that.
fn stops_every_chat(rules: &Rules, rule: &Rule) -> bool {
    if !rule.conditions.is_empty() {
        return false;
    }
    match rule.target {
        Target::Nobody | Target::Agent(_) => true,
        Target::Pool(p) => rules.pools[p].when_full != WhenFull::Next,
    }
}

/// Whether `c` is false for every chat at every instant.
fn never_holds(rules: &Rules, c: &Condition) -> bool {
    match c {
        Condition::Within { schedule } => !rules.schedules[*schedule].ever_open(),
        Condition::Weekday { days, .. } => *days == 0,
        Condition::Field { pattern, .. } => pattern_never_holds(pattern),
        // `any = []` has no alternative to hold.
        Condition::Any(groups) => groups
            .iter()
            .all(|g| g.iter().any(|c| never_holds(rules, c))),
        // `not = {}`: an empty group always holds, so its negation never does.
        Condition::Not(groups) => groups.iter().any(Vec::is_empty),
        Condition::Outside { .. } => false,
    }
}

/// `department = []`: a list with nothing in it matches no value.
fn pattern_never_holds(p: &Pattern) -> bool {
    match p {
        Pattern::AnyOf(ps) => ps.iter().all(pattern_never_holds),
        _ => false,
    }
}

/// Why no member of `pool` can ever take the rule's chats, or `None`.
fn pool_blocker(rules: &Rules, pool: &Pool, skills: &[String]) -> Option<String> {
    let mut why = Vec::new();
    for &a in &pool.members {
        why.push(agent_blocker(rules, a, Some(pool), skills)?);
    }
    Some(format!(
        "routes to pool `{}`, where no agent can ever take a chat ({})",
        pool.name,
        why.join(", ")
    ))
}

/// Why agent `a` can never be a candidate, or `None` when it may be one.
fn agent_blocker(
    rules: &Rules,
    a: usize,
    pool: Option<&Pool>,
    skills: &[String],
) -> Option<String> {
    let agent = &rules.agents[a];
    if let Some(s) = agent.schedule
        && !rules.schedules[s].ever_open()
    {
        let shift = &rules.schedules[s].name;
        return Some(format!(
            "`{}`, whose shift `{shift}` is never open",
            agent.name
        ));
    }
    if let Some(missing) = skills
        .iter()
        .find(|s| !agent.skills.iter().any(|have| have.eq_ignore_ascii_case(s)))
    {
        return Some(format!(
            "`{}`, who lacks the required skill `{missing}`",
            agent.name
        ));
    }
    let cap = pool.map_or(agent.max_open, |p| p.cap(agent));
    (cap == Some(0)).then(|| format!("`{}`, whose max_open is 0", agent.name))
}

#[cfg(test)]
mod tests {
    use super::super::load::load_texts as load;

    fn error(files: &[(&str, &str)]) -> String {
        load(files).map(|_| ()).unwrap_err().to_string()
    }

    fn begins(e: &str, prefix: &str) {
        assert!(e.starts_with(prefix), "{e}");
    }

    fn mentions(e: &str, part: &str) {
        assert!(e.contains(part), "{e}");
    }

    const TEAM: &str = "timezone = \"Europe/Kyiv\"\n\n[agents]\nalice = { id = 1, skills = [\"uk\"] }\nbob = { id = 2 }\n\n[pools.support]\nagents = [\"alice\", \"bob\"]\n\n[[rule]]\nname = \"ukrainian\"\nmatch = { attr.language = \"uk\" }\nassign = \"pool:support\"\nrequire_skills = [\"uk\"]\n\n[[rule]]\nname = \"everything else\"\nassign = \"pool:support\"\n";

    #[test]
    fn an_empty_file_is_no_rules_at_its_end() {
        assert_eq!(
            error(&[("r.toml", "")]),
            "r.toml:1:1: no rules: r.toml defines no [[rule]], so every chat would end no_match; \
             add at least one [[rule]] that assigns an agent or a pool"
        );
        let e = error(&[("r.toml", "# nothing yet\n\n")]);
        begins(&e, "r.toml:3:1: no rules: r.toml defines no [[rule]]");
    }

    #[test]
    fn files_with_names_but_no_rule_are_no_rules_naming_every_file() {
        let e = error(&[
            ("10-a.toml", "[agents]\nalice = { id = 1 }\n"),
            ("20-b.toml", "[pools.p]\nagents = [\"alice\"]\n"),
        ]);
        begins(
            &e,
            "20-b.toml:3:1: no rules: 10-a.toml, 20-b.toml define no [[rule]]",
        );
    }

    #[test]
    fn a_set_of_none_rules_cannot_assign() {
        let e = error(&[(
            "r.toml",
            "[agents]\na = { id = 1 }\n[[rule]]\nname = \"spam\"\nmatch = { message = \"x\" }\nassign = \"none\"\n[[rule]]\nname = \"rest\"\nassign = \"none\"\n",
        )]);
        assert_eq!(
            e,
            "r.toml:4:8: no rule can assign a chat (rule `spam` assigns none; rule `rest` assigns none), \
             so every chat would end unassigned; add a rule that assigns an agent or a pool that can take chats"
        );
    }

    #[test]
    fn a_long_set_lists_the_first_reasons() {
        let mut text = String::from("[agents]\na = { id = 1 }\n");
        for i in 0..8 {
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\nmatch = {{ message = \"{i}\" }}\nassign = \"none\"\n"
            ));
        }
        let e = error(&[("r.toml", &text)]);
        mentions(&e, "rule `r4` assigns none; and 3 more), so every chat");
    }

    #[test]
    fn rules_after_a_catch_all_none_are_never_reached() {
        let e = error(&[(
            "r.toml",
            "[agents]\na = { id = 1 }\n[[rule]]\nname = \"off\"\nassign = \"none\"\n[[rule]]\nname = \"a\"\nassign = \"a\"\n",
        )]);
        mentions(
            &e,
            "rule `a` is never reached: rule `off` before it takes every chat",
        );
    }

    #[test]
    fn targets_that_can_never_have_a_candidate_cannot_assign() {
        let e = error(&[(
            "r.toml",
            "[agents]\na = { id = 1, schedule = \"never\" }\nb = { id = 2, max_open = 0 }\nc = { id = 3 }\n[schedules.never]\nhours = {}\n[pools.p]\nagents = [\"a\", \"b\"]\nwhen_full = \"next\"\n[[rule]]\nname = \"pool\"\nassign = \"pool:p\"\n[[rule]]\nname = \"skills\"\nmatch = { attr.x = \"1\" }\nassign = \"c\"\nrequire_skills = [\"fr\"]\n[[rule]]\nname = \"closed\"\nmatch = { within = \"never\" }\nassign = \"c\"\n[[rule]]\nname = \"empty list\"\nmatch = { department = [] }\nassign = \"c\"\n",
        )]);
        for part in [
            "rule `pool` routes to pool `p`, where no agent can ever take a chat (`a`, whose shift `never` is never open, `b`, whose max_open is 0)",
            "rule `skills` assigns `c`, who lacks the required skill `fr`",
            "rule `closed` never matches: its `within` can never hold",
            "rule `empty list` never matches: its `department` can never hold",
        ] {
            assert!(e.contains(part), "`{part}` in {e}");
        }
    }

    #[test]
    fn one_rule_that_can_assign_is_enough() {
        load(&[("r.toml", TEAM)]).unwrap();
        // A `next` catch-all hands chats on, so the rule after it counts.
        load(&[(
            "r.toml",
            "[agents]\na = { id = 1, max_open = 0 }\nb = { id = 2 }\n[pools.p]\nagents = [\"a\"]\nwhen_full = \"next\"\n[[rule]]\nname = \"p\"\nassign = \"pool:p\"\n[[rule]]\nname = \"b\"\nassign = \"b\"\n",
        )])
        .unwrap();
        // Spam first, people after: fine.
        load(&[(
            "r.toml",
            "[agents]\na = { id = 1 }\n[[rule]]\nname = \"spam\"\nmatch = { message = \"x\" }\nassign = \"none\"\n[[rule]]\nname = \"people\"\nassign = \"a\"\n",
        )])
        .unwrap();
    }

    /// Every prefix of a good file either loads with a rule that can assign
    /// or fails with file:line:col; none before the first `[[rule]]` loads.
    #[test]
    fn a_file_cut_anywhere_is_located_and_never_silently_empty() {
        let first_rule = TEAM.find("[[rule]]").unwrap();
        for cut in (0..=TEAM.len()).filter(|&c| TEAM.is_char_boundary(c)) {
            match load(&[("r.toml", &TEAM[..cut])]) {
                Ok(rules) => assert!(cut > first_rule && !rules.rules.is_empty(), "cut at {cut}"),
                Err(e) => {
                    let e = e.to_string();
                    let rest = e.strip_prefix("r.toml:").unwrap_or_else(|| panic!("{e}"));
                    let mut parts = rest.splitn(3, ':');
                    assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{e}");
                    assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{e}");
                }
            }
        }
        // Cut at the line before the first rule: valid TOML, no rules.
        let e = error(&[("r.toml", &TEAM[..first_rule])]);
        begins(&e, "r.toml:10:1: no rules: r.toml defines no [[rule]]");
    }

    #[test]
    fn a_file_cut_mid_token_is_the_toml_error() {
        let cut = TEAM.find("pool:support").unwrap() + 4;
        let e = error(&[("r.toml", &TEAM[..cut])]);
        assert!(e.starts_with("r.toml:13:") && e.contains("string"), "{e}");
        assert!(!e.contains("no rules"), "{e}");
    }
}
