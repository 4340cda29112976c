//! An index over the rules' conditions, so that a decision skips the rules
//! a chat cannot match without testing them one by one.
//!
//! Most chats fail most rules. Two lookups per field find the rules a chat
//! fails at once: a hash of exact values (`department = "Sales"`,
//! `attr.language = ["de", "at"]`), and one Aho-Corasick scan for the
//! literals that substring conditions need (`contains`, globs such as
//! `*@corp.com`, and the literals a regex's matches must contain). The index
//! only ever drops a rule with a top-level condition that the chat fails, so
//! the first rule that matches, and hence the decision, is the same as
//! walking every rule; a property test holds it to that.

use aho_corasick::AhoCorasick;
use rustc_hash::FxHashMap;

use super::Rule;
use super::context::ChatContext;
use super::matcher::{Condition, Field, Glob, Pattern};

/// Sets larger than this are walked rule by rule.
const MAX_RULES: usize = 512;
const WORDS: usize = MAX_RULES / 64;

/// One bit per rule, in file order.
pub type RuleBits = [u64; WORDS];

#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    /// How many rules it was built for; used with any other count, it
    /// answers "every rule" instead of a wrong set.
    rules: usize,
    fields: Vec<FieldIndex>,
    substrings: Vec<SubstringIndex>,
}

/// A [`SubstringIndex`] being built: each literal with the rules it lets through.
struct LiteralSet {
    field: Field,
    literals: Vec<(Vec<u8>, RuleBits)>,
    keyed: RuleBits,
    ascii_only: RuleBits,
}

/// The rules whose condition on `field` needs one of some literals in the
/// lower-case text.
#[derive(Debug, Clone)]
struct SubstringIndex {
    field: Field,
    keyed: RuleBits,
    /// Keyed through a regex: their literals hold only for ASCII text, so
    /// any other text lets them through.
    ascii_only: RuleBits,
    literals: AhoCorasick,
    /// Per literal, the rules it lets through.
    rules_of: Vec<RuleBits>,
}

#[derive(Debug, Clone)]
struct FieldIndex {
    field: Field,
    /// The rules with an exact condition on this field.
    keyed: RuleBits,
    /// A lower-case value -> the keyed rules that value satisfies.
    by_value: FxHashMap<String, RuleBits>,
}

