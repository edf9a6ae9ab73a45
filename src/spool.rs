//! The host-facing handle: build a [`Spool`] for an app, record events, inspect and
//! purge the queue, read and change consent.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::app::{default_dir, host_var, validate_app_name};
use crate::consent::{Consent, Persisted, debug_mode_with};
use crate::context::Context;
use crate::error::{Kind, Result};
use crate::event::{Event, check_shape, drop_flat, validate_name};
use crate::gate::Gate;
use crate::limits::Limits;
use crate::queue::{Enqueued, NewEvent, Queue, QueueStats, QueuedEvent, ensure_dir};
use crate::settings::Settings;
use crate::time::{now_ms, rfc3339_ms};

/// How long recording waits for another process's write before giving up on the
/// event: long enough to ride out a flusher's short transactions, short enough that
/// a host never notices.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// Commits on one recording connection between checkpoint requests (about 500 KiB
/// of WAL with small events).
const CHECKPOINT_EVERY: u32 = 256;

/// The most WAL a recording connection lets pile up: twice the queue's byte cap,
/// and at least 8 MiB.
fn wal_limit(limits: &Limits) -> u64 {
    limits.max_bytes.saturating_mul(2).max(8 << 20)
}

/// How often a long-running host looks at `config.json` for a changed choice. Between
/// looks, a commit still checks the file's stamp under the queue's write lock, so an
/// event recorded after `disable` returned is never kept.
const SETTINGS_RECHECK: Duration = Duration::from_millis(250);

/// How long a purge (`clear`, `disable`) waits for other connections to let the WAL
/// be truncated. A person is waiting, but no connection holds a read for long.
const PURGE_WAIT: Duration = Duration::from_secs(5);

/// How long inspecting and purging wait for another process's write lock.
const PURGE_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Whose environment a spool reads: a library host is never moved or redirected by
/// the `SPOOL_*` variables, which configure the `spool` command only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A library host: `<APP>_TELEMETRY_DIR` and `<APP>_TELEMETRY_ENDPOINT`.
    Host,
    /// The `spool` command: `--dir`/`SPOOL_DIR` and `SPOOL_ENDPOINT` first, then the
    /// app's own variables, so `spool --app x` acts where and as host `x` does. Also
    /// the detached child's: exactly the directory its ticket names.
    Cli,
}

/// What [`Spool::try_track`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Queued under this id.
    Queued(String),
    /// Telemetry is off; nothing was written anywhere.
    Disabled,
    /// Debug mode: printed to stderr, not queued.
    Printed,
}

/// Builds sample events for [`Spool::schema`].
type Samples = Arc<dyn Fn() -> Vec<Event> + Send + Sync>;

/// The wall clock a spool reads, in unix milliseconds; see [`SpoolBuilder::clock`].
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The environment a spool reads; see [`SpoolBuilder::env`].
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds a [`Spool`]; see [`Spool::builder`].
#[derive(Clone)]
#[must_use]
pub struct SpoolBuilder {
    samples: Option<Samples>,
    app: String,
    dir: Option<PathBuf>,
    tool: Option<String>,
    endpoint: Option<String>,
    limits: Option<Limits>,
    lock_timeout: Duration,
    scope: Scope,
    clock: Clock,
    env: EnvLookup,
}

impl SpoolBuilder {
    /// The clock recording stamps events with and flushing reads for backoff, expiry,
    /// clamping and lease times (default: the system clock). For tests: a fake clock
    /// lets backoff and expiry be exercised without sleeping. Deadlines and timeouts
    /// still run on real time.
    #[doc(hidden)]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Where the spool looks up environment variables (default: the process
    /// environment): consent, debug mode, the directory and endpoint variables, the
    /// limit overrides. For tests that must not touch the process environment.
    #[doc(hidden)]
    pub fn env(mut self, env: EnvLookup) -> Self {
        self.env = env;
        self
    }

    /// Keeps the queue and settings in `dir` instead of the app's config directory.
    /// The user's `<APP>_TELEMETRY_DIR` still overrides it.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Names the host tool and its version, sent as `context.tool` = `name@version`.
    pub fn tool(mut self, name: &str, version: &str) -> Self {
        self.tool = Some(format!("{name}@{version}"));
        self
    }

