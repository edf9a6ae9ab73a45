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

use serde::Serialize;
use tokio::time::Instant;

use crate::consent::{Consent, Persisted};
use crate::delivery;
use crate::error::{Error, Kind, Result};
use crate::queue::Queue;
use crate::queue::lease;
use crate::settings::Settings;
use crate::spool::Spool;
use crate::time::{now_ms, rfc3339_ms};

mod background;
mod detached;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Events delivered (2xx).
    pub sent: u64,
    /// Events dropped, by reason: `age`, `attempts`, `rejected`, `too_large`.
    pub dropped: BTreeMap<String, u64>,
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

    fn drop_n(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.dropped.entry(reason.to_string()).or_default() += n;
        }
    }
}

impl Spool {
    /// Drains the queue to the endpoint. Consent is checked first: when telemetry is
    /// off this returns at once without a connection or DNS lookup. An endpoint that
    /// is missing or not allowed is an error before any connection.
    pub async fn flush(&self, opts: FlushOptions) -> Result<FlushReport> {
        let consent = match self.dir() {
            Some(dir) => consent_now(self.app(), dir),
            None => self.consent(),
        };
        if !consent.enabled {
            return Ok(FlushReport::new(FlushEnd::Disabled {
                reason: consent.reason,
            }));
        }
        let url = match opts.endpoint.clone().or_else(|| self.endpoint()) {
            Some(u) => delivery::check_endpoint(&u)?,
            None => return Err(Kind::NoEndpoint.into()),
        };
        let dir = self
            .dir()
            .ok_or_else(|| Error::from(Kind::NoHomeDir))?
            .to_path_buf();
        let Some(mut queue) = Queue::open_existing(&dir, FLUSH_LOCK_TIMEOUT)? else {
            return Ok(FlushReport::new(FlushEnd::Drained));
        };
        let limits = self.limits();
        let started = Instant::now();
        let deadline = started + opts.deadline;
        let me = lease::me();
        let lease_ms = (limits.request_timeout.as_millis() as i64) * 2 + 10_000;
        let hold = move |now: i64| now + lease_ms;
        if let Err(pid) = queue.take_lease(&me, hold(now_ms()), lease::alive)? {
            let mut r = FlushReport::new(FlushEnd::Busy { pid });
            r.remaining = queue.stats()?.events;
            return Ok(r);
        }
        let mut run = Round {
            queue,
            limits,
            url,
            token: me.token,
            report: FlushReport::new(FlushEnd::Drained),
            total: 0,
            app: self.app().to_string(),
            dir,
            force: opts.force,
            deadline_len: opts.deadline,
        };
        // The lease is given back when `run` drops, also if this future is abandoned.
        run.go(deadline, hold, opts.progress.as_ref(), &self.inner.app)
            .await?;
        run.report.remaining = run.queue.stats()?.events;
        let mut summary = serde_json::to_value(&run.report).unwrap_or_default();
        if let Some(obj) = summary.as_object_mut() {
            obj.insert("finished_at".into(), rfc3339_ms(now_ms()).into());
            obj.insert("dropped_total".into(), run.report.dropped_total().into());
        }
        run.queue
            .set_state("last_flush", Some(&summary.to_string()))?;
        Ok(std::mem::replace(
            &mut run.report,
            FlushReport::new(FlushEnd::Drained),
        ))
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

/// Consent decided from a fresh read of `config.json` and the environment, not from
/// the spool's cached settings (up to 250 ms old): the flusher asks before every
/// request, so that once `spool disable` has returned no request starts. An
/// unreadable file counts as "off", as everywhere else.
fn consent_now(app: &str, dir: &Path) -> Consent {
    let persisted = match Settings::load_checked(dir) {
        Ok(settings) => settings
            .and_then(|s| s.telemetry)
            .map_or(Persisted::Undecided, Persisted::Chosen),
        Err(e) => Persisted::Unreadable(e.to_string()),
    };
    Consent::from_env_with(app, &persisted)
}
