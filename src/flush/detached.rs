//! A detached flush: the host re-runs itself as a child that flushes and ends at a
//! hard lifetime, so the host can exit at once.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::flush::FlushOptions;
use crate::spool::Spool;

/// Environment variable naming the ticket that turns a re-executed host into a
/// detached flusher (`<token>:<queue directory>`); without a matching ticket it does
/// nothing.
pub const DETACHED_ENV: &str = "EVENTSPOOL_DETACHED_FLUSH";

/// Default hard lifetime of a detached flusher.
pub const DEFAULT_DETACHED_LIFETIME: Duration = Duration::from_secs(30);

pub(super) static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

impl Spool {
    /// Hands the flush to a detached child process (this executable, re-run) so the
    /// host can exit at once. The child holds the lease, flushes for at most
    /// `lifetime`, and ends itself at `lifetime` whatever it is doing and whatever the
    /// host did to signals. It inherits none of the host's handles: its standard
    /// streams are null, so a pipe from the host closes when the host exits.
    ///
    /// The child is told who it is by a single-use ticket, a 0600 file in the queue
    /// directory named in `EVENTSPOOL_DETACHED_FLUSH`: the variable alone does not make a process
    /// a flusher.
    ///
    /// Returns the child's pid ([`Detached::Spawned`]), or why nothing was started
    /// ([`Detached::Skipped`]): telemetry off, no endpoint, an empty queue, a server
    /// backoff in force, or another live flusher.
    /// Requires [`detached_flush_hook`] to be called at the top of `main`.
    pub fn flush_detached(&self, lifetime: Duration) -> Result<Detached> {
        self.flush_detached_to(None, lifetime, false)
    }

    /// [`Spool::flush_detached`], only when a flush is due: the queue holds at least
    /// a batch, or its oldest event is older than the flush interval (default 15 min,
    /// `SPOOL_FLUSH_INTERVAL`); and never while backing off or while another flusher
    /// holds the lease. Most invocations of a CLI then spawn nothing
    /// ([`Skipped::NotDue`]) and pay only for reading the queue's counts.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # eventspool::detached_flush_hook();
    /// let spool = eventspool::Spool::builder("mytool")
    ///     .dir(dir.path())
    ///     .endpoint("https://telemetry.example.com/v1/events")
    ///     .build();
    /// spool.track(eventspool::Event::new("ran"));
    /// // One fresh event is less than a batch and younger than the interval.
    /// let done = spool.flush_detached_if_due(eventspool::DEFAULT_DETACHED_LIFETIME).unwrap();
    /// assert_eq!(done, eventspool::Detached::Skipped(eventspool::Skipped::NotDue));
    /// ```
    pub fn flush_detached_if_due(&self, lifetime: Duration) -> Result<Detached> {
        self.flush_detached_to(None, lifetime, true)
    }

