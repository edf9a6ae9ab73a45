//! Opening the queue file: creating it, migrating it, and setting aside a file that
//! is not a valid queue (exactly once, even when several processes find it at once).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::fs::{check_dir, check_file, create_file, ensure_dir};
use super::migrate::{LATEST, migrate};
use super::wal::set_busy_wait;
use super::{INSERT, QUEUE_FILE, Queue, TOTALS};
use crate::error::{Error, Kind, Result};
use crate::time::now_ms;

impl Queue {
    /// Opens the queue in `dir`, creating the directory (0700) and file (0600) if
    /// needed. A file that is not a valid queue is renamed aside and a fresh queue
    /// started. `busy` bounds how long any statement waits for another writer.
    pub fn open(dir: &Path, busy: Duration) -> Result<Queue> {
        ensure_dir(dir)?;
        let path = dir.join(QUEUE_FILE);
        let moved = set_aside_if_not_a_file(&path)?;
        create_file(&path)?;
        let mut queue = Self::open_file(path, busy, true)?;
        queue.recovered = queue.recovered.take().or(moved);
        queue.truncate_long_wal(busy)?;
        Ok(queue)
    }

    /// Opens the queue in `dir` if its file exists; never creates anything.
    pub fn open_existing(dir: &Path, busy: Duration) -> Result<Option<Queue>> {
        if fs::symlink_metadata(dir).is_ok() {
            check_dir(dir)?;
        }
        let path = dir.join(QUEUE_FILE);
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_file() && !meta.file_type().is_symlink() => {
                // A directory or a FIFO where the queue belongs holds no events: move
                // it aside as for a corrupt file, so even `disable` and `clear` work.
                let moved = set_aside_if_not_a_file(&path)?;
                create_file(&path)?;
                let mut queue = Self::open_file(path, busy, true)?;
                queue.recovered = queue.recovered.take().or(moved);
                Ok(Some(queue))
            }
            Ok(_) => {
                check_file(&path)?;
                Self::open_file(path, busy, false).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Connects to the queue file, setting an invalid one aside. When several
    /// processes find a bad file at once, one of them renames it while the others
    /// are opening it or the fresh one, so "cannot open" and "busy" are expected for a
    /// moment: those are retried within `busy`. `create` recreates a file that
    /// vanished meanwhile (recording opens); inspecting opens never create one.
    pub(super) fn open_file(path: PathBuf, busy: Duration, create: bool) -> Result<Queue> {
        crate::fsize::ignore_sigxfsz_under_a_file_size_limit();
        let deadline = std::time::Instant::now() + busy.max(Duration::from_millis(100));
        let mut recovered = None;
        loop {
            let seen = file_id(&path);
            let attempt = match Self::connect(&path, busy) {
                Err(Failure::Invalid(why)) => {
                    recovered = set_aside(&path, seen, &why)?.or(recovered);
                    create_file(&path)?;
                    Self::connect(&path, busy)
                }
                other => other,
            };
            match attempt {
                Ok(mut q) => {
                    q.recovered = recovered;
                    return Ok(q);
                }
                Err(Failure::Sqlite(e))
                    if racing_recovery(&e) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2 + fastrand::u64(..8)));
                    if create {
                        create_file(&path)?;
                    }
                }
                Err(f) => return Err(f.into_error(&path)),
            }
        }
    }

    pub(super) fn connect(path: &Path, busy: Duration) -> Result<Queue, Failure> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags)?;
        set_busy_wait(&mut conn, busy)?;
        conn.set_prepared_statement_cache_capacity(32);
        // Per-connection: no fsync per commit (WAL keeps commits atomic and durable
        // across a process crash; a power loss may cost the last commits). Checkpoints
        // run every 1000 WAL pages (SQLite's default), never on close: a short-lived
        // CLI would otherwise pay a checkpoint, two fsyncs and the WAL's deletion and
        // re-creation on every run. Set before migrating, so that creating the schema
        // is a commit like any other (it cost a host's first run three fsyncs).
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != LATEST {
            migrate(&mut conn, version)?;
        }
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        // Preparing the insert proves the schema is ours; a file that claims our
        // version but lacks the tables is treated as invalid.
        conn.prepare_cached(INSERT)?;
        conn.prepare_cached(TOTALS)?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
            recovered: None,
        })
    }
}

