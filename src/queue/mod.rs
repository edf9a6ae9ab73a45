//! Queue storage: one SQLite file per app, in WAL mode, written in short
//! `BEGIN IMMEDIATE` transactions and never held open across a network call.
//!
//! One file per job: [`open`] finds, creates, migrates and recovers the file;
//! [`fs`] checks the directory and files before anything is written through them;
//! [`migrate`] holds the schema; [`wal`] keeps the write-ahead log short and waits
//! for locks; [`delivery`] is the flusher's state (due events, backoff, counters);
//! [`lease`] lets one flusher run at a time. This file owns the events themselves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::error::{Error, Kind, Result};

mod delivery;
mod fs;
pub(crate) mod lease;
mod migrate;
mod open;
mod wal;

pub use delivery::DropReason;
pub(crate) use delivery::{Counter, Pending};
pub(crate) use fs::{check_dir, ensure_dir};
use open::remove_set_aside;

/// File name of the queue inside the queue directory.
pub const QUEUE_FILE: &str = "queue.db";

const INSERT: &str =
    "INSERT INTO events (id, event, created_at, bytes, payload) VALUES (?1, ?2, ?3, ?4, ?5)";

const TOTALS: &str = "SELECT events, bytes FROM totals WHERE id = 0";

/// A `BEGIN IMMEDIATE` transaction with its `BEGIN` and `COMMIT` prepared once per
/// connection: `rusqlite::Transaction` parses both anew each time, a tenth of a warm
/// `track`'s instructions. Rolled back when dropped uncommitted, on an error or an
/// unwind alike, as a `Transaction` is.
struct Immediate<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Immediate<'c> {
    /// `BEGIN IMMEDIATE`: waits for the write lock up to the busy timeout.
    fn begin(conn: &'c Connection) -> rusqlite::Result<Immediate<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Immediate { conn, open: true })
    }

    /// `COMMIT`; on an error the transaction is rolled back when `self` drops.
    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Immediate<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Immediate<'_> {
    fn drop(&mut self) {
        // A failed COMMIT may leave the transaction open (SQLITE_BUSY): it is ended
        // here either way, so the connection does not hold the write lock after
        // (unless the ROLLBACK itself fails, as with rusqlite's own Transaction).
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Every statement that adds or deletes events runs this in the same transaction.
const ADJUST_TOTALS: &str =
    "UPDATE totals SET events = events + ?1, bytes = bytes + ?2 WHERE id = 0";

const ADD_COUNTER: &str = "INSERT INTO counters (name, value) VALUES (?1, ?2)
     ON CONFLICT (name) DO UPDATE SET value = value + excluded.value";

/// One event waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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

/// What is in the queue and what happened to it. Serialized as `spool status --json`
/// shows it: `events` as `queued`, times as RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Events queued.
    #[serde(rename = "queued")]
    pub events: u64,
    /// Payload bytes queued.
    pub bytes: u64,
    /// When the oldest queued event was recorded, unix milliseconds.
    #[serde(serialize_with = "crate::time::serialize_opt_rfc3339")]
    pub oldest: Option<i64>,
    /// Events dropped so far, by reason (`cap`, `age`, `attempts`, `rejected`, `too_large`).
    pub dropped: BTreeMap<DropReason, u64>,
    /// Events delivered so far.
    pub sent: u64,
    /// Events the catalog refused before they were queued, so far (`dropped_undeclared`):
    /// only this count is kept, never what they held.
    pub dropped_undeclared: u64,
    /// No delivery before this time (server backoff), unix milliseconds.
    #[serde(serialize_with = "crate::time::serialize_opt_rfc3339")]
    pub not_before: Option<i64>,
    /// The last flush, if any flush ran.
    pub last_flush: Option<crate::flush::LastFlush>,
}

/// An event ready to be inserted.
pub(crate) struct NewEvent<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub created_at: i64,
    pub payload: &'a str,
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

fn enforce_caps(tx: &Connection, max_events: u64, max_bytes: u64) -> rusqlite::Result<u64> {
    let (mut events, mut bytes): (i64, i64) = tx
        .prepare_cached(TOTALS)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let max_events = i64::try_from(max_events).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    if events <= max_events && bytes <= max_bytes {
        return Ok(0);
    }
    // Find the newest event that must go: walk from the oldest until both caps hold.
    // A pending deletion request is never evicted: it is what the user asked for, and
    // losing it would leave the receiver holding what they asked it to erase.
    let mut cutoff = None;
    {
        let mut st =
            tx.prepare_cached("SELECT seq, bytes FROM events WHERE event != ?1 ORDER BY seq")?;
        let mut rows = st.query([crate::deletion::EVENT])?;
        while events > max_events || bytes > max_bytes {
            let Some(row) = rows.next()? else { break };
            cutoff = Some(row.get::<_, i64>(0)?);
            events -= 1;
            bytes -= row.get::<_, i64>(1)?;
        }
    }
    let Some(cutoff) = cutoff else { return Ok(0) };
    let n = tx
        .prepare_cached("DELETE FROM events WHERE seq <= ?1 AND event != ?2")?
        .execute(params![cutoff, crate::deletion::EVENT])? as u64;
    // The walk above deleted exactly these rows from the running totals.
    tx.prepare_cached("UPDATE totals SET events = ?1, bytes = ?2 WHERE id = 0")?
        .execute(params![events, bytes])?;
    tx.prepare_cached(ADD_COUNTER)?
        .execute(params![Counter::Dropped(DropReason::Cap).name(), n as i64])?;
    Ok(n)
}

