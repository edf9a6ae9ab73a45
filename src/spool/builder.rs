//! Building a [`Spool`]: nothing is read or written until the first call that needs it.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::enforce::{CatalogState, Enforced, check_catalog_app};
use super::{Clock, EnvLookup, Inner, Samples, Scope, Spool, State, nonempty};
use crate::app::{default_dir, host_var, validate_app_name};
use crate::event::Event;
use crate::limits::Limits;

/// Builds a [`Spool`]; see [`Spool::builder`].
#[derive(Clone)]
#[must_use]
pub struct SpoolBuilder {
    pub(super) samples: Option<Samples>,
    pub(super) annotations: crate::schema::Annotations,
    pub(super) app: String,
    pub(super) dir: Option<PathBuf>,
    pub(super) tool: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) destination: Option<crate::DestinationConfig>,
    pub(super) session_id: Option<String>,
    pub(super) limits: Option<Limits>,
    pub(super) lock_timeout: Duration,
    pub(super) scope: Scope,
    pub(super) consent_policy: Option<crate::ConsentPolicy>,
    pub(super) deletion_request: Option<bool>,
    pub(super) clock: Clock,
    pub(super) env: EnvLookup,
    pub(super) catalog: Option<crate::Catalog>,
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
    /// `<APP>_TELEMETRY_ENDPOINT` overrides it. With [`SpoolBuilder::destination`],
    /// it replaces that destination's endpoint, whichever is called first.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Where events are sent: a kind (native, PostHog, Segment, OTLP), its endpoint
    /// and credentials; persisted so `spool flush` by hand sends there too. A
    /// destination the user set with `spool config set` wins over this.
    ///
    /// ```
    /// use eventspool::{DestinationConfig, Spool};
    /// let dir = tempfile::tempdir().unwrap();
    /// let spool = Spool::builder("mytool")
    ///     .dir(dir.path())
    ///     .destination(DestinationConfig::otlp().header("authorization", "Bearer t0k3n"))
    ///     .build();
    /// assert_eq!(spool.destination().kind, eventspool::DestinationKind::Otlp);
    /// ```
    pub fn destination(mut self, destination: crate::DestinationConfig) -> Self {
        self.destination = Some(destination);
        self
    }

    /// The session every event of this spool carries, instead of a new UUIDv7 for
    /// this process: for a host whose one session spans several processes (a script
    /// calling `spool track` per event passes `--session-id`). Use a UUIDv7 if the
    /// destination counts sessions (PostHog counts only v7 ids).
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// The limits; persisted beside the queue. Environment variables override them.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Tells [`Spool::schema`] what this app sends: `samples` returns one event of each
    /// kind, built by the same functions that build the real ones, with made-up values.
    /// Why each field is sent, and what never is, come from [`SpoolBuilder::purpose`]
    /// and [`SpoolBuilder::never_collected`].
    pub fn describe(mut self, samples: impl Fn() -> Vec<Event> + Send + Sync + 'static) -> Self {
        self.samples = Some(Arc::new(samples));
        self
    }

    /// Why this app collects `field` of `event`, for the Purpose column of
    /// [`Spool::schema`] (`telemetry schema`). Giving the same pair again replaces the
    /// earlier purpose; a pair no sample (or queued event) carries is not shown.
    ///
    /// ```
    /// use eventspool::{Event, Spool};
    /// let dir = tempfile::tempdir().unwrap();
    /// let spool = Spool::builder("mytool")
    ///     .dir(dir.path())
    ///     .describe(|| vec![Event::new("session").property("request_count", 142)])
    ///     .purpose("session", "request_count", "Usage volume")
    ///     .never_collected(["Request paths", "Source code"])
    ///     .build();
    /// let schema = spool.schema().unwrap();
    /// let field = schema.fields.iter().find(|f| f.name == "properties.request_count");
    /// assert_eq!(field.unwrap().purpose.as_deref(), Some("Usage volume"));
    /// assert_eq!(schema.never_collected, ["Request paths", "Source code"]);
    /// ```
    pub fn purpose(mut self, event: &str, field: &str, purpose: &str) -> Self {
        self.annotations.set_purpose(event, field, purpose);
        self
    }

    /// [`SpoolBuilder::purpose`] for several fields of `event`: `(field, purpose)`
    /// pairs, e.g. straight from the table a tool publishes.
    pub fn purposes<'a>(
        mut self,
        event: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        for (field, purpose) in fields {
            self.annotations.set_purpose(event, field, purpose);
        }
        self
    }

    /// What this app never collects (e.g. "Request/response bodies"), listed by
    /// [`Spool::schema`] under the fields. Replaces an earlier list.
    pub fn never_collected<S: Into<String>>(mut self, items: impl IntoIterator<Item = S>) -> Self {
        self.annotations.never_collected = items.into_iter().map(Into::into).collect();
        self
    }

    /// Declares what this app sends (see [`crate::Catalog`]): recording then refuses
    /// any event, property, type or value the catalog does not declare, and
    /// `telemetry schema` prints the catalog as the page to publish. A catalog that is
    /// not valid, or is for another app, makes [`SpoolBuilder::try_build`] fail; a
    /// spool built from it with [`SpoolBuilder::build`] records nothing.
    ///
    /// ```
    /// use eventspool::{Catalog, DeclaredEvent, DeclaredProperty, Event, Spool};
    /// let dir = tempfile::tempdir().unwrap();
    /// let catalog = Catalog::new("mytool").event(
    ///     DeclaredEvent::usage("cli_invoked", "A command started.")
    ///         .property(DeclaredProperty::one_of("command", ["build", "test"], "Which command")),
    /// );
    /// let spool = Spool::builder("mytool").dir(dir.path()).catalog(catalog).try_build().unwrap();
    /// assert!(spool.try_track(Event::new("cli_invoked").property("command", "build")).is_ok());
    /// let refused = spool.try_track(Event::new("cli_invoked").property("cwd", "/srv")).unwrap_err();
    /// assert!(refused.is_undeclared());
    /// assert_eq!(refused.to_string(), "refused by the catalog: cli_invoked.cwd: not declared in the catalog");
    /// ```
    pub fn catalog(mut self, catalog: crate::Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// What the spool does when the user has not decided: [`ConsentPolicy::OptOut`]
    /// (the default) records until they opt out; [`ConsentPolicy::OptIn`] records
    /// and sends nothing, and writes no file, until they say yes
    /// ([`Spool::ask_consent`], `spool enable`). The environment's opt-outs, and
    /// `<APP>_TELEMETRY`, still come first. Persisted beside the decision, so `spool`
    /// run by hand agrees.
    ///
    /// ```
    /// use eventspool::{ConsentPolicy, Decision, Event, Spool};
    /// let dir = tempfile::tempdir().unwrap();
    /// let spool = Spool::builder("mytool")
    ///     .dir(dir.path())
    ///     .consent_policy(ConsentPolicy::OptIn)
    ///     .build();
    /// # if std::env::var_os("DO_NOT_TRACK").is_none() && std::env::var_os("MYTOOL_TELEMETRY").is_none() {
    /// assert_eq!(spool.consent().decision, Decision::Undecided);
    /// spool.track(Event::new("cli_invoked"));
    /// assert!(!dir.path().join("queue.db").exists());
    /// # }
    /// ```
    ///
    /// [`ConsentPolicy::OptOut`]: crate::ConsentPolicy::OptOut
    /// [`ConsentPolicy::OptIn`]: crate::ConsentPolicy::OptIn
    /// [`Spool::ask_consent`]: crate::Spool::ask_consent
    pub fn consent_policy(mut self, policy: crate::ConsentPolicy) -> Self {
        self.consent_policy = Some(policy);
        self
    }

    /// Whether an opt-out by the user's persisted choice (`spool disable`,
    /// [`Spool::disable`], a "no" after a "yes") queues one `deletion_request` event
    /// naming the anonymous id, so the receiver can erase what it holds (default:
    /// off). It is the one request an opted-out spool sends; then the anonymous id is
    /// replaced and the machine hash re-keyed. Persisted, so `spool disable` by hand
    /// does the same.
    ///
    /// [`Spool::disable`]: crate::Spool::disable
    pub fn deletion_request(mut self, on: bool) -> Self {
        self.deletion_request = Some(on);
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

    /// [`SpoolBuilder::build`], failing instead if the app name is invalid (see
    /// [`crate::validate_app_name`]) or the catalog is not valid or is for another
    /// app. Reads and writes nothing either.
    pub fn try_build(self) -> crate::Result<Spool> {
        validate_app_name(&self.app)?;
        if let Some(c) = &self.catalog {
            c.validate()?;
            check_catalog_app(c, &self.app)?;
        }
        Ok(self.build())
    }

    /// Finishes the builder. Nothing is read or written until the first call that
    /// needs it, so building is free and never fails. With an invalid app name (see
    /// [`crate::validate_app_name`]) the spool records nothing and writes nothing
    /// anywhere; its `try_` calls say why. So with a catalog that is not valid or is
    /// for another app ([`SpoolBuilder::try_build`] says which): nothing undeclared
    /// can be recorded, so nothing is.
    pub fn build(self) -> Spool {
        let catalog = match self.catalog {
            None => CatalogState::None,
            Some(c) => match c.validate().and_then(|()| check_catalog_app(&c, &self.app)) {
                Ok(()) => CatalogState::Ready(Arc::new(Enforced::new(c))),
                Err(e) => CatalogState::Invalid(e.to_string()),
            },
        };
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
                destination: match (self.destination, self.endpoint) {
                    (Some(d), Some(e)) => Some(d.endpoint(e)),
                    (Some(d), None) => Some(d),
                    (None, Some(e)) => Some(crate::DestinationConfig::native(e)),
                    (None, None) => None,
                },
                limits: self.limits,
                lock_timeout: self.lock_timeout,
                scope: self.scope,
                clock: self.clock,
                env: self.env,
                samples: self.samples,
                annotations: self.annotations,
                catalog,
                state: Mutex::new(State::default()),
                consent_policy: self.consent_policy,
                deletion_request: self.deletion_request,
                fingerprint: OnceLock::new(),
                env_names: OnceLock::new(),
                // UUIDv7: PostHog counts only v7 session ids, and every receiver can sort by them.
                session_id: self
                    .session_id
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                failures: AtomicU64::new(0),
            }),
        }
    }
}
