//! Compiling a rule's `match` table: each key into a [`Condition`], each
//! value into a [`Pattern`]. Every error points at the key or value at fault.

use std::ops::Range;

use jiff::tz::TimeZone;
use toml::Spanned;

use super::matcher::{Condition, Field, Pattern, RegexPattern, Substring};
use super::names::{Names, lookup};
use super::raw::{File, RawValue};
use super::schedule;
use crate::diag::SourceError;

const MATCH_KEYS: &[&str] = &[
    "department",
    "customer.email",
    "customer.name",
    "customer.id",
    "customer.user_id",
    "status",
    "created_with",
    "message",
    "attr.<key>",
    "within",
    "outside",
    "weekday",
    "any",
    "not",
];

pub(super) fn compile_match(
    f: &File,
    entries: &[(Spanned<String>, Spanned<RawValue>)],
    names: &Names,
    tz: &TimeZone,
) -> Result<Vec<Condition>, SourceError> {
    let mut out = Vec::new();
    for (key, value) in entries {
        compile_key(f, key.get_ref(), key.span(), value, names, tz, &mut out)?;
    }
    Ok(out)
}

fn compile_key(
    f: &File,
    key: &str,
    key_span: Range<usize>,
    value: &Spanned<RawValue>,
    names: &Names,
    tz: &TimeZone,
    out: &mut Vec<Condition>,
) -> Result<(), SourceError> {
    // `customer = { email = ... }` (a dotted key) and `"customer.email"` (a
    // quoted one) mean the same.
    if let ("customer" | "attr", RawValue::Table(sub)) = (key, value.get_ref()) {
        for (k, v) in sub {
            let dotted = format!("{key}.{}", k.get_ref());
            compile_key(f, &dotted, k.span(), v, names, tz, out)?;
        }
        return Ok(());
    }
    let condition = if let Some(field) = field_of(key) {
        Condition::Field {
            key: key.to_string(),
            field,
            pattern: compile_pattern(f, value)?,
        }
    } else {
        match key {
            "within" | "outside" => schedule_condition(f, key, value, names)?,
            "weekday" => weekday_condition(f, value, tz)?,
            "any" | "not" => group_condition(f, key, value, names, tz)?,
            _ => return Err(unknown_key(f, key, key_span)),
        }
    };
    out.push(condition);
    Ok(())
}

/// The chat field a key compares, if it compares one.
fn field_of(key: &str) -> Option<Field> {
    match key {
        "department" => Some(Field::Department),
        "customer.email" => Some(Field::CustomerEmail),
        "customer.name" => Some(Field::CustomerName),
        "customer.id" => Some(Field::CustomerId),
        "customer.user_id" => Some(Field::CustomerUserId),
        "status" => Some(Field::Status),
        "created_with" => Some(Field::CreatedWith),
        "message" => Some(Field::Message),
        k if k.starts_with("attr.") && k.len() > 5 => Some(Field::Attr(k[5..].to_lowercase())),
        _ => None,
    }
}

/// `within = "schedule"` or `outside = "schedule"`.
fn schedule_condition(
    f: &File,
    key: &str,
    value: &Spanned<RawValue>,
    names: &Names,
) -> Result<Condition, SourceError> {
    let RawValue::Str(name) = value.get_ref() else {
        return Err(f.err(value.span(), format!("`{key}` takes a schedule name")));
    };
    let schedule = lookup(
        f,
        &Spanned::new(value.span(), name.clone()),
        &names.schedules,
        "schedule",
    )?;
    Ok(if key == "within" {
        Condition::Within { schedule }
    } else {
        Condition::Outside { schedule }
    })
}

/// `weekday = "mon-fri"` or a list of such, in the file's zone.
fn weekday_condition(
    f: &File,
    value: &Spanned<RawValue>,
    tz: &TimeZone,
) -> Result<Condition, SourceError> {
    let items: Vec<&Spanned<RawValue>> = match value.get_ref() {
        RawValue::List(items) => items.iter().collect(),
        _ => vec![value],
    };
    let mut days = 0u8;
    for item in items {
        let RawValue::Str(s) = item.get_ref() else {
            return Err(f.err(
                item.span(),
                "`weekday` takes day names like \"mon\" or \"mon-fri\"",
            ));
        };
        for d in schedule::parse_days(s).map_err(|e| f.err(item.span(), e))? {
            days |= 1 << d;
        }
    }
    Ok(Condition::Weekday {
        days,
        tz: tz.clone(),
    })
}