impl Queue {
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
        let run = |conn: &mut Connection| -> rusqlite::Result<Enqueued> {
            let tx = Immediate::begin(conn)?;
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
        let done = run(&mut self.conn);
        done.map_err(|e| self.err(e))
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

    /// Deletes every queued event but a pending deletion request (which `clear`
    /// keeps, as it is what the user asked the receiver to act on), and every copy of
    /// them on disk; returns how many.
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
            let n = tx.execute(
                "DELETE FROM events WHERE event != ?1",
                [crate::deletion::EVENT],
            )? as u64;
            tx.execute(
                "UPDATE totals SET events = (SELECT count(*) FROM events),
                    bytes = (SELECT coalesce(sum(bytes), 0) FROM events) WHERE id = 0",
                [],
            )?;
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

    /// Queues the deletion request for `anonymous_id`: at most one is pending, so an
    /// existing one is replaced by one that names its ids and this one (with a new
    /// id: a receiver that already has the old request must still take the new).
    /// Returns the request's id.
    pub fn queue_deletion_request(&mut self, anonymous_id: &str, now: i64) -> Result<String> {
        use crate::deletion::{DeletionRequest, EVENT};
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<String> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut ids: Vec<String> = Vec::new();
            let mut old: Vec<(i64, i64)> = Vec::new();
            {
                let mut st = tx.prepare(
                    "SELECT seq, bytes, payload FROM events WHERE event = ?1 ORDER BY seq",
                )?;
                let mut rows = st.query([EVENT])?;
                while let Some(row) = rows.next()? {
                    old.push((row.get(0)?, row.get(1)?));
                    let payload: String = row.get(2)?;
                    for id in DeletionRequest::parse(&payload)
                        .map(|r| r.anonymous_ids)
                        .unwrap_or_default()
                    {
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
            }
            if !ids.iter().any(|i| i == anonymous_id) {
                ids.push(anonymous_id.to_string());
            }
            let removed_bytes: i64 = old.iter().map(|(_, b)| b).sum();
            for (seq, _) in &old {
                tx.execute("DELETE FROM events WHERE seq = ?1", [seq])?;
            }
            let request = DeletionRequest::new(ids, now);
            let payload = request.to_payload();
            tx.execute(
                INSERT,
                params![request.id, EVENT, now, payload.len() as i64, payload],
            )?;
            tx.prepare_cached(ADJUST_TOTALS)?.execute(params![
                1 - old.len() as i64,
                payload.len() as i64 - removed_bytes
            ])?;
            tx.commit()?;
            Ok(request.id)
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// Returns true if and only if a deletion request is queued.
    pub fn has_deletion_request(&self) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE event = ?1)")
            .and_then(|mut st| st.query_row([crate::deletion::EVENT], |r| r.get(0)))
            .map_err(|e| self.err(e))
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
            let mut dropped_undeclared = 0;
            let mut st = self
                .conn
                .prepare_cached("SELECT name, value FROM counters")?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (name, value) = row?;
                match Counter::parse(&name) {
                    Some(Counter::Dropped(reason)) => {
                        dropped.insert(reason, value.max(0) as u64);
                    }
                    Some(Counter::Sent) => sent = value.max(0) as u64,
                    Some(Counter::Undeclared) => dropped_undeclared = value.max(0) as u64,
                    // A counter a newer version added: not ours to show.
                    None => {}
                }
            }
            Ok(QueueStats {
                events: events.max(0) as u64,
                bytes: bytes.max(0) as u64,
                oldest,
                dropped,
                sent,
                dropped_undeclared,
                not_before: self.state_i64("not_before")?,
                last_flush: self
                    .state("last_flush")?
                    .and_then(|s| serde_json::from_str(&s).ok()),
            })
        };
        run().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::lease::Holder;
    use crate::time::now_ms;

    fn put(q: &mut Queue, n: usize, size: usize) -> u64 {
        put_capped(q, n, size, 5, 1000)
    }

    /// Every way an enqueue ends leaves no transaction open: a revoked one, a panic
    /// under the write lock (as `track` catches it), and a COMMIT that fails (a
    /// deferred foreign key, checked only at COMMIT). Another connection can write
    /// after each, the totals stay right, and the cached BEGIN and COMMIT still work
    /// after another connection changed the schema.
    #[test]
    fn an_enqueue_ends_its_transaction_however_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), Duration::from_millis(100)).unwrap();
        let one = |id| NewEvent {
            id,
            event: "e",
            created_at: 1,
            payload: "{}",
        };
        assert_eq!(
            q.enqueue(&[one("a")], 10, 1 << 20, || false).unwrap(),
            Enqueued::Revoked
        );
        assert!(q.conn.is_autocommit());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.enqueue(&[one("b")], 10, 1 << 20, || panic!("host panic"))
        }));
        assert!(panicked.is_err());
        assert!(q.conn.is_autocommit());
        q.conn
            .execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TEMP TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
                 CREATE TEMP TRIGGER orphan AFTER INSERT ON main.events WHEN NEW.id = 'bad'
                 BEGIN INSERT INTO child VALUES (42); END;",
            )
            .unwrap();
        let failed = q.enqueue(&[one("bad")], 10, 1 << 20, || true).unwrap_err();
        assert!(failed.to_string().contains("FOREIGN KEY"), "{failed}");
        assert!(q.conn.is_autocommit());
        let mut other = Queue::open(dir.path(), Duration::from_millis(100)).unwrap();
        other.enqueue(&[one("c")], 10, 1 << 20, || true).unwrap();
        q.enqueue(&[one("d")], 10, 1 << 20, || true).unwrap();
        assert_eq!(q.stats().unwrap().events, 2);
        other
            .conn
            .execute_batch("CREATE TABLE elsewhere (x)")
            .unwrap();
        q.enqueue(&[one("f")], 10, 1 << 20, || true).unwrap();
        assert_eq!(q.stats().unwrap().events, 3);
    }

    /// `n` events of `size` bytes, under caps of `max_events` and `max_bytes`;
    /// returns how many were evicted.
    fn put_capped(q: &mut Queue, n: usize, size: usize, max_events: u64, max_bytes: u64) -> u64 {
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
        match q.enqueue(&evs, max_events, max_bytes, || true).unwrap() {
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
        assert_eq!(s.dropped[&DropReason::Cap], 9);
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
        let due = q.due(now_ms(), 2, None).unwrap();
        q.remove(&due, Counter::Sent).unwrap();
        check(&q);
        q.remove(&due, Counter::Sent).unwrap(); // already gone: no change
        check(&q);
        q.purge(Duration::from_secs(1)).unwrap();
        check(&q);
        assert_eq!(recount(&q), (0, 0));
    }

    /// Removing a batch deletes exactly its rows, addressed by (seq, id): consecutive
    /// or not, in order or not, and never a row whose `seq` now holds another event.
    #[test]
    fn removing_a_batch_deletes_exactly_its_rows_whatever_lies_in_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), Duration::from_millis(100)).unwrap();
        let ids =
            |q: &Queue| -> Vec<String> { q.list(100).unwrap().into_iter().map(|e| e.id).collect() };
        let put5 = |q: &mut Queue| put_capped(q, 5, 10, 100, 1 << 20);
        put5(&mut q);
        let all = q.due(now_ms(), 5, None).unwrap();
        // Consecutive rows 2..=4: the others stay.
        assert_eq!(q.remove(&all[1..4], Counter::Sent).unwrap(), 3);
        assert_eq!(ids(&q), [all[0].id.clone(), all[4].id.clone()]);
        // Out of order, and with a gap: only the named rows go.
        put5(&mut q);
        let now = q.due(now_ms(), 10, None).unwrap();
        let picked = vec![now[3].clone(), now[1].clone()];
        assert_eq!(q.remove(&picked, Counter::Sent).unwrap(), 2);
        assert_eq!(ids(&q).len(), 5);
        // A `seq` whose row is another event now (the batch's own was purged and the
        // number reused): only the batch's rows that still exist are deleted.
        let mut stale = q.due(now_ms(), 3, None).unwrap();
        stale[1].id = uuid::Uuid::now_v7().to_string();
        let before = ids(&q);
        assert_eq!(q.remove(&stale, Counter::Sent).unwrap(), 2);
        let after = ids(&q);
        assert_eq!(after.len(), before.len() - 2);
        assert!(!after.contains(&stale[1].id) && after.contains(&before[1]));
        let s = q.stats().unwrap();
        assert_eq!(s.events, after.len() as u64);
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
        assert_eq!(q.take_lease(&a, now_ms(), far, |_| true).unwrap(), Ok(()));
        assert_eq!(q.take_lease(&b, now_ms(), far, |_| true).unwrap(), Err(1));
        assert_eq!(q.take_lease(&b, now_ms(), far, |_| false).unwrap(), Ok(()));
        assert!(!q.renew_lease("a", far).unwrap());
        q.release_lease("b").unwrap();
        assert_eq!(
            q.take_lease(&a, now_ms(), now_ms() - 1, |_| true).unwrap(),
            Ok(())
        );
        assert_eq!(
            q.take_lease(&b, now_ms(), far, |_| true).unwrap(),
            Ok(()),
            "expired lease is taken over"
        );
    }
}