/// Returns true if and only if `e` is what opening meets while another process
/// renames a bad queue file aside or creates the fresh one.
pub(super) fn racing_recovery(e: &rusqlite::Error) -> bool {
    // A file renamed aside by another process while this one had it open answers a
    // write with SQLITE_READONLY_DBMOVED: the fresh queue is under the path now.
    let moved = matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_READONLY_DBMOVED
    );
    moved
        || matches!(
            e.sqlite_error_code(),
            Some(
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
            )
        )
}

/// Why a queue file could not be used.
pub(super) enum Failure {
    /// Not a valid queue: set it aside and start afresh.
    Invalid(String),
    Other(Error),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        let invalid = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        ) || e.to_string().starts_with("no such table");
        if invalid {
            Failure::Invalid(e.to_string())
        } else {
            Failure::Sqlite(e)
        }
    }
}

impl Failure {
    fn into_error(self, path: &Path) -> Error {
        match self {
            Failure::Invalid(why) => Kind::StillInvalid {
                path: path.to_path_buf(),
                why,
            }
            .into(),
            Failure::Other(e) => e,
            Failure::Sqlite(e) => Error::queue(path, e),
        }
    }
}

/// The file's identity (device and inode, or volume and file index on Windows).
pub(super) fn file_id(path: &Path) -> Option<(u64, u64)> {
    crate::sys::file_identity(path)
}

/// Renames `from` to `to`. On Windows a file another process has open through SQLite
/// (which opens without delete sharing) cannot be renamed: the sharing violation lasts
/// only while that process tries to open it too, so it is retried for up to 5 s.
fn rename_when_closed(from: &Path, to: &Path) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match fs::rename(from, to) {
            Err(e)
                if crate::settings::busy_on_windows(&e) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(..20)));
            }
            other => return other,
        }
    }
}

/// Renames an invalid queue file (and its WAL and shared-memory files) aside, never
/// deleting it. Several processes may find the same bad file at once: an exclusive
/// lock on it and a re-check of its identity make sure it is moved exactly once.
pub(super) fn set_aside(
    path: &Path,
    seen: Option<(u64, u64)>,
    why: &str,
) -> Result<Option<String>> {
    // A FIFO must not block the open.
    let file = match crate::settings::open_nonblocking(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    lock_exclusive(&file);
    if file_id(path) != seen {
        // Someone else already moved it and started a fresh queue.
        return Ok(None);
    }
    let aside = PathBuf::from(format!(
        "{}.corrupt-{}-{}",
        path.display(),
        now_ms(),
        std::process::id()
    ));
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let _ = rename_when_closed(&from, Path::new(&format!("{}{suffix}", aside.display())));
        }
    }
    rename_when_closed(path, &aside).map_err(|e| Error::io(path, e))?;
    let note = format!(
        "{} was not a valid queue ({why}); moved it to {} and started a fresh queue",
        path.display(),
        aside.display()
    );
    log::warn!("eventspool: {note}");
    Ok(Some(note))
}

/// Moves `path` aside if something other than a regular file or a symbolic link is
/// there (a directory, a FIFO, a socket). Symbolic links are refused elsewhere.
pub(super) fn set_aside_if_not_a_file(path: &Path) -> Result<Option<String>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.file_type().is_symlink() => {
            set_aside(path, file_id(path), "it is not a regular file")
        }
        _ => Ok(None),
    }
}

/// Removes the files [`set_aside`] left beside `path` (best effort: a purge must not
/// fail because an old copy is already gone).
pub(super) fn remove_set_aside(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.corrupt-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Only files: a directory set aside never held our events.
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().starts_with(&prefix) {
            let p = entry.path();
            if let Err(e) = fs::remove_file(&p) {
                log::debug!("eventspool: could not remove {}: {e}", p.display());
            }
        }
    }
}

pub(super) fn lock_exclusive(file: &File) {
    // Best effort: without the lock, the identity re-check still catches most races.
    let _ = crate::sys::flock_exclusive(file);
}
