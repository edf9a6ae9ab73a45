//! The recording pipeline: consent, back-pressure, shape and size checks, scrubbing,
//! the payload, and one commit that no purge can slip past.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Inner, Recorded, Spool, State, stamp};
use crate::app::validate_app_name;
use crate::consent::Persisted;
use crate::error::{Kind, Result};
use crate::event::{Event, check_shape, drop_flat, validate_name};
use crate::limits::Limits;
use crate::queue::{Enqueued, NewEvent, Queue};
use crate::settings::Settings;
use crate::time::rfc3339_ms;

/// Commits on one recording connection between checkpoint requests (about 500 KiB
/// of WAL with small events).
pub(super) const CHECKPOINT_EVERY: u32 = 256;

/// The most WAL a recording connection lets pile up: twice the queue's byte cap,
/// and at least 8 MiB.
pub(super) fn wal_limit(limits: &Limits) -> u64 {
    limits.max_bytes.saturating_mul(2).max(8 << 20)
}

/// How a payload is serialized: the same fields, in the same order, as [`Payload`].
#[derive(Serialize)]
pub(super) struct PayloadRef<'a> {
    id: String,
    event: String,
    timestamp: &'a str,
    anonymous_id: &'a str,
    session_id: &'a str,
    context: &'a RawValue,
    properties: Map<String, Value>,
}

impl Spool {
    /// Records an event, fire-and-forget: never panics, never returns an error, and
    /// waits at most the lock timeout. Failures are counted in [`Spool::failures`].
    pub fn track(&self, event: Event) {
        self.swallow(|| self.try_track(event).map(|_| ()));
    }

    /// Records several events in one transaction, fire-and-forget like [`Spool::track`].
    /// An event the catalog refuses is dropped (and counted); the others are recorded.
    pub fn track_batch(&self, events: Vec<Event>) {
        self.swallow(|| {
            let events = self.without_undeclared(events);
            if events.is_empty() {
                return Ok(());
            }
            self.try_track_batch(events).map(|_| ())
        });
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

    /// Records an event and says what happened, for callers that want to know. With a
    /// catalog, an event it does not declare is an error naming the event and field
    /// ([`crate::Error::is_undeclared`]), counted, and nothing is written.
    pub fn try_track(&self, event: Event) -> Result<Recorded> {
        let mut out = self.try_track_batch(vec![event])?;
        Ok(out.pop().unwrap_or(Recorded::Disabled))
    }

    /// Records several events in one transaction; all or none are queued. With a
    /// catalog, one event it refuses refuses the batch (each refused event counted).
    pub fn try_track_batch(&self, events: Vec<Event>) -> Result<Vec<Recorded>> {
        let _env = self.inner.env_scope();
        validate_app_name(&self.inner.app)?;
        for e in &events {
            validate_name(e.name())?;
            crate::deletion::check_not_reserved(e.name())?;
        }
        // Before anything touches disk: a refused event's content is never written.
        let verdicts = self.enforce_catalog(&events)?;
        let inner = &self.inner;
        // An opt-out in the environment decides whatever the file says: record nothing
        // without reading it (an opted-out `spool track` does no I/O at all).
        if inner.env_opt_out().is_some() {
            return Ok(vec![Recorded::Disabled; events.len()]);
        }
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
            if !inner.consent_now(st).enabled {
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
                if !inner.consent_now(st).enabled {
                    return Ok(vec![Recorded::Disabled; events.len()]);
                }
                id
            };
            let now = inner.now();
            let context = inner.context_json(st);
            let mut payloads = Vec::with_capacity(events.len());
            let timestamp = rfc3339_ms(now);
            for (i, event) in events.into_iter().enumerate() {
                let (name, props, raw_keys) = event.into_parts();
                if let Err(e) = check_shape(&props, limits.max_event_bytes) {
                    drop_flat(props);
                    return Err(e);
                }
                let properties = inner.scrub(&name, props, &raw_keys, verdicts.get(i));
                // Field for field the public `Payload`, with the parts that are the same
                // for every event borrowed (the context serialized once per process).
                let p = PayloadRef {
                    id: uuid::Uuid::now_v7().to_string(),
                    event: name,
                    timestamp: &timestamp,
                    anonymous_id: &anonymous_id,
                    session_id: &inner.session_id,
                    context,
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
                        if !inner.consent_now(st).enabled {
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
                        // Reopen next time if the file may have gone bad (opening sets
                        // it aside), but not after a lock wait ran out: that says
                        // nothing about the file, and a reopen per busy commit costs a
                        // connection each time (under Wine every one of those stays
                        // open in wineserver while any process holds a lock on the
                        // queue, until it runs out of descriptors).
                        if !e.is_transient() {
                            st.queue = None;
                        }
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
}

impl Inner {
    /// Asks this spool's checkpointer thread to checkpoint the WAL, starting the thread
    /// the first time, so a long-running host never pays a checkpoint's fsyncs inside
    /// `track`. Until then (and in a one-shot process, which never gets here) the
    /// connection checkpoints inline at SQLite's default of 1000 pages, which
    /// CHECKPOINT_EVERY commits stay below.
    pub(super) fn request_checkpoint(&self, st: &mut State) {
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
}
