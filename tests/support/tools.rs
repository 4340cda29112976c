//! Outside tools a test runs for real (promtool, prometheus, cargo-deb…):
//! found on PATH; missing, a failure under CI (`CI=true`) and a loud skip
//! elsewhere.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// Whether this is a CI run, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `name` on PATH; `None` (after a loud message) when missing outside CI.
/// `install` says how to get it.
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None if in_ci() => panic!("CI: `{name}` is not installed ({install}); .ci/run installs it"),
        None => {
            // Straight to stderr: the harness captures eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: `{name}` not found ({install}); this test did not run ***\n"
            );
            None
        }
    }
}
