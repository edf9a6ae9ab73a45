//! Who holds the flush lease, and whether that holder is still alive.
//!
//! A holder is recorded as pid + process start time + hostname, so a pid recycled by
//! another process is not mistaken for the holder, and a dead holder's lease is taken
//! over at once instead of after its expiry.
//!
//! The lease itself is a row in the queue (`lease`), taken and renewed in short
//! transactions; this file also decides whether a recorded holder still lives.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::Queue;
use crate::error::{Error, Result};

use std::sync::OnceLock;

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

/// Returns false only when the holder is known to be gone: same host, and the OS says
/// its pid does not exist, has ended (a zombie, an exited Windows process whose
/// handle is still open), or belongs to a process started at another time (a reused
/// pid). See `sys::process` for how each platform tells.
pub(crate) fn alive(h: &Holder) -> bool {
    if h.host != hostname() {
        // Another machine sharing the directory: only the lease's expiry can tell.
        return true;
    }
    match crate::sys::process(h.pid) {
        crate::sys::Process::Gone => false,
        crate::sys::Process::Running(started) => {
            h.started == 0 || started.is_none_or(|s| s == h.started)
        }
    }
}

/// The start time of process `pid` as `sys::process` reports it.
fn start_time(pid: u32) -> Option<i64> {
    match crate::sys::process(pid) {
        crate::sys::Process::Running(started) => started,
        crate::sys::Process::Gone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_not() {
        let me = me();
        assert!(alive(&me));
        // This test binary, re-run on no test: it exits at once, on every platform.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
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
        // Every platform with a liveness check of its own reports a start time.
        let reports_start = cfg!(any(target_os = "linux", target_os = "macos", windows));
        assert_eq!(me.started != 0, reports_start, "start time {}", me.started);
        if reports_start {
            assert!(
                !alive(&recycled),
                "a different start time means another process"
            );
        }
    }

    /// The pid of a child that has ended but whose handle (Windows) or zombie (Unix)
    /// is still held, not yet waited for, is no live holder.
    #[test]
    fn an_ended_child_not_yet_waited_for_is_not_alive() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = start_time(pid).unwrap_or(0);
        let holder = Holder {
            pid,
            started,
            host: hostname().to_string(),
            token: "t".into(),
        };
        let t = std::time::Instant::now();
        while alive(&holder) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(60),
                "an ended child still counts as alive"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Not reaped until now: the zombie / open handle was there all along.
        child.wait().unwrap();
        assert!(!alive(&holder));
    }
}

/// Who holds the flush lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: u32,
    pub started: i64,
    pub host: String,
    pub token: String,
}

impl Queue {
    /// Takes the flush lease for `me` until `until`, unless a live holder has a lease
    /// still running at `now`. `alive` says whether a recorded holder is still
    /// running. Returns the current holder's pid when refused.
    pub fn take_lease(
        &mut self,
        me: &Holder,
        now: i64,
        until: i64,
        alive: impl Fn(&Holder) -> bool,
    ) -> Result<Result<(), u32>> {
        let path = self.path.clone();
        let run = |conn: &mut Connection| -> rusqlite::Result<Result<(), u32>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = read_lease(&tx)?;
            if let Some((holder, expires_at)) = current {
                if holder.token != me.token && expires_at > now && alive(&holder) {
                    return Ok(Err(holder.pid));
                }
            }
            tx.execute(
                "INSERT INTO lease (id, pid, started, host, token, expires_at) VALUES (0, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started = excluded.started,
                   host = excluded.host, token = excluded.token, expires_at = excluded.expires_at",
                params![me.pid, me.started, me.host, me.token, until],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        };
        run(&mut self.conn).map_err(|e| Error::queue(path, e))
    }

    /// The current lease holder and its expiry, if any.
    pub fn lease_holder(&self) -> Result<Option<(Holder, i64)>> {
        read_lease(&self.conn).map_err(|e| self.err(e))
    }

    /// Extends the lease held by `token`; returns false if it is no longer ours.
    pub fn renew_lease(&self, token: &str, until: i64) -> Result<bool> {
        self.conn
            .execute(
                "UPDATE lease SET expires_at = ?2 WHERE id = 0 AND token = ?1",
                params![token, until],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Gives the lease up if `token` still holds it.
    pub fn release_lease(&self, token: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM lease WHERE id = 0 AND token = ?1", [token])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// The lease row: its holder and expiry, if anyone holds it.
pub(super) fn read_lease(conn: &Connection) -> rusqlite::Result<Option<(Holder, i64)>> {
    conn.query_row(
        "SELECT pid, started, host, token, expires_at FROM lease WHERE id = 0",
        [],
        |r| {
            let holder = Holder {
                pid: r.get(0)?,
                started: r.get(1)?,
                host: r.get(2)?,
                token: r.get(3)?,
            };
            Ok((holder, r.get(4)?))
        },
    )
    .optional()
}