    /// The collection endpoint; persisted so `spool flush` by hand uses it too.
    /// `<APP>_TELEMETRY_ENDPOINT` overrides it.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The limits; persisted beside the queue. Environment variables override them.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Tells [`Spool::schema`] what this app sends: `samples` returns one event of each
    /// kind, built by the same functions that build the real ones, with made-up values.
    pub fn describe(mut self, samples: impl Fn() -> Vec<Event> + Send + Sync + 'static) -> Self {
        self.samples = Some(Arc::new(samples));
        self
    }

    /// How long recording may wait for the queue's write lock (default 200 ms).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The `spool` command's spool: its directory (from `--dir`/`SPOOL_DIR`, given
    /// to [`SpoolBuilder::dir`]) beats the app's variable, and `SPOOL_ENDPOINT` counts.
    pub(crate) fn for_cli(mut self) -> Self {
        self.scope = Scope::Cli;
        self
    }

    /// Finishes the builder. Nothing is read or written until the first call that
    /// needs it, so building is free and never fails. With an invalid app name (see
    /// [`crate::validate_app_name`]) the spool records nothing and writes nothing
    /// anywhere; its `try_` calls say why.
    pub fn build(self) -> Spool {
        let dir = if validate_app_name(&self.app).is_err() {
            None
        } else {
            let env_dir = || nonempty(&self.env, &host_var(&self.app, "DIR")).map(PathBuf::from);
            match self.scope {
                Scope::Host => env_dir().or(self.dir),
                Scope::Cli => self.dir.or_else(env_dir),
            }
            .or_else(|| default_dir(&self.app))
        };
        Spool {
            inner: Arc::new(Inner {
                app: self.app,
                dir,
                tool: self.tool,
                endpoint: self.endpoint,
                limits: self.limits,
                lock_timeout: self.lock_timeout,
                scope: self.scope,
                clock: self.clock,
                env: self.env,
                samples: self.samples,
                state: Mutex::new(State::default()),
                context: OnceLock::new(),
                session_id: uuid::Uuid::new_v4().to_string(),
                failures: AtomicU64::new(0),
            }),
        }
    }
}

/// A telemetry spool for one app: cheap to clone, safe to share between threads.
///
/// ```
/// use eventspool::{Event, Spool};
/// let dir = tempfile::tempdir().unwrap();
/// let spool = Spool::builder("mytool").dir(dir.path()).tool("mytool", "1.2.3").build();
/// spool.track(Event::new("cli_invoked").property("command", "build"));
/// assert_eq!(spool.list(10).unwrap().len(), usize::from(spool.consent().enabled));
/// ```
#[derive(Clone)]
pub struct Spool {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) app: String,
    pub(crate) dir: Option<PathBuf>,
    tool: Option<String>,
    endpoint: Option<String>,
    limits: Option<Limits>,
    pub(crate) lock_timeout: Duration,
    scope: Scope,
    clock: Clock,
    env: EnvLookup,
    samples: Option<Samples>,
    state: Mutex<State>,
    context: OnceLock<Box<RawValue>>,
    session_id: String,
    failures: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: Option<Queue>,
    /// Commits on the recording connection since the last checkpoint request.
    commits: u32,
    /// Wakes this spool's checkpointer thread, once it runs.
    checkpointer: Option<mpsc::Sender<()>>,
    /// When recording refuses events at once (back-pressure).
    gate: Gate,
    settings: SettingsCache,
    synced: bool,
    /// Things the user should be told (a queue file set aside), for the CLI to print.
    notes: Vec<String>,
}

/// `config.json` as last read, and the file stamp it was read at, so a choice made by
/// `spool disable` in another terminal is seen by a long-running host within
/// SETTINGS_RECHECK, without a `stat` on every event.
#[derive(Default)]
struct SettingsCache {
    stamp: Option<Stamp>,
    /// When the stamp was last compared; `None` until first loaded.
    checked: Option<Instant>,
    value: Option<Settings>,
    /// Why the file could not be used, if it exists but cannot.
    unreadable: Option<String>,
}

