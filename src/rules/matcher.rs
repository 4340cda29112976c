//! `match` conditions and how a chat is tested against them.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use regex::Regex;

use super::context::{ChatContext, Text};
use super::schedule::Schedule;

/// The chat field a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Matches the department's name or its id.
    Department,
    CustomerEmail,
    CustomerName,
    CustomerId,
    CustomerUserId,
    Status,
    CreatedWith,
    Message,
    Attr(String),
}

/// The values a field has in a chat, borrowed: matching allocates nothing.
#[derive(Clone, Copy)]
pub struct Values<'a> {
    first: Option<&'a Text>,
    rest: &'a [Text],
}

impl<'a> Values<'a> {
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a Text> + use<'a> {
        self.first.into_iter().chain(self.rest.iter())
    }
}

impl Field {
    pub(crate) fn values<'a>(&self, chat: &'a ChatContext) -> Values<'a> {
        let only = |t: &'a Option<Text>| Values {
            first: None,
            rest: t.as_slice(),
        };
        match self {
            Field::Department => Values {
                first: chat.department_name.as_ref(),
                rest: chat.department_id.as_slice(),
            },
            Field::CustomerEmail => only(&chat.customer_email),
            Field::CustomerName => only(&chat.customer_name),
            Field::CustomerId => only(&chat.customer_id),
            Field::CustomerUserId => only(&chat.customer_user_id),
            Field::Status => only(&chat.status),
            Field::CreatedWith => only(&chat.created_with),
            Field::Message => only(&chat.message),
            Field::Attr(key) => Values {
                first: None,
                rest: chat.attrs.get(key).map_or(&[][..], Vec::as_slice),
            },
        }
    }
}

/// A value to compare a field with.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Case-insensitive equality (stored lower-case).
    Exact(String),
    /// Case-insensitive with `*` and `?` (stored lower-case).
    Glob(Glob),
    Regex(RegexPattern),
    /// Case-insensitive substring (stored lower-case).
    Contains(Substring),
    /// `true`: the field has a value; `false`: it has none.
    Exists(bool),
    /// Any of these.
    AnyOf(Vec<Pattern>),
}

impl Pattern {
    /// A string value: a glob when it has a wildcard, else exact.
    pub fn text(s: &str) -> Self {
        let lower = s.to_lowercase();
        if lower.contains(['*', '?']) {
            Pattern::Glob(Glob::new(lower))
        } else {
            Pattern::Exact(lower)
        }
    }

    fn holds(&self, values: Values) -> bool {
        match self {
            Pattern::Exists(want) => values.is_empty() != *want,
            Pattern::AnyOf(ps) => ps.iter().any(|p| p.holds(values)),
            _ => values.iter().any(|v| self.holds_one(v)),
        }
    }

    fn holds_one(&self, v: &Text) -> bool {
        match self {
            Pattern::Exact(s) => v.lower == *s,
            Pattern::Glob(g) => g.matches(&v.lower),
            Pattern::Regex(r) => r.is_match(v),
            Pattern::Contains(s) => s.is_in(&v.lower),
            Pattern::Exists(want) => *want,
            Pattern::AnyOf(ps) => ps.iter().any(|p| p.holds_one(v)),
        }
    }
}

/// A lower-case glob, compiled at load: the common shapes (`*@corp.com`,
/// `vip-*`, `*refund*`, `a*z`) become plain string tests; anything else
/// runs the general matcher.
#[derive(Debug, Clone)]
pub enum Glob {
    Suffix(String),
    Prefix(String),
    Contains(Substring),
    PrefixSuffix(String, String),
    General(String),
}

