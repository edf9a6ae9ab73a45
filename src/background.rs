//! Host integration: a background flusher with a bounded close, and a detached flush
//! that hands the work to a child process so the host can exit at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Kind, Result};
use crate::flusher::FlushOptions;
use crate::queue::Queue;
use crate::spool::Spool;
use crate::time::now_ms;

/// Environment variable that turns a re-executed host into a detached flusher.
pub const DETACHED_ENV: &str = "EVENTSPOOL_DETACHED_FLUSH";

/// Default hard lifetime of a detached flusher.
pub const DEFAULT_DETACHED_LIFETIME: Duration = Duration::from_secs(30);

static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// A flusher running on its own thread; see [`Spool::start_background_flusher`].
pub struct BackgroundFlusher {
    stop: Option<watch::Sender<Option<Instant>>>,
    done: mpsc::Receiver<()>,
}

impl BackgroundFlusher {
    /// Stops the flusher: the request in flight is abandoned (its events stay queued),
    /// one last flush runs within what is left of `timeout`, and this returns after at
    /// most `timeout`. Returns true if and only if the flusher finished in time.
    pub fn close(mut self, timeout: Duration) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Some(Instant::now() + timeout));
        }
        self.done.recv_timeout(timeout).is_ok()
    }
}

impl Drop for BackgroundFlusher {
    fn drop(&mut self) {
        // Dropped without close: stop at once, no final flush, never wait.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Some(Instant::now()));
        }
    }
}

impl Spool {
    /// Flushes every `every` on a background thread with its own runtime, until
    /// [`BackgroundFlusher::close`]. Nothing is started when telemetry is off.
    pub fn start_background_flusher(&self, every: Duration) -> BackgroundFlusher {
        let (stop_tx, mut stop_rx) = watch::channel(None::<Instant>);
        let (done_tx, done_rx) = mpsc::channel();
        if !self.consent().enabled {
            let _ = done_tx.send(());
            return BackgroundFlusher {
                stop: Some(stop_tx),
                done: done_rx,
            };
        }
        let spool = self.clone();
        let started = std::thread::Builder::new().name("eventspool-flush".into()).spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    while stop_rx.borrow().is_none() {
                        tokio::select! {
                            r = spool.flush(FlushOptions::default()) => {
                                if let Err(e) = r { log::debug!("eventspool: background flush: {e}"); }
                            }
                            r = stop_rx.changed() => if r.is_err() { return; },
                        }
                        if stop_rx.borrow().is_some() {
                            break;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(every) => {}
                            r = stop_rx.changed() => if r.is_err() { return; },
                        }
                    }
                    let deadline = *stop_rx.borrow();
                    if let Some(left) = deadline.map(|d| d.saturating_duration_since(Instant::now())).filter(|l| !l.is_zero()) {
                        let _ = tokio::time::timeout(left, spool.flush(FlushOptions::with_deadline(left))).await;
                    }
                });
            }
            let _ = done_tx.send(());
        });
        if started.is_err() {
            log::debug!("eventspool: could not start the background flusher thread");
        }
        BackgroundFlusher {
            stop: Some(stop_tx),
            done: done_rx,
        }
    }

    /// Hands the flush to a detached child process (this executable, re-run) so the
    /// host can exit at once. The child holds the lease, flushes for at most
    /// `lifetime`, and is killed by the kernel if it ever overstays.
    ///
    /// Returns the child's pid, or `None` when there was nothing to do: telemetry off,
    /// no endpoint, an empty queue, a server backoff in force, or another live flusher.
    /// Requires [`detached_flush_hook`] to be called at the top of `main`.
    pub fn flush_detached(&self, lifetime: Duration) -> Result<Option<u32>> {
        if !self.consent().enabled {
            return Ok(None);
        }
        if !HOOK_INSTALLED.load(Ordering::Relaxed) {
            return Err(Kind::HookMissing.into());
        }
        let Some(endpoint) = self.endpoint() else {
            return Ok(None);
        };
        crate::delivery::check_endpoint(&endpoint)?;
        let Some(dir) = self.dir() else {
            return Ok(None);
        };
        // Cheap checks first, so a host run during an outage or with an empty queue
        // does not start a process each time.
        let Some(queue) = Queue::open_existing(dir, self.inner.lock_timeout)? else {
            return Ok(None);
        };
        let stats = queue.stats()?;
        let now = now_ms();
        if stats.events == 0 || stats.not_before.is_some_and(|t| t > now) {
            return Ok(None);
        }
        if queue
            .lease_holder()?
            .is_some_and(|(h, until)| until > now && crate::lease::alive(&h))
        {
            return Ok(None);
        }
        drop(queue);
        let spec = ChildSpec {
            app: self.app().to_string(),
            dir: dir.to_string_lossy().into_owned(),
            endpoint,
            lifetime_ms: lifetime.as_millis() as u64,
        };
        let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.env(
            DETACHED_ENV,
            serde_json::to_string(&spec).unwrap_or_default(),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| Error::io(exe, e))?;
        let pid = child.id();
        // Reap it if the host outlives it, so no zombie is left behind.
        let _ = std::thread::Builder::new()
            .name("eventspool-reap".into())
            .spawn(move || child.wait());
        Ok(Some(pid))
    }
}

#[derive(Serialize, Deserialize)]
struct ChildSpec {
    app: String,
    dir: String,
    endpoint: String,
    lifetime_ms: u64,
}

/// Call first thing in `main` of a host that uses [`Spool::flush_detached`]. In the
/// host's own run it only records that the hook is there and returns. In the
/// detached child it flushes and exits the process, never returning.
///
/// ```no_run
/// // First line of the host's `main`:
/// eventspool::detached_flush_hook();
/// // … the host's own work …
/// ```
pub fn detached_flush_hook() {
    HOOK_INSTALLED.store(true, Ordering::Relaxed);
    let Ok(text) = std::env::var(DETACHED_ENV) else {
        return;
    };
    // Whatever happens, the child never runs the host's own main.
    if let Ok(spec) = serde_json::from_str::<ChildSpec>(&text) {
        let lifetime = Duration::from_millis(spec.lifetime_ms.clamp(100, 600_000));
        arm_lifetime_limit(lifetime);
        let spool = Spool::builder(spec.app).dir(spec.dir).build();
        let opts = FlushOptions {
            endpoint: Some(spec.endpoint),
            deadline: lifetime,
            progress: None,
        };
        let _ = spool.flush_blocking(opts);
    }
    std::process::exit(0);
}

/// The kernel ends this process one second after `lifetime`, whatever it is doing:
/// the flush's own deadline should end it first, this is the guarantee.
fn arm_lifetime_limit(lifetime: Duration) {
    #[cfg(unix)]
    {
        let secs = u32::try_from(lifetime.as_secs() + 1).unwrap_or(u32::MAX);
        // SAFETY: alarm has no preconditions; SIGALRM's default action terminates.
        unsafe {
            libc::alarm(secs);
        }
    }
}
