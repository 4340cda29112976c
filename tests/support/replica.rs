//! A primary PostgreSQL with a real streaming replica (`pg_basebackup -R`)
//! on loopback, and the TCP proxy the daemons reach them through: the
//! address that moves at a failover, as a virtual IP or a DNS name does.
//! For `tests/failover.rs`. The servers' directories (logs included) are
//! removed at the end unless the test failed or `KEEP_PG` is set.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::postgres::{command, free_port, init_dir, run_as, spawn_server, wait_ready};

/// One server: its port and directory (`dir/data`, `dir/server.log`).
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    /// Killed already: its pid file is stale (the pid may be reused).
    killed: AtomicBool,
}

/// A primary and its streaming replica.
pub struct Pair {
    bin: PathBuf,
    pub primary: Server,
    pub replica: Server,
}

/// How the replica follows the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// A commit is acknowledged once the replica has it
    /// (`synchronous_standby_names = '*'`): a promotion loses nothing.
    Synchronous,
    /// Acknowledged by the primary alone: a promotion loses what the
    /// replica had not received.
    Asynchronous,
}

impl Server {
    fn new(dir: PathBuf) -> Server {
        Server {
            port: free_port(),
            dir,
            killed: AtomicBool::new(false),
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url("postgres")).await.unwrap()
    }

