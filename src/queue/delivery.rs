//! The flusher's state in the queue: which events are due, backoff, clamping of times
//! read back, delivery and drop counters, and small key-value state.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::{ADD_COUNTER, ADJUST_TOTALS, Queue};
use crate::error::{Error, Result};

/// Why an event left the queue without being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// Evicted, oldest first, past the queue's caps on events or bytes.
    Cap,
    /// Older than the max age.
    Age,
    /// Past the max delivery attempts.
    Attempts,
    /// The endpoint refused it (a 4xx other than 408, 413 and 429).
    Rejected,
    /// Too large for the endpoint, even alone.
    TooLarge,
}

impl DropReason {
    /// Every reason, in the order `status` lists them.
    pub(crate) const ALL: [DropReason; 5] = [
        DropReason::Cap,
        DropReason::Age,
        DropReason::Attempts,
        DropReason::Rejected,
        DropReason::TooLarge,
    ];

    /// The name `status` and the JSON use: `cap`, `age`, `attempts`, `rejected`,
    /// `too_large`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Cap => "cap",
            DropReason::Age => "age",
            DropReason::Attempts => "attempts",
            DropReason::Rejected => "rejected",
            DropReason::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A counter in the queue's `counters` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Events delivered.
    Sent,
    /// Events dropped, by reason.
    Dropped(DropReason),
    /// Events the catalog refused before they were queued (only the count is kept).
    Undeclared,
}

impl Counter {
    /// The row's name: `sent`, or `dropped_<reason>`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Counter::Sent => "sent",
            Counter::Dropped(DropReason::Cap) => "dropped_cap",
            Counter::Dropped(DropReason::Age) => "dropped_age",
            Counter::Dropped(DropReason::Attempts) => "dropped_attempts",
            Counter::Dropped(DropReason::Rejected) => "dropped_rejected",
            Counter::Dropped(DropReason::TooLarge) => "dropped_too_large",
            Counter::Undeclared => "dropped_undeclared",
        }
    }

    /// The counter named `name`, if this version knows it.
    pub(crate) fn parse(name: &str) -> Option<Counter> {
        match name {
            "sent" => return Some(Counter::Sent),
            "dropped_undeclared" => return Some(Counter::Undeclared),
            _ => {}
        }
        DropReason::ALL
            .into_iter()
            .map(Counter::Dropped)
            .find(|c| c.name() == name)
    }
}

impl Queue {
    pub(super) fn state(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT value FROM state WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()
    }

    pub(super) fn state_i64(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        Ok(self.state(key)?.and_then(|v| v.parse().ok()))
    }

    /// Reads a delivery state value.
    pub fn get_state(&self, key: &str) -> Result<Option<String>> {
        self.state(key).map_err(|e| self.err(e))
    }

    /// Adds `n` to `counter`, in a transaction of its own.
    pub(crate) fn count(&self, counter: Counter, n: u64) -> Result<()> {
        self.conn
            .prepare_cached(ADD_COUNTER)
            .and_then(|mut s| s.execute(params![counter.name(), n as i64]))
            .map(|_| ())
            .map_err(|e| self.err(e))
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
    /// `now` is `i64::MAX`: a forced flush), oldest first; with `only` an event name,
    /// only events of that name (a deletion request while telemetry is off).
    pub fn due(&self, now: i64, limit: usize, only: Option<&str>) -> Result<Vec<Pending>> {
        let run = || -> rusqlite::Result<Vec<Pending>> {
            let mut st = self.conn.prepare_cached(
                "SELECT seq, id, created_at, payload, attempts FROM events
                 WHERE next_attempt_at <= ?1 AND (?3 IS NULL OR event = ?3) ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![now, limit as i64, only], |r| {
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
    pub fn remove(&mut self, events: &[Pending], counter: Counter) -> Result<u64> {
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
                        .execute(params![counter.name(), n as i64])?;
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

/// Rows are addressed by (seq, id): the same pair is the same event.
impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.seq, &self.id) == (other.seq, &other.id)
    }
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
