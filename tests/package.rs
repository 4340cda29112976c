//! The Debian package (SPEC §9): built with `packaging/build-deb` (a release
//! build, so this test takes minutes), checked with `dpkg-deb`, then, as
//! root, installed, exercised and purged.
//!
//! Under `CI=true` a missing cargo-deb or dpkg-deb, or not being root, is a
//! failure; elsewhere the test says SKIPPED loudly and returns. It installs
//! into /usr/bin, /lib/systemd/system and /etc/assignd, which no other test
//! uses (they all run the binary cargo built, with `--config`), and it
//! refuses to touch a machine where any of those already exist.

#[path = "support/tools.rs"]
mod tools;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const PACKAGE: &str = "assignd";

/// Every path the package must ship, as `dpkg-deb -c` lists them.
const SHIPPED: &[&str] = &[
    "./usr/bin/assignd",
    "./lib/systemd/system/assignd.service",
    "./etc/assignd/assignd.toml",
    "./etc/assignd/rules/10-team.toml",
    "./usr/share/man/man1/assignd.1.gz",
    "./usr/share/bash-completion/completions/assignd",
    "./usr/share/zsh/vendor-completions/_assignd",
    "./usr/share/fish/vendor_completions.d/assignd.fish",
    "./usr/share/doc/assignd/README.md",
    "./usr/share/doc/assignd/copyright",
    "./usr/share/doc/assignd/docs/deploy.md",
    "./usr/share/doc/assignd/docs/rules.md",
    "./usr/share/doc/assignd/examples/assignd.toml",
    "./usr/share/doc/assignd/contrib/prometheus/assignd.rules.yml",
    "./usr/share/doc/assignd/contrib/grafana/assignd.json",
    "./usr/share/doc/assignd/contrib/nginx/assignd.conf",
    "./usr/share/doc/assignd/contrib/caddy/Caddyfile",
];

fn ci() -> bool {
    tools::in_ci()
}

/// Fails under CI, else says loudly that (part of) the test did not run.
fn skip(why: &str) {
    assert!(!ci(), "CI=true, so this is a failure: {why}");
    // Straight to stderr: the harness captures println! of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED (Debian package): {why} ***\n"
    );
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"))
}