    /// [`Spool::flush_detached`] to `destination` instead of the configured one.
    pub(crate) fn flush_detached_to(
        &self,
        destination: Option<crate::DestinationConfig>,
        lifetime: Duration,
        if_due: bool,
    ) -> Result<Detached> {
        let consent = self.consent();
        // Off, a child is started only for a deletion request the user's opt-out
        // queued (never while an environment opt-out holds); it is always due.
        let deletion_only = self.only_deletion_request_may_go(&consent);
        if !consent.enabled && !deletion_only {
            return Ok(Detached::Skipped(Skipped::Disabled(consent.reason)));
        }
        if !HOOK_INSTALLED.load(Ordering::Relaxed) {
            return Err(Kind::HookMissing.into());
        }
        // Resolved here, so the child sends exactly where this process would: the
        // child's own environment (it is a `spool`-scoped spool) plays no part.
        let Some(target) = self.target(destination, &Default::default())? else {
            return Ok(Detached::Skipped(Skipped::NoEndpoint));
        };
        let Some(dir) = self.dir() else {
            return Err(Kind::NoHomeDir.into());
        };
        // Cheap checks first, so a host run during an outage or with an empty queue
        // does not start a process each time. On the spool's own connection: a host
        // that just recorded has it open, and a second one would parse the schema and
        // map the WAL index again on every invocation.
        let limits = self.limits();
        let now = self.inner.now();
        let skipped = self.with_existing_queue_waiting(self.inner.lock_timeout, |queue| {
            let stats = queue.stats()?;
            if stats.events == 0 {
                return Ok(Some(Skipped::Empty));
            }
            if if_due && !deletion_only {
                let interval = i64::try_from(limits.flush_interval.as_millis()).unwrap_or(i64::MAX);
                let full = stats.events >= u64::from(limits.batch_size.max(1));
                let old = stats
                    .oldest
                    .is_some_and(|t| now.saturating_sub(t) >= interval);
                if !full && !old {
                    return Ok(Some(Skipped::NotDue));
                }
            }
            if let Some(until) = crate::flush::backoff_in_force(queue, &limits, now)? {
                return Ok(Some(Skipped::BackingOff { until }));
            }
            if let Some((holder, _)) = queue
                .lease_holder()?
                .filter(|(h, until)| *until > now && crate::queue::lease::alive(h))
            {
                return Ok(Some(Skipped::FlusherRunning { pid: holder.pid }));
            }
            Ok(None)
        })?;
        match skipped {
            // No queue file: nothing was ever recorded here.
            None => return Ok(Detached::Skipped(Skipped::Empty)),
            Some(Some(why)) => return Ok(Detached::Skipped(why)),
            Some(None) => {}
        }
        let spec = ChildSpec {
            app: self.app().to_string(),
            destination: crate::DestinationConfig::from(&target),
            lifetime_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
        };
        let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
        sweep_stale_tickets(dir);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ticket = ticket_path(dir, &token);
        write_ticket(&ticket, &spec)?;
        let mut value = std::ffi::OsString::from(&token);
        value.push(":");
        value.push(dir.as_os_str());
        let pid = match spawn_child(&exe, &value) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = std::fs::remove_file(&ticket);
                return Err(Error::io(exe, e));
            }
        };
        Ok(Detached::Spawned(pid))
    }
}

/// Starts `exe` as the detached child named by `ticket_value`: null standard streams, a
/// process group of its own, and none of the host's handles. Returns its pid.
#[cfg(not(windows))]
fn spawn_child(exe: &Path, ticket_value: &OsStr) -> std::io::Result<u32> {
    let mut cmd = std::process::Command::new(exe);
    cmd.env(DETACHED_ENV, ticket_value)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    crate::sys::close_inherited_descriptors(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Reap it if the host outlives it, so no zombie is left behind.
    let _ = std::thread::Builder::new()
        .name("eventspool-reap".into())
        .spawn(move || child.wait());
    Ok(pid)
}

/// Windows: std's `Command` would hand the child every inheritable handle of the host
/// (it always creates processes with handle inheritance on), so the child is created
/// directly, inheriting nothing, with `DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP |
/// CREATE_NO_WINDOW`: no console shared with the host, none of its own, no window,
/// and the host's Ctrl-C does not reach it.
#[cfg(windows)]
fn spawn_child(exe: &Path, ticket_value: &OsStr) -> std::io::Result<u32> {
    crate::sys::spawn_detached(exe, OsStr::new(DETACHED_ENV), ticket_value)
}

/// What [`Spool::flush_detached`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detached {
    /// A detached child is flushing; its pid.
    Spawned(u32),
    /// No child was started, and why.
    Skipped(Skipped),
}

impl Detached {
    /// The child's pid, if one was started.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Detached::Spawned(pid) => Some(*pid),
            Detached::Skipped(_) => None,
        }
    }
}

