//! The TOML model of a rules file, as parsed, with the position of every
//! part for precise errors. `load.rs` parses each file into it; `names.rs`,
//! `compile.rs`, `keys.rs` and `escalate.rs` turn it into `Rules`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::diag::{Location, SourceError};
use crate::duration::HumanDuration;

/// One parsed file: its path and text, for errors that point into it, and
/// what it says.
pub(super) struct File<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) raw: RawFile,
}

impl File<'_> {
    pub(super) fn err(&self, span: Range<usize>, message: impl Into<String>) -> SourceError {
        SourceError::new(self.path, self.text, span, message)
    }
    pub(super) fn location(&self, span: Range<usize>) -> Location {
        Location::at(self.path, self.text, span.start)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) agents: BTreeMap<Spanned<String>, Spanned<RawAgent>>,
    #[serde(default)]
    pub(super) schedules: BTreeMap<Spanned<String>, Spanned<RawSchedule>>,
    #[serde(default)]
    pub(super) pools: BTreeMap<Spanned<String>, Spanned<RawPool>>,
    #[serde(default, rename = "rule")]
    pub(super) rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) id: Spanned<i64>,
    #[serde(default)]
    pub(super) skills: Vec<String>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<u32>>,
    pub(super) max_open: Option<u32>,
    pub(super) max_per_hour: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    #[serde(default)]
    pub(super) hours: BTreeMap<Spanned<String>, Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) holidays: Vec<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) agents: Spanned<Vec<Spanned<String>>>,
    pub(super) strategy: Option<Spanned<String>>,
    pub(super) when_full: Option<Spanned<String>>,
    pub(super) max_open: Option<u32>,
    pub(super) reassign_after: Option<Spanned<HumanDuration>>,
    pub(super) max_reassign: Option<Spanned<u32>>,
    pub(super) max_per_hour: Option<Spanned<i64>>,
    pub(super) sticky_for: Option<Spanned<HumanDuration>>,
    pub(super) handback: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) escalate: Vec<Spanned<RawStep>>,
    pub(super) busy_reply: Option<Spanned<RawBusyReply>>,
}

/// A pool's `busy_reply`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBusyReply {
    pub(super) from: Spanned<String>,
    pub(super) text: Spanned<String>,
    pub(super) after: Spanned<HumanDuration>,
}

/// One step of a pool's `escalate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) after: Spanned<HumanDuration>,
    pub(super) assign: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Spanned<String>,
    #[serde(rename = "match")]
    pub(super) matches: Option<Spanned<RawValue>>,
    pub(super) assign: Spanned<String>,
    #[serde(default)]
    pub(super) priority: i64,
    #[serde(default)]
    pub(super) require_skills: Vec<String>,
    pub(super) note: Option<Spanned<String>>,
    pub(super) reply: Option<Spanned<RawReply>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReply {
    pub(super) from: Spanned<String>,
    pub(super) text: Spanned<String>,
}

/// A `match` value with the position of every part, for precise errors.
pub(super) enum RawValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Other(&'static str),
    List(Vec<Spanned<RawValue>>),
    Table(Vec<(Spanned<String>, Spanned<RawValue>)>),
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number, a list or a table")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
                i64::try_from(v).map(RawValue::Int).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
                Ok(RawValue::Bool(v))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawValue, E> {
                Ok(RawValue::Other("a float"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawValue::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(RawValue::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}
