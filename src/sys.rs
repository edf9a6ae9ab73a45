//! Every call into the C library, behind safe functions: the only module where
//! `unsafe` is allowed (`#![deny(unsafe_code)]` holds everywhere else). Each wrapper
//! is small enough to check by reading, and has a fallback off Unix.
#![allow(unsafe_code)]

use std::fs::File;
use std::process::Command;

/// The effective user id (0 off Unix).
pub(crate) fn euid() -> u32 {
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe {
        libc::geteuid()
    }
    #[cfg(not(unix))]
    0
}

/// Takes an exclusive `flock` on `file`, waiting for it; released when the
/// descriptor closes. Off Unix, nothing (and `Ok`).
pub(crate) fn flock_exclusive(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor `file` owns for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Returns false only when no process `pid` exists (a process of another user
/// exists: `EPERM`). Off Unix, always true: only a lease's expiry can tell.
pub(crate) fn pid_exists(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 sends nothing; it only checks the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// The kernel release (`uname -r`), empty if unknown.
pub(crate) fn os_release() -> String {
    #[cfg(unix)]
    // SAFETY: uname fills a zeroed struct we own; on success `release` is
    // NUL-terminated within it.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            return std::ffi::CStr::from_ptr(u.release.as_ptr())
                .to_string_lossy()
                .into_owned();
        }
    }
    String::new()
}

/// Returns true if and only if this process has a finite file-size limit
/// (`RLIMIT_FSIZE`).
pub(crate) fn file_size_limited() -> bool {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes into the struct it is given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } == 0;
        ok && limit.rlim_cur != libc::RLIM_INFINITY
    }
    #[cfg(not(unix))]
    false
}

/// Sets SIGXFSZ to ignored if and only if it is at its default action (never over a
/// host's own handler). Returns whether it changed anything.
pub(crate) fn ignore_sigxfsz_if_default() -> bool {
    #[cfg(unix)]
    // SAFETY: sigaction with a null new action only reads the current disposition into
    // a zeroed struct we own; signal then installs SIG_IGN, which needs no handler.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGXFSZ, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_DFL
        {
            return libc::signal(libc::SIGXFSZ, libc::SIG_IGN) != libc::SIG_ERR;
        }
    }
    false
}

/// This user's name in the account database, if it has one.
pub(crate) fn account_name() -> Option<String> {
    #[cfg(unix)]
    {
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: a zeroed `passwd` is a valid out-parameter; `buf` outlives every
            // use of the pointers getpwuid_r stores in `pwd`, which are read before it
            // drops.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = unsafe {
                libc::getpwuid_r(
                    libc::geteuid(),
                    &mut pwd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut found,
                )
            };
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
                return None;
            }
            // SAFETY: on success pw_name points at a NUL-terminated string in `buf`.
            let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
            return name
                .to_str()
                .ok()
                .filter(|n| !n.is_empty())
                .map(str::to_string);
        }
    }
    #[cfg(not(unix))]
    None
}

/// Makes every descriptor above stderr close-on-exec in the child `cmd` starts, so no
/// handle the host left inheritable (its parent's pipes, a jobserver) reaches it.
/// Linux only (kernels before 5.11 refuse the flag, and then nothing changes).
pub(crate) fn close_inherited_descriptors(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: between fork and exec only a raw close_range syscall runs, which is
    // async-signal-safe; std's exec-error pipe keeps working.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Has the kernel end this process in `secs` seconds, with SIGALRM reset to its
/// default action first (a host may have ignored it). For the library's own detached
/// child only: the host's code never runs there.
pub(crate) fn alarm_with_default_action(secs: u32) {
    #[cfg(unix)]
    // SAFETY: signal(SIG_DFL) installs no handler; alarm has no preconditions.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::alarm(secs);
    }
    #[cfg(not(unix))]
    let _ = secs;
}

/// Exits at once: no destructors, no atexit handlers that could wait on a lock another
/// thread holds.
pub(crate) fn exit_now() -> ! {
    #[cfg(unix)]
    // SAFETY: _exit has no preconditions.
    unsafe {
        libc::_exit(0)
    }
    #[cfg(not(unix))]
    std::process::exit(0)
}

/// Returns true if and only if this process is in its terminal's foreground process
/// group (stdin's): a background job (`tool &`) reading the terminal would wait
/// forever, or stop on SIGTTIN. Off Unix, true.
pub(crate) fn in_foreground() -> bool {
    #[cfg(unix)]
    // SAFETY: tcgetpgrp and getpgrp only read this process's state.
    unsafe {
        let fg = libc::tcgetpgrp(0);
        fg >= 0 && fg == libc::getpgrp()
    }
    #[cfg(not(unix))]
    true
}

/// What [`read_answer`] got from stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A line, without its line ending.
    Line(String),
    /// End of input (Ctrl-D at a terminal, a closed pipe) or a read error.
    Eof,
    /// Ctrl-C (SIGINT) while waiting.
    Interrupted,
}

/// Set by the prompt's SIGINT handler.
#[cfg(unix)]
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The handler the host had for SIGINT, put back when this is dropped, so the host's
/// own Ctrl-C handling (its handler, `SIG_IGN`, or the default) is what it was.
#[cfg(unix)]
struct SigintGuard {
    old: libc::sigaction,
}

#[cfg(unix)]
impl SigintGuard {
    fn install() -> Option<SigintGuard> {
        INTERRUPTED.store(false, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: both structs are zeroed plain data, then filled; the handler only
        // stores to an atomic. No SA_RESTART: a read in progress returns EINTR.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut new.sa_mask);
            new.sa_flags = 0;
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, &new, &mut old) != 0 {
                return None;
            }
            Some(SigintGuard { old })
        }
    }
}

#[cfg(unix)]
impl Drop for SigintGuard {
    fn drop(&mut self) {
        // SAFETY: restores exactly the action sigaction returned.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.old, std::ptr::null_mut());
        }
    }
}

/// Reads one line of an answer from stdin, at most 1 KiB, returning
/// [`Answer::Interrupted`] if Ctrl-C is pressed meanwhile. The terminal's mode is never
/// changed (it stays in cooked mode, so the line is edited and echoed as usual), and
/// the host's SIGINT disposition is restored before this returns. SIGINT may be
/// delivered to any of the host's threads: stdin is polled in short steps and the
/// handler's flag checked between them.
pub(crate) fn read_answer() -> Answer {
    #[cfg(unix)]
    {
        use std::sync::atomic::Ordering;
        let guard = SigintGuard::install();
        let mut line = Vec::new();
        let answer = loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break Answer::Interrupted;
            }
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break Answer::Eof;
            }
            if ready == 0 {
                continue;
            }
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into a valid one-byte buffer. One byte at
            // a time: nothing past the answer's line is taken from the host's stdin.
            let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break Answer::Eof;
            }
            if n == 0 {
                break if line.is_empty() {
                    Answer::Eof
                } else {
                    Answer::Line(String::from_utf8_lossy(&line).into_owned())
                };
            }
            if byte == b'\n' || line.len() >= 1024 {
                break Answer::Line(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string(),
                );
            }
            line.push(byte);
        };
        drop(guard);
        answer
    }
    #[cfg(not(unix))]
    {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => Answer::Eof,
            Ok(_) => Answer::Line(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }
}