    /// Runs `sql` statements on the `postgres` database, one by one.
    pub async fn exec(&self, sql: &[&str]) {
        let mut conn = self.connect().await;
        for s in sql {
            sqlx::query(sqlx::AssertSqlSafe(*s))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let _ = conn.close().await;
    }

    /// The first column of `sql`'s first row, as text.
    pub async fn text(&self, sql: &str) -> String {
        let mut conn = self.connect().await;
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        v
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// SIGKILL of the postmaster and every process it started at once, as
    /// when its machine dies.
    pub fn kill9(&self) {
        if self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid"));
        let Some(pid) = pid_file
            .ok()
            .and_then(|f| f.lines().next()?.trim().parse::<i32>().ok())
        else {
            return; // Never started.
        };
        let mut pids = children_of(pid);
        pids.push(pid);
        for p in pids {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let child: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so after ')'.
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

impl Pair {
    /// A primary with database `assignd`, and a replica streaming from it.
    pub async fn start(bin: &Path, name: &str, replication: Replication) -> Pair {
        let user = run_as();
        let root = std::env::temp_dir().join(format!("assignd-{name}-{}", std::process::id()));
        let primary = Server::new(root.join("primary"));
        init_dir(bin, user, &primary.dir);
        spawn_server(bin, user, &primary.dir, primary.port);
        wait_ready(primary.port, &primary.dir);
        let replica = Server::new(root.join("replica"));
        let pair = Pair {
            bin: bin.to_path_buf(),
            primary,
            replica,
        };
        pair.wait_login(&pair.primary).await;
        pair.primary.exec(&["CREATE DATABASE assignd"]).await;
        pair.base_backup(user);
        spawn_server(bin, user, &pair.replica.dir, pair.replica.port);
        wait_ready(pair.replica.port, &pair.replica.dir);
        pair.wait_streaming().await;
        if replication == Replication::Synchronous {
            pair.primary
                .exec(&[
                    "ALTER SYSTEM SET synchronous_standby_names = '*'",
                    "SELECT pg_reload_conf()",
                ])
                .await;
            pair.wait_for(
                &pair.primary,
                "the replica is synchronous",
                |p| async move {
                    p.text(
                        "SELECT COUNT(*)::TEXT FROM pg_stat_replication WHERE sync_state = 'sync'",
                    )
                    .await
                        == "1"
                },
            )
            .await;
        }
        pair
    }

    /// `pg_basebackup -R` of the primary into the replica's directory: a
    /// copy that starts as a standby streaming from it.
    fn base_backup(&self, user: Option<(u32, u32)>) {
        let dir = &self.replica.dir;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        }
        let out = command(&self.bin, "pg_basebackup", user)
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.primary.port.to_string())
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-R", "-X", "stream", "-c", "fast"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_basebackup runs");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn wait_login(&self, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while PgConnection::connect(&server.url("postgres"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "no login: {}", server.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_streaming(&self) {
        self.wait_login(&self.replica).await;
        self.wait_for(&self.primary, "the replica streams", |p| async move {
            p.text("SELECT COUNT(*)::TEXT FROM pg_stat_replication WHERE state = 'streaming'")
                .await
                == "1"
        })
        .await;
    }

    async fn wait_for<'a, F, Fut>(&'a self, server: &'a Server, what: &str, done: F)
    where
        F: Fn(&'a Server) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(server).await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `pg_ctl promote -w`: the replica becomes a primary on a new timeline.
    pub fn promote(&self) {
        let out = command(&self.bin, "pg_ctl", run_as())
            .args(["promote", "-w", "-t", "30", "-D"])
            .arg(self.replica.dir.join("data"))
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.replica.log()
        );
    }

    /// Fences the primary as a switchover does before the promotion: every
    /// session, open ones included, becomes read-only from its next
    /// transaction (`default_transaction_read_only`, reloaded), and the
    /// connections stay open. Then waits until the replica has replayed
    /// all the primary wrote.
    pub async fn fence_primary(&self) {
        self.primary
            .exec(&[
                "ALTER SYSTEM SET default_transaction_read_only = on",
                "SELECT pg_reload_conf()",
            ])
            .await;
        // Transactions begun before the reload end within milliseconds.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lsn = self.primary.text("SELECT pg_current_wal_lsn()::TEXT").await;
        let sql = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}')::TEXT");
        self.wait_for(
            &self.replica,
            "the replica replayed the fenced primary's WAL",
            |r| {
                let sql = sql.clone();
                async move { r.text(&sql).await == "true" }
            },
        )
        .await;
    }

    /// Cuts the replica off the primary (an empty `primary_conninfo`,
    /// reloaded, stops its WAL receiver), as a network partition between
    /// them would: it keeps what it received, and the primary goes on
    /// acknowledging commits it will never have.
    pub async fn cut_replica(&self) {
        self.replica
            .exec(&[
                "ALTER SYSTEM SET primary_conninfo = ''",
                "SELECT pg_reload_conf()",
            ])
            .await;
        self.wait_for(
            &self.primary,
            "the replica stopped streaming",
            |p| async move {
                p.text("SELECT COUNT(*)::TEXT FROM pg_stat_replication")
                    .await
                    == "0"
            },
        )
        .await;
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.primary.kill9();
        self.replica.kill9();
        // Kept after a failure, for its logs.
        if let Some(root) = self
            .primary
            .dir
            .parent()
            .filter(|_| !std::thread::panicking() && std::env::var("KEEP_PG").is_err())
        {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// A TCP proxy on a loopback port to one server's port at a time: the
/// address the daemons know. [`Proxy::switch`] moves it.
pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    /// Bumped to drop every connection proxied so far.
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let cut = watch::channel(0).0;
        let task = tokio::spawn(accept(listener, target.clone(), cut.clone()));
        Proxy {
            port,
            target,
            cut,
            task,
        }
    }

    /// New connections go to `port` from now on. With `cut`, every
    /// connection proxied so far is dropped, as when a virtual IP moves
    /// (the new host knows none of them); without, they keep reaching the
    /// old server, as connections opened before a DNS change do.
    pub fn switch(&self, port: u16, cut: bool) {
        self.target.store(port, Ordering::SeqCst);
        if cut {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn accept(listener: TcpListener, target: Arc<AtomicU16>, cut: watch::Sender<u64>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let port = target.load(Ordering::SeqCst);
        let mut cut = cut.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await else {
                return; // The client sees its connection closed.
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
