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
//! The tour, everything a host needs (one `pub use` block below):
//! - recording: [`Spool::builder`], [`Spool::track`] / [`Spool::try_track`] /
//!   [`Spool::track_batch`], the [`Event`] and the [`Payload`] sent;
//! - consent: [`Consent`] (the opt-out rules and which one decided), [`Spool::enable`],
//!   [`Spool::disable`]; [`ConsentPolicy`] (`opt_out` or `opt_in`) and the prompt
//!   [`Spool::ask_consent`] ([`Decision`]); a deletion request on opt-out
//!   ([`SpoolBuilder::deletion_request`]);
//! - inspection: [`Spool::list`], [`Spool::status`] ([`Status`], [`QueueStats`]);
//! - limits and settings: [`Limits`] (with their environment overrides), [`Settings`]
//!   (`config.json`, read-only: a host keeps its own small state with
//!   [`Spool::set_host_value`]);
//! - delivery: [`Spool::flush`] / [`Spool::flush_blocking`] ([`FlushOptions`],
//!   [`FlushReport`]), [`Spool::start_background_flusher`] ([`BackgroundFlusher`]),
//!   [`Spool::flush_detached`] with [`detached_flush_hook`];
//! - what is sent: a [`Catalog`] ([`SpoolBuilder::catalog`], or a JSON file with
//!   [`Catalog::from_json`]) declares every event and property, recording refuses the
//!   rest, and [`Spool::page`] ([`Page`]) is the page to publish; without one,
//!   [`Spool::schema`] ([`Schema`]); [`Context`];
//! - `eventspool::cli` (feature `cli`, on by default): the `spool` command line, and
//!   `cli::TelemetryCommand` to mount `status`/`list`/`show`/`clear`/`enable`/
//!   `disable`/`flush`/`schema` in a host's own clap CLI; `eventspool::collector`
//!   (feature `serve`): the development endpoint behind `spool serve`.
//!
//! Cargo features: `cli` (clap, anyhow, indicatif) and `serve` (a hyper server) are on
//! by default for `cargo install`; a host that only records and flushes uses
//! `default-features = false` and still gets every destination, background and
//! detached flushing, listing and status.
#![deny(missing_docs)]
// Every call into the C library is in `sys`, behind safe functions.
#![deny(unsafe_code)]

mod app;
mod catalog;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "serve")]
pub mod collector;
mod consent;
mod context;
mod deletion;
mod delivery;
mod destination;
mod error;
mod event;
mod fingerprint;
mod flush;
mod fsize;

mod limits;
mod notice;
mod privacy;
mod prompt;
mod queue;
mod schema;
mod settings;
mod spool;
mod sys;
mod time;

/// The parsers of outside input and the delivery policy, for the fuzz target and the
/// corpus replay only: not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::delivery::{check_endpoint, classify, parse_retry_after};
    pub use crate::event::validate_name;
    pub use crate::limits::{parse_count, parse_duration, parse_size};
    pub use crate::privacy::Scrubber;
    pub use crate::time::now_ms;
}

pub use app::validate_app_name;
pub use catalog::{
    Catalog, Category, Check, Date, DeclaredEvent, DeclaredProperty, Difference, Expiry, OptOut,
    Page, PageEvent, PageField, PropertyType, SentTo,
};
pub use consent::{Consent, ConsentPolicy, Decision};
pub use context::Context;
pub use destination::{Compression, DestinationConfig, DestinationKind, OtlpProtocol};
pub use error::{Error, Result};
pub use event::{Event, Payload};
pub use fingerprint::Fingerprint;
pub use flush::{
    BackgroundFlusher, DEFAULT_DETACHED_LIFETIME, Detached, FlushEnd, FlushOptions, FlushReport,
    LastFlush, Progress, Skipped, detached_flush_hook,
};
pub use limits::Limits;
pub use queue::{DropReason, QueueStats, QueuedEvent};
pub use schema::{Field, Schema};
pub use settings::Settings;
pub use spool::{ConfigKey, DEFAULT_LOCK_TIMEOUT, Recorded, Spool, SpoolBuilder, Status};
