//! `assignd completions SHELL` and `assignd man`: both generated from the
//! one clap definition in `cli/mod.rs`, so they cannot drift from the
//! commands. The Debian package generates its completions and man page with
//! these, from the binary it ships.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use super::{Cli, Failure};
use crate::config;

/// The completion script for `shell`, on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "assignd", &mut out);
    write_stdout(&out)
}

/// The man page, assignd(1): the top-level synopsis and options, then every
/// command with its own synopsis, description and options in one page (so
/// `man assignd` is the whole reference), then files, environment and exit
/// status.
pub(super) fn man() -> Result<(), Failure> {
    let mut out = Vec::new();
    render_man(&mut out).context("cannot render the man page")?;
    // Every rendered part starts with the same two-line prelude; once is enough.
    let text = String::from_utf8_lossy(&out);
    let mut seen = Vec::new();
    let mut page = String::with_capacity(text.len());
    for line in text.lines() {
        let prelude = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if prelude && seen.contains(&line) {
            continue;
        }
        if prelude {
            seen.push(line);
        }
        page.push_str(line);
        page.push('\n');
    }
    write_stdout(page.as_bytes())
}

fn render_man(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let page = Man::new(cmd.clone());
    // No date (the page is the binary's, whenever it was built); clap_mangen
    // would drop the empty argument and shift the footer's fields.
    writeln!(
        out,
        ".TH ASSIGND 1 \"\" \"assignd {}\" \"assignd manual\"",
        cmd.get_version().unwrap_or_default()
    )?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;

    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "Every command takes the global options above. Exit status: 0 on success, \
         1 on a runtime failure, 2 on bad usage or an invalid configuration.",
    )]);
    roff.to_writer(out)?;
    for sub in cmd.get_subcommands() {
        render_command(out, sub)?;
    }

    let mut roff = Roff::default();
    definitions(&mut roff, "FILES", &FILES, |t| italic(t));
    definitions(&mut roff, "ENVIRONMENT", &ENVIRONMENT, |t| bold(t));
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), journalctl(1), systemd.exec(5); /usr/share/doc/assignd/ \
         (README.md, docs/deploy.md, docs/rules.md).",
    )]);
    roff.to_writer(out)?;
    page.render_version_section(out)?;
    Ok(())
}

/// The page's FILES section: path, what it is.
const FILES: [(&str, &str); 4] = [
    (
        config::DEFAULT_PATH,
        "The configuration file (TOML); see /usr/share/doc/assignd/README.md.",
    ),
    (
        "/etc/assignd/rules/",
        "The routing rules: every *.toml file, in name order, merged.",
    ),
    (
        "/etc/assignd/credentials/",
        "The secrets the systemd unit loads with LoadCredential=.",
    ),
    (
        config::DEFAULT_DATABASE,
        "The SQLite database: under systemd $STATE_DIRECTORY/assignd.db, \
             else this file, unless [database] url names another.",
    ),
];

/// The page's ENVIRONMENT section: variable, what it does.
const ENVIRONMENT: [(&str, &str); 5] = [
    (
        "ASSIGND_CONFIG",
        "The configuration file, instead of --config.",
    ),
    (
        "HELPCRUNCH_API_KEY",
        "The HelpCrunch API key, when neither the credential helpcrunch-api-key \
             nor [helpcrunch] api_key_file provides one.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd: where the secrets (the credentials helpcrunch-api-key, \
             webhook-key, intake-token) are looked for first.",
    ),
    (
        "STATE_DIRECTORY",
        "Set by systemd: where the SQLite database lives.",
    ),
    ("RUST_LOG", "Filters the log (e.g. assignd=debug)."),
];

/// A section of tagged paragraphs: each term in `style`, then its text.
fn definitions(roff: &mut Roff, section: &str, items: &[(&str, &str)], style: fn(&str) -> Inline) {
    roff.control("SH", [section]);
    for (term, what) in items {
        roff.control("TP", []);
        roff.text([style(term)]);
        roff.text([roman(*what)]);
    }
}

/// One command (and its subcommands) as a subsection: its synopsis, its
/// long description and its own options, without the global ones that the
/// top of the page already lists.
fn render_command(out: &mut Vec<u8>, cmd: &clap::Command) -> std::io::Result<()> {
    if cmd.get_subcommands().next().is_some() {
        for sub in cmd.get_subcommands() {
            render_command(out, sub)?;
        }
        return Ok(());
    }
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    let mut roff = Roff::default();
    roff.control("SS", [name]);
    roff.to_writer(out)?;
    let mut own = cmd.clone();
    for global in ["config", "help"] {
        if own.get_arguments().any(|a| a.get_id() == global) {
            own = own.mut_arg(global, |a| a.hide(true));
        }
    }
    let page = Man::new(own);
    let mut part = Vec::new();
    page.render_synopsis_section(&mut part)?;
    page.render_description_section(&mut part)?;
    page.render_options_section(&mut part)?;
    // The section headings belong to the whole page; here they are paragraphs.
    for line in String::from_utf8_lossy(&part).lines() {
        if line.starts_with(".SH ") {
            writeln!(out, ".PP")?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        // `assignd man | head`: a closed pipe is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Runtime(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
    }
}
