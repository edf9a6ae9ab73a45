//! Queue storage: one SQLite file per app, in WAL mode, written in short
//! `BEGIN IMMEDIATE` transactions and never held open across a network call.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::error::{Error, Kind, Result};
use crate::time::now_ms;

/// File name of the queue inside the queue directory.
pub const QUEUE_FILE: &str = "queue.db";

/// Numbered, append-only migrations; `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &[include_str!("migrations/001_queue.sql")];
const LATEST: i64 = MIGRATIONS.len() as i64;

/// A WAL larger than this is checkpointed and truncated when a queue is opened: a
/// fresh process replays the whole WAL on open, so it must stay short (about 25
/// one-event processes' worth; the truncation's fsyncs are spread over as many runs).
const WAL_TRUNCATE_BYTES: u64 = 64 * 1024;

/// Page size of a new queue. Every commit writes whole pages to the WAL (the events
/// leaf and the totals row), and the WAL is fsynced before each checkpoint: with
/// 1 KiB pages a 500-byte event costs 2 KiB of WAL instead of 8 KiB.
const PAGE_SIZE: i64 = 1024;

/// How long the truncating checkpoint on open may wait for other connections.
const TRUNCATE_WAIT: Duration = Duration::from_millis(20);

const INSERT: &str =
    "INSERT INTO events (id, event, created_at, bytes, payload) VALUES (?1, ?2, ?3, ?4, ?5)";
const TOTALS: &str = "SELECT events, bytes FROM totals WHERE id = 0";
/// Every statement that adds or deletes events runs this in the same transaction.
const ADJUST_TOTALS: &str =
    "UPDATE totals SET events = events + ?1, bytes = bytes + ?2 WHERE id = 0";
const ADD_COUNTER: &str = "INSERT INTO counters (name, value) VALUES (?1, ?2)
     ON CONFLICT (name) DO UPDATE SET value = value + excluded.value";

/// One event waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedEvent {
    /// Position in the queue: smaller is older.
    #[serde(skip)]
    pub seq: i64,
    /// The event's UUIDv7.
    pub id: String,
    /// The event name.
    pub event: String,
    /// When it was queued, unix milliseconds.
    pub created_at: i64,
    /// How many delivery attempts failed so far.
    pub attempts: u32,
    /// Not sent before this time, unix milliseconds (0: at once).
    pub next_attempt_at: i64,
    /// Size of the payload in bytes.
    pub bytes: u64,
    /// The JSON that will be sent, byte for byte.
    pub payload: String,
}

/// What is in the queue and what happened to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Events queued.
    pub events: u64,
    /// Payload bytes queued.
    pub bytes: u64,
    /// When the oldest queued event was recorded, unix milliseconds.
    pub oldest: Option<i64>,
    /// Events dropped so far, by reason (`cap`, `age`, `attempts`, `rejected`, `too_large`).
    pub dropped: BTreeMap<String, u64>,
    /// Events delivered so far.
    pub sent: u64,
    /// No delivery before this time (server backoff), unix milliseconds.
    pub not_before: Option<i64>,
    /// The last flush's report as JSON, if any flush ran.
    pub last_flush: Option<serde_json::Value>,
}

/// An event ready to be inserted.
pub(crate) struct NewEvent<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub created_at: i64,
    pub payload: &'a str,
}

/// An event picked for delivery.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub seq: i64,
    pub id: String,
    pub created_at: i64,
    pub payload: String,
    pub attempts: u32,
}

/// What [`Queue::clamp_times`] corrected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Clamped {
    /// Backoff times pulled back to the cap.
    pub backoffs: u64,
    /// Events stamped in the future, re-stamped now.
    pub future_stamps: u64,
    /// The forward jump of the clock not counted as ageing, ms (0: none).
    pub gap_ms: i64,
}

/// Who holds the flush lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: u32,
    pub started: i64,
    pub host: String,
    pub token: String,
}

