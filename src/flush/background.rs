//! A background flusher for a long-running host, with a bounded close.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::flush::{FlushEnd, FlushOptions};
use crate::spool::Spool;

/// A flusher running on its own thread; see [`Spool::start_background_flusher`].
#[must_use = "dropping it stops the flusher at once; call close(timeout) to flush what is left"]
pub struct BackgroundFlusher {
    stop: Option<watch::Sender<Option<Instant>>>,
    done: mpsc::Receiver<()>,
}

impl BackgroundFlusher {
    /// Stops the flusher: a flush in progress is let finish within `timeout` (dropped
    /// mid-request, a batch the endpoint already has would stay queued and be sent
    /// again), then one last flush runs within what is left, and this returns after at
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

/// The last flush of a closing background flusher, by `end`. The round `close`
/// abandoned may still hold the lease for a moment (it is given back once its last
/// queue statement ends): a flush that finds this process's own lease waits for it
/// instead of leaving the last events queued.
async fn final_flush(spool: &Spool, end: Instant) {
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // A tenth is left for winding down, so `close` sees the end in time.
        let opts = FlushOptions::with_deadline(left.mul_f64(0.9));
        match tokio::time::timeout(left, spool.flush(opts)).await {
            Ok(Ok(r)) if matches!(r.end, FlushEnd::Busy { pid } if pid == std::process::id()) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return,
        }
    }
}

impl Spool {
    /// Flushes every `every` on a background thread with its own runtime, until
    /// [`BackgroundFlusher::close`]. Nothing is started when telemetry is off, unless
    /// the user's opt-out left a deletion request to send.
    pub fn start_background_flusher(&self, every: Duration) -> BackgroundFlusher {
        let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
        let (done_tx, done_rx) = mpsc::channel();
        let consent = self.consent();
        if !consent.enabled && !self.only_deletion_request_may_go(&consent) {
            let _ = done_tx.send(());
            return BackgroundFlusher {
                stop: Some(stop_tx),
                done: done_rx,
            };
        }
        let spool = self.clone();
        let started = std::thread::Builder::new()
            .name("eventspool-flush".into())
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(run(&spool, every, stop_rx));
                    // An abandoned flush may leave a queue statement on the blocking
                    // pool, waiting for a lock; dropping the runtime would wait for it,
                    // `close` must not.
                    rt.shutdown_background();
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
}

/// The background flusher's loop: a flush every `every` until closed, then the last
/// flush by the close's deadline.
async fn run(spool: &Spool, every: Duration, mut stop_rx: watch::Receiver<Option<Instant>>) {
    while stop_rx.borrow().is_none() {
        let flush = spool.flush(FlushOptions::default());
        tokio::pin!(flush);
        let done = tokio::select! {
            r = &mut flush => Some(r),
            r = stop_rx.changed() => if r.is_err() { return; } else { None },
        };
        let done = match (done, *stop_rx.borrow()) {
            (Some(r), _) => Some(r),
            // Closing mid-flush: this flush finishes, by a tenth before the deadline;
            // only past it is it abandoned (its batch stays queued).
            (None, Some(end)) => {
                let left = end.saturating_duration_since(Instant::now());
                tokio::time::timeout(left.mul_f64(0.9), &mut flush)
                    .await
                    .ok()
            }
            (None, None) => None,
        };
        if let Some(Err(e)) = done {
            log::debug!("eventspool: background flush: {e}");
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
    if let Some(end) = deadline {
        final_flush(spool, end).await;
    }
}
