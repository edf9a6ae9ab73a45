//! One flush round: take the lease, clamp times read back, drop what expired, send
//! what is due batch by batch, and record what each answer means.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::plan::{Step, plan_answer, plan_batch};
use super::{FlushEnd, FlushReport, LastFlush, Progress, clear_pending_deletion};
use crate::consent::Consent;
use crate::delivery::{self, MAX_RESPONSE_BYTES, Outcome};
use crate::destination::{Batch, Destination};
use crate::error::{Kind, Result};
use crate::limits::Limits;
use crate::queue::{Counter, DropReason, Pending, Queue};
use crate::settings::Settings;
use crate::spool::{Clock, ConsentSource};
use crate::time::rfc3339_ms;

/// How long a flush waits for the queue's write lock on each statement.
pub(super) const FLUSH_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// No stored backoff is honoured further ahead than this, whatever the caps say.
pub(super) const MAX_BACKOFF_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// State keys beside `not_before`: the cap that applied to it, and why it was set.
pub(super) const NOT_BEFORE_CAP: &str = "not_before_cap";

pub(super) const NOT_BEFORE_WHY: &str = "not_before_why";

/// How far ahead of now a stored backoff may lie: the cap stored with it, or for a
/// backoff stored without one, the larger cap; never more than 24 hours.
pub(super) fn stored_backoff_cap(queue: &Queue, limits: &Limits) -> Result<i64> {
    let fallback = limits.max_backoff.max(limits.retry_after_cap);
    let stored = queue
        .get_state(NOT_BEFORE_CAP)?
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let cap = stored.unwrap_or(fallback).min(MAX_BACKOFF_AHEAD);
    Ok(cap.as_millis() as i64)
}

/// The stored backoff if it is in force at `now`, for deciding without writing
/// whether a flush is due. A time further ahead than its cap was set under a wrong
/// clock: it is not in force, and the flush it lets run pulls it back for good.
pub(crate) fn backoff_in_force(queue: &Queue, limits: &Limits, now: i64) -> Result<Option<i64>> {
    let cap = stored_backoff_cap(queue, limits)?;
    let until = queue
        .get_state("not_before")?
        .and_then(|v| v.parse::<i64>().ok());
    Ok(until.filter(|&t| t > now && t <= now.saturating_add(cap)))
}

/// What became of one request.
pub(super) enum Sent {
    /// The endpoint answered, or failed to: what it means, and in words unless it
    /// was delivered.
    Answer(Outcome, Option<String>),
    /// The flush's own deadline came first: not the endpoint's failure.
    Cut,
}

pub(super) struct Round {
    /// The flush's own connection, used only on the blocking pool (see [`Round::db`]).
    pub(super) queue: Arc<Mutex<Queue>>,
    pub(super) limits: Limits,
    pub(super) url: reqwest::Url,
    /// The wire format and its rules: the only thing the round knows of one.
    pub(super) dest: Arc<dyn Destination>,
    /// The user's extra headers (`--header`), sent with every request.
    pub(super) headers: std::collections::BTreeMap<String, String>,
    pub(super) token: String,
    pub(super) report: FlushReport,
    pub(super) total: u64,
    pub(super) dir: PathBuf,
    pub(super) force: bool,
    pub(super) deadline_len: Duration,
    /// The lease was given back on the normal path; nothing left for `drop`.
    pub(super) released: bool,
    /// The settings file's stamp when consent was last decided, and the decision.
    pub(super) consent_seen: Option<(Option<crate::settings::Stamp>, Consent)>,
    /// Decides consent before each request: the spool's environment, policy and
    /// catalog fingerprint.
    pub(super) consent_source: ConsentSource,
    /// Telemetry was off when the round started: only a deletion request is sent.
    pub(super) only_deletion: bool,
    /// `config.json` marked a deletion request pending when the round started.
    pub(super) pending_deletion: bool,
    /// The spool's clock: backoff, expiry, clamping and lease times.
    pub(super) clock: Clock,
}

