//! Parsers never panic on arbitrary input, and every rejected file says
//! where: thousands of generated cases per run.

use std::path::{Path, PathBuf};

use assignd::config::Config;
use assignd::helpcrunch::error::parse_error_body;
use assignd::helpcrunch::types::Chat;
use assignd::rules::load_sources;
use proptest::prelude::*;

/// Text that looks like our TOML often enough to reach deep into the loaders.
fn tomlish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "[agents]\n",
        "[pools.p]\n",
        "[schedules.s]\n",
        "[[rule]]\n",
        "[worker]\n",
        "[helpcrunch.rate_limit]\n",
        "alice = { id = 1 }\n",
        "bob = { id = 1, skills = [\"x\"] }\n",
        "agents = [\"alice\"]\n",
        "agents = []\n",
        "name = \"r\"\n",
        "assign = \"alice\"\n",
        "assign = \"pool:p\"\n",
        "assign = \"pool:q\"\n",
        "match = { department = \"x\" }\n",
        "match = { message = { regex = \"(\" } }\n",
        "match = { nope = 1 }\n",
        "hours = { mon-fri = \"09:00-18:00\" }\n",
        "hours = { xyz = \"25:00-01:00\" }\n",
        "holidays = [\"2026-02-30\"]\n",
        "timezone = \"Mars/Olympus\"\n",
        "timezone = \"Europe/Kyiv\"\n",
        "strategy = \"weighted\"\n",
        "when_full = \"soon\"\n",
        "note = \"{agent} {bogus}\"\n",
        "reply = { from = \"alice\", text = \"{next_open}\" }\n",
        "reassign_after = \"5x\"\n",
        "concurrency = 0\n",
        "lease = \"-1s\"\n",
        "requests = 5\nburst = 9\n",
        "poll_interval = \"1ms\"\n",
        "= = =\n",
        "\"\n",
        "[\n",
        "é\n",
        "\0\n",
        "a.b.c = 1\n",
    ]);
    prop::collection::vec(atoms, 0..14).prop_map(|v| v.concat())
}

fn located(message: &str, file: &str) -> bool {
    // "<file>:<line>:<column>: ..."
    let Some(rest) = message.strip_prefix(file).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse::<usize>().ok());
    let column = parts.next().and_then(|c| c.parse::<usize>().ok());
    matches!((line, column), (Some(l), Some(c)) if l >= 1 && c >= 1)
}

/// A load of `text` from `file` either succeeds or says where it failed.
fn assert_located<T, E: std::fmt::Display>(
    loaded: Result<T, E>,
    file: &str,
    text: &str,
) -> Result<(), TestCaseError> {
    if let Err(e) = loaded {
        let message = e.to_string();
        prop_assert!(located(&message, file), "{message}\n--- input:\n{text}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rules_loading_never_panics_and_locates_every_error(text in tomlish()) {
        let loaded = load_sources(&[(PathBuf::from("fuzz.toml"), text.clone())]);
        assert_located(loaded, "fuzz.toml", &text)?;
    }

    #[test]
    fn config_parsing_never_panics_and_locates_every_error(text in tomlish()) {
        let parsed = Config::parse(Path::new("/etc/assignd/assignd.toml"), &text);
        assert_located(parsed, "/etc/assignd/assignd.toml", &text)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = load_sources(&[(PathBuf::from("f.toml"), text.clone())]);
        let _ = Config::parse(Path::new("c.toml"), &text);
        let _ = serde_json::from_slice::<Chat>(&bytes);
        let _ = parse_error_body(&bytes);
    }

    /// Chat objects with every field in every shape, some of them wrong.
    #[test]
    fn api_answers_never_panic(
        id in prop::sample::select(vec!["1", "\"2\"", "null", "\"x\"", "1.5", "-3", "99999999999999999999"]),
        ts in prop::sample::select(vec!["1592332354", "\"1603885746\"", "\"1607540767.414\"", "null", "\"\"", "\"soon\"", "1e300", "[]"]),
        agents in prop::sample::select(vec!["[]", "{\"id\": 1}", "[{\"id\": \"2\"}]", "null", "7", "[1]"]),
        person in prop::sample::select(vec!["null", "{}", "{\"id\": 3, \"email\": null, \"userId\": 5}", "\"x\""]),
    ) {
        let json = format!(
            r#"{{"id": {id}, "createdAt": {ts}, "closedAt": {ts}, "agents": {agents}, "customer": {person}, "assignee": {person}, "department": {person}, "lastCommunicatedAgentId": {id}}}"#
        );
        // Either a chat or an error, never a panic.
        let _ = serde_json::from_str::<Chat>(&json);
        let errors = format!(r#"{{"errors": [{{"code": {id}, "message": {ts}}}]}}"#);
        let parsed = parse_error_body(errors.as_bytes());
        prop_assert!(!parsed.is_empty());
    }
}