/// The stdout of a command that must succeed.
fn ok(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let what = format!("{:?} {args:?}", program.as_ref());
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when dropped, so that a failing assertion leaves
/// nothing installed.
struct Installed {
    armed: bool,
}

impl Installed {
    /// `dpkg --purge`, which must succeed and leave nothing behind.
    fn purge(mut self) {
        self.armed = false;
        let said = ok("dpkg", &["--purge", PACKAGE]);
        println!("dpkg --purge:\n{said}");
        for path in [
            "/usr/bin/assignd",
            "/lib/systemd/system/assignd.service",
            "/etc/assignd",
            "/etc/systemd/system/multi-user.target.wants/assignd.service",
            "/usr/share/man/man1/assignd.1.gz",
        ] {
            assert!(!Path::new(path).exists(), "{path} is left after purge");
        }
        assert!(!runs("dpkg", &["-s", PACKAGE]), "still known to dpkg");
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.armed {
            let out = run("dpkg", &["--purge", PACKAGE]);
            eprintln!(
                "purged {PACKAGE} after a failure: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_debian_package_builds_installs_and_purges() {
    if !runs("cargo", &["deb", "--version"]) {
        return skip("cargo-deb is not installed (cargo install cargo-deb --locked)");
    }
    if !runs("dpkg-deb", &["--version"]) {
        return skip("dpkg-deb is not installed");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Built once, by the script a packager runs, from the binary the tests
    // already built (an optimised build would add minutes, not coverage);
    // stripped as a release build is, with faster compression.
    let tested = Path::new(env!("CARGO_BIN_EXE_assignd"));
    assert!(
        tested.ends_with("debug/assignd"),
        "the script packages target/debug/assignd, the tests' binary is {}",
        tested.display()
    );
    let started = Instant::now();
    let out = Command::new(root.join("packaging/build-deb"))
        .args(["--strip", "--fast"])
        .env("ASSIGND_DEB_PROFILE", "dev")
        .env("ASSIGND_DEB_PREBUILT", "1")
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "packaging/build-deb: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = PathBuf::from(stdout.lines().last().expect("the package path").trim());
    let size = std::fs::metadata(&deb).unwrap().len();
    println!(
        "built {} ({size} bytes) in {:.0?}",
        deb.display(),
        started.elapsed()
    );
    let deb = deb.to_str().unwrap();

    // What is in it.
    let listing = ok("dpkg-deb", &["-c", deb]);
    println!("dpkg-deb -c:\n{listing}");
    let files: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let mode = l.split_whitespace().next()?;
            Some((mode, l.split_whitespace().nth(5)?))
        })
        .collect();
    for want in SHIPPED {
        assert!(
            files.iter().any(|(_, path)| path == want),
            "{want} is not in the package"
        );
    }
    let mode = |p: &str| files.iter().find(|(_, path)| *path == p).unwrap().0;
    assert_eq!(mode("./usr/bin/assignd"), "-rwxr-xr-x");
    assert_eq!(mode("./etc/assignd/assignd.toml"), "-rw-r--r--");
    let info = ok("dpkg-deb", &["-I", deb]);
    println!("dpkg-deb -I:\n{info}");
    for field in [
        "Package: assignd",
        &format!("Version: {}-1", env!("CARGO_PKG_VERSION")),
        "Depends: libc6",
        "Section: net",
        " conffiles ",
        " postinst ",
        " prerm ",
        " postrm ",
    ] {
        assert!(info.contains(field), "`{field}` in dpkg-deb -I");
    }
    let conffiles = ok("dpkg-deb", &["-I", deb, "conffiles"]);
    let mut conffiles: Vec<&str> = conffiles.lines().collect();
    conffiles.sort_unstable();
    let mut expected = vec!["/etc/assignd/assignd.toml".to_string()];
    for rules in std::fs::read_dir(root.join("rules")).unwrap() {
        let name = rules.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".toml") {
            expected.push(format!("/etc/assignd/rules/{name}"));
        }
    }
    expected.sort_unstable();
    assert_eq!(conffiles, expected, "conffiles");

    // Installed on this machine: only as root, and only where nothing of
    // assignd is installed already.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root, so the package was built and checked but not installed");
    }
    let present: Vec<&str> = [
        "/usr/bin/assignd",
        "/lib/systemd/system/assignd.service",
        "/etc/assignd",
        "/var/lib/assignd",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    if runs("dpkg", &["-s", PACKAGE]) || !present.is_empty() {
        return skip(&format!(
            "assignd is already installed here ({present:?}); not installing over it"
        ));
    }
    let installed = Installed { armed: true };
    let said = ok("dpkg", &["-i", deb]);
    println!("dpkg -i:\n{said}");
    let status = ok("dpkg", &["-s", PACKAGE]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    let registered = ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    for conffile in &expected {
        assert!(registered.contains(conffile.as_str()), "{registered}");
    }
    // Not configured yet (no secrets): installed, not enabled, and it says
    // what to do.
    assert!(
        said.contains("assignd is installed, but not enabled"),
        "{said}"
    );
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/assignd.service");
    assert!(!wants.exists());
    let credentials = std::fs::metadata("/etc/assignd/credentials").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(credentials.permissions().mode() & 0o777, 0o700);

    let bin = "/usr/bin/assignd";
    let check = ok(bin, &["check", "--config", "/etc/assignd/assignd.toml"]);
    assert!(check.contains("ok: "), "{check}");
    println!("assignd check:\n{check}");

    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/assignd.service"],
    );
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    let (ours, others): (Vec<&str>, Vec<&str>) = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.contains("assignd"));
    if !others.is_empty() {
        println!("systemd-analyze verify, about other units (accepted):");
        for l in &others {
            println!("  {l}");
        }
    }
    assert!(ours.is_empty(), "systemd-analyze verify: {said}");
    // A failure status must come from what it said about other units.
    assert!(
        verify.status.success() || !others.is_empty(),
        "systemd-analyze verify: {}",
        verify.status
    );

    let version = ok(bin, &["--version"]);
    println!("{}", version.trim_end());
    let commit = version
        .strip_prefix(&format!("assignd {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("no version and commit in `{version}`"));
    if root.join(".git").exists() {
        assert!(
            commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "`{commit}` is not a commit"
        );
    }

    // From the installed binary; and what the package installed is exactly
    // what it generates, so nothing drifted.
    let head = ok(
        "bash",
        &["-c", "set -o pipefail; /usr/bin/assignd man | head"],
    );
    assert!(
        head.lines().any(|l| l.starts_with(".TH ASSIGND 1 ")),
        "{head}"
    );
    let man = ok(bin, &["man"]);
    assert_eq!(ok("zcat", &["/usr/share/man/man1/assignd.1.gz"]), man);
    let bash = ok(bin, &["completions", "bash"]);
    assert!(bash.contains("complete -F _assignd"), "{bash}");
    assert_eq!(
        std::fs::read_to_string("/usr/share/bash-completion/completions/assignd").unwrap(),
        bash
    );
    ok(
        "bash",
        &["-n", "/usr/share/bash-completion/completions/assignd"],
    );

    // Once the secrets are there, installing again enables the unit.
    for name in ["helpcrunch-api-key", "webhook-key", "intake-token"] {
        std::fs::write(format!("/etc/assignd/credentials/{name}"), "test").unwrap();
    }
    let said = ok("dpkg", &["-i", deb]);
    println!("dpkg -i again, with credentials:\n{said}");
    assert!(!said.contains("not enabled"), "{said}");
    assert!(wants.is_symlink(), "enabled");

    installed.purge();
}
