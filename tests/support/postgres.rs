//! A real PostgreSQL server for the tests: `initdb` into a temp dir and
//! `postgres` on a free loopback port, started once per test binary and
//! killed with it (PR_SET_PDEATHSIG), and a fresh database per test.
//!
//! Logins are trusted, except over TCP for the roles of
//! [`PgServer::password_database`], which must give their password
//! (`scram-sha-256`), as on a production server.
//!
//! As root the server runs as the `postgres` user, since PostgreSQL refuses
//! to run as root. Without the server binaries a test fails under CI
//! (`CI=true`) and is skipped with a loud message elsewhere.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The running server of this test binary.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);
static START: Mutex<()> = Mutex::new(());

/// Members of this role log in over TCP with a password; everyone else is
/// trusted. (A superuser is a member only when made one explicitly.)
const PASSWORD_GROUP: &str = "assignd_password_auth";

/// The directory holding `initdb` and `postgres`, if installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("ASSIGND_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The server, started on first use; `None` (after a loud message) when no
/// PostgreSQL is installed and this is not CI.
pub fn server() -> Option<&'static PgServer> {
    let _one = START.lock().unwrap_or_else(|p| p.into_inner());
    SERVER
        .get_or_init(|| binaries("initdb").map(|bin| start(&bin)))
        .as_ref()
}

/// The server binaries' directory, if it holds `program`; else a failure
/// under CI (`CI=true`) and a loud skip (`None`) elsewhere.
pub fn binaries(program: &str) -> Option<PathBuf> {
    match bin_dir().filter(|bin| bin.join(program).exists()) {
        Some(bin) => Some(bin),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI: no PostgreSQL server binaries ({program}) under /usr/lib/postgresql; .ci/run installs them"
            )
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: no PostgreSQL server binaries ({program}) found (install postgresql, or set ASSIGND_PG_BIN); PostgreSQL tests did not run ***\n"
            );
            None
        }
    }
}

/// The uid and gid of the `postgres` user, when running as root.
pub fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam takes a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, but there is no `postgres` user to run the server as"
    );
    // SAFETY: pw is non-null and points at a valid passwd record.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

pub fn command(bin: &Path, program: &str, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin.join(program));
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start(bin: &Path) -> PgServer {
    let user = run_as();
    let dir = std::env::temp_dir().join(format!("assignd-pg-{}", std::process::id()));
    let data = init_dir(bin, user, &dir);
    require_passwords(&data);
    let port = free_port();
    spawn_server(bin, user, &dir, port);
    wait_ready(port, &dir);
    PgServer {
        port,
        dir,
        bin: bin.to_path_buf(),
    }
}

/// A fresh `dir` (owned by the server's user) with a database cluster in
/// `dir/data`, whose logins are all trusted; returns `dir/data`.
pub fn init_dir(bin: &Path, user: Option<(u32, u32)>, dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let out = command(bin, "initdb", user)
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
        ])
        .args(["-E", "UTF8", "--no-sync", "--no-instructions"])
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// Puts the password rules ahead of initdb's `trust` lines: the first line
/// that matches a connection decides.
fn require_passwords(data: &Path) {
    let hba = data.join("pg_hba.conf");
    let trusted = std::fs::read_to_string(&hba).unwrap();
    let scram: String = ["127.0.0.1/32", "::1/128"]
        .iter()
        .map(|net| format!("host all +{PASSWORD_GROUP} {net} scram-sha-256\n"))
        .collect();
    // Rewritten in place, so the file keeps its owner.
    std::fs::write(&hba, scram + &trusted).unwrap();
}

/// Starts `postgres` in the foreground from a thread that never ends, so
/// that the parent-death signal fires only when the test process exits.
pub fn spawn_server(bin: &Path, user: Option<(u32, u32)>, dir: &Path, port: u16) {
    let mut c = command(bin, "postgres", user);
    c.args([
        "-D",
        dir.join("data").to_str().unwrap(),
        "-p",
        &port.to_string(),
    ])
    .args(["-c", "listen_addresses=127.0.0.1"])
    .args(["-c", &format!("unix_socket_directories={}", dir.display())])
    // Commits acknowledged only once in the WAL, as in production: assignd
    // relies on a committed write surviving a restart (tests/outage.rs).
    .args(["-c", "fsync=off", "-c", "synchronous_commit=on"])
    .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
    // A bench's own settings (e.g. pg_stat_statements, benches/backlog.rs).
    .args(
        std::env::var("PG_EXTRA_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap(),
    );
    // SAFETY: prctl is async-signal-safe; it only sets this child's
    // parent-death signal.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = c.spawn();
        let failed = child.as_ref().err().map(|e| e.to_string());
        tx.send(failed).unwrap();
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
        loop {
            std::thread::park();
        }
    });
    if let Some(e) = rx.recv().unwrap() {
        panic!("cannot start postgres: {e}");
    }
}

pub fn wait_ready(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Accepting TCP is not yet accepting logins; pg_isready-like
            // probing through a login follows in `database()`.
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "postgres did not start on port {port}: {}",
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    );
}

impl PgServer {
    /// The url of a database on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; returns its url.
    pub async fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match admin(self, &name).await {
                Ok(()) => return self.url(&name),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create a test database: {e}"),
            }
        }
    }

    /// Stops the server with `pg_ctl stop -m MODE` (`fast`: clients are
    /// disconnected and the server shuts down cleanly; `immediate`: it
    /// quits at once, as in a crash, and recovers at the next start), and
    /// waits until it is down. The nemesis's database outage.
    pub fn stop(&self, mode: &str) {
        let out = command(&self.bin, "pg_ctl", run_as())
            .args(["stop", "-w", "-t", "30", "-m", mode, "-D"])
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl stop -m {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again after [`PgServer::stop`], on the same port,
    /// and waits until it accepts connections.
    pub fn start(&self) {
        spawn_server(&self.bin, run_as(), &self.dir, self.port);
        wait_ready(self.port, &self.dir);
    }

    /// A new, empty database owned by a new role that must log in with
    /// `password` over TCP; returns its url, which carries no password.
    pub async fn password_database(&self, password: &str) -> String {
        let url = self.database().await;
        let name = url.rsplit('/').next().unwrap();
        give_to_password_role(self, name, password)
            .await
            .unwrap_or_else(|e| panic!("cannot create a role with a password: {e}"));
        format!("postgres://{name}@127.0.0.1:{}/{name}", self.port)
    }

    /// `pg_dump` of database `name`: everything stored in it, as text.
    pub fn dump(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name)
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// Makes database `name` the property of a new role of the same name, in
/// [`PASSWORD_GROUP`], with `password` stored as SCRAM.
async fn give_to_password_role(
    server: &PgServer,
    name: &str,
    password: &str,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&server.url("postgres")).await?;
    // Tests of one binary may race to create the group.
    let group = format!(
        "DO $$ BEGIN CREATE ROLE {PASSWORD_GROUP} NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    );
    for sql in [
        group,
        "SET password_encryption = 'scram-sha-256'".into(),
        format!("CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {PASSWORD_GROUP}"),
        format!("ALTER DATABASE {name} OWNER TO {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

async fn admin(server: &PgServer, name: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&server.url("postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await
}