/// `any` or `not`: groups of conditions.
fn group_condition(
    f: &File,
    key: &str,
    value: &Spanned<RawValue>,
    names: &Names,
    tz: &TimeZone,
) -> Result<Condition, SourceError> {
    let groups = match value.get_ref() {
        // A list of tables: each table is one group.
        RawValue::List(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                RawValue::Table(entries) => compile_match(f, entries, names, tz),
                _ => Err(f.err(item.span(), format!("`{key}` takes tables of conditions"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        // One table: for `any`, each key alone; for `not`, all together.
        RawValue::Table(entries) if key == "any" => alternatives(f, entries, names, tz)?,
        RawValue::Table(entries) => vec![compile_match(f, entries, names, tz)?],
        _ => {
            return Err(f.err(
                value.span(),
                format!("`{key}` takes a table or a list of tables"),
            ));
        }
    };
    Ok(if key == "any" {
        Condition::Any(groups)
    } else {
        Condition::Not(groups)
    })
}

/// `any = { … }`: each key is one alternative. TOML folds dotted keys
/// (`attr.p = "1", attr.q = "2"`) into one `attr` table, so the keys of a
/// `customer` or `attr` table are alternatives of their own, as quoted
/// keys (`"attr.p" = "1"`) are.
fn alternatives(
    f: &File,
    entries: &[(Spanned<String>, Spanned<RawValue>)],
    names: &Names,
    tz: &TimeZone,
) -> Result<Vec<Vec<Condition>>, SourceError> {
    let mut groups = Vec::new();
    for entry @ (key, value) in entries {
        match (key.get_ref().as_str(), value.get_ref()) {
            (prefix @ ("customer" | "attr"), RawValue::Table(sub)) => {
                for (k, v) in sub {
                    let mut group = Vec::new();
                    let dotted = format!("{prefix}.{}", k.get_ref());
                    compile_key(f, &dotted, k.span(), v, names, tz, &mut group)?;
                    groups.push(group);
                }
            }
            _ => groups.push(compile_match(f, std::slice::from_ref(entry), names, tz)?),
        }
    }
    Ok(groups)
}

/// The error for a key no condition has, with the nearest known one.
fn unknown_key(f: &File, key: &str, key_span: Range<usize>) -> SourceError {
    let known = MATCH_KEYS
        .iter()
        .map(|k| (strsim::jaro_winkler(k, key), k))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_else(|| format!("; known keys: {}", MATCH_KEYS.join(", ")));
    f.err(key_span, format!("unknown match key `{key}`{known}"))
}

fn compile_pattern(f: &File, value: &Spanned<RawValue>) -> Result<Pattern, SourceError> {
    match value.get_ref() {
        RawValue::Str(s) => Ok(Pattern::text(s)),
        RawValue::Int(n) => Ok(Pattern::Exact(n.to_string())),
        RawValue::List(items) => Ok(Pattern::AnyOf(
            items
                .iter()
                .map(|i| compile_pattern(f, i))
                .collect::<Result<_, _>>()?,
        )),
        RawValue::Table(entries) => {
            let [(k, v)] = entries.as_slice() else {
                return Err(f.err(
                    value.span(),
                    "a match table takes exactly one of `regex`, `contains`, `exists`",
                ));
            };
            compile_operator(f, k, v)
        }
        RawValue::Bool(_) => Err(f.err(value.span(), "a match value cannot be a boolean")),
        RawValue::Other(what) => {
            Err(f.err(value.span(), format!("a match value cannot be {what}")))
        }
    }
}

/// `{ regex = ... }`, `{ contains = ... }` or `{ exists = ... }`.
fn compile_operator(
    f: &File,
    k: &Spanned<String>,
    v: &Spanned<RawValue>,
) -> Result<Pattern, SourceError> {
    match (k.get_ref().as_str(), v.get_ref()) {
        ("regex", RawValue::Str(r)) => RegexPattern::new(r).map(Pattern::Regex).map_err(|e| {
            f.err(
                v.span(),
                format!("bad regex: {}", e.to_string().lines().last().unwrap_or("")),
            )
        }),
        ("contains", RawValue::Str(s)) => Ok(Pattern::Contains(Substring::new(&s.to_lowercase()))),
        ("exists", RawValue::Bool(b)) => Ok(Pattern::Exists(*b)),
        ("regex" | "contains", _) => {
            Err(f.err(v.span(), format!("`{}` takes a string", k.get_ref())))
        }
        ("exists", _) => Err(f.err(v.span(), "`exists` takes true or false")),
        (other, _) => Err(f.err(
            k.span(),
            format!("unknown match operator `{other}` (use regex, contains or exists)"),
        )),
    }
}