/// Why [`Spool::flush_detached`] started no child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Skipped {
    /// Telemetry is off; the rule that decided.
    #[error("telemetry is off ({0})")]
    Disabled(String),
    /// No endpoint is configured.
    #[error("no endpoint is configured")]
    NoEndpoint,
    /// The queue is empty.
    #[error("the queue is empty")]
    Empty,
    /// Asked for only if due, and no flush is due yet: less than a batch queued, and
    /// nothing older than the flush interval.
    #[error("no flush is due yet (less than a batch queued, none older than the flush interval)")]
    NotDue,
    /// The endpoint asked for a pause or failed; no delivery before this time (unix ms).
    #[error("the endpoint is backing off until {}", crate::time::rfc3339_ms(*until))]
    BackingOff {
        /// No delivery before this time, unix milliseconds.
        until: i64,
    },
    /// Another live flusher holds the lease.
    #[error("another flusher (pid {pid}) is already sending")]
    FlusherRunning {
        /// The lease holder's pid.
        pid: u32,
    },
}

impl Skipped {
    /// A short stable name for scripts (`spool flush --detach --json`): `disabled`,
    /// `no_endpoint`, `empty`, `not_due`, `backing_off`, `flusher_running`.
    pub fn code(&self) -> &'static str {
        match self {
            Skipped::Disabled(_) => "disabled",
            Skipped::NoEndpoint => "no_endpoint",
            Skipped::Empty => "empty",
            Skipped::NotDue => "not_due",
            Skipped::BackingOff { .. } => "backing_off",
            Skipped::FlusherRunning { .. } => "flusher_running",
        }
    }
}

/// What the detached child is to do, kept in its ticket.
#[derive(Serialize, Deserialize)]
struct ChildSpec {
    app: String,
    /// Resolved by the parent; the child resolves it again to the same target.
    destination: crate::DestinationConfig,
    lifetime_ms: u64,
}

/// Tickets start with this in the queue directory; the rest is the token.
const TICKET_PREFIX: &str = "detached-flush-";

/// A ticket nobody claimed this long (its child died before reading it) is removed.
const STALE_TICKET: Duration = Duration::from_secs(3600);

fn ticket_path(dir: &Path, token: &str) -> PathBuf {
    dir.join(format!("{TICKET_PREFIX}{token}"))
}

fn write_ticket(path: &Path, spec: &ChildSpec) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    // create_new never follows a symbolic link or reuses a file someone else made.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let text = serde_json::to_vec(spec).unwrap_or_default();
    let written = opts.open(path).and_then(|mut f| f.write_all(&text));
    written.map_err(|e| {
        let _ = std::fs::remove_file(path);
        Error::io(path, e)
    })
}

