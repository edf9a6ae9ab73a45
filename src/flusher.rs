//! The flusher: drains the queue to the endpoint in batches under a lease, with
//! retry, backoff, expiry and an overall deadline. No SQLite transaction is open
//! while a request is in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::delivery::{self, MAX_RESPONSE_BYTES, Outcome};
use crate::error::{Error, Kind, Result};
use crate::lease;
use crate::limits::Limits;
use crate::queue::{Pending, Queue};
use crate::spool::Spool;
use crate::time::{now_ms, rfc3339_ms};

/// How long a flush waits for the queue's write lock on each statement.
const FLUSH_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

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
}

impl Default for FlushOptions {
    fn default() -> Self {
        FlushOptions {
            endpoint: None,
            deadline: Duration::from_secs(60),
            progress: None,
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
        let consent = self.consent();
        if !consent.enabled {
            return Ok(FlushReport::new(FlushEnd::Disabled {
                reason: consent.reason,
            }));
        }
        let url = match opts.endpoint.clone().or_else(|| self.endpoint()) {
            Some(u) => delivery::check_endpoint(&u)?,
            None => return Err(Kind::NoEndpoint.into()),
        };
        let dir = self.dir().ok_or_else(|| Error::from(Kind::NoHomeDir))?;
        let Some(mut queue) = Queue::open_existing(dir, FLUSH_LOCK_TIMEOUT)? else {
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
                rt.block_on(spool.flush(opts))
            })
            .join()
            .unwrap_or_else(|_| Err(Kind::Runtime("the flush thread panicked".into()).into()))
        })
    }
}

struct Round {
    queue: Queue,
    limits: Limits,
    url: reqwest::Url,
    token: String,
    report: FlushReport,
    total: u64,
}

impl Drop for Round {
    fn drop(&mut self) {
        let _ = self.queue.release_lease(&self.token);
    }
}

