//! A write past the file size limit must fail, not kill the host.

/// Makes a write past `RLIMIT_FSIZE` fail with `EFBIG` instead of killing the process:
/// SIGXFSZ's default action terminates it (a shell reports exit 153) before the host
/// has printed its own output, and telemetry must never take a host down. With the
/// signal ignored, SQLite reports the failed write as an error, which recording drops
/// and counts like any full disk.
///
/// This changes process-wide state, so it is done only where it can matter and cannot
/// override a choice of the host: when `RLIMIT_FSIZE` is finite and SIGXFSZ is at its
/// default action. A host's own handler, or a SIGXFSZ it already ignores, is left
/// alone. It happens at most once per process, before the library's first write to the
/// queue directory. From then on the host's own writes past the limit fail with
/// `EFBIG` too, and programs it starts inherit the ignored signal (ignored signals
/// survive `exec`); a host that wants the default back can restore it after the first
/// `track`.
pub(crate) fn ignore_sigxfsz_under_a_file_size_limit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.load(Ordering::Relaxed) {
        return;
    }
    if !crate::sys::file_size_limited() {
        // No limit now: checked again at the next open, in case the host sets one.
        return;
    }
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    crate::sys::ignore_sigxfsz_if_default();
}