/// An open queue.
pub(crate) struct Queue {
    conn: Connection,
    path: PathBuf,
    /// Set when opening found a file that was not a valid queue and moved it aside:
    /// what was wrong and where it went, for the user to be told.
    pub recovered: Option<String>,
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Committed; this many of the oldest events were evicted by the caps.
    Committed { evicted: u64 },
    /// The caller's check, run under the write lock, said no: nothing was written.
    Revoked,
}

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

    /// Keeps the WAL short for the next fresh process. Only recording opens do this:
    /// the checkpoint blocks writers while it runs, and readers opening in a loop
    /// (`spool list`, a flusher) must not stall recording hosts.
    fn truncate_long_wal(&mut self, busy: Duration) -> Result<()> {
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

    /// Connects to the queue file, setting an invalid one aside. When several
    /// processes find a bad file at once, one of them renames it while the others
    /// are opening it or the fresh one, so "cannot open" and "busy" are expected for a
    /// moment: those are retried within `busy`. `create` recreates a file that
    /// vanished meanwhile (recording opens); inspecting opens never create one.
    fn open_file(path: PathBuf, busy: Duration, create: bool) -> Result<Queue> {
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

    fn connect(path: &Path, busy: Duration) -> Result<Queue, Failure> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags)?;
        set_busy_wait(&mut conn, busy)?;
        conn.set_prepared_statement_cache_capacity(32);
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != LATEST {
            migrate(&mut conn, version)?;
        }
        // Per-connection: no fsync per commit (WAL keeps commits atomic and durable
        // across a process crash; a power loss may cost the last commits). Checkpoints
        // run every 1000 WAL pages (SQLite's default), never on close: a short-lived
        // CLI would otherwise pay a checkpoint, two fsyncs and the WAL's deletion and
        // re-creation on every run.
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
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

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::queue(&self.path, e)
    }

    /// Inserts events in one transaction, then drops the oldest past the caps.
    ///
    /// `still_allowed` runs once the write lock is held, before anything is written:
    /// a purge (`disable`) takes the same lock, so a `true` here means no purge can
    /// slip in between the caller's consent check and this commit.
    pub fn enqueue(
        &mut self,
        events: &[NewEvent<'_>],
        max_events: u64,
        max_bytes: u64,
        still_allowed: impl FnOnce() -> bool,
    ) -> Result<Enqueued> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<Enqueued> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !still_allowed() {
                return Ok(Enqueued::Revoked);
            }
            {
                let mut ins = tx.prepare_cached(INSERT)?;
                let bytes: usize = events.iter().map(|e| e.payload.len()).sum();
                tx.prepare_cached(ADJUST_TOTALS)?
                    .execute(params![events.len() as i64, bytes as i64])?;
                for e in events {
                    ins.execute(params![
                        e.id,
                        e.event,
                        e.created_at,
                        e.payload.len() as i64,
                        e.payload
                    ])?;
                }
            }
            let evicted = enforce_caps(&tx, max_events, max_bytes)?;
            tx.commit()?;
            Ok(Enqueued::Committed { evicted })
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

    /// The oldest `limit` events, oldest first.
    pub fn list(&self, limit: usize) -> Result<Vec<QueuedEvent>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, id, event, created_at, attempts, next_attempt_at, bytes, payload
                 FROM events ORDER BY seq LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([limit as i64], row_to_event)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| Error::queue(&self.path, e))
    }

    /// The event whose id is `id`, or whose id starts with `id` if exactly one does.
    pub fn get(&self, id: &str) -> Result<QueuedEvent> {
        let upper = format!("{id}\u{7f}");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, id, event, created_at, attempts, next_attempt_at, bytes, payload
                 FROM events WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 2",
            )
            .map_err(|e| self.err(e))?;
        let found = st
            .query_map(params![id, upper], row_to_event)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| Error::queue(&self.path, e))?;
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [exact, ..] if exact.id == id => Ok(exact.clone()),
            [_, _, ..] => Err(Kind::AmbiguousId(id.to_string()).into()),
            [] => Err(Kind::UnknownId(id.to_string()).into()),
        }
    }

    /// Deletes every queued event and every copy of them on disk; returns how many.
    ///
    /// A plain `DELETE` leaves the payloads readable in free pages and in the WAL, so
    /// after it the file is rebuilt (`VACUUM`, temporary data in memory), and the WAL
    /// checkpointed and truncated to zero; files set aside earlier as corrupt, which
    /// hold older events, are removed. The file and its inode stay, so writers holding
    /// it open keep writing to the live queue. `wait` bounds how long the truncation
    /// waits for other connections to step out of the way; past it the purge is an
    /// error (the events are gone from the queue, but old bytes may remain in the WAL).
    pub fn purge(&mut self, wait: Duration) -> Result<u64> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<(u64, bool)> {
            conn.execute_batch("PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY")?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM events", [])? as u64;
            tx.execute("UPDATE totals SET events = 0, bytes = 0 WHERE id = 0", [])?;
            tx.commit()?;
            conn.execute_batch("VACUUM")?;
            let deadline = std::time::Instant::now() + wait;
            loop {
                let busy: i64 =
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                if busy == 0 {
                    return Ok((n, true));
                }
                if std::time::Instant::now() >= deadline {
                    return Ok((n, false));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let (n, truncated) = run(&mut self.conn).map_err(|e| Error::queue(&path, e))?;
        remove_set_aside(&path);
        if !truncated {
            return Err(Kind::PurgeIncomplete { path }.into());
        }
        Ok(n)
    }

    /// Counts, sizes and counters.
    pub fn stats(&self) -> Result<QueueStats> {
        let run = || -> rusqlite::Result<QueueStats> {
            let (events, bytes): (i64, i64) = self
                .conn
                .prepare_cached(TOTALS)?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let oldest = self
                .conn
                .prepare_cached("SELECT created_at FROM events ORDER BY seq LIMIT 1")?
                .query_row([], |r| r.get(0))
                .optional()?;
            let mut dropped = BTreeMap::new();
            let mut sent = 0;
            let mut st = self
                .conn
                .prepare_cached("SELECT name, value FROM counters")?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (name, value) = row?;
                match name.strip_prefix("dropped_") {
                    Some(reason) => {
                        dropped.insert(reason.to_string(), value.max(0) as u64);
                    }
                    None if name == "sent" => sent = value.max(0) as u64,
                    None => {}
                }
            }
            Ok(QueueStats {
                events: events.max(0) as u64,
                bytes: bytes.max(0) as u64,
                oldest,
                dropped,
                sent,
                not_before: self.state_i64("not_before")?,
                last_flush: self
                    .state("last_flush")?
                    .and_then(|s| serde_json::from_str(&s).ok()),
            })
        };
        run().map_err(|e| self.err(e))
    }

    fn state(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT value FROM state WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()
    }

    fn state_i64(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        Ok(self.state(key)?.and_then(|v| v.parse().ok()))
    }

    /// Reads a delivery state value.
    pub fn get_state(&self, key: &str) -> Result<Option<String>> {
        self.state(key).map_err(|e| self.err(e))
    }

    /// Writes (or with `None`, removes) a delivery state value.
    pub fn set_state(&self, key: &str, value: Option<&str>) -> Result<()> {
        let r = match value {
            Some(v) => self
                .conn
                .prepare_cached("INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .and_then(|mut s| s.execute(params![key, v])),
            None => self.conn.prepare_cached("DELETE FROM state WHERE key = ?1").and_then(|mut s| s.execute([key])),
        };
        r.map(|_| ()).map_err(|e| self.err(e))
    }

    /// Up to `limit` events whose backoff has passed at `now` (every event when
    /// `now` is `i64::MAX`: a forced flush), oldest first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Pending>> {
        let run = || -> rusqlite::Result<Vec<Pending>> {
            let mut st = self.conn.prepare_cached(
                "SELECT seq, id, created_at, payload, attempts FROM events WHERE next_attempt_at <= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![now, limit as i64], |r| {
                Ok(Pending {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    created_at: r.get(2)?,
                    payload: r.get(3)?,
                    attempts: r.get(4)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Pulls the times read back from the queue into what the clock `now` can
    /// vouch for, and writes the result back so the correction holds for every later
    /// reader (a correction only on read would move with the clock and never end):
    ///
    /// - a backoff (the queue's `not_before` and each event's next attempt) lies at
    ///   most `max_ahead` ms ahead of now (the cap that applied when it was set);
    /// - an event stamped in the future is re-stamped now, so it ages from now;
    /// - if the clock moved forward by more than `max_gap` ms since the last round
    ///   (`clock_seen`), the events already queued then age as if that gap had not
    ///   passed: a clock wrong once (or a pause longer than the max age) must not
    ///   wipe the queue as too old.
    ///
    /// Runs once per flush round, in one short transaction.
    pub fn clamp_times(&mut self, now: i64, max_ahead: i64, max_gap: i64) -> Result<Clamped> {
        let path = self.path.clone();
        let horizon = now.saturating_add(max_ahead.max(0));
        // Looked for without the write lock first: almost always nothing is wrong,
        // and recording hosts must not wait behind a flusher's scan of the queue.
        let look = |conn: &Connection| -> rusqlite::Result<(bool, Option<i64>)> {
            let wrong: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE next_attempt_at > ?1 OR created_at > ?2)
                     OR EXISTS (SELECT 1 FROM state WHERE key = 'not_before' AND CAST(value AS INTEGER) > ?1)",
                )?
                .query_row(params![horizon, now], |r| r.get(0))?;
            let seen: Option<i64> = conn
                .prepare_cached(
                    "SELECT CAST(value AS INTEGER) FROM state WHERE key = 'clock_seen'",
                )?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok((wrong, seen))
        };
        let (wrong, seen) = look(&self.conn).map_err(|e| Error::queue(&path, e))?;
        let gap = seen.map(|s| now.saturating_sub(s)).filter(|g| *g > max_gap);
        let run = |conn: &mut Connection| -> rusqlite::Result<Clamped> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut done = Clamped::default();
            if wrong {
                done.backoffs = tx.execute(
                    "UPDATE events SET next_attempt_at = ?1 WHERE next_attempt_at > ?1",
                    [horizon],
                )? as u64;
                done.backoffs += tx.execute(
                    "UPDATE state SET value = CAST(?1 AS TEXT) WHERE key = 'not_before' AND CAST(value AS INTEGER) > ?1",
                    [horizon],
                )? as u64;
                done.future_stamps = tx.execute(
                    "UPDATE events SET created_at = ?1 WHERE created_at > ?1",
                    [now],
                )? as u64;
            }
            if let (Some(gap), Some(seen)) = (gap, seen) {
                done.gap_ms = gap;
                tx.execute(
                    "UPDATE events SET created_at = created_at + ?1 WHERE created_at <= ?2",
                    params![gap, seen],
                )?;
            }
            tx.execute(
                "INSERT INTO state (key, value) VALUES ('clock_seen', CAST(?1 AS TEXT))
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [now],
            )?;
            tx.commit()?;
            Ok(done)
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// Deletes the given events (matched by seq and id, so a row that replaced one
    /// after a `clear` is never touched) and adds how many were deleted to `counter`.
    pub fn remove(&mut self, events: &[Pending], counter: &str) -> Result<u64> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<u64> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut n = 0;
            {
                let mut del = tx.prepare_cached("DELETE FROM events WHERE seq = ?1 AND id = ?2")?;
                let mut bytes = 0;
                for e in events {
                    if del.execute(params![e.seq, e.id])? > 0 {
                        n += 1;
                        // `bytes` was stored as the payload's length.
                        bytes += e.payload.len() as i64;
                    }
                }
                if n > 0 {
                    tx.prepare_cached(ADJUST_TOTALS)?
                        .execute(params![-(n as i64), -bytes])?;
                    tx.prepare_cached(ADD_COUNTER)?
                        .execute(params![counter, n as i64])?;
                }
            }
            tx.commit()?;
            Ok(n)
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// Records a failed attempt for the given events: attempts + 1, not before `next_at`.
    pub fn defer(&mut self, events: &[Pending], next_at: i64) -> Result<()> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut up = tx.prepare_cached(
                    "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?3 WHERE seq = ?1 AND id = ?2",
                )?;
                for e in events {
                    up.execute(params![e.seq, e.id, next_at])?;
                }
            }
            tx.commit()
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// Takes the flush lease for `me` until `until`, unless a live holder has it.
    /// `alive` says whether a recorded holder is still running. Returns the current
    /// holder's pid when refused.
    pub fn take_lease(
        &mut self,
        me: &Holder,
        until: i64,
        alive: impl Fn(&Holder) -> bool,
    ) -> Result<Result<(), u32>> {
        let path = self.path.clone();
        let now = now_ms();
        let run = |conn: &mut Connection| -> rusqlite::Result<Result<(), u32>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = read_lease(&tx)?;
            if let Some((holder, expires_at)) = current {
                if holder.token != me.token && expires_at > now && alive(&holder) {
                    return Ok(Err(holder.pid));
                }
            }
            tx.execute(
                "INSERT INTO lease (id, pid, started, host, token, expires_at) VALUES (0, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started = excluded.started,
                   host = excluded.host, token = excluded.token, expires_at = excluded.expires_at",
                params![me.pid, me.started, me.host, me.token, until],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// The current lease holder and its expiry, if any.
    pub fn lease_holder(&self) -> Result<Option<(Holder, i64)>> {
        read_lease(&self.conn).map_err(|e| self.err(e))
    }

    /// Extends the lease held by `token`; returns false if it is no longer ours.
    pub fn renew_lease(&self, token: &str, until: i64) -> Result<bool> {
        self.conn
            .execute(
                "UPDATE lease SET expires_at = ?2 WHERE id = 0 AND token = ?1",
                params![token, until],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Gives the lease up if `token` still holds it.
    pub fn release_lease(&self, token: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM lease WHERE id = 0 AND token = ?1", [token])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// Waits up to `wait` for another connection's lock, polling about every
/// millisecond. SQLite's own busy timeout sleeps up to 100 ms between tries, so with
/// many writers in a loop a waiter sleeps through every free moment and starves; a
/// short, jittered poll takes the lock in the first gap.
fn set_busy_wait(conn: &mut Connection, wait: Duration) -> rusqlite::Result<()> {
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
fn poll_busy<const MS: u64>(tries: i32) -> bool {
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

/// The lease row: its holder and expiry, if anyone holds it.
fn read_lease(conn: &Connection) -> rusqlite::Result<Option<(Holder, i64)>> {
    conn.query_row(
        "SELECT pid, started, host, token, expires_at FROM lease WHERE id = 0",
        [],
        |r| {
            let holder = Holder {
                pid: r.get(0)?,
                started: r.get(1)?,
                host: r.get(2)?,
                token: r.get(3)?,
            };
            Ok((holder, r.get(4)?))
        },
    )
    .optional()
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedEvent> {
    Ok(QueuedEvent {
        seq: r.get(0)?,
        id: r.get(1)?,
        event: r.get(2)?,
        created_at: r.get(3)?,
        attempts: r.get(4)?,
        next_attempt_at: r.get(5)?,
        bytes: r.get::<_, i64>(6)?.max(0) as u64,
        payload: r.get(7)?,
    })
}

fn enforce_caps(
    tx: &rusqlite::Transaction<'_>,
    max_events: u64,
    max_bytes: u64,
) -> rusqlite::Result<u64> {
    let (mut events, mut bytes): (i64, i64) = tx
        .prepare_cached(TOTALS)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let max_events = i64::try_from(max_events).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    if events <= max_events && bytes <= max_bytes {
        return Ok(0);
    }
    // Find the newest event that must go: walk from the oldest until both caps hold.
    let mut cutoff = None;
    {
        let mut st = tx.prepare_cached("SELECT seq, bytes FROM events ORDER BY seq")?;
        let mut rows = st.query([])?;
        while events > max_events || bytes > max_bytes {
            let Some(row) = rows.next()? else { break };
            cutoff = Some(row.get::<_, i64>(0)?);
            events -= 1;
            bytes -= row.get::<_, i64>(1)?;
        }
    }
    let Some(cutoff) = cutoff else { return Ok(0) };
    let n = tx
        .prepare_cached("DELETE FROM events WHERE seq <= ?1")?
        .execute([cutoff])? as u64;
    // The walk above deleted exactly these rows from the running totals.
    tx.prepare_cached("UPDATE totals SET events = ?1, bytes = ?2 WHERE id = 0")?
        .execute(params![events, bytes])?;
    tx.prepare_cached(ADD_COUNTER)?
        .execute(params!["dropped_cap", n as i64])?;
    Ok(n)
}

fn migrate(conn: &mut Connection, seen: i64) -> Result<(), Failure> {
    if seen > LATEST {
        return Err(Failure::Other(
            Kind::NewerSchema {
                seen,
                known: LATEST,
            }
            .into(),
        ));
    }
    if seen == 0 {
        // Only takes effect on a database not written yet; see PAGE_SIZE.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    }
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(Failure::Invalid(
                "it is a SQLite database of another application".into(),
            ));
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// Returns true if and only if `e` is what opening meets while another process
/// renames a bad queue file aside or creates the fresh one.
fn racing_recovery(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
        )
    )
}

/// Why a queue file could not be used.
enum Failure {
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

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Renames an invalid queue file (and its WAL and shared-memory files) aside, never
/// deleting it. Several processes may find the same bad file at once: an exclusive
/// lock on it and a re-check of its identity make sure it is moved exactly once.
fn set_aside(path: &Path, seen: Option<(u64, u64)>, why: &str) -> Result<Option<String>> {
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
            let _ = fs::rename(&from, format!("{}{suffix}", aside.display()));
        }
    }
    fs::rename(path, &aside).map_err(|e| Error::io(path, e))?;
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
fn set_aside_if_not_a_file(path: &Path) -> Result<Option<String>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.file_type().is_symlink() => {
            set_aside(path, file_id(path), "it is not a regular file")
        }
        _ => Ok(None),
    }
}

/// Removes the files [`set_aside`] left beside `path` (best effort: a purge must not
/// fail because an old copy is already gone).
fn remove_set_aside(path: &Path) {
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

#[cfg(unix)]
fn lock_exclusive(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; the lock is released when `file` closes.
    unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_EX);
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File) {}

/// Creates the queue directory (0700) if it does not exist, and refuses one that is a
/// symbolic link or belongs to another user.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    // Before the first write of any kind: settings, queue, directory.
    crate::fsize::ignore_sigxfsz_under_a_file_size_limit();
    match fs::symlink_metadata(dir) {
        Ok(_) => check_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir).map_err(|e| Error::io(dir, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(Kind::Symlink(dir.to_path_buf()).into());
    }
    if !meta.is_dir() {
        return Err(Kind::NotADirectory(dir.to_path_buf()).into());
    }
    check_owner(dir, &meta)
}

fn check_file(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.file_type().is_symlink() {
        return Err(Kind::Symlink(path.to_path_buf()).into());
    }
    check_owner(path, &meta)
}

#[cfg(unix)]
fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Kind::ForeignOwner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        }
        .into());
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner(_path: &Path, _meta: &fs::Metadata) -> Result<()> {
    Ok(())
}

fn create_file(path: &Path) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_file(path),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(q: &mut Queue, n: usize, size: usize) -> u64 {
        let payload = "x".repeat(size);
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let evs: Vec<NewEvent<'_>> = ids
            .iter()
            .map(|id| NewEvent {
                id,
                event: "e",
                created_at: now_ms(),
                payload: &payload,
            })
            .collect();
        match q.enqueue(&evs, 5, 1000, || true).unwrap() {
            Enqueued::Committed { evicted } => evicted,
            Enqueued::Revoked => unreachable!(),
        }
    }

    #[test]
    fn caps_evict_oldest_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), Duration::from_millis(100)).unwrap();
        put(&mut q, 3, 10);
        let first = q.list(10).unwrap();
        assert_eq!(put(&mut q, 4, 10), 2);
        let after = q.list(10).unwrap();
        assert_eq!(after.len(), 5);
        assert_eq!(after[0].id, first[2].id);
        // Bytes cap: 5 events of 300 bytes exceed 1000, so only 3 remain.
        assert_eq!(put(&mut q, 5, 300), 7);
        let s = q.stats().unwrap();
        assert_eq!((s.events, s.bytes), (3, 900));
        assert_eq!(s.dropped["cap"], 9);
    }

    /// The totals are kept by hand in every write path; they must equal a recount.
    #[test]
    fn totals_always_match_a_recount() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), Duration::from_millis(100)).unwrap();
        let recount = |q: &Queue| -> (u64, u64) {
            let (n, b): (i64, Option<i64>) = q
                .conn
                .query_row("SELECT count(*), sum(bytes) FROM events", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            (n as u64, b.unwrap_or(0) as u64)
        };
        let check = |q: &Queue| {
            let s = q.stats().unwrap();
            assert_eq!((s.events, s.bytes), recount(q));
        };
        put(&mut q, 4, 10);
        check(&q);
        put(&mut q, 4, 300); // past both caps: evicts
        check(&q);
        let due = q.due(now_ms(), 2).unwrap();
        q.remove(&due, "sent").unwrap();
        check(&q);
        q.remove(&due, "sent").unwrap(); // already gone: no change
        check(&q);
        q.purge(Duration::from_secs(1)).unwrap();
        check(&q);
        assert_eq!(recount(&q), (0, 0));
    }

    #[test]
    fn lease_is_exclusive_until_holder_dies_or_expires() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), Duration::from_millis(100)).unwrap();
        let a = Holder {
            pid: 1,
            started: 0,
            host: "h".into(),
            token: "a".into(),
        };
        let b = Holder {
            token: "b".into(),
            ..a.clone()
        };
        let far = now_ms() + 60_000;
        assert_eq!(q.take_lease(&a, far, |_| true).unwrap(), Ok(()));
        assert_eq!(q.take_lease(&b, far, |_| true).unwrap(), Err(1));
        assert_eq!(q.take_lease(&b, far, |_| false).unwrap(), Ok(()));
        assert!(!q.renew_lease("a", far).unwrap());
        q.release_lease("b").unwrap();
        assert_eq!(q.take_lease(&a, now_ms() - 1, |_| true).unwrap(), Ok(()));
        assert_eq!(
            q.take_lease(&b, far, |_| true).unwrap(),
            Ok(()),
            "expired lease is taken over"
        );
    }
}
