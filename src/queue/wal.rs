//! The write-ahead log kept short, checkpoints, and waiting for other connections'
//! locks.

use std::fs;
use std::time::Duration;

use rusqlite::Connection;

use super::Queue;
use crate::error::{Error, Result};

impl Queue {
    /// Sets how long statements on this connection wait for another's lock.
    pub fn set_busy(&mut self, wait: Duration) -> Result<()> {
        let path = self.path.clone();
        set_busy_wait(&mut self.conn, wait).map_err(|e| Error::queue(path, e))
    }

    /// Keeps the WAL short for the next fresh process. Only recording opens do this:
    /// the checkpoint blocks writers while it runs, and readers opening in a loop
    /// (`spool list`, a flusher) must not stall recording hosts.
    pub(super) fn truncate_long_wal(&mut self, busy: Duration) -> Result<()> {
        // A process that writes once and exits never restarts the WAL, so without this
        // it would only grow, and every fresh process replays all of it on open.
        if self.wal_bytes() > WAL_TRUNCATE_BYTES {
            self.truncate_wal(busy)?;
        }
        Ok(())
    }

    /// Checkpoints the whole WAL and truncates it to zero, if no other connection is
    /// in the way within a short wait (busy is not an error: it stays as it is). The
    /// checkpoint holds the write lock while it waits for readers, so it gets a wait
    /// of its own: other writers must never wait on it for long. `busy` is restored.
    pub fn truncate_wal(&mut self, busy: Duration) -> Result<()> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            set_busy_wait(conn, TRUNCATE_WAIT)?;
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            set_busy_wait(conn, busy)
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// Size of the WAL file in bytes (0 if there is none).
    pub fn wal_bytes(&self) -> u64 {
        fs::metadata(format!("{}-wal", self.path.display())).map_or(0, |m| m.len())
    }

    /// Truncates the WAL file back to `bytes` whenever the WAL restarts, so a file
    /// that grew while a reader held it open shrinks again.
    pub fn set_wal_size_limit(&self, bytes: u64) -> Result<()> {
        self.conn
            .pragma_update(None, "journal_size_limit", bytes as i64)
            .map_err(|e| self.err(e))
    }

    /// Sets how many WAL pages a commit on this connection lets pile up before it
    /// checkpoints them itself (0: never; another connection does it).
    pub fn set_autocheckpoint(&self, pages: i64) -> Result<()> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(|e| self.err(e))
    }

    /// Copies the WAL into the database as far as readers allow, without waiting for
    /// anyone; a later writer then starts the WAL over.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }
}

/// A WAL larger than this is checkpointed and truncated when a queue is opened: a
/// fresh process replays the whole WAL on open, so it must stay short (about 25
/// one-event processes' worth; the truncation's fsyncs are spread over as many runs).
pub(super) const WAL_TRUNCATE_BYTES: u64 = 64 * 1024;

/// How long the truncating checkpoint on open may wait for other connections.
pub(super) const TRUNCATE_WAIT: Duration = Duration::from_millis(20);

/// Waits up to `wait` for another connection's lock, polling about every
/// millisecond. SQLite's own busy timeout sleeps up to 100 ms between tries, so with
/// many writers in a loop a waiter sleeps through every free moment and starves; a
/// short, jittered poll takes the lock in the first gap.
pub(super) fn set_busy_wait(conn: &mut Connection, wait: Duration) -> rusqlite::Result<()> {
    // rusqlite takes a plain function, so each bound is its own instance.
    let handler: fn(i32) -> bool = match wait.as_millis() {
        0..=20 => poll_busy::<20>,
        21..=50 => poll_busy::<50>,
        51..=100 => poll_busy::<100>,
        101..=200 => poll_busy::<200>,
        201..=500 => poll_busy::<500>,
        501..=1000 => poll_busy::<1000>,
        1001..=2000 => poll_busy::<2000>,
        2001..=5000 => poll_busy::<5000>,
        _ => poll_busy::<10000>,
    };
    conn.busy_handler(Some(handler))
}

thread_local! {
    /// When the current wait for a lock began (SQLite calls the busy handler on the
    /// waiting thread, with `tries` 0 at the start of each wait).
    static WAITING_SINCE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Busy handler: sleep 0.5–1.5 ms and try again, until `MS` milliseconds have passed
/// since the wait began (measured, so a loaded machine's late wake-ups do not
/// stretch the wait).
pub(super) fn poll_busy<const MS: u64>(tries: i32) -> bool {
    let now = std::time::Instant::now();
    let since = WAITING_SINCE.with(|w| match w.get() {
        Some(t) if tries > 0 => t,
        _ => {
            w.set(Some(now));
            now
        }
    });
    if now.duration_since(since) >= Duration::from_millis(MS) {
        return false;
    }
    std::thread::sleep(Duration::from_micros(500 + fastrand::u64(..1000)));
    true
}
