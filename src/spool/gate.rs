//! Back-pressure on recording: when `track` refuses an event at once instead of trying
//! to write it. Pure decisions on the time it is given, so every rule has a unit test.
//!
//! Two brakes: after a storage failure (full disk, read-only directory) recording
//! pauses for a second, because each attempt would cost the host milliseconds; and
//! while another connection pins the WAL past its limit, events are refused until a
//! truncation (tried at most once a second) brings it back under.

use std::time::{Duration, Instant};

use crate::error::{Error, Kind};

/// How long recording pauses after the queue could not be written.
pub(crate) const RECORDING_PAUSE: Duration = Duration::from_secs(1);

/// Events recorded between looks at the WAL's size (one `stat`).
pub(crate) const WAL_CHECK_EVERY: u32 = 64;

/// How often a full WAL may be checkpointed and truncated by this connection.
pub(crate) const TRUNCATE_EVERY: Duration = Duration::from_secs(1);

/// The state of both brakes for one spool.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Recording is refused until then, after a storage failure.
    paused_until: Option<Instant>,
    /// The WAL is past its hard limit: events are refused until it shrinks.
    wal_full: bool,
    /// When a full WAL was last truncated by this connection.
    last_truncate: Option<Instant>,
    /// Events recorded since the WAL's size was last looked at.
    since_wal_check: u32,
}

impl Gate {
    /// `Err(Paused)` while a pause armed by a storage failure lasts.
    pub(crate) fn admit(&self, now: Instant) -> Result<(), Kind> {
        match self.paused_until {
            Some(until) if now < until => Err(Kind::Paused),
            _ => Ok(()),
        }
    }

    /// Arms the pause if and only if `outcome` is a storage failure. Bad input, a busy
    /// lock and the refusals that follow a failure (the pause itself, a full WAL) do
    /// not, or a host tracking more than once a second would never record again.
    pub(crate) fn after<T>(&mut self, now: Instant, outcome: &Result<T, Error>) {
        if let Err(e) = outcome {
            if e.is_storage_failure() {
                self.paused_until = Some(now + RECORDING_PAUSE);
            }
        }
    }

    /// Returns true if and only if the WAL's size should be looked at before this
    /// event: every [`WAL_CHECK_EVERY`] events, and on every event while it is full.
    /// Looking starts the count again.
    pub(crate) fn wal_check_due(&mut self) -> bool {
        let due = self.wal_full || self.since_wal_check >= WAL_CHECK_EVERY;
        if due {
            self.since_wal_check = 0;
        }
        due
    }

    /// Returns true if and only if a WAL over its limit may be truncated now: at most
    /// once per [`TRUNCATE_EVERY`], since truncating waits for other connections.
    pub(crate) fn may_truncate(&self, now: Instant) -> bool {
        self.last_truncate
            .is_none_or(|t| now.duration_since(t) >= TRUNCATE_EVERY)
    }

    /// Records that a truncation was tried at `now`.
    pub(crate) fn truncated(&mut self, now: Instant) {
        self.last_truncate = Some(now);
    }

    /// Records what the WAL check found; `Err(WalFull)` if it is still over `limit`.
    pub(crate) fn wal_checked(&mut self, over: bool, limit: u64) -> Result<(), Kind> {
        self.wal_full = over;
        if over {
            return Err(Kind::WalFull { limit });
        }
        Ok(())
    }

    /// Counts `n` events toward the next WAL check.
    pub(crate) fn recorded(&mut self, n: usize) {
        self.since_wal_check = self
            .since_wal_check
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_failure() -> Result<(), Error> {
        Err(Error::io("/q", std::io::Error::other("disk full")))
    }

    #[test]
    fn only_a_storage_failure_arms_the_pause_and_it_ends() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        assert!(g.admit(t0).is_ok());
        // Refusals are not storage failures: no pause.
        for refusal in [Kind::Paused, Kind::WalFull { limit: 1 }] {
            g.after(t0, &Err::<(), _>(Error::from(refusal)));
            assert!(g.admit(t0).is_ok());
        }
        g.after(t0, &io_failure());
        assert!(matches!(g.admit(t0), Err(Kind::Paused)));
        assert!(matches!(
            g.admit(t0 + RECORDING_PAUSE / 2),
            Err(Kind::Paused)
        ));
        // The pause's own refusal, every 300 ms, never re-arms it.
        for step in 1..=3 {
            let now = t0 + Duration::from_millis(300 * step);
            g.after(now, &Err::<(), _>(Error::from(Kind::Paused)));
        }
        assert!(g.admit(t0 + RECORDING_PAUSE).is_ok());
    }

    #[test]
    fn the_wal_is_looked_at_every_so_many_events_and_on_each_while_full() {
        let mut g = Gate::default();
        assert!(!g.wal_check_due());
        g.recorded(WAL_CHECK_EVERY as usize - 1);
        assert!(!g.wal_check_due());
        g.recorded(1);
        assert!(g.wal_check_due());
        assert!(!g.wal_check_due(), "looking starts the count again");
        assert!(matches!(
            g.wal_checked(true, 8),
            Err(Kind::WalFull { limit: 8 })
        ));
        assert!(g.wal_check_due());
        assert!(g.wal_check_due(), "every event while full");
        assert!(g.wal_checked(false, 8).is_ok());
        assert!(!g.wal_check_due());
    }

    #[test]
    fn a_full_wal_is_truncated_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        assert!(g.may_truncate(t0));
        g.truncated(t0);
        assert!(!g.may_truncate(t0 + Duration::from_millis(999)));
        assert!(g.may_truncate(t0 + TRUNCATE_EVERY));
    }
}
