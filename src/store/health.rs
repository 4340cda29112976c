//! Health probes of the database, for readiness.
//!
//! A read says little: readers work while the disk is full or another
//! process holds the write lock. So readiness takes the write lock and
//! commits a heartbeat row, the same path every write of the daemon takes,
//! and looks at the file system's free space and flags first.

use super::{Backend, Store, StoreError, now_ms, vals};

/// Below this much free space the database's disk counts as full: SQLite
/// needs whole pages (4 KiB each, and the WAL frames around them).
const FULL_BELOW: u64 = 64 * 1024;

/// The heartbeat row. Its value is empty so `assignd status`, which skips
/// empty values, does not list it.
const HEARTBEAT_KEY: &str = "listener_write_probe";

/// Why the database cannot take a write; the text names the cause and
/// never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteFault {
    #[error("database locked: another process holds the write lock")]
    Locked,
    #[error("disk full: {free} bytes left on the database's file system")]
    Full { free: u64 },
    #[error("read-only: the database's file system or file cannot be written")]
    ReadOnly,
    #[error("database write failed: {0}")]
    Other(String),
}

impl Store {
    /// Whether a write commits now: the file system is writable and has
    /// room, and a `BEGIN IMMEDIATE` transaction that upserts a heartbeat
    /// row commits. Waits up to the busy timeout for another process's
    /// lock, so callers bound it and run one probe at a time.
    pub async fn probe_write(&self) -> Result<(), WriteFault> {
        if let Some(file) = self.database_file().await {
            disk_fault(&file)?;
        }
        let sqlite = self.backend() == Backend::Sqlite;
        self.write_heartbeat()
            .await
            .map_err(|e| classify(e, sqlite))
    }

    async fn write_heartbeat(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = "INSERT INTO daemon_state (key, value, updated_at) VALUES ($1, '', $2)
            ON CONFLICT (key) DO UPDATE SET value = '', updated_at = excluded.updated_at";
        tx.run(sql, vals![HEARTBEAT_KEY, now_ms()]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The main database's file, as SQLite opened it (none in memory, or
    /// on a database server).
    async fn database_file(&self) -> Option<std::path::PathBuf> {
        if self.backend() != Backend::Sqlite {
            return None;
        }
        let sql = "SELECT file FROM pragma_database_list WHERE name = 'main'";
        let file: Option<String> = self.text_by_key(sql, "").await.ok().flatten();
        file.filter(|f| !f.is_empty()).map(Into::into)
    }
}

/// The file system's own view: mounted read-only, or out of space.
fn disk_fault(file: &std::path::Path) -> Result<(), WriteFault> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(file.as_os_str().as_bytes()) else {
        return Ok(());
    };
    let mut fs = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid C string and `fs` is writable memory of the
    // right type; statvfs only writes into it.
    if unsafe { libc::statvfs(path.as_ptr(), fs.as_mut_ptr()) } != 0 {
        return Ok(()); // no verdict; the write below decides
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let fs = unsafe { fs.assume_init() };
    if fs.f_flag & libc::ST_RDONLY != 0 {
        return Err(WriteFault::ReadOnly);
    }
    // root may use the blocks reserved for it; others may not.
    // SAFETY: geteuid has no preconditions.
    let blocks = if unsafe { libc::geteuid() } == 0 {
        fs.f_bfree
    } else {
        fs.f_bavail
    };
    let free = blocks.saturating_mul(fs.f_frsize);
    if free < FULL_BELOW {
        return Err(WriteFault::Full { free });
    }
    Ok(())
}

/// Maps SQLite's result codes to a cause an operator can act on; a
/// database server's errors are reported as they are.
fn classify(e: StoreError, sqlite: bool) -> WriteFault {
    let StoreError::Sql(sql) = &e else {
        return WriteFault::Other(e.to_string());
    };
    if let (true, sqlx::Error::Database(db)) = (sqlite, sql) {
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        match primary {
            Some(5 | 6) => return WriteFault::Locked, // SQLITE_BUSY, SQLITE_LOCKED
            Some(13) => return WriteFault::Full { free: 0 }, // SQLITE_FULL
            Some(8) => return WriteFault::ReadOnly,   // SQLITE_READONLY
            _ => {}
        }
    }
    WriteFault::Other(sql.to_string())
}
