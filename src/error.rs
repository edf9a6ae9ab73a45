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
#[derive(Debug, thiserror::Error)]
pub(crate) enum Kind {
    #[error("invalid event name {name:?}: {why}")]
    EventName { name: String, why: &'static str },
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
    #[error("no queued event with id {0:?}")]
    UnknownId(String),
    #[error("{0}")]
    Refused(String),
    #[error("queue {path}: {source}")]
    Queue {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path}: {why}")]
    SettingsFile { path: PathBuf, why: String },
    #[error("could not start the flush: {0}")]
    Runtime(String),
}

impl Error {
    /// Returns true if and only if the error came from input the caller gave
    /// (event name, properties, size, a setting or endpoint), as opposed to the
    /// machine (disk, queue file, runtime).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.0,
            Kind::EventName { .. }
                | Kind::Properties(_)
                | Kind::EventTooLarge { .. }
                | Kind::Setting { .. }
                | Kind::Endpoint { .. }
                | Kind::NoEndpoint
                | Kind::UnknownId(_)
        )
    }

    /// Returns true if and only if a later attempt may succeed: another process held
    /// the queue's write lock for longer than the lock timeout.
    pub fn is_transient(&self) -> bool {
        match &self.0 {
            Kind::Queue { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    pub(crate) fn queue(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        Kind::Queue {
            path: path.into(),
            source,
        }
        .into()
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Kind::Io {
            path: path.into(),
            source,
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
