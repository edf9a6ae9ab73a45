//! Flushing: drains the queue to the endpoint in batches under a lease, with retry,
//! backoff, expiry and an overall deadline. No SQLite transaction is open while a
//! request is in flight.
//!
//! This file has the options and the report; [`round`] is one flush round;
//! [`background`] flushes on a thread of a long-running host; [`detached`] hands the
//! flush to a child process so a short-lived host can exit at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Kind, Result};
use crate::queue::lease;
use crate::queue::{DropReason, Queue};
use crate::settings::Settings;
use crate::spool::Spool;

mod background;
mod detached;
mod plan;
mod round;

pub use background::BackgroundFlusher;
pub use detached::{DEFAULT_DETACHED_LIFETIME, Detached, Skipped, detached_flush_hook};
pub(crate) use round::backoff_in_force;
use round::{FLUSH_LOCK_TIMEOUT, Round};

/// Called with (events handled so far, events queued when the flush started).
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How to run one flush.
#[derive(Clone)]
pub struct FlushOptions {
    /// Endpoint for this flush only; otherwise [`Spool::endpoint`].
    pub endpoint: Option<String>,
    /// A whole destination for this flush only, in place of [`Spool::destination`]
    /// and the environment's overrides ([`FlushOptions::endpoint`] still applies).
    pub destination: Option<crate::DestinationConfig>,
    /// The whole flush stops by this long after it starts (default 60 s).
    pub deadline: Duration,
    /// Told about progress after each request.
    pub progress: Option<Progress>,
    /// Send now even while a stored backoff says to wait (`spool flush --force`). The
    /// lease is still taken: a forced flush never runs beside another flusher.
    pub force: bool,
}

impl Default for FlushOptions {
    fn default() -> Self {
        FlushOptions {
            endpoint: None,
            destination: None,
            deadline: Duration::from_secs(60),
            progress: None,
            force: false,
        }
    }
}

impl FlushOptions {
    /// Options with this overall deadline.
    pub fn with_deadline(deadline: Duration) -> Self {
        FlushOptions {
            deadline,
            ..Self::default()
        }
    }
}

/// Why a flush ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FlushEnd {
    /// Nothing due is left.
    Drained,
    /// Telemetry is off; nothing was sent and nothing touched.
    Disabled {
        /// The rule that decided.
        reason: String,
    },
    /// Another live flusher holds the lease.
    Busy {
        /// The holder's pid.
        pid: u32,
    },
    /// The endpoint asked for a pause, or failed; the round stopped.
    BackingOff {
        /// No delivery before this time, RFC 3339.
        until: String,
    },
    /// The overall deadline was reached with events still due.
    Deadline,
}

/// What one flush did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FlushReport {
    /// Events delivered (2xx).
    pub sent: u64,
    /// Events dropped, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Events whose batch failed and will be retried.
    pub retried: u64,
    /// Events left in the queue.
    pub remaining: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Why the flush ended.
    pub end: FlushEnd,
    /// What the endpoint answered or what went wrong, in a few words, when the round
    /// stopped early or dropped a batch: `HTTP 503`, `HTTP 429 (Retry-After 30s)`,
    /// `connection refused`, `timed out after 10s`, `DNS: …`, `HTTP 400: 3 events
    /// rejected`. `None` when nothing went wrong.
    pub reason: Option<String>,
}

/// The last flush, as the queue keeps it for `spool status` (`last_flush`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastFlush {
    /// When it finished, RFC 3339.
    pub finished_at: String,
    /// Events dropped, all reasons.
    pub dropped_total: u64,
    /// What it did.
    #[serde(flatten)]
    pub report: FlushReport,
}

impl FlushReport {
    fn new(end: FlushEnd) -> Self {
        FlushReport {
            sent: 0,
            dropped: BTreeMap::new(),
            retried: 0,
            remaining: 0,
            requests: 0,
            end,
            reason: None,
        }
    }

    /// Total events dropped, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    fn drop_n(&mut self, reason: DropReason, n: u64) {
        if n > 0 {
            *self.dropped.entry(reason).or_default() += n;
        }
    }
}

impl Spool {
    /// Drains the queue to the endpoint. Consent is checked first: when telemetry is
    /// off this returns at once without a connection or DNS lookup. An endpoint that
    /// is missing or not allowed is an error before any connection.
    pub async fn flush(&self, opts: FlushOptions) -> Result<FlushReport> {
        // Everything before the first request may wait: the spool's state lock (held
        // by a `track` waiting for the write lock), opening the queue, the lease. All
        // of it runs on the blocking pool, so the caller's executor never does.
        let deadline = Instant::now() + opts.deadline;
        let spool = self.clone();
        let over = crate::destination::Overrides {
            endpoint: opts.endpoint.clone(),
            ..Default::default()
        };
        let explicit = opts.destination.clone();
        let started = tokio::task::spawn_blocking(move || spool.start_round(explicit, &over))
            .await
            .map_err(|e| Kind::Runtime(format!("the flush could not start: {e}")))??;
        let mut run = match started {
            Started::Done(report) => return Ok(report),
            Started::Round(run) => run,
        };
        run.force = opts.force;
        run.deadline_len = opts.deadline;
        let lease_ms = lease_ms(&run.limits);
        let hold = move |now: i64| now + lease_ms;
        // The lease is given back on the blocking pool whatever the round's result; if
        // this future is abandoned, `run`'s drop gives it back instead.
        let went = run
            .go(deadline, hold, opts.progress.as_ref(), &self.inner.app)
            .await;
        let report = match went {
            Ok(()) => run.finish().await,
            Err(e) => Err(e),
        };
        let released = run.release().await;
        let report = report?;
        released?;
        Ok(report)
    }

