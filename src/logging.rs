//! Logging to stderr, for a person at a terminal or for journald.
//!
//! Under systemd, stderr is a stream to journald, which stores every line at
//! priority info unless the line starts with the sd-daemon prefix `<N>`
//! (sd-daemon(3)). So when stderr *is* the journal's stream, each line gets
//! the prefix of its level, and no timestamp, since the journal adds its
//! own. `journalctl -p warning -u assignd` then shows warnings and errors.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber: `RUST_LOG` filters, else `default_level`.
/// A second call does nothing (the first subscriber stays).
///
/// By default sqlx's pool does not log each connection it opens and
/// `after_connect` refuses: after a failover that is every attempt on a
/// read-only server, dozens a second, which `store/failover.rs` reports
/// once per episode instead.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx_core::pool::inner=off")));
    let journal = stderr_is_journal();
    // Colour only for a person at a terminal, never into files or the journal.
    let ansi = !journal && std::io::stderr().is_terminal();
    let _ = subscriber(format, journal, filter, std::io::stderr, ansi).try_init();
}

type BoxedSubscriber = Box<dyn Subscriber + Send + Sync>;

/// The subscriber for `format`, writing to `writer`; with `journal`, every
/// line carries its sd-daemon priority and text lines no timestamp. JSON
/// lines keep theirs: a program reading them may want it.
fn subscriber<W>(
    format: LogFormat,
    journal: bool,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> BoxedSubscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match (format, journal) {
        (LogFormat::Json, false) => Box::new(builder.json().finish()),
        (LogFormat::Json, true) => Box::new(
            builder
                .json()
                .event_format(Prioritized(format::format().json()))
                .finish(),
        ),
        (LogFormat::Text, false) => Box::new(builder.finish()),
        (LogFormat::Text, true) => Box::new(
            builder
                .event_format(Prioritized(format::format().without_time()))
                .finish(),
        ),
    }
}

/// Whether stderr is the stream systemd connected to journald. systemd sets
/// `JOURNAL_STREAM` to that stream's "DEV:INODE"; a process whose stderr
/// was redirected elsewhere (a child, `assignd run 2>file` in a unit's
/// shell) inherits the variable too, hence the comparison with `fstat`.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(expected) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    stderr_identity() == Some(expected)
}

/// `"DEV:INODE"` as two decimal numbers.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The device and inode of stderr, by `fstat` on a duplicate of the fd (std
/// offers `fstat` only on a `File`, and dropping that must not close fd 2).
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// The sd-daemon priority of a level: syslog's err, warning, info, debug.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A formatter whose every output line starts with `<N>`, the priority of
/// the event's level.
struct Prioritized<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Formatted whole first: a message with a line break must carry the
        // prefix on each line, or journald files the rest at info.
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        prefix_lines(&mut writer, priority(event.metadata().level()), &text)
    }
}

/// Writes each line of `text` after `<priority>`. The first line loses the
/// padding the text format puts before a short level name (" INFO").
fn prefix_lines(out: &mut impl fmt::Write, priority: u8, text: &str) -> fmt::Result {
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 { line.trim_start() } else { line };
        writeln!(out, "<{priority}>{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// The lines logged by one event of each level through `format`.
    fn logged(format: LogFormat, journal: bool) -> Vec<String> {
        let out = Captured::default();
        let filter = EnvFilter::new("trace");
        let subscriber = subscriber(format, journal, filter, out.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("broken");
            tracing::warn!(chat_id = 7, "slow");
            tracing::info!("first line\nsecond line");
            tracing::debug!("detail");
            tracing::trace!("more detail");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn journal_lines_carry_their_priority_and_no_time() {
        let lines = logged(LogFormat::Text, true);
        let starts: Vec<&str> = lines.iter().map(|l| &l[..3]).collect();
        assert_eq!(
            starts,
            ["<3>", "<4>", "<6>", "<6>", "<7>", "<7>"],
            "{lines:?}"
        );
        assert!(lines[0].starts_with("<3>ERROR "), "{lines:?}");
        assert!(lines[1].starts_with("<4>WARN ") && lines[1].contains("chat_id=7"));
        assert!(lines[2].ends_with("first line") && lines[3] == "<6>second line");
        // No timestamp: the level comes right after the prefix.
        assert!(lines[4].starts_with("<7>DEBUG "), "{lines:?}");
    }

    #[test]
    fn journal_json_lines_carry_their_priority() {
        let lines = logged(LogFormat::Json, true);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[1].starts_with("<4>{"), "{lines:?}");
        let json: serde_json::Value = serde_json::from_str(&lines[1][3..]).unwrap();
        assert_eq!(json["level"], "WARN");
    }

    #[test]
    fn elsewhere_lines_are_unprefixed_and_timed() {
        let lines = logged(LogFormat::Text, false);
        assert!(lines.iter().all(|l| !l.starts_with('<')), "{lines:?}");
        // A timestamp such as 2026-12-03T14:06:47.123456Z begins each line.
        assert!(
            lines[0].starts_with("20") && lines[0].contains('T'),
            "{lines:?}"
        );
    }

    #[test]
    fn journal_stream_is_dev_colon_inode() {
        assert_eq!(parse_journal_stream("2049:123456"), Some((2049, 123456)));
        assert_eq!(parse_journal_stream("2049"), None);
        assert_eq!(parse_journal_stream("a:1"), None);
        assert_eq!(parse_journal_stream(""), None);
    }
}
