//! Source positions for errors in user-written files.
//!
//! Every config or rules error must name the file, line and column, so all
//! loaders turn byte offsets into a [`Location`] here and report a
//! [`SourceError`].

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in a file, 1-based, as editors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `source` (clamped to its length).
    pub fn at(file: &Path, source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = &source[..floor_char_boundary(source, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            file: file.to_path_buf(),
            line,
            column,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An error in a user-written file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct SourceError {
    pub location: Location,
    pub message: String,
}

impl SourceError {
    pub fn new(file: &Path, source: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            location: Location::at(file, source, span.start),
            message: message.into(),
        }
    }

    /// Turns a TOML parse or shape error into a located one, suggesting the
    /// nearest known key when the error is an unknown key.
    pub fn from_toml(file: &Path, source: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let message = err.message().trim().to_string();
        let message = match suggest_for_unknown_field(&message) {
            Some(best) => format!("{message}; did you mean `{best}`?"),
            None => message,
        };
        Self::new(file, source, span, message)
    }
}

/// serde words an unknown key as "unknown field `x`, expected one of `a`, `b`"
/// (or "expected `a`"); pick the expected name closest to `x`.
fn suggest_for_unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (strsim::jaro_winkler(unknown, candidate), candidate))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = "a = 1\nbé = 2\n";
        let f = Path::new("x.toml");
        assert_eq!(Location::at(f, src, 0).to_string(), "x.toml:1:1");
        assert_eq!(Location::at(f, src, 6).to_string(), "x.toml:2:1");
        // column counts characters, not bytes
        assert_eq!(Location::at(f, src, 9).to_string(), "x.toml:2:3");
        assert_eq!(Location::at(f, src, 999).line, 3);
    }

    #[test]
    fn unknown_field_gets_a_suggestion() {
        let m = "unknown field `poll_intreval`, expected one of `concurrency`, `poll_interval`, `lease`";
        assert_eq!(
            suggest_for_unknown_field(m).as_deref(),
            Some("poll_interval")
        );
        let m = "unknown field `zzz`, expected `concurrency`";
        assert_eq!(suggest_for_unknown_field(m), None);
    }
}
