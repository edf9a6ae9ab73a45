//! The host-facing handle: build a [`Spool`] for an app, record events, inspect and
//! purge the queue, read and change consent.
//!
//! This file has the handle and what it answers; [`builder`] builds it; [`record`] is
//! the recording pipeline; [`settings_cache`] keeps `config.json` as last read;
//! [`gate`] is back-pressure on recording.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::app::{host_var, validate_app_name};
use crate::consent::{Consent, Persisted, debug_mode_with};
use crate::context::Context;
use crate::error::{Kind, Result};
use crate::event::Event;
use crate::limits::Limits;
use crate::queue::{Queue, QueueStats, QueuedEvent, ensure_dir};
use crate::settings::Settings;
use crate::time::now_ms;

mod builder;
mod enforce;
mod gate;
mod record;
mod settings_cache;
mod user_config;

pub use builder::SpoolBuilder;
use gate::Gate;
use settings_cache::{SettingsCache, stamp};
pub use user_config::ConfigKey;

/// How long recording waits for another process's write before giving up on the
/// event: long enough to ride out a flusher's short transactions, short enough that
/// a host never notices.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

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
#[non_exhaustive]
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
    /// The destination given in code, with the builder's endpoint applied.
    destination: Option<crate::DestinationConfig>,
    limits: Option<Limits>,
    pub(crate) lock_timeout: Duration,
    scope: Scope,
    clock: Clock,
    env: EnvLookup,
    samples: Option<Samples>,
    annotations: crate::schema::Annotations,
    catalog: enforce::CatalogState,
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
    /// Where a flush would send, with the environment's overrides applied, the API
    /// key shown by its prefix and length only and header values hidden.
    pub destination: crate::DestinationConfig,
    /// Events that this process failed to record (swallowed errors).
    pub failures: u64,
    /// The queue's counts and counters.
    #[serde(flatten)]
    pub queue: QueueStats,
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

impl Spool {
    /// Starts building a spool for `app`.
    pub fn builder(app: impl Into<String>) -> SpoolBuilder {
        SpoolBuilder {
            app: app.into(),
            dir: None,
            tool: None,
            endpoint: None,
            destination: None,
            session_id: None,
            limits: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            scope: Scope::Host,
            samples: None,
            annotations: Default::default(),
            clock: Arc::new(now_ms),
            env: Arc::new(|k| std::env::var(k).ok()),
            catalog: None,
        }
    }

    /// Every field this app sends: from the samples given to
    /// [`SpoolBuilder::describe`], or else from what is queued now; with the
    /// purposes and the "never collected" list the host gave
    /// ([`SpoolBuilder::purpose`], [`SpoolBuilder::never_collected`]).
    pub fn schema(&self) -> Result<crate::Schema> {
        let notes = &self.inner.annotations;
        if let Some(samples) = &self.inner.samples {
            return Ok(crate::Schema::from_samples(self.app(), &samples()).annotate(notes));
        }
        let queued = self.list(10_000)?;
        Ok(
            crate::Schema::from_payloads(self.app(), queued.iter().map(|q| q.payload.as_str()))
                .annotate(notes),
        )
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
            destination: crate::destination::apply(
                self.destination(),
                &self.env_overrides_lenient(),
            )
            .redacted(),
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
    /// command, `SPOOL_ENDPOINT` first), else the configured destination's (see
    /// [`Spool::destination`]), else its kind's default. Not checked here: a flush
    /// refuses one that is not allowed.
    pub fn endpoint(&self) -> Option<String> {
        let d = crate::destination::apply(self.destination(), &self.env_overrides_lenient());
        d.endpoint
            .or_else(|| d.kind.default_endpoint().map(str::to_string))
    }

    /// The destination configured for this spool, before the environment's
    /// overrides: the one the user set (`spool config set`), else the one given in
    /// code, else the persisted one (which a host's code wrote), else the native
    /// format without an endpoint.
    pub fn destination(&self) -> crate::DestinationConfig {
        let persisted = self.settings().and_then(|s| match s.destination {
            Some(d) => Some(d),
            None => s.endpoint.map(crate::DestinationConfig::native),
        });
        match (persisted, &self.inner.destination) {
            (Some(p), _) if p.set_by_user => p,
            (_, Some(code)) => code.clone(),
            (Some(p), None) => p,
            (None, None) => crate::DestinationConfig::default(),
        }
    }

    /// What the environment puts in place of the configured destination: for a host
    /// only `<APP>_TELEMETRY_ENDPOINT`; for the `spool` command also
    /// `SPOOL_DESTINATION`, `SPOOL_ENDPOINT` and `SPOOL_API_KEY`. A kind that does
    /// not parse is an error (the `spool` command says so).
    pub(crate) fn env_overrides(&self) -> Result<crate::destination::Overrides> {
        let mut over = self.env_overrides_lenient();
        if self.inner.scope == Scope::Cli {
            over.kind = nonempty(&self.inner.env, "SPOOL_DESTINATION")
                .map(|k| k.parse())
                .transpose()?;
        }
        Ok(over)
    }

    /// [`Spool::env_overrides`], ignoring a kind that does not parse: a read-only
    /// accessor does not fail, the flush that resolves its target reports it.
    fn env_overrides_lenient(&self) -> crate::destination::Overrides {
        let env = &self.inner.env;
        let app_var = || nonempty(env, &host_var(&self.inner.app, "ENDPOINT"));
        let mut over = crate::destination::Overrides::default();
        match self.inner.scope {
            Scope::Host => over.endpoint = app_var(),
            Scope::Cli => {
                over.endpoint = nonempty(env, "SPOOL_ENDPOINT").or_else(app_var);
                over.api_key = nonempty(env, "SPOOL_API_KEY");
                over.kind = nonempty(env, "SPOOL_DESTINATION").and_then(|k| k.parse().ok());
            }
        }
        over
    }

    /// The destination a flush sends to: `explicit` (a whole destination for this
    /// flush) if given, else the configured one with the environment's overrides;
    /// then `over` on top. `Ok(None)`: no endpoint is known.
    pub(crate) fn target(
        &self,
        explicit: Option<crate::DestinationConfig>,
        over: &crate::destination::Overrides,
    ) -> Result<Option<crate::destination::Target>> {
        let (base, over) = match explicit {
            Some(d) => (d, over.clone()),
            // Flags over variables field by field, then applied once: a flag naming
            // another kind must not throw away `SPOOL_API_KEY` or `SPOOL_ENDPOINT`.
            None => (self.destination(), self.env_overrides()?.under(over)),
        };
        crate::destination::resolve(base, &over)
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

    /// Scrubs an event's properties; with a catalog, its `enum`s are kept as declared
    /// and strings with a `max_length` cut to it after scrubbing.
    fn scrub(
        &self,
        event: &str,
        mut props: Map<String, Value>,
        raw_keys: &std::collections::BTreeSet<String>,
    ) -> Map<String, Value> {
        let declared = self.catalog.rules().and_then(|r| r.event(event));
        let enums = declared.map(|d| d.nested_enums(&props)).unwrap_or_default();
        crate::privacy::current_user().scrub_properties(&mut props, |k| {
            raw_keys.contains(k) || declared.is_some_and(|d| d.is_raw(k))
        });
        if let Some(d) = declared {
            d.finish(&mut props, enums);
        }
        props
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