/// Runs `f` on the queue on tokio's blocking pool: a statement may wait seconds for
/// another process's write lock, and the caller's executor (possibly a
/// current-thread runtime) must keep running its other tasks meanwhile.
pub(super) async fn on_queue<T: Send + 'static>(
    queue: &Arc<Mutex<Queue>>,
    f: impl FnOnce(&mut Queue) -> Result<T> + Send + 'static,
) -> Result<T> {
    let queue = queue.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&queue)))
        .await
        .map_err(|e| Kind::Runtime(format!("a queue operation failed: {e}")))?
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic mid-statement leaves nothing half done: SQLite is transactional.
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Round {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Only when the flush was abandoned (a host's timeout, a background close).
        // A statement of the abandoned flush may still run on the blocking pool: then
        // the lease is given back on a thread of its own once it ends, never here.
        let token = std::mem::take(&mut self.token);
        if let Ok(q) = self.queue.try_lock() {
            let _ = q.release_lease(&token);
            return;
        }
        let queue = self.queue.clone();
        let _ = std::thread::Builder::new()
            .name("eventspool-release".into())
            .spawn(move || {
                let _ = lock(&queue).release_lease(&token);
            });
    }
}

impl Round {
    /// Now on the spool's clock, unix milliseconds.
    pub(super) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Consent, decided afresh before every request from `config.json` and the
    /// environment, not from the spool's cache: `spool disable` in another process
    /// stops the round before its next request. The file is read again only when its
    /// stamp (mtime, size, inode) changed, which every rewrite does: one `stat` a
    /// request instead of a read and a parse.
    pub(super) fn consent_before_request(&mut self) -> Consent {
        let now = crate::settings::stamp(&Settings::path(&self.dir));
        match &self.consent_seen {
            Some((seen, consent)) if *seen == now && now.is_some() => consent.clone(),
            _ => {
                let (consent, _) = self.consent_source.now(&self.dir);
                self.consent_seen = Some((now, consent.clone()));
                consent
            }
        }
    }

