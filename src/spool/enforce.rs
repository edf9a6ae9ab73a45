//! The spool's catalog: held compiled, asked before any event is recorded, and every
//! refusal counted (the count only) in the queue as `dropped_undeclared`.

use std::sync::Arc;

use super::{Inner, Spool};
use crate::Catalog;
use crate::catalog::enforce::{Refusal, Rules, Verdict};
use crate::consent::Persisted;
use crate::error::{Kind, Result};
use crate::event::Event;
use crate::queue::Counter;

/// A validated catalog and its compiled rules.
pub(crate) struct Enforced {
    pub(crate) catalog: Catalog,
    pub(crate) rules: Rules,
}

impl Enforced {
    pub(crate) fn new(catalog: Catalog) -> Enforced {
        let rules = Rules::new(&catalog);
        Enforced { catalog, rules }
    }
}

/// Whether a spool has a catalog.
#[derive(Default)]
pub(crate) enum CatalogState {
    /// None: recording is as without one.
    #[default]
    None,
    /// One, enforced.
    Ready(Arc<Enforced>),
    /// One that could not be used (why): every event is refused, so nothing the host
    /// meant to restrict slips through.
    Invalid(String),
}

impl CatalogState {
    pub(crate) fn rules(&self) -> Option<&Rules> {
        match self {
            CatalogState::Ready(e) => Some(&e.rules),
            _ => None,
        }
    }
}

/// An error unless `catalog` is for `app`.
pub(crate) fn check_catalog_app(catalog: &Catalog, app: &str) -> Result<()> {
    if catalog.app == app {
        return Ok(());
    }
    Err(Kind::Catalog(format!(
        "catalog: it is for app {:?}, and this is {app:?}",
        catalog.app
    ))
    .into())
}

/// Per event, what the catalog's check found ([`Verdict`]): none without a catalog,
/// and no allocation for the usual single event.
pub(crate) enum Verdicts {
    /// No catalog: nothing was checked.
    NoCatalog,
    /// The verdict on the only event.
    One(Verdict),
    /// One verdict per event, in order.
    Many(Vec<Verdict>),
}

impl Verdicts {
    /// Adds the verdict on the next event; the first needs no allocation.
    fn push(&mut self, v: Verdict) {
        *self = match std::mem::replace(self, Verdicts::NoCatalog) {
            Verdicts::NoCatalog => Verdicts::One(v),
            Verdicts::One(first) => Verdicts::Many(vec![first, v]),
            Verdicts::Many(mut all) => {
                all.push(v);
                Verdicts::Many(all)
            }
        };
    }

    /// The verdict on the `i`-th event, if the catalog gave one.
    pub(crate) fn get(&self, i: usize) -> Option<Verdict> {
        match self {
            Verdicts::NoCatalog => None,
            Verdicts::One(v) => (i == 0).then_some(*v),
            Verdicts::Many(all) => all.get(i).copied(),
        }
    }
}

impl Spool {
    /// The catalog this spool enforces and publishes, if it has one (given to
    /// [`SpoolBuilder::catalog`](crate::SpoolBuilder::catalog); for the `spool`
    /// command, `--catalog`, `SPOOL_CATALOG` or `spool config set catalog`). `None`
    /// too when the one given could not be used (then nothing is recorded).
    pub fn catalog(&self) -> Option<&Catalog> {
        match &self.inner.catalog {
            CatalogState::Ready(e) => Some(&e.catalog),
            _ => None,
        }
    }

    /// The page to publish, generated from the catalog (`None` without one): what
    /// `spool schema` and a host's `telemetry schema` print.
    ///
    /// ```
    /// use eventspool::{Catalog, DeclaredEvent, DeclaredProperty, Spool};
    /// let dir = tempfile::tempdir().unwrap();
    /// let catalog = Catalog::new("mytool").event(
    ///     DeclaredEvent::usage("cli_invoked", "A command started.")
    ///         .property(DeclaredProperty::bool("ci", "Runs under CI").example(false)),
    /// );
    /// let spool = Spool::builder("mytool").dir(dir.path()).catalog(catalog).build();
    /// let md = spool.page().unwrap().to_markdown();
    /// assert!(md.contains("| `ci` | bool | Runs under CI | false |"), "{md}");
    /// assert!(md.contains("`MYTOOL_TELEMETRY=false`"), "{md}");
    /// ```
    pub fn page(&self) -> Option<crate::Page> {
        let catalog = self.catalog()?;
        let destination =
            crate::destination::apply(self.destination(), &self.env_overrides_lenient());
        let settings_file = self.dir().map(|d| {
            let path = crate::settings::Settings::path(d);
            let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
            match home.as_deref().and_then(|h| path.strip_prefix(h).ok()) {
                Some(rest) => format!("~/{}", rest.display()),
                None => path.display().to_string(),
            }
        });
        Some(crate::catalog::page::Page::new(
            catalog,
            crate::catalog::page::Where {
                endpoint: self.endpoint(),
                kind: destination.kind.to_string(),
                settings_file,
            },
        ))
    }

