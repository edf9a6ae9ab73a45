//! The library's error type: one public struct, a private kind, and questions to ask it.

use std::path::PathBuf;

/// What went wrong inside eventspool.
///
/// The fire-and-forget paths ([`crate::Spool::track`]) swallow and count these; the
/// `try_` paths return them so a host or the `spool` CLI can say what happened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] Kind);

/// The private kinds; callers ask [`Error`] questions instead of matching on these.
///
/// Each condition has its own variant, so a policy such as "pause recording after a
/// storage failure" can name exactly the conditions it applies to. Fields that hold a
/// cause are displayed, never also exposed as `source()`, so a one-line message built
/// from the chain says each cause once.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Kind {
    #[error("invalid app name {name:?}: {why}")]
    AppName { name: String, why: &'static str },
    #[error("invalid event name {name:?}: {why}")]
    EventName { name: String, why: &'static str },
    #[error(
        "event name {shown:?} refused: it holds {what}; names are sent unscrubbed, so put such values in properties, which are scrubbed"
    )]
    EventNamePrivate { shown: String, what: &'static str },
    #[error("invalid properties: {0}")]
    Properties(String),
    #[error("event is {size} bytes serialized, over the {max}-byte limit")]
    EventTooLarge { size: usize, max: usize },
    #[error("invalid value {value:?} for {name}: {why}")]
    Setting {
        name: String,
        value: String,
        why: String,
    },
    #[error("invalid endpoint {url:?}: {why}")]
    Endpoint { url: String, why: String },
    #[error("no endpoint configured: pass --endpoint, set SPOOL_ENDPOINT, or set one in the host")]
    NoEndpoint,
    #[error("{0}")]
    Destination(String),
    #[error("no queued event with id {0:?}")]
    UnknownId(String),
    #[error("id prefix {0:?} matches more than one event; give more of it")]
    AmbiguousId(String),
    #[error("no home directory to keep telemetry in: pass --dir or set SPOOL_DIR")]
    NoHomeDir,
    #[error("recording is paused for a second after the queue could not be written; event dropped")]
    Paused,
    #[error(
        "the queue's write-ahead log is over {limit} bytes (another process holds it open); event dropped"
    )]
    WalFull { limit: u64 },
    #[error("{0} is a symbolic link; refusing to keep telemetry through it")]
    Symlink(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path} belongs to another user (uid {uid}); refusing to use it")]
    #[cfg_attr(not(unix), allow(dead_code))]
    ForeignOwner { path: PathBuf, uid: u32 },
    #[error(
        "the queue was written by a newer eventspool (schema {seen}, this one knows {known}); upgrade, or move the file aside"
    )]
    NewerSchema { seen: i64, known: i64 },
    #[error("{path}: still not a valid queue after recovery: {why}")]
    StillInvalid { path: PathBuf, why: String },
    #[error("queue {path}: {cause}")]
    Queue {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("settings file {path}: {why}")]
    SettingsFile { path: PathBuf, why: String },
    #[error("call eventspool::detached_flush_hook() at the start of main before flush_detached")]
    HookMissing,
    #[error(
        "the queue {path} was emptied, but another process holds it open, so its old contents may stay in the write-ahead log until that process exits; run the command again then"
    )]
    PurgeIncomplete { path: PathBuf },
    #[error("lost the flush lease to another flusher")]
    LostLease,
    #[error("could not start the flush: {0}")]
    Runtime(String),
    #[error("{0}")]
    Catalog(String),
    #[error("refused by the catalog: {0}")]
    Undeclared(crate::catalog::enforce::Refusal),
}

impl Error {
    /// Returns true if and only if the error came from input the caller gave
    /// (event name, properties, size, a setting or endpoint), as opposed to the
    /// machine (disk, queue file, runtime).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.0,
            Kind::AppName { .. }
                | Kind::EventName { .. }
                | Kind::EventNamePrivate { .. }
                | Kind::Properties(_)
                | Kind::EventTooLarge { .. }
                | Kind::Setting { .. }
                | Kind::Endpoint { .. }
                | Kind::NoEndpoint
                | Kind::Destination(_)
                | Kind::UnknownId(_)
                | Kind::AmbiguousId(_)
                | Kind::Catalog(_)
                | Kind::Undeclared(_)
        )
    }

    /// Returns true if and only if the spool's catalog refused the event: an event or
    /// property it does not declare, a wrong type, a value outside an `enum`, or an
    /// expired event. The message names the event and the field.
    pub fn is_undeclared(&self) -> bool {
        matches!(self.0, Kind::Undeclared(_))
    }

    /// Returns true if and only if a catalog could not be used: a file that is not a
    /// valid catalog, or one for another app.
    pub fn is_catalog_error(&self) -> bool {
        matches!(self.0, Kind::Catalog(_))
    }

    /// Returns true if and only if the queue's storage failed: the disk or the queue
    /// file could not be written or read (full disk, read-only or broken directory,
    /// I/O error). Refusals that are themselves a response to such a failure (the
    /// recording pause, a full WAL) are not storage failures, so they never re-arm
    /// the pause they come from.
    pub fn is_storage_failure(&self) -> bool {
        match &self.0 {
            Kind::Queue { cause, .. } => !matches!(
                cause.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Kind::Io { .. }
            | Kind::StillInvalid { .. }
            | Kind::NotADirectory(_)
            | Kind::Symlink(_)
            | Kind::ForeignOwner { .. } => true,
            _ => false,
        }
    }

    /// Returns true if and only if a later attempt may succeed: another process held
    /// the queue's write lock for longer than the lock timeout.
    pub fn is_transient(&self) -> bool {
        match &self.0 {
            Kind::Queue { cause, .. } => matches!(
                cause.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    pub(crate) fn queue(path: impl Into<PathBuf>, cause: rusqlite::Error) -> Self {
        Kind::Queue {
            path: path.into(),
            cause,
        }
        .into()
    }

    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Kind::Io {
            path: path.into(),
            cause,
        }
        .into()
    }

    pub(crate) fn setting(name: &str, value: &str, why: impl Into<String>) -> Self {
        Kind::Setting {
            name: name.into(),
            value: value.into(),
            why: why.into(),
        }
        .into()
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