    /// The part of a flush before its first request, on a blocking thread: consent,
    /// endpoint, the queue and the lease.
    fn start_round(
        &self,
        explicit: Option<crate::DestinationConfig>,
        over: &crate::destination::Overrides,
    ) -> Result<Started> {
        let source = self.inner.consent_source();
        let (consent, settings) = match self.dir() {
            Some(dir) => source.now(dir),
            None => (self.consent(), None),
        };
        let pending_deletion = settings
            .as_ref()
            .is_some_and(|s| s.deletion_request_pending);
        // Off: nothing is sent, nothing opened, no lookup made; except a deletion
        // request the user's own opt-out queued, when no environment opt-out holds.
        let only_deletion = !consent.enabled;
        let deletion_may_go = pending_deletion && consent.allows_deletion_request();
        if !(consent.enabled || deletion_may_go) {
            return Ok(Started::Done(FlushReport::new(FlushEnd::Disabled {
                reason: consent.reason,
            })));
        }
        let Some(target) = self.target(explicit, over)? else {
            if only_deletion {
                // Off, and nowhere to send the request: that is no error of the user's.
                return Ok(Started::Done(FlushReport::new(FlushEnd::Disabled {
                    reason: consent.reason,
                })));
            }
            return Err(Kind::NoEndpoint.into());
        };
        let url = target.url()?;
        let dir = self
            .dir()
            .ok_or_else(|| Error::from(Kind::NoHomeDir))?
            .to_path_buf();
        let Some(mut queue) = Queue::open_existing(&dir, FLUSH_LOCK_TIMEOUT)? else {
            if pending_deletion {
                clear_pending_deletion(&dir);
            }
            return Ok(Started::Done(FlushReport::new(FlushEnd::Drained)));
        };
        let limits = self.limits();
        let me = lease::me();
        let now = self.inner.now();
        if let Err(pid) = queue.take_lease(&me, now, now + lease_ms(&limits), lease::alive)? {
            let mut r = FlushReport::new(FlushEnd::Busy { pid });
            r.remaining = queue.stats()?.events;
            return Ok(Started::Done(r));
        }
        let dest = crate::destination::build(&target, &limits);
        Ok(Started::Round(Box::new(Round {
            queue: Arc::new(std::sync::Mutex::new(queue)),
            limits,
            url,
            dest,
            headers: target.headers,
            token: me.token,
            report: FlushReport::new(FlushEnd::Drained),
            total: 0,
            dir,
            force: false,
            deadline_len: Duration::ZERO,
            released: false,
            consent_seen: None,
            consent_source: source,
            only_deletion,
            pending_deletion,
            clock: self.inner.clock(),
        })))
    }

    /// [`Spool::flush`] for code without an async runtime: runs on its own thread and
    /// runtime, so it is safe to call from anywhere, including inside another runtime.
    pub fn flush_blocking(&self, opts: FlushOptions) -> Result<FlushReport> {
        let spool = self.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::from(Kind::Runtime(e.to_string())))?;
                let report = rt.block_on(spool.flush(opts));
                // Dropping a runtime waits for its blocking threads; nothing of a
                // finished flush may keep the caller past its deadline.
                rt.shutdown_background();
                report
            })
            .join()
            .unwrap_or_else(|_| Err(Kind::Runtime("the flush thread panicked".into()).into()))
        })
    }
}

/// How a flush starts: done already (off, nothing queued, busy), or a round to run.
enum Started {
    Done(FlushReport),
    Round(Box<Round>),
}

/// How long a flush's lease lasts past each renewal: two request timeouts and a margin.
fn lease_ms(limits: &crate::limits::Limits) -> i64 {
    (limits.request_timeout.as_millis() as i64) * 2 + 10_000
}

/// Clears `config.json`'s mark of a pending deletion request once none is queued
/// (it was delivered or expired), so an opted-out spool stops looking at the queue.
/// The queue is looked at again under the settings lock: an opt-out queueing a new
/// request marks it again under that lock once it is queued, so a request is never
/// left queued unmarked.
fn clear_pending_deletion(dir: &Path) {
    let cleared = Settings::update(dir, |s| {
        let queued = match Queue::open_existing(dir, FLUSH_LOCK_TIMEOUT) {
            Ok(Some(q)) => q.has_deletion_request().unwrap_or(true),
            Ok(None) => false,
            Err(_) => true,
        };
        if !queued {
            s.deletion_request_pending = false;
        }
    });
    if let Err(e) = cleared {
        log::debug!("eventspool: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_flush_record_reads_what_earlier_versions_wrote() {
        // As the previous version stored it: the report's JSON plus two fields.
        let old = r#"{"sent":3,"dropped":{"rejected":2,"age":1},"retried":0,"remaining":4,
            "requests":2,"end":{"kind":"backing_off","until":"2026-12-01T10:00:00.000Z"},
            "reason":"HTTP 503","finished_at":"2026-12-01T09:59:00.000Z","dropped_total":3}"#;
        let last: LastFlush = serde_json::from_str(old).unwrap();
        assert_eq!(last.report.sent, 3);
        assert_eq!(last.report.dropped[&DropReason::Rejected], 2);
        assert_eq!(last.report.dropped[&DropReason::Age], 1);
        assert_eq!(last.report.reason.as_deref(), Some("HTTP 503"));
        assert!(matches!(last.report.end, FlushEnd::BackingOff { .. }));
        let again: LastFlush =
            serde_json::from_str(&serde_json::to_string(&last).unwrap()).unwrap();
        assert_eq!(again, last);
    }
}
