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
use crate::consent::{Consent, ConsentPolicy, Persisted};
use crate::context::Context;
use crate::error::{Kind, Result};
use crate::event::Event;
use crate::fingerprint::Fingerprint;
use crate::limits::Limits;
use crate::queue::{Queue, QueueStats, QueuedEvent, ensure_dir};
use crate::settings::Settings;
use crate::time::now_ms;

mod builder;
mod enforce;
mod env_memo;
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
    /// The consent policy given in code; else `config.json`'s, else `opt_out`.
    pub(crate) consent_policy: Option<ConsentPolicy>,
    /// Whether an opt-out queues a deletion request, given in code; else
    /// `config.json`'s, else off.
    pub(crate) deletion_request: Option<bool>,
    /// The catalog's fingerprint, computed once.
    fingerprint: OnceLock<Fingerprint>,
    /// The app's variable names, worked out once.
    env_names: OnceLock<crate::consent::EnvNames>,
    state: Mutex<State>,
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
    /// The context serialized once, with the machine salt it was keyed with: a
    /// deletion request re-keys the hash, and the next event must carry the new one.
    context: Option<(Option<String>, Box<RawValue>)>,
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
    /// True if and only if an opt-out by persisted choice queues a deletion request.
    pub deletion_request: bool,
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
            consent_policy: None,
            deletion_request: None,
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
        // A deletion request is the library's, not an event the host sends.
        let payloads = queued
            .iter()
            .filter(|q| q.event != crate::deletion::EVENT)
            .map(|q| q.payload.as_str());
        Ok(crate::Schema::from_payloads(self.app(), payloads).annotate(notes))
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
            let mut off = self
                .inner
                .consent_with(&Persisted::Unreadable(String::new()), self.policy());
            off.rule = "invalid_app_name";
            off.reason = e.to_string();
            return off;
        }
        self.with_state(|st, inner| Ok(inner.consent_now(st)))
            .unwrap_or_else(|e| {
                self.inner
                    .consent_with(&Persisted::Unreadable(e.to_string()), self.policy())
            })
    }

    /// The consent policy in force: given in code ([`SpoolBuilder::consent_policy`]),
    /// else the one in `config.json` (`spool config set consent_policy`), else
    /// `opt_out`.
    pub fn policy(&self) -> ConsentPolicy {
        self.inner.policy_in(self.settings().as_ref())
    }

    /// Returns true if and only if an opt-out by persisted choice queues a deletion
    /// request: given in code ([`SpoolBuilder::deletion_request`]), else
    /// `config.json`'s `deletion_request`, else off.
    pub fn deletion_request_enabled(&self) -> bool {
        self.inner
            .deletion_request
            .or_else(|| self.settings().and_then(|s| s.deletion_request))
            .unwrap_or(false)
    }

    /// Returns true if and only if `config.json` marks a deletion request pending (it
    /// waits in the queue, and is sent even while telemetry is off).
    pub fn deletion_request_pending(&self) -> bool {
        self.settings().is_some_and(|s| s.deletion_request_pending)
    }

    /// Returns true if and only if telemetry is off under `consent` but a pending
    /// deletion request may still be sent: the user's choice (not the environment)
    /// keeps it off, and `config.json` marks one pending.
    pub(crate) fn only_deletion_request_may_go(&self, consent: &Consent) -> bool {
        !consent.enabled && consent.allows_deletion_request() && self.deletion_request_pending()
    }

    /// The fingerprint of this spool's catalog (empty without one): what a user's
    /// answer and the notice are remembered against.
    pub(crate) fn catalog_fingerprint(&self) -> Fingerprint {
        self.inner.fingerprint().clone()
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
    /// A pending deletion request is kept (and not counted): it is what the user
    /// asked the receiver to act on.
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
            deletion_request: self.deletion_request_enabled(),
            queue,
        })
    }

    /// Persists the choice to send telemetry (`"telemetry": true`, with the time and
    /// the catalog fingerprint it was made on). Environment opt-outs still win.
    pub fn enable(&self) -> Result<()> {
        self.set_choice(true).map(|_| ())
    }

    /// Persists the choice not to send telemetry and purges the queue; returns how
    /// many queued events were purged. Once it returns, nothing stays queued: an
    /// event another process or thread was recording at the same moment is either
    /// purged or never committed. The choice is persisted first, so an error from the
    /// purge (another process holding the queue open past the wait) leaves telemetry
    /// off; running it again completes the purge.
    ///
    /// With [`Spool::deletion_request_enabled`], an opt-out from "on" then queues one
    /// `deletion_request` naming the anonymous id (see [`Spool::clear`], which keeps
    /// it), replaces the anonymous id and re-keys the machine hash. An opt-out while
    /// already off does nothing more than persist the choice.
    pub fn disable(&self) -> Result<u64> {
        let before = self.set_choice(false)?;
        let purged = self.clear()?;
        if let Some(anonymous_id) = before {
            self.request_deletion(&anonymous_id)?;
        }
        Ok(purged)
    }

    /// Persists the choice `on` with its time and fingerprint, and the host's consent
    /// settings beside it. For an opt-out from "on" with deletion requests enabled,
    /// marks a deletion request pending in the same write and returns the anonymous
    /// id it is for.
    pub(crate) fn set_choice(&self, on: bool) -> Result<Option<String>> {
        let fingerprint = self.catalog_fingerprint();
        self.with_state(|st, inner| {
            let dir = inner.require_dir()?;
            ensure_dir(dir)?;
            let decided_at = crate::time::rfc3339_ms(inner.now());
            let mut erase = None;
            Settings::update(dir, |s| {
                let policy = inner.policy_in(Some(s));
                let deletion = inner.deletion_request.or(s.deletion_request) == Some(true);
                let was =
                    Persisted::judge(s.telemetry, s.telemetry_fingerprint.as_ref(), &fingerprint);
                if !on && deletion && was.was_on(policy) {
                    if let Some(id) = &s.anonymous_id {
                        // Marked first: a crash before the event is queued leaves a
                        // flag the next flush clears, never an event nobody looks for.
                        s.deletion_request_pending = true;
                        erase = Some(id.clone());
                    }
                }
                if !on && erase.is_none() {
                    // An earlier opt-out that failed before its request was queued
                    // (or the id replaced): this one completes it.
                    erase = s.deletion_request_for.clone();
                    if erase.is_some() {
                        s.deletion_request_pending = true;
                    }
                }
                s.deletion_request_for.clone_from(&erase);
                s.telemetry = Some(on);
                s.telemetry_decided_at = Some(decided_at);
                s.telemetry_fingerprint = Some(fingerprint);
                inner.write_host_consent_settings(s);
            })?;
            st.settings = SettingsCache::default();
            Ok(erase)
        })
    }

    /// Queues (or extends) the deletion request for `anonymous_id`, then replaces
    /// the anonymous id and the machine hash's salt, so what is recorded after a later
    /// `enable` cannot be joined to what was sent before.
    fn request_deletion(&self, anonymous_id: &str) -> Result<()> {
        let dir = self.inner.require_dir()?;
        let now = self.inner.now();
        let mut queue = Queue::open(dir, PURGE_LOCK_WAIT)?;
        queue.queue_deletion_request(anonymous_id, now)?;
        drop(queue);
        self.with_state(|st, _| {
            Settings::update(dir, |s| {
                // Again, now that it is queued: a flusher that found none meanwhile
                // may have cleared the mark (see `flush::clear_pending_deletion`).
                s.deletion_request_pending = true;
                // Unless another opt-out got here first and replaced it already.
                if s.anonymous_id.as_deref() == Some(anonymous_id) {
                    s.anonymous_id = Some(uuid::Uuid::new_v4().to_string());
                    s.machine_salt = Some(hex::encode(uuid::Uuid::new_v4().as_bytes()));
                }
                if s.deletion_request_for.as_deref() == Some(anonymous_id) {
                    s.deletion_request_for = None;
                }
            })?;
            st.settings = SettingsCache::default();
            st.context = None;
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

    /// Runs `f` on this spool's queue connection, opening it (without creating a
    /// queue) if need be; `None` if there is no queue. Waits for another process's
    /// lock as listing does, longer than recording.
    pub(crate) fn with_existing_queue<T>(
        &self,
        f: impl FnOnce(&mut Queue) -> Result<T>,
    ) -> Result<Option<T>> {
        self.with_existing_queue_waiting(self.inner.lock_timeout.max(PURGE_LOCK_WAIT), f)
    }

    /// [`Spool::with_existing_queue`], waiting at most `wait` for a lock: a host's own
    /// checks (is a flush due?) wait no longer than recording does.
    pub(crate) fn with_existing_queue_waiting<T>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut Queue) -> Result<T>,
    ) -> Result<Option<T>> {
        self.with_state(|st, inner| {
            if st.queue.is_none() {
                let dir = inner.require_dir()?;
                st.queue = Queue::open_existing(dir, wait)?;
                if let Some(note) = st.queue.as_mut().and_then(|q| q.recovered.take()) {
                    st.notes.push(note);
                }
            }
            let Some(q) = st.queue.as_mut() else {
                return Ok(None);
            };
            q.set_busy(wait)?;
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

    /// A variable in this spool's environment; inside an [`env_memo::EnvScope`] of this spool,
    /// read once and then remembered.
    pub(crate) fn var(&self, name: &str) -> Option<String> {
        let me = self as *const Inner as usize;
        if let Some(v) = env_memo::recall(me, name) {
            return v;
        }
        let v = (self.env)(name);
        env_memo::remember(me, name, &v);
        v
    }

    /// Until the scope returned ends, each variable this spool reads on this thread
    /// is read once: one `track` asks the same few about a dozen times (consent
    /// three times, debug mode, the limits), each a scan of the environment. Nested
    /// scopes are the outer one.
    pub(crate) fn env_scope(&self) -> env_memo::EnvScope<'_> {
        env_memo::EnvScope::enter(self as *const Inner as usize, self)
    }

    /// The app's variable names, worked out on first use.
    fn env_names(&self) -> &crate::consent::EnvNames {
        self.env_names
            .get_or_init(|| crate::consent::EnvNames::new(&self.app))
    }

    /// Consent from this spool's environment and the persisted choice, under `policy`.
    pub(crate) fn consent_with(&self, persisted: &Persisted, policy: ConsentPolicy) -> Consent {
        Consent::decide_named(self.env_names(), |k| self.var(k), persisted, policy)
    }

    /// The environment's opt-out, if the environment alone turns telemetry off
    /// (`DO_NOT_TRACK`, `<APP>_TELEMETRY_DISABLED`, `<APP>_TELEMETRY` falsy): then
    /// whatever `config.json` says, nothing is recorded, so nothing needs reading.
    pub(crate) fn env_opt_out(&self) -> Option<Consent> {
        Some(self.consent_with(&Persisted::Chosen(true), ConsentPolicy::OptOut))
            .filter(|c| !c.enabled)
    }

    /// Consent from the settings as last read (see [`SettingsCache`]).
    fn consent_now(&self, st: &mut State) -> Consent {
        let persisted = self.persisted_choice(st);
        let policy = self.policy_in(st.settings.value.as_ref());
        self.consent_with(&persisted, policy)
    }

    /// The policy: the code's, else the one in `settings`, else `opt_out`.
    pub(crate) fn policy_in(&self, settings: Option<&Settings>) -> ConsentPolicy {
        self.consent_policy
            .or_else(|| settings.and_then(|s| s.consent_policy))
            .unwrap_or_default()
    }

    /// The catalog's fingerprint, computed once (empty without a catalog).
    pub(crate) fn fingerprint(&self) -> &Fingerprint {
        self.fingerprint.get_or_init(|| match &self.catalog {
            enforce::CatalogState::Ready(e) => e.catalog.fingerprint(),
            _ => Fingerprint::default(),
        })
    }

    /// Writes the consent settings given in code into `s`, so `spool` run by hand
    /// (`consent status`, `disable`) acts as the host does.
    pub(crate) fn write_host_consent_settings(&self, s: &mut Settings) {
        if self.consent_policy.is_some() {
            s.consent_policy = self.consent_policy;
        }
        if self.deletion_request.is_some() {
            s.deletion_request = self.deletion_request;
        }
    }

    /// What decides consent for a flush, carried by it: it decides afresh from the
    /// file before every request.
    pub(crate) fn consent_source(&self) -> ConsentSource {
        ConsentSource {
            app: self.app.clone(),
            env: self.env.clone(),
            policy: self.consent_policy,
            fingerprint: self.fingerprint().clone(),
        }
    }

    /// Debug mode in this spool's environment.
    fn debug_mode(&self) -> bool {
        crate::consent::debug_named(self.env_names(), |k| self.var(k))
    }

    fn require_dir(&self) -> Result<&Path> {
        validate_app_name(&self.app)?;
        self.dir.as_deref().ok_or_else(|| Kind::NoHomeDir.into())
    }

    /// The context as JSON, detected once per machine salt (see [`State::context`]).
    fn context_json<'s>(&self, st: &'s mut State) -> &'s RawValue {
        let salt = st
            .settings
            .value
            .as_ref()
            .and_then(|s| s.machine_salt.clone());
        if st.context.as_ref().is_none_or(|(had, _)| *had != salt) {
            let ctx = Context::detect_salted(&self.app, self.tool.clone(), salt.as_deref());
            // A struct of strings and booleans always serializes.
            let json =
                serde_json::value::to_raw_value(&ctx).unwrap_or_else(|_| RawValue::NULL.to_owned());
            st.context = Some((salt, json));
        }
        match &st.context {
            Some((_, json)) => json,
            None => RawValue::NULL,
        }
    }

    /// Scrubs an event's properties; with a catalog, its `enum`s are kept as declared
    /// and strings with a `max_length` cut to it after scrubbing. `verdict` is the
    /// check's: an event of flat declared names only is scrubbed by its types.
    fn scrub(
        &self,
        event: &str,
        mut props: Map<String, Value>,
        raw_keys: &std::collections::BTreeSet<String>,
        verdict: Option<crate::catalog::enforce::Verdict>,
    ) -> Map<String, Value> {
        let scrubber = crate::privacy::current_user();
        let Some(declared) = self.catalog.rules().and_then(|r| r.event(event)) else {
            scrubber.scrub_properties(&mut props, |k| raw_keys.contains(k));
            return props;
        };
        let Some(verdict) = verdict else {
            // Not checked (never so for a declared event): the general rules.
            scrubber.scrub_properties(&mut props, |k| raw_keys.contains(k));
            return props;
        };
        if verdict.flat {
            declared.scrub_flat(&mut props, scrubber, |k| raw_keys.contains(k), verdict.long);
            return props;
        }
        // Accepted, so every key, nested ones too, is part of a declared name: only
        // the values are scrubbed.
        let long = verdict.long;
        let enums = declared.nested_enums(&props);
        let changed = if declared.has_raw() {
            scrubber
                .scrub_values_changed(&mut props, &|k| raw_keys.contains(k) || declared.is_raw(k))
        } else {
            scrubber.scrub_values_changed(&mut props, &|k| raw_keys.contains(k))
        };
        // A string within its `max_length` in bytes that the scrubber left alone is
        // within it: usually nothing needs cutting, and the pass is skipped.
        let mut cutter = declared.cutter();
        if long || changed {
            for (k, v) in props.iter_mut() {
                declared.cut_entry(&mut cutter, k, v);
            }
        }
        declared.finish(&mut props, enums, &cutter);
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

/// What decides consent, detached from a spool: a flush carries it and asks it
/// before every request, from a fresh read of `config.json`.
#[derive(Clone)]
pub(crate) struct ConsentSource {
    app: String,
    env: EnvLookup,
    policy: Option<ConsentPolicy>,
    fingerprint: Fingerprint,
}

impl ConsentSource {
    /// Consent from the environment and `dir`'s `config.json` as it is now, with the
    /// settings read (`None` if there is no file or it cannot be read: off).
    pub(crate) fn now(&self, dir: &Path) -> (Consent, Option<Settings>) {
        let (persisted, settings) = match Settings::load_checked(dir) {
            Ok(settings) => (
                settings.as_ref().map_or(Persisted::Undecided, |s| {
                    Persisted::judge(
                        s.telemetry,
                        s.telemetry_fingerprint.as_ref(),
                        &self.fingerprint,
                    )
                }),
                settings,
            ),
            Err(e) => (Persisted::Unreadable(e.to_string()), None),
        };
        let policy = self
            .policy
            .or_else(|| settings.as_ref().and_then(|s| s.consent_policy))
            .unwrap_or_default();
        let env = &self.env;
        (
            Consent::decide_under(&self.app, |k| env(k), &persisted, policy),
            settings,
        )
    }
}