/// Modification time, size and inode of a file: enough to notice a rewrite (an
/// atomic replace always changes the inode) without reading it.
type Stamp = (SystemTime, u64, u64);

/// How a payload is serialized: the same fields, in the same order, as [`Payload`].
#[derive(Serialize)]
struct PayloadRef<'a> {
    id: String,
    event: String,
    timestamp: &'a str,
    anonymous_id: &'a str,
    session_id: &'a str,
    context: &'a RawValue,
    properties: Map<String, Value>,
}

/// Everything `spool status` shows; `spool status --json` is this, serialized.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The app name.
    pub app: String,
    /// Whether telemetry is on, and the rule that decided (`enabled`, `rule`,
    /// `reason` in JSON).
    #[serde(flatten)]
    pub consent: Consent,
    /// True if and only if debug mode prints events instead of queueing them.
    pub debug: bool,
    /// The queue directory.
    pub dir: Option<PathBuf>,
    /// The endpoint a flush would use, if one is configured.
    pub endpoint: Option<String>,
    /// Events that this process failed to record (swallowed errors).
    pub failures: u64,
    /// The queue's counts and counters.
    #[serde(flatten)]
    pub queue: QueueStats,
}

impl Spool {
    /// Starts building a spool for `app`.
    pub fn builder(app: impl Into<String>) -> SpoolBuilder {
        SpoolBuilder {
            app: app.into(),
            dir: None,
            tool: None,
            endpoint: None,
            limits: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            scope: Scope::Host,
            samples: None,
            clock: Arc::new(now_ms),
            env: Arc::new(|k| std::env::var(k).ok()),
        }
    }

    /// Every field this app sends: from the samples given to
    /// [`SpoolBuilder::describe`], or else from what is queued now.
    pub fn schema(&self) -> Result<crate::Schema> {
        if let Some(samples) = &self.inner.samples {
            return Ok(crate::Schema::from_samples(self.app(), &samples()));
        }
        let queued = self.list(10_000)?;
        Ok(crate::Schema::from_payloads(
            self.app(),
            queued.iter().map(|q| q.payload.as_str()),
        ))
    }

    /// The app name.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// The queue directory, or `None` if this machine has no home directory.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// Events this process failed to record because of an error (disk full, locked
    /// queue, bad name, …). [`Spool::track`] swallows errors; this counts them.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Whether telemetry is on and which rule decided; reads the environment and the
    /// persisted choice, never writes.
    pub fn consent(&self) -> Consent {
        if let Err(e) = validate_app_name(&self.inner.app) {
            return Consent {
                enabled: false,
                rule: "invalid_app_name",
                reason: e.to_string(),
            };
        }
        let persisted = self
            .with_state(|st, inner| Ok(inner.persisted_choice(st)))
            .unwrap_or_else(|e| Persisted::Unreadable(e.to_string()));
        self.inner.consent_with(&persisted)
    }

    /// Records an event, fire-and-forget: never panics, never returns an error, and
    /// waits at most the lock timeout. Failures are counted in [`Spool::failures`].
    pub fn track(&self, event: Event) {
        self.swallow(|| self.try_track(event).map(|_| ()));
    }

    /// Records several events in one transaction, fire-and-forget like [`Spool::track`].
    pub fn track_batch(&self, events: Vec<Event>) {
        self.swallow(|| self.try_track_batch(events).map(|_| ()));
    }

