//! Human-written durations: `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"30d"`.
//!
//! jiff's friendly format does the parsing, so these also work: several
//! units (`"1h30m"`, `"1h 30m"`), long unit names (`"90 seconds"`,
//! `"2 hours"`), weeks (`"2w"`), microseconds and nanoseconds (`"250us"`,
//! `"10ns"`), and a leading `+`. A day is 24 hours; months and years have
//! no fixed length and are refused, as are negative durations and those
//! beyond jiff's range (about 20,000 years).
//!
//! A number with a decimal point followed by one unit (`"1.5d"`, `".5s"`,
//! `"2.s"`) is read exactly as before jiff, to the nanosecond: jiff refuses
//! fractional days, a point without a digit on both sides, and more than
//! nine decimals, and configs written for the first parser may have them.

use std::fmt;
use std::time::Duration;

use jiff::SpanRelativeTo;
use jiff::fmt::friendly::SpanParser;
use serde::de::{self, Deserialize, Deserializer};

/// A duration written as a string in config and rules files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "`{text}` is not a duration like \"500ms\", \"10s\", \"5m\", \"1h30m\" or \"30d\": {reason}"
    )]
    Invalid { text: String, reason: String },
    #[error("duration `{0}` is negative")]
    Negative(String),
    #[error("duration `{0}` is in months or years, which have no fixed length: use days or weeks")]
    Calendar(String),
}

static PARSER: SpanParser = SpanParser::new();

/// Parses a duration (see the module's documentation for the forms).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let rewritten = decimal_as_whole_units(trimmed);
    let span = PARSER
        .parse_span(rewritten.as_deref().unwrap_or(trimmed))
        .map_err(|e| DurationError::Invalid {
            text: text.to_string(),
            reason: jiff_reason(&e),
        })?;
    if span.is_negative() {
        return Err(DurationError::Negative(text.to_string()));
    }
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| DurationError::Calendar(text.to_string()))?;
    Duration::try_from(signed).map_err(|_| DurationError::Negative(text.to_string()))
}

/// jiff's reason without the words that every friendly-format error
/// starts with, which our own message already says.
fn jiff_reason(e: &jiff::Error) -> String {
    let text = e.to_string();
    let generic = "failed to parse input in the \"friendly\" duration format: ";
    text.strip_prefix(generic).unwrap_or(&text).to_string()
}

/// Nanoseconds in each unit that the first parser took.
const UNITS: [(&str, u128); 5] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// `"<int>.<frac><unit>"` (either side of the point may be empty, not
/// both) rewritten as `"<int><unit> <nanoseconds of frac>ns"`, which jiff
/// reads; None for any other text, left to jiff as it is.
fn decimal_as_whole_units(text: &str) -> Option<String> {
    let (number, unit_ns) = UNITS
        .iter()
        .find_map(|(unit, ns)| Some((text.strip_suffix(unit)?, *ns)))?;
    let (int, frac) = number.split_once('.')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let int = if int.is_empty() { "0" } else { int };
    let unit = &text[number.len()..];
    Some(format!("{int}{unit} {}ns", fraction_ns(frac, unit_ns)))
}

/// `0.<frac>` of a unit of `unit_ns` nanoseconds, truncated to whole
/// nanoseconds. Beyond 18 decimals nothing is left that a nanosecond holds,
/// and 18 keep the product within a u128.
fn fraction_ns(frac: &str, unit_ns: u128) -> u128 {
    let kept = &frac[..frac.len().min(18)];
    let numerator: u128 = kept.parse().unwrap_or(0);
    numerator * unit_ns / 10u128.pow(kept.len() as u32)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(HumanDuration).map_err(de::Error::custom)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A configured duration as a rules or config file would write it, in the
/// largest unit it is a whole number of: "30d", "36h", "90s", "250ms".
pub fn exact(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        m if m % 86_400_000 == 0 => format!("{}d", m / 86_400_000),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), ms(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse("1.5s").unwrap(), ms(1500));
        assert!(parse("10").is_err());
        assert!(parse("ten s").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("").is_err());
        assert!(parse("1.2.3s").is_err());
        assert!(parse(".s").is_err());
        assert!(parse("1e3s").is_err());
    }

    #[test]
    fn exact_writes_what_parse_reads_back() {
        for (d, text) in [
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (ms(250), "250ms"),
        ] {
            assert_eq!(exact(d), text);
            assert_eq!(parse(text).unwrap(), d);
        }
    }

    #[test]
    fn decimals_the_first_parser_took() {
        assert_eq!(parse("1.5d").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(parse("0.25d").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(parse(".5s").unwrap(), ms(500));
        assert_eq!(parse("2.s").unwrap(), ms(2000));
        assert_eq!(parse("1.5m").unwrap(), ms(90_000));
        assert_eq!(parse("0.1h").unwrap(), ms(360_000));
        assert_eq!(parse("2.5ms").unwrap(), Duration::from_micros(2500));
        assert_eq!(parse("1.0000000001s").unwrap(), ms(1000));
        assert_eq!(parse(" 10s ").unwrap(), ms(10_000));
    }

    #[test]
    fn friendly_forms_from_jiff() {
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("90 seconds").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(14 * 86400));
        assert_eq!(parse("2 weeks").unwrap(), Duration::from_secs(14 * 86400));
        assert_eq!(parse("1d 2h").unwrap(), Duration::from_secs(26 * 3600));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            parse("-1s").unwrap_err(),
            DurationError::Negative("-1s".into())
        );
        assert_eq!(
            parse("1 hour ago").unwrap_err(),
            DurationError::Negative("1 hour ago".into())
        );
        assert_eq!(
            parse("2mo").unwrap_err(),
            DurationError::Calendar("2mo".into())
        );
        let e = parse("10 parsecs").unwrap_err().to_string();
        assert!(e.starts_with("`10 parsecs` is not a duration like"), "{e}");
        assert!(e.contains("\"30d\": expected"), "{e}");
    }

    /// The parser this module had before jiff: `<number><unit>`, the number
    /// read as an f64.
    fn first_parser(text: &str) -> Option<Duration> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, unit) = t.split_at(split);
        let value: f64 = number.parse().ok()?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(value * scale).ok()
    }

    proptest! {
        /// Every string the first parser took (up to a million of a unit)
        /// still parses, to the same duration give or take the f64's
        /// rounding.
        #[test]
        fn takes_what_the_first_parser_took(
            text in " ?[0-9]{0,6}(\\.[0-9]{0,14})?(ms|s|m|h|d) ?"
        ) {
            if let Some(old) = first_parser(&text) {
                let new = parse(&text);
                prop_assert!(new.is_ok(), "{text:?}: {new:?}");
                let new = new.unwrap();
                let diff = new.abs_diff(old).as_nanos() as f64;
                let tolerance = 2.0 + old.as_nanos() as f64 * 1e-15;
                prop_assert!(diff <= tolerance, "{text:?}: {old:?} then, {new:?} now");
            }
        }
    }
}
