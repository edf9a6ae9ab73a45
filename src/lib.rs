//! # eventspool: local-first usage telemetry
//!
//! A host program records small anonymous usage events with [`Spool::track`]. Each
//! lands at once in a SQLite queue in the user's config directory, so recording
//! never waits on the network and nothing is lost offline. A flusher drains the queue
//! to an HTTP endpoint in batches, with retry, backoff and expiry. An opt-out
//! ([`Consent`]) stops both recording and sending, and the `spool` command line lets
//! users see exactly what is queued and purge it.
//!
//! ```
//! use eventspool::{Event, Recorded, Spool};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let spool = Spool::builder("mytool")
//!     .dir(dir.path()) // usually left out: the app's config directory
//!     .tool("mytool", "1.4.0")
//!     .build();
//!
//! // Fire-and-forget: never fails, never panics, never waits on the network.
//! spool.track(Event::new("cli_invoked").property("command", "build"));
//!
//! // Or ask what happened.
//! match spool.try_track(Event::new("job_finished").property("success", true)) {
//!     Ok(Recorded::Queued(id)) => println!("queued {id}"),
//!     Ok(other) => println!("not queued: {other:?}"),
//!     Err(e) => eprintln!("telemetry: {e}"),
//! }
//!
//! for queued in spool.list(50).unwrap() {
//!     println!("{} {}", queued.event, queued.payload);
//! }
//! ```
//!
//! The tour:
//! - recording: [`Spool::builder`], [`Spool::track`] / [`Spool::try_track`] /
//!   [`Spool::track_batch`], the [`Event`] and its validation, the [`Payload`] sent;
//! - consent: [`Consent`] (the opt-out rules), [`debug_mode`];
//! - privacy and context: [`Scrubber`], [`Context`], [`machine_hash`];
//! - limits and settings: [`Limits`] (with their environment overrides), [`Settings`]
//!   (`config.json`);
//! - delivery: [`Spool::flush`] / [`Spool::flush_blocking`] and the [`FlushReport`],
//!   the policy functions ([`check_endpoint`], [`classify`], [`parse_retry_after`],
//!   [`backoff`]);
//! - host integration: [`Spool::start_background_flusher`], [`Spool::flush_detached`]
//!   with [`detached_flush_hook`], [`Spool::notice_once`], [`Spool::schema`], and
//!   [`TelemetryCommand`] to mount `status`/`list`/`show`/`clear`/`enable`/`disable`/
//!   `flush`/`schema` in a host's own clap CLI;
//! - the `spool` command line ([`Cli`], [`cli_main`]) and its development endpoint
//!   ([`Collector`], [`serve`]).
#![deny(missing_docs)]

mod app;
mod cli;
mod collector;
mod consent;
mod context;
mod delivery;
mod error;
mod event;
mod flush;
mod fsize;
mod limits;
mod notice;
mod privacy;
mod queue;
mod schema;
mod settings;
mod spool;
mod time;

pub use app::{MAX_APP_NAME_LEN, default_dir, validate_app_name};
pub use cli::{
    Cli, Command, Global, TelemetryCommand, main as cli_main, parse_property_arg, report,
    report_as, spool_for, usage_error,
};
pub use collector::{Collector, serve};
pub use consent::{Consent, debug_mode, env_prefix, is_falsy, is_truthy};
pub use context::{Context, machine_hash};
pub use delivery::{
    GZIP_THRESHOLD, MAX_RESPONSE_BYTES, Outcome, backoff, check_endpoint, classify,
    parse_retry_after,
};
pub use error::{Error, Result};
pub use event::{Event, MAX_DEPTH, MAX_NAME_LEN, Payload, validate_name};
pub use flush::{
    BackgroundFlusher, DEFAULT_DETACHED_LIFETIME, DETACHED_ENV, Detached, FlushEnd, FlushOptions,
    FlushReport, Progress, Skipped, detached_flush_hook,
};
pub use limits::{LIMIT_ENV_VARS, Limits, parse_count, parse_duration, parse_size};
pub use privacy::{MAX_ERROR_CHARS, Scrubber, is_error_key};
pub use queue::{QUEUE_FILE, QueueStats, QueuedEvent};
pub use schema::{Field, Schema};
pub use settings::{MAX_SETTINGS_BYTES, SETTINGS_FILE, Settings};
pub use spool::{DEFAULT_LOCK_TIMEOUT, Recorded, Spool, SpoolBuilder, Status};
pub use time::{now_ms, rfc3339_ms};