/// Removes tickets left by children that died before claiming them. Best effort: a
/// directory that cannot be read keeps them.
fn sweep_stale_tickets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TICKET);
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(TICKET_PREFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Splits the variable's value, `<token>:<queue directory>`.
fn parse_ticket_env(value: &OsStr) -> Option<(String, PathBuf)> {
    #[cfg(unix)]
    let (token, dir) = {
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        let at = bytes.iter().position(|&b| b == b':')?;
        let token = std::str::from_utf8(&bytes[..at]).ok()?;
        (token, PathBuf::from(OsStr::from_bytes(&bytes[at + 1..])))
    };
    #[cfg(not(unix))]
    let (token, dir) = {
        let (token, dir) = value.to_str()?.split_once(':')?;
        (token, PathBuf::from(dir))
    };
    // Only a token this library makes can name a ticket: no path can hide in it.
    let ours = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
    ours.then(|| (token.to_string(), dir))
}

/// Claims the ticket the variable names: reads it and removes it, so it serves one
/// child once; returns the queue directory and the work. `None` unless this process is a child [`Spool::flush_detached`] started.
fn claim_ticket(value: &OsStr) -> Option<(PathBuf, ChildSpec)> {
    let (token, dir) = parse_ticket_env(value)?;
    crate::queue::check_dir(&dir).ok()?;
    let path = ticket_path(&dir, &token);
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let mut file = opts.open(&path).ok()?;
    let meta = file.metadata().ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != crate::sys::euid() {
            return None;
        }
    }
    if !meta.is_file() || meta.len() > 64 * 1024 {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    drop(file);
    // Whoever removes the ticket is the child it was written for.
    std::fs::remove_file(&path).ok()?;
    serde_json::from_str(&text).ok().map(|spec| (dir, spec))
}

/// Call first thing in `main` of a host that uses [`Spool::flush_detached`]. In the
/// host's own run it only records that the hook is there and returns. In a detached
/// child started by [`Spool::flush_detached`] it flushes and exits the process, never
/// returning.
///
/// A process is such a child only if `EVENTSPOOL_DETACHED_FLUSH` names a ticket the library
/// wrote and no process has claimed yet. With the variable set to anything else (or
/// inherited from somewhere else) the hook returns and the host runs normally.
///
/// ```no_run
/// // First line of the host's `main`:
/// eventspool::detached_flush_hook();
/// // … the host's own work …
/// ```
pub fn detached_flush_hook() {
    HOOK_INSTALLED.store(true, Ordering::Relaxed);
    let Some(value) = std::env::var_os(DETACHED_ENV) else {
        return;
    };
    let Some((dir, spec)) = claim_ticket(&value) else {
        return;
    };
    // From here on this process is the detached child: it never runs the host's main.
    let lifetime = Duration::from_millis(spec.lifetime_ms.clamp(100, 600_000));
    if arm_lifetime_limit(lifetime) {
        // The flush stops a little before the hard end, so it can give the lease back.
        let grace = (lifetime / 5).min(Duration::from_secs(1));
        // Exactly the ticket's directory: an inherited <APP>_TELEMETRY_DIR must not
        // send the child to another queue than the one `flush_detached` meant.
        let spool = Spool::builder(spec.app).dir(dir).for_cli().build();
        let opts = FlushOptions {
            destination: Some(spec.destination),
            deadline: lifetime - grace,
            progress: None,
            ..FlushOptions::default()
        };
        let _ = spool.flush_blocking(opts);
    }
    std::process::exit(0);
}

/// Ends this process `lifetime` from now, whatever it is doing: the flush's own
/// deadline should end it first, this is the guarantee. A watchdog thread exits the
/// process, so no signal disposition inherited from the host (an ignored SIGALRM)
/// can stop it; on Unix an alarm a second later, with SIGALRM reset to its default, is
/// a second line. Returns false if the watchdog could not start: then the child must
/// not flush at all.
fn arm_lifetime_limit(lifetime: Duration) -> bool {
    let watchdog = std::thread::Builder::new()
        .name("eventspool-lifetime".into())
        .spawn(move || {
            std::thread::sleep(lifetime);
            end_now();
        });
    crate::sys::alarm_with_default_action(
        u32::try_from(lifetime.as_secs() + 2).unwrap_or(u32::MAX),
    );
    watchdog.is_ok()
}

/// Exits at once: no destructors, no atexit handlers that could wait on a lock held by
/// the flush thread. An abandoned flush is safe: the queue is crash-safe and a dead
/// holder's lease is taken over at once.
fn end_now() -> ! {
    crate::sys::exit_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_token_the_library_makes_names_a_ticket() {
        let token = "0123456789abcdef0123456789abcdef";
        let ok = parse_ticket_env(OsStr::new(&format!("{token}:/q/dir:with:colons")));
        assert_eq!(
            ok,
            Some((token.to_string(), PathBuf::from("/q/dir:with:colons")))
        );
        for bad in [
            "1",
            "",
            ":/q",
            "0123456789abcdef0123456789abcde:/q",
            "../../../../etc/passwd_0123456789abcdef:/q",
            r#"{"app":"x","dir":"/q","endpoint":"http://h/","lifetime_ms":1}"#,
        ] {
            assert_eq!(parse_ticket_env(OsStr::new(bad)), None, "{bad:?}");
        }
    }
}
