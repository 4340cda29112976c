//! A real PgBouncer (the Debian package) in front of the tests' PostgreSQL
//! server (`support/postgres.rs`): its own config file, a free loopback
//! port, `pool_mode = transaction`, trusted logins, and few server
//! connections handed out in turn (`server_round_robin`), so that a client
//! that relies on a session of its own meets another server connection at
//! its next transaction. Killed when dropped, and with the test process.
//!
//! PgBouncer refuses to run as root: as root it runs as `postgres`, like the
//! server. Without the binary a test fails under CI (`CI=true`) and is
//! skipped with a loud message elsewhere.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PgBouncer.
pub struct Bouncer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// The `pgbouncer` binary, if installed.
fn binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ASSIGND_PGBOUNCER") {
        return Some(PathBuf::from(path));
    }
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts PgBouncer in front of the PostgreSQL server on `pg_port`, with
/// `extra` lines in its `[pgbouncer]` section (e.g.
/// `ignore_startup_parameters = extra_float_digits`); `None` (after a loud
/// message) where PgBouncer is not installed and this is not CI.
pub fn start(pg_port: u16, extra: &str) -> Option<Bouncer> {
    let Some(bin) = binary() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI: no pgbouncer binary (/usr/sbin/pgbouncer); .ci/run installs the pgbouncer package"
            );
        }
        eprintln!(
            "\n*** SKIPPED: no pgbouncer binary found (apt-get install pgbouncer, or set ASSIGND_PGBOUNCER); PgBouncer tests did not run ***\n"
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let config = format!(
        "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {auth}\nlogfile = {log}\n\
         pool_mode = transaction\nmax_client_conn = 200\n\
         default_pool_size = 20\nserver_round_robin = 1\n{extra}\n",
        auth = path("users.txt"),
        log = path("pgbouncer.log"),
    );
    std::fs::write(dir.path().join("pgbouncer.ini"), config).unwrap();
    // `trust` still wants the user listed.
    std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
    let user = crate::postgres::run_as();
    if let Some((uid, gid)) = user {
        for name in ["", "pgbouncer.ini", "users.txt"] {
            std::os::unix::fs::chown(dir.path().join(name), Some(uid), Some(gid)).unwrap();
        }
    }
    let child = spawn(&bin, user, dir.path());
    let mut b = Bouncer { port, dir, child };
    b.wait_ready();
    Some(b)
}

fn spawn(bin: &Path, user: Option<(u32, u32)>, dir: &Path) -> Child {
    let mut c = Command::new(bin);
    c.arg(dir.join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    // SAFETY: prctl is async-signal-safe; it only sets this child's
    // parent-death signal.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c.spawn().expect("pgbouncer starts")
}

impl Bouncer {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited ({status}): {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pgbouncer did not listen on {}: {}", self.port, self.log());
    }

    /// `url` (a database of the server) through this PgBouncer.
    pub fn url(&self, url: &str) -> String {
        let (_, db) = url.rsplit_once('/').expect("a database url");
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Kills PgBouncer (SIGKILL: every client and server connection drops
    /// at once) and starts it again on the same port and config after
    /// `down`, as a crash and its supervisor's restart do. Blocks: call it
    /// on a thread nothing else waits on.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let bin = binary().expect("the pgbouncer binary it started from");
        self.child = spawn(&bin, crate::postgres::run_as(), self.dir.path());
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

/// Points the daemons of `app` at `url` (a database of the server) through
/// `b`, as a pooler in transaction mode.
pub fn through(app: &crate::common::TestApp, b: &Bouncer, url: &str) {
    app.use_database(&b.url(url));
    app.edit_config(|c| c.replace("[database]\n", "[database]\npooler = \"pgbouncer\"\n"));
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
