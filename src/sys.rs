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