    fn swallow(&self, f: impl FnOnce() -> Result<()>) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // One debug line for the first failure; a full disk must not flood a
                // host's log with one line per event.
                if self.inner.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::debug!(
                        "eventspool: event not recorded (further failures are only counted): {e}"
                    );
                }
            }
            Err(_) => {
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records an event and says what happened, for callers that want to know.
    pub fn try_track(&self, event: Event) -> Result<Recorded> {
        let mut out = self.try_track_batch(vec![event])?;
        Ok(out.pop().unwrap_or(Recorded::Disabled))
    }

    /// Records several events in one transaction; all or none are queued.
    pub fn try_track_batch(&self, events: Vec<Event>) -> Result<Vec<Recorded>> {
        validate_app_name(&self.inner.app)?;
        for e in &events {
            validate_name(e.name())?;
        }
        let inner = &self.inner;
        let result = self.with_state(|st, inner_ref| {
            let persisted = inner_ref.persisted_choice(st);
            if let Persisted::Unreadable(why) = &persisted {
                // Off, as a broken file must never turn telemetry on; and an error,
                // so `spool track` says why instead of "disabled by your choice".
                return Err(Kind::SettingsFile {
                    path: Settings::path(inner.require_dir()?),
                    why: why.clone(),
                }
                .into());
            }
            if !inner.consent_with(&persisted).enabled {
                return Ok(vec![Recorded::Disabled; events.len()]);
            }
            st.gate.admit(Instant::now())?;
            let debug = inner.debug_mode();
            let limits = inner.effective_limits(st);
            let anonymous_id = if debug {
                st.settings
                    .value
                    .as_ref()
                    .and_then(|s| s.anonymous_id.clone())
                    .unwrap_or_else(|| "debug".into())
            } else {
                let id = inner.sync_settings(st)?;
                // Syncing may have read a newer file (a choice made meanwhile).
                let persisted = inner.persisted_choice(st);
                if !inner.consent_with(&persisted).enabled {
                    return Ok(vec![Recorded::Disabled; events.len()]);
                }
                id
            };
            let now = inner.now();
            let mut payloads = Vec::with_capacity(events.len());
            let timestamp = rfc3339_ms(now);
            for event in events {
                let (name, props, raw_keys) = event.into_parts();
                if let Err(e) = check_shape(&props, limits.max_event_bytes) {
                    drop_flat(props);
                    return Err(e);
                }
                let properties = inner.scrub(props, &raw_keys);
                // Field for field the public `Payload`, with the parts that are the same
                // for every event borrowed (the context serialized once per process).
                let p = PayloadRef {
                    id: uuid::Uuid::now_v7().to_string(),
                    event: name,
                    timestamp: &timestamp,
                    anonymous_id: &anonymous_id,
                    session_id: &inner.session_id,
                    context: inner.context_json(),
                    properties,
                };
                let json =
                    serde_json::to_string(&p).map_err(|e| Kind::Properties(e.to_string()))?;
                if json.len() as u64 > limits.max_event_bytes {
                    return Err(Kind::EventTooLarge {
                        size: json.len(),
                        max: limits.max_event_bytes as usize,
                    }
                    .into());
                }
                payloads.push((p.id, p.event, json));
            }
            if debug {
                for (_, _, json) in &payloads {
                    eprintln!("{json}");
                }
                return Ok(vec![Recorded::Printed; payloads.len()]);
            }
            let rows: Vec<NewEvent<'_>> = payloads
                .iter()
                .map(|(id, event, json)| NewEvent {
                    id,
                    event,
                    created_at: now,
                    payload: json,
                })
                .collect();
            let wal_limit = wal_limit(&limits);
            // Another connection holding a read transaction open pins the WAL: no
            // checkpoint can get past its snapshot, and each commit would grow the
            // file. Past the limit new events are refused (and counted), as on a full
            // disk, so the queue's footprint stays bounded whatever other processes do.
            if st.gate.wal_check_due() {
                let now = Instant::now();
                let retry = st.gate.may_truncate(now);
                let lock_timeout = inner.lock_timeout;
                let queue = inner.queue(st)?;
                let mut over = queue.wal_bytes() > wal_limit;
                if over && retry {
                    // Succeeds as soon as the reader is gone.
                    queue.truncate_wal(lock_timeout)?;
                    over = queue.wal_bytes() > wal_limit;
                    st.gate.truncated(now);
                }
                st.gate.wal_checked(over, wal_limit)?;
            }
            st.gate.recorded(rows.len());
            let settings_path = Settings::path(inner.require_dir()?);
            // A `disable` in another process rewrites config.json, then purges under
            // the write lock: if the file is unchanged once this commit holds that
            // lock, no purge came between the consent check above and the commit.
            // If it changed, look again (a rewrite may not be an opt-out).
            let mut tries = 0;
            loop {
                let expected = st.settings.stamp;
                let queue = inner.queue(st)?;
                match queue.enqueue(&rows, limits.max_events, limits.max_bytes, || {
                    stamp(&settings_path) == expected
                }) {
                    Ok(Enqueued::Committed { .. }) => break,
                    Ok(Enqueued::Revoked) => {
                        st.settings.checked = None;
                        let persisted = inner.persisted_choice(st);
                        if !inner.consent_with(&persisted).enabled {
                            return Ok(vec![Recorded::Disabled; rows.len()]);
                        }
                        tries += 1;
                        // Once more at most: `track` must not wait many lock timeouts.
                        if tries >= 2 {
                            return Err(Kind::SettingsFile {
                                path: settings_path,
                                why: "kept changing while the event was recorded".into(),
                            }
                            .into());
                        }
                    }
                    Err(e) => {
                        // Reopen next time: if the file went bad, opening sets it aside.
                        st.queue = None;
                        return Err(e);
                    }
                }
            }
            st.commits += 1;
            if st.commits >= CHECKPOINT_EVERY {
                st.commits = 0;
                inner.request_checkpoint(st);
            }
            Ok(payloads
                .into_iter()
                .map(|(id, _, _)| Recorded::Queued(id))
                .collect())
        });
        // A full disk or a read-only directory fails every attempt, and each attempt
        // costs a host milliseconds: pause recording for a second instead (see Gate).
        if result.is_err() {
            let _ = self.with_state(|st, _| {
                st.gate.after(Instant::now(), &result);
                Ok(())
            });
        }
        result
    }

    /// The oldest `limit` queued events, oldest first. Creates nothing.
    pub fn list(&self, limit: usize) -> Result<Vec<QueuedEvent>> {
        self.with_existing_queue(|q| q.list(limit))
            .map(Option::unwrap_or_default)
    }

    /// The queued event with this id (or unique id prefix).
    pub fn get(&self, id: &str) -> Result<QueuedEvent> {
        self.with_existing_queue(|q| q.get(id))?
            .ok_or_else(|| Kind::UnknownId(id.to_string()).into())
    }

    /// Deletes every queued event; returns how many were removed. Creates nothing.
    ///
    /// When it returns, no byte of a purged event remains in any file of the queue
    /// directory (free pages, the write-ahead log, files set aside as corrupt).
    pub fn clear(&self) -> Result<u64> {
        // On a connection of its own, outside this spool's lock: a purge may wait
        // seconds for other connections, and this spool's `track` must not wait too.
        let dir = self.inner.require_dir()?;
        let Some(mut queue) = Queue::open_existing(dir, PURGE_LOCK_WAIT)? else {
            return Ok(0);
        };
        if let Some(note) = queue.recovered.take() {
            let _ = self.with_state(|st, _| {
                st.notes.push(note);
                Ok(())
            });
        }
        queue.purge(PURGE_WAIT)
    }

    /// Consent, directory, endpoint and queue figures. Creates nothing.
    pub fn status(&self) -> Result<Status> {
        let queue = self.with_existing_queue(|q| q.stats())?.unwrap_or_default();
        Ok(Status {
            app: self.inner.app.clone(),
            consent: self.consent(),
            debug: self.inner.debug_mode(),
            dir: self.inner.dir.clone(),
            endpoint: self.endpoint(),
            failures: self.failures(),
            queue,
        })
    }

    /// Persists the choice to send telemetry (`"telemetry": true`). Environment
    /// opt-outs still win.
    pub fn enable(&self) -> Result<()> {
        self.set_choice(true).map(|_| ())
    }

    /// Persists the choice not to send telemetry and purges the queue; returns how
    /// many queued events were purged. Once it returns, nothing stays queued: an
    /// event another process or thread was recording at the same moment is either
    /// purged or never committed. The choice is persisted first, so an error from the
    /// purge (another process holding the queue open past the wait) leaves telemetry
    /// off; running it again completes the purge.
    pub fn disable(&self) -> Result<u64> {
        self.set_choice(false)?;
        self.clear()
    }

    fn set_choice(&self, on: bool) -> Result<()> {
        self.with_state(|st, inner| {
            let dir = inner.require_dir()?;
            ensure_dir(dir)?;
            Settings::update(dir, |s| s.telemetry = Some(on))?;
            st.settings = SettingsCache::default();
            Ok(())
        })
    }

    /// The endpoint a flush uses: `<APP>_TELEMETRY_ENDPOINT` (for the `spool`
    /// command, `SPOOL_ENDPOINT` first), else the one given in code, else the
    /// persisted one.
    pub fn endpoint(&self) -> Option<String> {
        let env = &self.inner.env;
        let app_var = || nonempty(env, &host_var(&self.inner.app, "ENDPOINT"));
        match self.inner.scope {
            Scope::Host => app_var(),
            Scope::Cli => nonempty(env, "SPOOL_ENDPOINT").or_else(app_var),
        }
        .or_else(|| self.inner.endpoint.clone())
        .or_else(|| self.settings().and_then(|s| s.endpoint))
    }

    /// What the user should be told that happened behind the scenes (a queue file
    /// that was not valid and was moved aside), once each.
    #[cfg(feature = "cli")]
    pub(crate) fn take_notes(&self) -> Vec<String> {
        self.with_state(|st, _| Ok(std::mem::take(&mut st.notes)))
            .unwrap_or_default()
    }

    /// The limits in force: given in code, else persisted, else defaults; then the
    /// environment overrides (a malformed variable is ignored with a debug log).
    pub fn limits(&self) -> Limits {
        self.with_state(|st, inner| Ok(inner.effective_limits(st)))
            .unwrap_or_default()
    }

    /// The persisted settings as last read, if the file exists and is valid.
    pub fn settings(&self) -> Option<Settings> {
        self.with_state(|st, inner| {
            inner.refresh_settings(st);
            Ok(st.settings.value.clone())
        })
        .ok()
        .flatten()
    }

    /// A value the host keeps for itself in `config.json` (under `"host"`), e.g. a
    /// session counter for a `first_session` flag.
    pub fn host_value(&self, key: &str) -> Option<serde_json::Value> {
        self.settings().and_then(|s| s.host.get(key).cloned())
    }

    /// Stores a small value of the host's own in `config.json`, under `"host"`. This
    /// is the only write a host can make to the file: the user's choice, the anonymous
    /// id and the destination are out of its reach. Creates the directory if needed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let spool = eventspool::Spool::builder("mytool").dir(dir.path()).build();
    /// spool.set_host_value("sessions", 3).unwrap();
    /// assert_eq!(spool.host_value("sessions"), Some(3.into()));
    /// ```
    pub fn set_host_value(&self, key: &str, value: impl Into<serde_json::Value>) -> Result<()> {
        let value = value.into();
        self.update_settings(|s| {
            s.host.insert(key.to_string(), value);
        })
    }

    /// Rewrites the persisted settings with `f` applied (creating the file if needed).
    pub(crate) fn update_settings(&self, f: impl FnOnce(&mut Settings)) -> Result<()> {
        self.with_state(|st, inner| {
            let dir = inner.require_dir()?;
            ensure_dir(dir)?;
            Settings::update(dir, f)?;
            st.settings = SettingsCache::default();
            Ok(())
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State, &Inner) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.inner.state);
        f(&mut guard, &self.inner)
    }

    pub(crate) fn with_existing_queue<T>(
        &self,
        f: impl FnOnce(&mut Queue) -> Result<T>,
    ) -> Result<Option<T>> {
        self.with_state(|st, inner| {
            if st.queue.is_none() {
                let dir = inner.require_dir()?;
                st.queue = Queue::open_existing(dir, inner.lock_timeout.max(PURGE_LOCK_WAIT))?;
                if let Some(note) = st.queue.as_mut().and_then(|q| q.recovered.take()) {
                    st.notes.push(note);
                }
            }
            let Some(q) = st.queue.as_mut() else {
                return Ok(None);
            };
            let result = f(q);
            // The same connection records later: back to the recording lock wait.
            q.set_busy(inner.lock_timeout)?;
            result.map(Some)
        })
    }
}