    /// Every difference between the catalog and what is queued now, and the
    /// destination (when one is configured and the catalog's `sent_to` names
    /// another): what `spool schema --check` lists. Empty means they agree. An error
    /// without a catalog.
    pub fn catalog_differences(&self) -> Result<Vec<crate::Difference>> {
        let CatalogState::Ready(e) = &self.inner.catalog else {
            return Err(Kind::Catalog(
                "no catalog to check against: give one with --catalog FILE, SPOOL_CATALOG or `spool config set catalog FILE`".into(),
            )
            .into());
        };
        let queued = self.list(usize::MAX >> 1)?;
        Ok(crate::catalog::page::differences(
            &e.catalog,
            &e.rules,
            queued
                .iter()
                // A pending deletion request is the library's own, not the host's.
                .filter(|q| q.event != crate::deletion::EVENT)
                .map(|q| (q.id.as_str(), q.created_at, q.payload.as_str())),
            self.endpoint().as_deref(),
        ))
    }

    /// Checks `events` against the catalog, if there is one; on a refusal, counts
    /// every refused event and returns the first. Else the verdict on each (see
    /// [`Rules::verdict`]).
    pub(super) fn enforce_catalog(&self, events: &[Event]) -> Result<Verdicts> {
        let rules = match &self.inner.catalog {
            CatalogState::None => return Ok(Verdicts::NoCatalog),
            CatalogState::Invalid(why) => return Err(Kind::Catalog(why.clone()).into()),
            CatalogState::Ready(e) => &e.rules,
        };
        let now = self.catalog_now(rules);
        let mut verdicts = Verdicts::NoCatalog;
        let mut refused: Vec<Refusal> = Vec::new();
        for e in events {
            match rules.verdict(e.name(), e.properties_map(), now) {
                Ok(v) => verdicts.push(v),
                Err(r) => refused.push(r),
            }
        }
        let Some(first) = refused.first().cloned() else {
            return Ok(verdicts);
        };
        self.count_undeclared(&refused);
        Err(Kind::Undeclared(first).into())
    }

    /// `events` without those the catalog refuses, which are counted (for
    /// [`Spool::track_batch`], which drops only those).
    pub(super) fn without_undeclared(&self, events: Vec<Event>) -> Vec<Event> {
        let CatalogState::Ready(e) = &self.inner.catalog else {
            return events;
        };
        let now = self.catalog_now(&e.rules);
        let mut refused = Vec::new();
        let kept = events
            .into_iter()
            .filter(
                |ev| match e.rules.check(ev.name(), ev.properties_map(), now) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.push(r);
                        false
                    }
                },
            )
            .collect();
        if !refused.is_empty() {
            self.count_undeclared(&refused);
        }
        kept
    }

    /// Now on the spool's clock, for checking against `rules`: asked only if some
    /// event has an expiry date, the only thing the time is compared with.
    fn catalog_now(&self, rules: &Rules) -> i64 {
        if rules.any_expiry() {
            self.inner.now()
        } else {
            0
        }
    }

    /// Adds the refusals to `dropped_undeclared` in the queue, or in debug mode says
    /// why on stderr instead. Nothing is written while telemetry is off; a failure to
    /// count is ignored (the refusal itself stands).
    fn count_undeclared(&self, refused: &[Refusal]) {
        let inner: &Inner = &self.inner;
        if inner.debug_mode() {
            for r in refused {
                eprintln!("{}: telemetry: refused by the catalog: {r}", inner.app);
            }
            return;
        }
        // Opted out in the environment: nothing is written, so no file is read.
        if inner.env_opt_out().is_some() {
            return;
        }
        let _ = self.with_state(|st, inner| {
            let persisted = inner.persisted_choice(st);
            if matches!(persisted, Persisted::Unreadable(_)) || !inner.consent_now(st).enabled {
                return Ok(());
            }
            inner
                .queue(st)?
                .count(Counter::Undeclared, refused.len() as u64)
        });
    }
}
