//! `config.json` as last read: re-read when its stamp changes, looked at no more
//! often than every 250 ms, and synced once per process with what the host set.

use std::time::Instant;

use super::{Inner, SETTINGS_RECHECK, State};
use crate::consent::Persisted;
use crate::error::{Kind, Result};
use crate::limits::Limits;
use crate::queue::ensure_dir;
use crate::settings::Settings;

/// `config.json` as last read, and the file stamp it was read at, so a choice made by
/// `spool disable` in another terminal is seen by a long-running host within
/// SETTINGS_RECHECK, without a `stat` on every event.
#[derive(Default)]
pub(super) struct SettingsCache {
    pub(super) stamp: Option<Stamp>,
    /// When the stamp was last compared; `None` until first loaded.
    pub(super) checked: Option<Instant>,
    pub(super) value: Option<Settings>,
    /// Why the file could not be used, if it exists but cannot.
    pub(super) unreadable: Option<String>,
    /// The persisted choice judged against the catalog's fingerprint, once per read
    /// of the file: comparing fingerprints on every event would cost `track`.
    pub(super) judged: Option<Persisted>,
}

pub(super) use crate::settings::{Stamp, stamp, stamp_of};

impl Inner {
    /// Re-reads `config.json` if its modification time or size changed.
    pub(super) fn refresh_settings(&self, st: &mut State) {
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
                judged: None,
            },
            Err(e) => {
                log::debug!("eventspool: {e}; treating telemetry as disabled");
                SettingsCache {
                    stamp,
                    checked: Some(now),
                    value: None,
                    unreadable: Some(e.to_string()),
                    judged: None,
                }
            }
        };
    }

    /// The persisted consent choice; an unreadable settings file counts as "off", so
    /// a damaged file never turns telemetry on against the user's wish.
    pub(super) fn persisted_choice(&self, st: &mut State) -> Persisted {
        self.refresh_settings(st);
        if let Some(why) = &st.settings.unreadable {
            return Persisted::Unreadable(why.clone());
        }
        if let Some(judged) = &st.settings.judged {
            return judged.clone();
        }
        let judged = match st.settings.value.as_ref() {
            None => Persisted::Undecided,
            Some(s) => Persisted::judge(
                s.telemetry,
                s.telemetry_fingerprint.as_ref(),
                self.fingerprint(),
            ),
        };
        st.settings.judged = Some(judged.clone());
        judged
    }

    pub(super) fn effective_limits(&self, st: &mut State) -> Limits {
        self.refresh_settings(st);
        let limits = self
            .limits
            .clone()
            .or_else(|| st.settings.value.as_ref().and_then(|s| s.limits.clone()))
            .unwrap_or_default();
        super::user_config::with_user_limits(limits, st.settings.value.as_ref())
            .with_env_lenient(|k| self.var(k))
    }

    /// Makes sure `config.json` exists with an anonymous id and what the host
    /// configured in code; returns the anonymous id. Runs its writes once per process.
    pub(super) fn sync_settings(&self, st: &mut State) -> Result<String> {
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
            // The host's destination, unless the user chose one (`spool config set`).
            if let Some(code) = &self.destination {
                if !s.destination.as_ref().is_some_and(|d| d.set_by_user) {
                    s.destination = Some(code.clone());
                }
                s.endpoint = None;
            }
            if self.tool.is_some() {
                s.tool.clone_from(&self.tool);
            }
            if self.limits.is_some() {
                s.limits.clone_from(&self.limits);
            }
            self.write_host_consent_settings(s);
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
                judged: None,
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
}