impl Round {
    async fn go(
        &mut self,
        deadline: Instant,
        hold: impl Fn(i64) -> i64,
        progress: Option<&Progress>,
        app: &str,
    ) -> Result<()> {
        let now = now_ms();
        let max_age = self.limits.max_age.as_millis() as i64;
        if let Some(until) = self
            .queue
            .get_state("not_before")?
            .and_then(|v| v.parse::<i64>().ok())
        {
            if until > now {
                self.report.end = FlushEnd::BackingOff {
                    until: rfc3339_ms(until),
                };
                return Ok(());
            }
        }
        self.total = self.queue.stats()?.events;
        let client = client(&self.limits, app)?;
        let batch_size = self.limits.batch_size.max(1) as usize;
        let bare = self.limits.batch_size == 1;
        // Renewed once half of it is used, not before every batch: each renewal is a
        // commit of its own.
        let lease_ms = hold(0);
        let mut lease_until = 0;
        loop {
            if Instant::now() >= deadline {
                self.report.end = FlushEnd::Deadline;
                return Ok(());
            }
            let now = now_ms();
            if now > lease_until - lease_ms / 2 {
                lease_until = hold(now);
                if !self.queue.renew_lease(&self.token, lease_until)? {
                    return Err(Kind::LostLease.into());
                }
            }
            let batch = self.queue.due(now_ms(), batch_size)?;
            if batch.is_empty() {
                return Ok(());
            }
            // Expiry happens here, as events reach the front of the queue, so a flush
            // never scans the whole queue for them.
            let cutoff = now_ms().saturating_sub(max_age);
            let max_attempts = self.limits.max_attempts;
            let (old, batch): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|p| p.created_at < cutoff);
            let (spent, batch): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|p| p.attempts >= max_attempts);
            self.drop_expired(&old, "age")?;
            self.drop_expired(&spent, "attempts")?;
            if batch.is_empty() {
                continue;
            }
            // A 413 splits a batch in halves, sent in order; a stack keeps that order.
            let mut stack = vec![batch];
            while let Some(chunk) = stack.pop() {
                pause_point("before_request");
                let outcome = self.send(&client, &chunk, bare, deadline).await;
                self.report.requests += 1;
                if outcome == Outcome::Delivered {
                    pause_point("after_response");
                }
                match outcome {
                    Outcome::Delivered => self.report.sent += self.queue.remove(&chunk, "sent")?,
                    Outcome::Rejected => {
                        let n = self.queue.remove(&chunk, "dropped_rejected")?;
                        self.report.drop_n("rejected", n);
                    }
                    Outcome::TooLarge if chunk.len() == 1 => {
                        let n = self.queue.remove(&chunk, "dropped_too_large")?;
                        self.report.drop_n("too_large", n);
                    }
                    Outcome::TooLarge => {
                        let mut first = chunk;
                        let second = first.split_off(first.len() / 2);
                        stack.push(second);
                        stack.push(first);
                    }
                    Outcome::Retry(after) => {
                        self.back_off(&chunk, after)?;
                        return Ok(());
                    }
                }
                if let Some(p) = progress {
                    p(self.report.sent + self.report.dropped_total(), self.total);
                }
            }
        }
    }

    /// Records the failure on the batch and pauses the whole queue: a failing
    /// endpoint is not hammered, by this process or the next one.
    fn back_off(&mut self, chunk: &[Pending], after: Option<Duration>) -> Result<()> {
        let attempts = chunk.iter().map(|p| p.attempts).max().unwrap_or(0) + 1;
        let delay = match after {
            Some(d) => d.min(self.limits.retry_after_cap),
            None => delivery::backoff(
                attempts,
                self.limits.first_backoff,
                self.limits.max_backoff,
                0.5 + fastrand::f64() / 2.0,
            ),
        };
        let until = now_ms().saturating_add(delay.as_millis().min(i64::MAX as u128) as i64);
        // Events whose last allowed attempt this was are dropped now, not kept to wait.
        let max = self.limits.max_attempts;
        let (spent, retry): (Vec<_>, Vec<_>) =
            chunk.iter().cloned().partition(|p| p.attempts + 1 >= max);
        self.drop_expired(&spent, "attempts")?;
        let chunk = retry.as_slice();
        self.queue.defer(chunk, until)?;
        self.queue
            .set_state("not_before", Some(&until.to_string()))?;
        self.report.retried += chunk.len() as u64;
        self.report.end = FlushEnd::BackingOff {
            until: rfc3339_ms(until),
        };
        Ok(())
    }

    fn drop_expired(&mut self, events: &[Pending], reason: &str) -> Result<()> {
        if !events.is_empty() {
            let n = self.queue.remove(events, &format!("dropped_{reason}"))?;
            self.report.drop_n(reason, n);
        }
        Ok(())
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        chunk: &[Pending],
        bare: bool,
        deadline: Instant,
    ) -> Outcome {
        let payloads: Vec<&str> = chunk.iter().map(|p| p.payload.as_str()).collect();
        let body = delivery::body(&payloads, bare, &rfc3339_ms(now_ms()));
        let mut req = client
            .post(self.url.clone())
            .header("content-type", "application/json");
        let bytes = if body.len() >= delivery::GZIP_THRESHOLD {
            match delivery::gzip(body.as_bytes()) {
                Ok(gz) => {
                    req = req.header("content-encoding", "gzip");
                    gz
                }
                Err(_) => body.into_bytes(),
            }
        } else {
            body.into_bytes()
        };
        let exchange = async {
            let resp = req.body(bytes).send().await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if (200..300).contains(&status) {
                drain(resp).await;
            }
            Ok::<_, reqwest::Error>(delivery::classify(
                status,
                retry_after.as_deref(),
                SystemTime::now(),
            ))
        };
        match tokio::time::timeout_at(
            deadline.max(Instant::now() + Duration::from_millis(1)),
            exchange,
        )
        .await
        {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                log::debug!("eventspool: delivery failed: {e}");
                Outcome::Retry(None)
            }
            Err(_) => Outcome::Retry(None),
        }
    }
}

/// A place where crash tests stop the flusher to kill it at an exact point:
/// `EVENTSPOOL_TEST_PAUSE=<name>` holds the process there for a minute. Compiled
/// into debug builds only; a no-op in release builds.
fn pause_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("EVENTSPOOL_TEST_PAUSE").is_ok_and(|v| v == name) {
        eprintln!("eventspool: paused at {name}");
        std::thread::sleep(Duration::from_secs(60));
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Reads a response body up to the cap so the connection can be reused, and no
/// further: a hostile or broken endpoint cannot make us buffer megabytes.
async fn drain(mut resp: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        if read > MAX_RESPONSE_BYTES {
            break;
        }
    }
}

fn client(limits: &Limits, app: &str) -> Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same_scheme = attempt
            .previous()
            .first()
            .is_none_or(|first| first.scheme() == attempt.url().scheme());
        if !same_scheme || attempt.previous().len() >= 5 {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.request_timeout)
        .redirect(policy)
        .user_agent(format!("eventspool/{} ({app})", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Kind::Runtime(e.to_string()).into())
}