impl RuleIndex {
    /// Indexes every top-level condition that compares a field with exact
    /// values (a string without wildcards, a number, or a list of those).
    pub fn build(rules: &[Rule]) -> Self {
        if rules.len() > MAX_RULES {
            return Self::default();
        }
        let mut fields: Vec<FieldIndex> = Vec::new();
        // Per field: its literals, each with the rules it lets through.
        let mut literal_sets: Vec<LiteralSet> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for condition in &rule.conditions {
                let Condition::Field { field, pattern, .. } = condition else {
                    continue;
                };
                if let Some(values) = exact_values(pattern) {
                    FieldIndex::add(&mut fields, field, i, &values);
                } else if let Some((needed, via_regex)) = literals(pattern) {
                    LiteralSet::add(&mut literal_sets, field, i, &needed, via_regex);
                }
            }
        }
        Self {
            rules: rules.len(),
            fields,
            substrings: literal_sets
                .into_iter()
                .filter_map(LiteralSet::finish)
                .collect(),
        }
    }

    /// The rules `chat` may match; None means every rule may (nothing is
    /// indexed, or the set changed since the index was built).
    pub fn candidates(&self, rules: usize, chat: &ChatContext) -> Option<RuleBits> {
        if (self.fields.is_empty() && self.substrings.is_empty()) || self.rules != rules {
            return None;
        }
        let mut out = [!0u64; WORDS];
        for f in &self.fields {
            // A rule not keyed on this field passes it; a keyed one passes
            // when one of the chat's values is one of its values.
            let mut allowed = f.keyed.map(|w| !w);
            for v in f.field.values(chat).iter() {
                if let Some(bits) = f.by_value.get(v.lower.as_str()) {
                    for (a, b) in allowed.iter_mut().zip(bits) {
                        *a |= b;
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(allowed) {
                *o &= a;
            }
        }
        for f in &self.substrings {
            let mut allowed = f.keyed.map(|w| !w);
            for v in f.field.values(chat).iter() {
                if !v.raw.is_ascii() {
                    for (a, b) in allowed.iter_mut().zip(&f.ascii_only) {
                        *a |= b;
                    }
                }
                for m in f.literals.find_overlapping_iter(v.lower.as_str()) {
                    for (a, b) in allowed.iter_mut().zip(&f.rules_of[m.pattern().as_usize()]) {
                        *a |= b;
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(allowed) {
                *o &= a;
            }
        }
        Some(out)
    }
}

impl FieldIndex {
    /// Notes that rule `i` needs `field` to be one of `values`.
    fn add(fields: &mut Vec<FieldIndex>, field: &Field, i: usize, values: &[&str]) {
        let at = match fields.iter().position(|f| f.field == *field) {
            Some(at) => at,
            None => {
                fields.push(FieldIndex {
                    field: field.clone(),
                    keyed: [0; WORDS],
                    by_value: FxHashMap::default(),
                });
                fields.len() - 1
            }
        };
        let f = &mut fields[at];
        set(&mut f.keyed, i);
        for v in values {
            set(f.by_value.entry(v.to_string()).or_insert([0; WORDS]), i);
        }
    }
}

impl LiteralSet {
    /// Notes that rule `i` needs `field` to contain one of `needed`.
    fn add(sets: &mut Vec<LiteralSet>, field: &Field, i: usize, needed: &[&[u8]], via_regex: bool) {
        let at = match sets.iter().position(|l| l.field == *field) {
            Some(at) => at,
            None => {
                sets.push(LiteralSet {
                    field: field.clone(),
                    literals: Vec::new(),
                    keyed: [0; WORDS],
                    ascii_only: [0; WORDS],
                });
                sets.len() - 1
            }
        };
        let l = &mut sets[at];
        set(&mut l.keyed, i);
        if via_regex {
            set(&mut l.ascii_only, i);
        }
        for &literal in needed {
            match l
                .literals
                .iter_mut()
                .find(|(have, _)| have.as_slice() == literal)
            {
                Some((_, bits)) => set(bits, i),
                None => {
                    let mut bits = [0; WORDS];
                    set(&mut bits, i);
                    l.literals.push((literal.to_vec(), bits));
                }
            }
        }
    }

    /// The automaton over the literals. Should it not build, those rules
    /// are walked.
    fn finish(self) -> Option<SubstringIndex> {
        let literals = AhoCorasick::new(self.literals.iter().map(|(text, _)| text)).ok()?;
        Some(SubstringIndex {
            field: self.field,
            keyed: self.keyed,
            ascii_only: self.ascii_only,
            literals,
            rules_of: self.literals.into_iter().map(|(_, bits)| bits).collect(),
        })
    }
}

/// Whether rule `i` is in `bits`.
pub fn contains(bits: &RuleBits, i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut RuleBits, i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

/// The values an exact pattern accepts: one, or any of a list.
fn exact_values(pattern: &Pattern) -> Option<Vec<&str>> {
    match pattern {
        Pattern::Exact(s) => Some(vec![s.as_str()]),
        Pattern::AnyOf(items) => items
            .iter()
            .map(|p| match p {
                Pattern::Exact(s) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The lower-case literals one of which a value must contain for `pattern`
/// to hold, and whether they come from a regex (and so hold for ASCII text
/// only). None when no such literals exist, or one is empty.
fn literals(pattern: &Pattern) -> Option<(Vec<&[u8]>, bool)> {
    let (needed, via_regex): (Vec<&[u8]>, bool) = match pattern {
        Pattern::Exact(s) => (vec![s.as_bytes()], false),
        Pattern::Contains(s) => (vec![s.needle()], false),
        Pattern::Glob(g) => (vec![glob_literal(g)?], false),
        Pattern::Regex(r) => (r.needles().collect(), true),
        Pattern::AnyOf(items) => {
            let mut all = Vec::new();
            let mut via_regex = false;
            for item in items {
                let (needed, regex) = literals(item)?;
                all.extend(needed);
                via_regex |= regex;
            }
            (all, via_regex)
        }
        Pattern::Exists(_) => return None,
    };
    if needed.is_empty() || needed.iter().any(|l| l.is_empty()) {
        return None;
    }
    Some((needed, via_regex))
}

/// A literal every text a glob matches contains.
fn glob_literal(glob: &Glob) -> Option<&[u8]> {
    match glob {
        Glob::Suffix(s) | Glob::Prefix(s) => Some(s.as_bytes()),
        Glob::Contains(m) => Some(m.needle()),
        Glob::PrefixSuffix(p, s) => Some(if p.len() >= s.len() { p } else { s }.as_bytes()),
        Glob::General(_) => None,
    }
}