/// The [`Stamp`] of a file, `None` if it does not exist.
fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().as_ref().map(stamp_of)
}

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let ino = 0;
    (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), ino)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state inconsistent in a way
    // that matters (the queue is transactional), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A variable from `env`, if set and not empty.
fn nonempty(env: &EnvLookup, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

impl Inner {
    /// Now on this spool's clock, unix milliseconds.
    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The clock itself, for a flush to carry.
    pub(crate) fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// The environment lookup itself, for a flush to carry.
    pub(crate) fn env(&self) -> EnvLookup {
        self.env.clone()
    }

    /// A variable in this spool's environment.
    pub(crate) fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Consent from this spool's environment and the persisted choice.
    pub(crate) fn consent_with(&self, persisted: &Persisted) -> Consent {
        Consent::decide_with(&self.app, |k| self.var(k), persisted)
    }

    /// Debug mode in this spool's environment.
    fn debug_mode(&self) -> bool {
        debug_mode_with(&self.app, |k| self.var(k))
    }

    fn require_dir(&self) -> Result<&Path> {
        validate_app_name(&self.app)?;
        self.dir.as_deref().ok_or_else(|| Kind::NoHomeDir.into())
    }

    fn context_json(&self) -> &RawValue {
        self.context.get_or_init(|| {
            let ctx = Context::detect(&self.app, self.tool.clone());
            // A struct of strings and booleans always serializes.
            serde_json::value::to_raw_value(&ctx).unwrap_or_else(|_| RawValue::NULL.to_owned())
        })
    }

    fn scrub(
        &self,
        mut props: Map<String, Value>,
        raw_keys: &std::collections::BTreeSet<String>,
    ) -> Map<String, Value> {
        crate::privacy::current_user().scrub_properties(&mut props, |k| raw_keys.contains(k));
        props
    }

    /// Re-reads `config.json` if its modification time or size changed.
    fn refresh_settings(&self, st: &mut State) {
        let Some(dir) = self.dir.as_deref() else {
            return;
        };
        let now = Instant::now();
        if st
            .settings
            .checked
            .is_some_and(|t| now.duration_since(t) < SETTINGS_RECHECK)
        {
            return;
        }
        let stamp = stamp(&Settings::path(dir));
        // An unusable file or directory is looked at afresh each time: repairing the
        // directory need not change the file's stamp.
        if st.settings.checked.is_some()
            && stamp == st.settings.stamp
            && st.settings.unreadable.is_none()
        {
            st.settings.checked = Some(now);
            return;
        }
        st.settings = match Settings::load_checked(dir) {
            Ok(value) => SettingsCache {
                stamp,
                checked: Some(now),
                value,
                unreadable: None,
            },
            Err(e) => {
                log::debug!("eventspool: {e}; treating telemetry as disabled");
                SettingsCache {
                    stamp,
                    checked: Some(now),
                    value: None,
                    unreadable: Some(e.to_string()),
                }
            }
        };
    }

    /// The persisted consent choice; an unreadable settings file counts as "off", so
    /// a damaged file never turns telemetry on against the user's wish.
    fn persisted_choice(&self, st: &mut State) -> Persisted {
        self.refresh_settings(st);
        if let Some(why) = &st.settings.unreadable {
            return Persisted::Unreadable(why.clone());
        }
        match st.settings.value.as_ref().and_then(|s| s.telemetry) {
            Some(on) => Persisted::Chosen(on),
            None => Persisted::Undecided,
        }
    }

    fn effective_limits(&self, st: &mut State) -> Limits {
        self.refresh_settings(st);
        self.limits
            .clone()
            .or_else(|| st.settings.value.as_ref().and_then(|s| s.limits.clone()))
            .unwrap_or_default()
            .with_env_lenient(|k| self.var(k))
    }

    /// Makes sure `config.json` exists with an anonymous id and what the host
    /// configured in code; returns the anonymous id. Runs its writes once per process.
    fn sync_settings(&self, st: &mut State) -> Result<String> {
        if st.synced {
            if let Some(id) = st
                .settings
                .value
                .as_ref()
                .and_then(|s| s.anonymous_id.clone())
            {
                return Ok(id);
            }
        }
        let dir = self.require_dir()?;
        ensure_dir(dir)?;
        // Fresh: consent was just decided from it in this same call.
        self.refresh_settings(st);
        // Only the host's own fields and a missing anonymous id; `telemetry` stays
        // absent until the user decides: recording is not a choice.
        let host_fields = |s: &mut Settings| {
            if s.anonymous_id.is_none() {
                s.anonymous_id = Some(uuid::Uuid::new_v4().to_string());
            }
            if self.endpoint.is_some() {
                s.endpoint.clone_from(&self.endpoint);
            }
            if self.tool.is_some() {
                s.tool.clone_from(&self.tool);
            }
            if self.limits.is_some() {
                s.limits.clone_from(&self.limits);
            }
        };
        let current = st.settings.value.clone();
        let mut wanted = current.clone().unwrap_or_default();
        host_fields(&mut wanted);
        let next = if current.as_ref() == Some(&wanted) {
            // Nothing to write: the cache (value and stamp, read together) stands.
            wanted
        } else {
            // Read, change and write under the directory's lock, so two processes
            // starting at once agree on one anonymous id and no user's choice made
            // meanwhile is written over. The stamp is of the file this left.
            let (next, meta) = Settings::update(dir, host_fields)?;
            st.settings = SettingsCache {
                stamp: meta.as_ref().map(stamp_of),
                checked: Some(Instant::now()),
                value: Some(next.clone()),
                unreadable: None,
            };
            next
        };
        st.synced = true;
        next.anonymous_id.ok_or_else(|| {
            Kind::SettingsFile {
                path: Settings::path(dir),
                why: "has no anonymous id".into(),
            }
            .into()
        })
    }

    /// Asks this spool's checkpointer thread to checkpoint the WAL, starting the thread
    /// the first time, so a long-running host never pays a checkpoint's fsyncs inside
    /// `track`. Until then (and in a one-shot process, which never gets here) the
    /// connection checkpoints inline at SQLite's default of 1000 pages, which
    /// CHECKPOINT_EVERY commits stay below.
    fn request_checkpoint(&self, st: &mut State) {
        if st.checkpointer.is_none() {
            let Some(dir) = self.dir.clone() else { return };
            let (tx, rx) = mpsc::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("eventspool-checkpoint".into())
                .spawn(move || {
                    let Ok(Some(queue)) = Queue::open_existing(&dir, Duration::from_secs(2)) else {
                        return;
                    };
                    while rx.recv().is_ok() {
                        while rx.try_recv().is_ok() {}
                        if let Err(e) = queue.checkpoint() {
                            log::debug!("eventspool: checkpoint: {e}");
                        }
                    }
                });
            // Without a thread the connection keeps checkpointing inline (SQLite's default).
            let Ok(_) = spawned else { return };
            if let Some(q) = &st.queue {
                let _ = q.set_autocheckpoint(0);
                // After a long reader let the file grow, the next restart shrinks it.
                let _ = q.set_wal_size_limit(4 << 20);
            }
            st.checkpointer = Some(tx);
        }
        if let Some(tx) = &st.checkpointer {
            if tx.send(()).is_err() {
                // The thread is gone: checkpoint inline from now on.
                st.checkpointer = None;
                if let Some(q) = &st.queue {
                    let _ = q.set_autocheckpoint(1000);
                }
            }
        }
    }

    fn queue<'s>(&self, st: &'s mut State) -> Result<&'s mut Queue> {
        if let Some(queue) = st.queue.take() {
            return Ok(st.queue.insert(queue));
        }
        let mut queue = Queue::open(self.require_dir()?, self.lock_timeout)?;
        if let Some(note) = queue.recovered.take() {
            st.notes.push(note);
        }
        // Once a checkpointer thread runs, it checkpoints instead of this
        // connection (see request_checkpoint).
        if st.checkpointer.is_some() {
            let _ = queue.set_autocheckpoint(0);
        }
        Ok(st.queue.insert(queue))
    }
}