impl Glob {
    pub fn new(pattern: String) -> Self {
        if pattern.contains('?') {
            return Glob::General(pattern);
        }
        let parts: Vec<&str> = pattern.split('*').collect();
        match parts.as_slice() {
            ["", s] => Glob::Suffix(s.to_string()),
            [p, ""] => Glob::Prefix(p.to_string()),
            ["", m, ""] => Glob::Contains(Substring::new(m)),
            [p, s] => Glob::PrefixSuffix(p.to_string(), s.to_string()),
            _ => Glob::General(pattern),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Suffix(s) => text.ends_with(s.as_str()),
            Glob::Prefix(p) => text.starts_with(p.as_str()),
            Glob::Contains(m) => m.is_in(text),
            Glob::PrefixSuffix(p, s) => {
                text.len() >= p.len() + s.len()
                    && text.starts_with(p.as_str())
                    && text.ends_with(s.as_str())
            }
            Glob::General(g) => glob_match(g.as_bytes(), text.as_bytes()),
        }
    }
}

/// A substring to look for, with its searcher built once at load rather
/// than on every test (boxed: a searcher is a few hundred bytes).
#[derive(Debug, Clone)]
pub struct Substring(Box<memchr::memmem::Finder<'static>>);

impl Substring {
    pub fn new(needle: &str) -> Self {
        Self(Box::new(
            memchr::memmem::Finder::new(needle.as_bytes()).into_owned(),
        ))
    }

    pub fn is_in(&self, text: &str) -> bool {
        self.0.find(text.as_bytes()).is_some()
    }

    pub fn needle(&self) -> &[u8] {
        self.0.needle()
    }
}

/// A regex, with literals found at load that every match must contain.
///
/// Running a regex costs far more than looking for a short literal, and
/// most chats fail most regex conditions, so the literals are checked
/// first: when the text holds none of them, the regex cannot match and is
/// not run. The check is used only on ASCII texts, where lower-casing is
/// plain ASCII case mapping and agrees with the regex's case folding.
#[derive(Debug, Clone)]
pub struct RegexPattern {
    regex: Regex,
    /// Lower-case ASCII; empty when no such literals could be found.
    needles: Vec<Substring>,
}

/// At most this many different literals are worth checking before the regex.
const MAX_NEEDLES: usize = 8;

impl RegexPattern {
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = Regex::new(pattern)?;
        Ok(Self {
            needles: required_literals(pattern),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// Lower-case literals, one of which every match in an ASCII text
    /// contains; empty when there are none to rely on.
    pub fn needles(&self) -> impl Iterator<Item = &[u8]> {
        self.needles.iter().map(Substring::needle)
    }

    fn is_match(&self, text: &Text) -> bool {
        if !self.needles.is_empty()
            && text.raw.is_ascii()
            && !self.needles.iter().any(|n| n.is_in(&text.lower))
        {
            return false;
        }
        self.regex.is_match(&text.raw)
    }
}

/// The prefixes every match of `pattern` starts with, lower-cased and
/// deduplicated, keeping only those that can occur in an ASCII text (a
/// literal with other bytes cannot). Empty when there is no such finite
/// set, or when the empty string is one of them (then every text qualifies).
fn required_literals(pattern: &str) -> Vec<Substring> {
    use regex_syntax::hir::literal::Extractor;
    let Ok(hir) = regex_syntax::parse(pattern) else {
        return Vec::new();
    };
    let seq = Extractor::new().extract(&hir);
    let Some(literals) = seq.literals() else {
        return Vec::new();
    };
    let mut lower: Vec<String> = Vec::new();
    for literal in literals {
        let bytes = literal.as_bytes();
        if bytes.is_empty() {
            return Vec::new();
        }
        if !bytes.is_ascii() {
            continue;
        }
        let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
        if !lower.contains(&text) {
            lower.push(text);
        }
    }
    // No ASCII literal at all: leave the regex to decide on its own.
    if lower.is_empty() || lower.len() > MAX_NEEDLES {
        return Vec::new();
    }
    lower.iter().map(|l| Substring::new(l)).collect()
}

/// `*` is any run of bytes, `?` one character. Iterative with one backtrack
/// point, so it is linear in practice and never recurses.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len()
            && (pattern[p] == text[t] || (pattern[p] == b'?' && is_char_start(text[t])))
        {
            if pattern[p] == b'?' {
                t += utf8_len(text[t]);
            } else {
                t += 1;
            }
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn is_char_start(b: u8) -> bool {
    b & 0xC0 != 0x80
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// One condition of a rule's `match`.
#[derive(Debug, Clone)]
pub enum Condition {
    Field {
        key: String,
        field: Field,
        pattern: Pattern,
    },
    /// The named schedule (index into `Rules::schedules`) is open.
    Within { schedule: usize },
    /// The named schedule is closed.
    Outside { schedule: usize },
    /// The local weekday (Monday = bit 0) is in the set.
    Weekday { days: u8, tz: TimeZone },
    /// Holds when any nested group holds.
    Any(Vec<Vec<Condition>>),
    /// Holds when no nested group holds.
    Not(Vec<Vec<Condition>>),
}

impl Condition {
    /// The key as written in the rules file, for explanations.
    pub fn key(&self) -> &str {
        match self {
            Condition::Field { key, .. } => key,
            Condition::Within { .. } => "within",
            Condition::Outside { .. } => "outside",
            Condition::Weekday { .. } => "weekday",
            Condition::Any(_) => "any",
            Condition::Not(_) => "not",
        }
    }

    /// Whether this condition (or one nested in it) reads schedule `index`.
    pub fn uses_schedule(&self, index: usize) -> bool {
        match self {
            Condition::Within { schedule } | Condition::Outside { schedule } => *schedule == index,
            Condition::Any(groups) | Condition::Not(groups) => {
                groups.iter().flatten().any(|c| c.uses_schedule(index))
            }
            _ => false,
        }
    }

    pub fn holds(&self, chat: &ChatContext, schedules: &[Schedule], now: Timestamp) -> bool {
        match self {
            Condition::Field { field, pattern, .. } => pattern.holds(field.values(chat)),
            Condition::Within { schedule } => schedules[*schedule].is_open(now),
            Condition::Outside { schedule } => !schedules[*schedule].is_open(now),
            Condition::Weekday { days, tz } => {
                let wd = tz.to_datetime(now).weekday().to_monday_zero_offset();
                days & (1 << wd) != 0
            }
            Condition::Any(groups) => groups.iter().any(|g| all_hold(g, chat, schedules, now)),
            Condition::Not(groups) => !groups.iter().any(|g| all_hold(g, chat, schedules, now)),
        }
    }

    /// What the chat has for this condition, for explanations.
    pub fn seen(&self, chat: &ChatContext, schedules: &[Schedule], now: Timestamp) -> String {
        match self {
            Condition::Field { field, .. } => {
                let values = field.values(chat);
                if values.is_empty() {
                    "no value".into()
                } else {
                    values
                        .iter()
                        .map(|v| format!("{:?}", v.raw))
                        .collect::<Vec<_>>()
                        .join(" / ")
                }
            }
            Condition::Within { schedule } | Condition::Outside { schedule } => {
                let s = &schedules[*schedule];
                format!(
                    "{} is {}",
                    s.name,
                    if s.is_open(now) { "open" } else { "closed" }
                )
            }
            Condition::Weekday { tz, .. } => now.to_zoned(tz.clone()).strftime("%a").to_string(),
            Condition::Any(groups) => {
                let failed: Vec<String> = groups
                    .iter()
                    .filter_map(|g| first_failing(g, chat, schedules, now))
                    .map(|c| c.saw(chat, schedules, now))
                    .collect();
                format!("no alternative held: {}", failed.join("; "))
            }
            Condition::Not(groups) => {
                let held: Vec<String> = groups
                    .iter()
                    .filter(|g| all_hold(g, chat, schedules, now))
                    .flat_map(|g| g.iter().map(|c| c.saw(chat, schedules, now)))
                    .collect();
                format!("an excluded case held: {}", held.join(", "))
            }
        }
    }

    /// `key saw value`, naming a nested condition in `seen`.
    fn saw(&self, chat: &ChatContext, schedules: &[Schedule], now: Timestamp) -> String {
        format!("{} saw {}", self.key(), self.seen(chat, schedules, now))
    }
}

/// Whether every condition holds; the first that fails is returned.
pub fn first_failing<'a>(
    conditions: &'a [Condition],
    chat: &ChatContext,
    schedules: &[Schedule],
    now: Timestamp,
) -> Option<&'a Condition> {
    conditions.iter().find(|c| !c.holds(chat, schedules, now))
}

fn all_hold(
    conditions: &[Condition],
    chat: &ChatContext,
    schedules: &[Schedule],
    now: Timestamp,
) -> bool {
    first_failing(conditions, chat, schedules, now).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*@bigcorp.com", "ann@bigcorp.com"));
        assert!(!m("*@bigcorp.com", "ann@bigcorp.com.ua"));
        assert!(m("a?c", "abc"));
        assert!(m("a?c", "aéc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*", ""));
        assert!(m("**a*", "bab"));
        assert!(!m("", "x"));
    }

    #[test]
    fn compiled_globs_agree_with_the_general_matcher() {
        let texts = [
            "",
            "a",
            "ann@bigcorp.com",
            "vip-ann",
            "my refund please",
            "az",
            "abcz",
            "zza",
            "a*b",
        ];
        for p in [
            "*@bigcorp.com",
            "vip-*",
            "*refund*",
            "a*z",
            "*",
            "**",
            "a*b*c",
            "?nn*",
            "*a",
            "a*",
        ] {
            let g = Glob::new(p.to_string());
            for t in texts {
                assert_eq!(
                    g.matches(t),
                    glob_match(p.as_bytes(), t.as_bytes()),
                    "{p} on {t:?} ({g:?})"
                );
            }
        }
    }

    /// Regexes whose literal pre-checks are the risky kind (case folding,
    /// Unicode, alternations that may match nothing).
    const REGEXES: &[&str] = &[
        r"(?i)order #5\d+",
        r"order #5\d+",
        r"(?i)(refund|return)s?",
        r"(?i)straße",
        r"(?i)kelvin k",
        r"(?i)^vip",
        r"colou?r",
        r"\d{3}-\d{4}",
        r"(?i)s",
        r"a|",
        r"(?i)[a-c]x",
        r"(?i)ſ",
        r"(?i)\bbilling\b",
        r"(?i)café",
    ];

    /// Texts that do and do not contain those literals.
    const TEXTS: &[&str] = &[
        "",
        "Order #512 is late",
        "ORDER #5x",
        "I want REFUNDS",
        "returns please",
        "Strasse",
        "STRASSE",
        "Kelvin \u{212A}",
        "KELVIN K",
        "vip customer",
        "a VIP",
        "color and colour",
        "call 555-1234",
        "S",
        "ſ",
        "Bx",
        "billing question",
        "rebilling",
        "CAFÉ",
        "cafe",
        "plain text",
    ];

    /// The literal check before a regex never changes the answer.
    #[test]
    fn regex_literals_never_change_the_answer() {
        for &p in REGEXES {
            let compiled = RegexPattern::new(p).unwrap();
            for &t in TEXTS {
                let text = Text::new(t);
                assert_eq!(
                    compiled.is_match(&text),
                    compiled.regex.is_match(t),
                    "{p} on {t:?} (needles {:?})",
                    compiled.needles
                );
            }
        }
        // The checks exist where they should.
        assert!(
            !RegexPattern::new(r"(?i)order #5\d+")
                .unwrap()
                .needles
                .is_empty()
        );
        assert!(RegexPattern::new(r"a|").unwrap().needles.is_empty());
        assert!(RegexPattern::new(r"\d+").unwrap().needles.is_empty());
    }

    #[test]
    fn patterns_are_case_insensitive() {
        let t = [Text::new("Ann@BigCorp.com")];
        let one = Values {
            first: None,
            rest: &t,
        };
        let none = Values {
            first: None,
            rest: &[],
        };
        assert!(Pattern::text("*@bigcorp.COM").holds(one));
        assert!(Pattern::text("ann@bigcorp.com").holds(one));
        assert!(Pattern::Contains(Substring::new("bigcorp")).holds(one));
        assert!(Pattern::Exists(true).holds(one));
        assert!(Pattern::Exists(false).holds(none));
        assert!(!Pattern::text("*").holds(none));
        assert!(Pattern::AnyOf(vec![Pattern::text("x"), Pattern::text("ann*")]).holds(one));
    }
}