    /// [`on_queue`] with this round's connection.
    pub(super) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Queue) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        on_queue(&self.queue, f).await
    }

    /// Counts what is left and records the report as the last flush.
    pub(super) async fn finish(&mut self) -> Result<FlushReport> {
        let mut report = std::mem::replace(&mut self.report, FlushReport::new(FlushEnd::Drained));
        let finished_at = rfc3339_ms(self.now());
        let pending = self.pending_deletion;
        let (report, delivered_deletion) = self
            .db(move |q| {
                report.remaining = q.stats()?.events;
                let gone = pending && !q.has_deletion_request()?;
                let last = LastFlush {
                    finished_at,
                    dropped_total: report.dropped_total(),
                    report,
                };
                q.set_state(
                    "last_flush",
                    Some(&serde_json::to_string(&last).unwrap_or_default()),
                )?;
                Ok((last.report, gone))
            })
            .await?;
        if delivered_deletion {
            let dir = self.dir.clone();
            let _ = tokio::task::spawn_blocking(move || clear_pending_deletion(&dir)).await;
        }
        Ok(report)
    }

    /// Gives the lease back (the normal end of a flush).
    pub(super) async fn release(&mut self) -> Result<()> {
        let token = self.token.clone();
        self.db(move |q| q.release_lease(&token)).await?;
        self.released = true;
        Ok(())
    }

    pub(super) async fn go(
        &mut self,
        deadline: Instant,
        hold: impl Fn(i64) -> i64,
        progress: Option<&Progress>,
        app: &str,
    ) -> Result<()> {
        let now = self.now();
        let max_age = self.limits.max_age.as_millis() as i64;
        // Times written under a wrong clock are pulled back before anything reads them.
        let max_gap = max_age.max(24 * 3600 * 1000);
        let limits = self.limits.clone();
        let (clamped, not_before, why) = self
            .db(move |q| {
                let cap = stored_backoff_cap(q, &limits)?;
                let clamped = q.clamp_times(now, cap, max_gap)?;
                let until = q
                    .get_state("not_before")?
                    .and_then(|v| v.parse::<i64>().ok());
                Ok((clamped, until, q.get_state(NOT_BEFORE_WHY)?))
            })
            .await?;
        if clamped != Default::default() {
            log::debug!("eventspool: corrected times from a wrong clock: {clamped:?}");
        }
        if let Some(until) = not_before {
            if until > now && !self.force {
                self.report.reason = Some(match why {
                    Some(why) => format!("backing off after {why}"),
                    None => "backing off after an earlier failure".into(),
                });
                self.report.end = FlushEnd::BackingOff {
                    until: rfc3339_ms(until),
                };
                return Ok(());
            }
        }
        self.total = self.db(|q| q.stats()).await?.events;
        let client = client(&self.limits, app)?;
        let batch_size = self.limits.batch_size.max(1) as usize;
        let bytes = self.dest.byte_limits();
        // Renewed once half of it is used, not before every batch: each renewal is a
        // commit of its own.
        let lease_ms = hold(0);
        let mut lease_until = 0;
        loop {
            if Instant::now() >= deadline {
                self.report.end = FlushEnd::Deadline;
                self.report.reason = Some(format!(
                    "reached the {} deadline with events still due",
                    humantime::format_duration(self.deadline_len)
                ));
                return Ok(());
            }
            let now = self.now();
            if now > lease_until - lease_ms / 2 {
                lease_until = hold(now);
                let token = self.token.clone();
                let until = lease_until;
                if !self.db(move |q| q.renew_lease(&token, until)).await? {
                    return Err(Kind::LostLease.into());
                }
            }
            // A forced flush sends what is queued whatever its stored backoff says.
            let due_at = if self.force { i64::MAX } else { self.now() };
            let only = self.only_deletion.then_some(crate::deletion::EVENT);
            let batch = self.db(move |q| q.due(due_at, batch_size, only)).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let dest = self.dest.clone();
            let plan = plan_batch(
                batch,
                self.now(),
                max_age,
                self.limits.max_attempts,
                bytes,
                |p| dest.event_len(p),
            );
            for (reason, events) in plan.drop {
                self.drop_expired(events, reason).await?;
            }
            let batch = plan.send;
            if batch.is_empty() {
                continue;
            }
            // A 413 splits a batch in halves, sent in order; a stack keeps that order.
            let mut stack = vec![batch];
            while let Some(chunk) = stack.pop() {
                // Asked afresh before every request: `spool disable` in another
                // process stops the round before its next request.
                let consent = self.consent_before_request();
                // A round that started off sends its deletion request while the
                // user's choice (not the environment) keeps telemetry off; a round
                // that started on stops at an opt-out, and the next sends the request.
                let allowed = if self.only_deletion {
                    consent.allows_deletion_request()
                } else {
                    consent.enabled
                };
                if !allowed {
                    self.report.end = FlushEnd::Disabled {
                        reason: consent.reason,
                    };
                    return Ok(());
                }
                pause_point("before_request");
                let sent = self.send(&client, &chunk, deadline).await;
                self.report.requests += 1;
                let (outcome, why) = match sent {
                    Sent::Answer(outcome, why) => (outcome, why),
                    Sent::Cut => {
                        // Our deadline, not the endpoint's failure: no attempt counted,
                        // no backoff, nothing dropped.
                        self.report.end = FlushEnd::Deadline;
                        self.report.reason = Some(format!(
                            "the {} deadline cut a request short (not counted as a failed attempt)",
                            humantime::format_duration(self.deadline_len)
                        ));
                        return Ok(());
                    }
                };
                if outcome == Outcome::Delivered {
                    pause_point("after_response");
                }
                match plan_answer(chunk, outcome) {
                    Step::Delivered(chunk) => {
                        // A partial success, say: delivered, with something to tell; never
                        // in place of an earlier batch's reason for a drop.
                        if why.is_some() && self.report.reason.is_none() {
                            self.report.reason = why;
                        }
                        self.report.sent +=
                            self.db(move |q| q.remove(&chunk, Counter::Sent)).await?;
                    }
                    Step::Drop(reason, chunk) => {
                        self.drop_expired(chunk, reason).await?;
                        self.report.reason = why;
                    }
                    Step::Split(first, second) => {
                        // Sent in order: a stack pops the first half first.
                        stack.push(second);
                        stack.push(first);
                    }
                    Step::BackOff(chunk, after) => {
                        let why = why.unwrap_or_else(|| "a retryable failure".into());
                        self.back_off(&chunk, after, &why).await?;
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
    pub(super) async fn back_off(
        &mut self,
        chunk: &[Pending],
        after: Option<Duration>,
        why: &str,
    ) -> Result<()> {
        let attempts = chunk.iter().map(|p| p.attempts).max().unwrap_or(0) + 1;
        // The cap that applies is stored with the backoff: a later read pulls a time
        // set under a fast clock back to it (see `Queue::clamp_times`).
        let cap = match after {
            Some(_) => self.limits.retry_after_cap,
            None => self.limits.max_backoff,
        }
        .min(MAX_BACKOFF_AHEAD);
        let delay = match after {
            Some(d) => d.min(cap),
            None => delivery::backoff(
                attempts,
                self.limits.first_backoff,
                self.limits.max_backoff,
                0.5 + fastrand::f64() / 2.0,
            )
            .min(cap),
        };
        let until = self
            .now()
            .saturating_add(delay.as_millis().min(i64::MAX as u128) as i64);
        // Events whose last allowed attempt this was are dropped now, not kept to wait.
        let max = self.limits.max_attempts;
        let (spent, retry): (Vec<_>, Vec<_>) =
            chunk.iter().cloned().partition(|p| p.attempts + 1 >= max);
        self.drop_expired(spent, DropReason::Attempts).await?;
        let retried = retry.len() as u64;
        let stored_why = why.to_string();
        self.db(move |q| {
            q.defer(&retry, until)?;
            q.set_state("not_before", Some(&until.to_string()))?;
            q.set_state(NOT_BEFORE_CAP, Some(&cap.as_millis().to_string()))?;
            q.set_state(NOT_BEFORE_WHY, Some(&stored_why))
        })
        .await?;
        self.report.reason = Some(why.to_string());
        self.report.retried += retried;
        self.report.end = FlushEnd::BackingOff {
            until: rfc3339_ms(until),
        };
        Ok(())
    }

    pub(super) async fn drop_expired(
        &mut self,
        events: Vec<Pending>,
        reason: DropReason,
    ) -> Result<()> {
        if !events.is_empty() {
            let n = self
                .db(move |q| q.remove(&events, Counter::Dropped(reason)))
                .await?;
            self.report.drop_n(reason, n);
        }
        Ok(())
    }

    pub(super) async fn send(
        &self,
        transport: &delivery::Transport,
        chunk: &[Pending],
        deadline: Instant,
    ) -> Sent {
        // A deletion request keeps its own shape for the native format; the vendor
        // formats get it as an ordinary event (see `deletion::DeletionRequest::as_event`).
        // Only those formats look inside each payload for one.
        let as_event = self.dest.deletion_request_as_event();
        let mapped: Vec<std::borrow::Cow<'_, str>> = chunk
            .iter()
            .map(|p| {
                match as_event
                    .then(|| crate::deletion::DeletionRequest::parse(&p.payload))
                    .flatten()
                {
                    Some(r) => r.as_event().into(),
                    None => p.payload.as_str().into(),
                }
            })
            .collect();
        let payloads: Vec<&str> = mapped.iter().map(|p| p.as_ref()).collect();
        let sent_at = self.now();
        let encoded = self.dest.encode(&Batch {
            payloads: &payloads,
            sent_at: &rfc3339_ms(sent_at),
            retry: chunk.iter().map(|p| p.attempts).max().unwrap_or(0),
        });
        // `Retry-After` as an HTTP date is read against the spool's clock.
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(sent_at.max(0) as u64);
        let mut req = transport.client.post(self.dest.url(&self.url));
        // The format's own headers win over an extra one of the same name.
        for (name, value) in &self.headers {
            if !encoded
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                req = req.header(name, value);
            }
        }
        for (name, value) in encoded.headers {
            req = req.header(name, value);
        }
        let bytes = encoded.body;
        let events = chunk.len();
        let exchange = async {
            let resp = req.body(bytes).send().await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut note = None;
            if (200..300).contains(&status) {
                if self.dest.reads_reply() {
                    note = self.dest.reply_note(&read_capped(resp).await);
                } else {
                    drain(resp).await;
                }
            }
            let outcome = self.dest.classify(status, retry_after.as_deref(), now);
            let why = if outcome == Outcome::Delivered {
                note
            } else {
                Some(self.dest.describe(status, outcome, events))
            };
            Ok::<_, reqwest::Error>(Sent::Answer(outcome, why))
        };
        // The endpoint's own slowness is bounded by the request timeout inside the
        // client (a failed attempt); this outer bound is the flush's deadline (not one).
        match tokio::time::timeout_at(
            deadline.max(Instant::now() + Duration::from_millis(1)),
            exchange,
        )
        .await
        {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => {
                log::debug!("eventspool: delivery failed: {e}");
                let why = transport.describe(&e);
                Sent::Answer(Outcome::Retry(None), Some(why))
            }
            Err(_) => Sent::Cut,
        }
    }
}

/// A place where crash tests stop the flusher to kill it at an exact point:
/// `EVENTSPOOL_TEST_PAUSE=<name>` holds the process there for a minute. Compiled
/// into debug builds only; a no-op in release builds.
pub(super) fn pause_point(name: &str) {
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
pub(super) async fn drain(mut resp: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        if read > MAX_RESPONSE_BYTES {
            break;
        }
    }
}

/// Reads a response body up to the cap, for a destination whose replies say
/// something (an OTLP partial success).
pub(super) async fn read_capped(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    body
}

pub(super) fn client(limits: &Limits, app: &str) -> Result<delivery::Transport> {
    delivery::Transport::new(
        limits.connect_timeout,
        limits.request_timeout,
        format!("eventspool/{} ({app})", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| Kind::Runtime(e.to_string()).into())
}
