//! Who holds the flush lease, and whether that holder is still alive.
//!
//! A holder is recorded as pid + process start time + hostname, so a pid recycled by
//! another process is not mistaken for the holder, and a dead holder's lease is taken
//! over at once instead of after its expiry.

use std::sync::OnceLock;

use crate::queue::Holder;

/// This process as a lease holder, with a fresh token per flush.
pub(crate) fn me() -> Holder {
    Holder {
        pid: std::process::id(),
        started: start_time(std::process::id()).unwrap_or(0),
        host: hostname().to_string(),
        token: uuid::Uuid::new_v4().to_string(),
    }
}

fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// Returns false only when the holder is known to be gone: same host, and its pid does
/// not exist, is a zombie, or belongs to a process started at another time.
pub(crate) fn alive(h: &Holder) -> bool {
    if h.host != hostname() {
        // Another machine sharing the directory: only the lease's expiry can tell.
        return true;
    }
    if !pid_exists(h.pid) {
        return false;
    }
    match proc_stat(h.pid) {
        Some((state, started)) => state != 'Z' && (h.started == 0 || started == h.started),
        None => true,
    }
}

#[cfg(unix)]
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn pid_exists(_pid: u32) -> bool {
    true
}

fn start_time(pid: u32) -> Option<i64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// State letter and start time (clock ticks since boot) from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, i64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 overall is the start time; after the name we are at field 3.
    let started = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_not() {
        let me = me();
        assert!(alive(&me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Holder {
            pid,
            started: 1,
            host: me.host.clone(),
            token: "t".into(),
        };
        assert!(!alive(&gone));
        let recycled = Holder {
            pid: me.pid,
            started: me.started + 1,
            ..me.clone()
        };
        if me.started != 0 {
            assert!(
                !alive(&recycled),
                "a different start time means another process"
            );
        }
    }
}
