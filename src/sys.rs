//! Every call into the C library, behind safe functions: the only module where
//! `unsafe` is allowed (`#![deny(unsafe_code)]` holds everywhere else). Each wrapper
//! is small enough to check by reading. Win32 calls go through `windows-sys`, only
//! on Windows; every wrapper has a fallback elsewhere.
#![allow(unsafe_code)]

use std::fs::File;
#[cfg(not(windows))]
use std::process::Command;

/// The effective user id (Unix: Windows files have no owner uid to compare with).
#[cfg(unix)]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Takes an exclusive lock on `file`, waiting for it; released when the handle
/// closes. Unix: `flock`. Windows: `LockFileEx` on one byte far past any offset SQLite
/// locks or writes (Windows locks are mandatory: a lock on the data would block
/// SQLite's own reads), so it excludes only other holders of this lock.
pub(crate) fn flock_exclusive(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor `file` owns for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsRawHandle;
        use windows_sys::Win32::Storage::FileSystem::{LOCKFILE_EXCLUSIVE_LOCK, LockFileEx};
        use windows_sys::Win32::System::IO::OVERLAPPED;
        // SAFETY: a zeroed OVERLAPPED is valid; we set only its offset. The handle is
        // open for the whole call, and without FILE_FLAG_OVERLAPPED the call waits
        // until the lock is granted, so the struct outlives its use.
        let ok = unsafe {
            let mut at: OVERLAPPED = std::mem::zeroed();
            at.Anonymous.Anonymous.Offset = 0xFFFF_FFF0;
            at.Anonymous.Anonymous.OffsetHigh = 0x7FFF_FFFF;
            LockFileEx(
                file.as_raw_handle(),
                LOCKFILE_EXCLUSIVE_LOCK,
                0,
                1,
                0,
                &mut at,
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = file;
    Ok(())
}

/// What the OS says about a process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    /// No process has this id, or it has ended (a zombie, an exited process whose
    /// handle is still open).
    Gone,
    /// A process with this id is running; its start time when the OS tells (in a
    /// unit of its own, only ever compared with the same call's results).
    Running(Option<i64>),
}

/// Asks the OS whether process `pid` runs and since when: Linux `/proc/PID/stat`
/// (state and start ticks), macOS `proc_pidinfo` (status and start time), Windows a
/// process handle (signalled when it ended) and its creation time. Elsewhere only
/// whether the id exists. A process of another user counts as running.
pub(crate) fn process(pid: u32) -> Process {
    #[cfg(target_os = "linux")]
    {
        if !kill_0_finds(pid) {
            return Process::Gone;
        }
        match linux_stat(pid) {
            Some(('Z' | 'X', _)) => Process::Gone,
            Some((_, started)) => Process::Running(Some(started)),
            // No /proc (a sandbox): the probe above is all we know.
            None => Process::Running(None),
        }
    }
    #[cfg(target_os = "macos")]
    {
        let Ok(raw) = libc::c_int::try_from(pid) else {
            return Process::Gone;
        };
        // SAFETY: a zeroed proc_bsdinfo is a valid out-buffer of exactly the size
        // passed; proc_pidinfo writes at most that many bytes.
        let (n, info) = unsafe {
            let mut info: libc::proc_bsdinfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
            let n = libc::proc_pidinfo(
                raw,
                libc::PROC_PIDTBSDINFO,
                0,
                (&mut info as *mut libc::proc_bsdinfo).cast(),
                size,
            );
            (n, info)
        };
        if n as usize != std::mem::size_of::<libc::proc_bsdinfo>() {
            // Another user's process (EPERM) still exists; ask kill(0).
            return if kill_0_finds(pid) {
                Process::Running(None)
            } else {
                Process::Gone
            };
        }
        if info.pbi_status == libc::SZOMB {
            return Process::Gone;
        }
        let micros = info
            .pbi_start_tvsec
            .saturating_mul(1_000_000)
            .saturating_add(info.pbi_start_tvusec);
        Process::Running(i64::try_from(micros).ok())
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::Foundation::{
            CloseHandle, ERROR_ACCESS_DENIED, FILETIME, GetLastError, WAIT_TIMEOUT,
        };
        use windows_sys::Win32::System::Threading::{
            GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
            WaitForSingleObject,
        };
        // SAFETY: OpenProcess has no preconditions; a non-null handle is ours until
        // the CloseHandle below, and the FILETIMEs are out-parameters we own.
        unsafe {
            let h = OpenProcess(
                PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE,
                0,
                pid,
            );
            if h.is_null() {
                // Access denied: it exists, under another user or elevated.
                return if GetLastError() == ERROR_ACCESS_DENIED {
                    Process::Running(None)
                } else {
                    Process::Gone
                };
            }
            // A process object outlives its process while any handle is open (as a
            // zombie does): signalled means it has ended.
            let running = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
            let zero = FILETIME {
                dwLowDateTime: 0,
                dwHighDateTime: 0,
            };
            let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
            let timed = GetProcessTimes(h, &mut created, &mut exited, &mut kernel, &mut user);
            CloseHandle(h);
            if !running {
                return Process::Gone;
            }
            let started = (timed != 0).then(|| {
                (i64::from(created.dwHighDateTime) << 32) | i64::from(created.dwLowDateTime)
            });
            Process::Running(started)
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        #[cfg(unix)]
        if !kill_0_finds(pid) {
            return Process::Gone;
        }
        let _ = pid;
        Process::Running(None)
    }
}

/// Returns false only when no process `pid` exists (a process of another user
/// exists: `EPERM`).
#[cfg(unix)]
fn kill_0_finds(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only checks the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// State letter and start time (clock ticks since boot) from `/proc/PID/stat`.
#[cfg(target_os = "linux")]
fn linux_stat(pid: u32) -> Option<(char, i64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 overall is the start time; after the name we are at field 3.
    let started = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, started))
}

/// The OS release: `uname -r` on Linux and other Unixes (`6.1.0-18-amd64`), the
/// product version on macOS (`14.5`, `kern.osproductversion`, falling back to the
/// Darwin release), `major.minor.build` on Windows (`10.0.19045`, from
/// `RtlGetVersion`, which unlike `GetVersionEx` does not depend on the executable's
/// manifest). Empty if unknown.
pub(crate) fn os_release() -> String {
    #[cfg(target_os = "macos")]
    if let Some(v) = sysctl_string(c"kern.osproductversion") {
        return v;
    }
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
    #[cfg(windows)]
    {
        use windows_sys::Wdk::System::SystemServices::RtlGetVersion;
        use windows_sys::Win32::System::SystemInformation::OSVERSIONINFOW;
        // SAFETY: a zeroed OSVERSIONINFOW with its size set is what RtlGetVersion
        // expects; it only writes into it.
        unsafe {
            let mut v: OSVERSIONINFOW = std::mem::zeroed();
            v.dwOSVersionInfoSize = std::mem::size_of::<OSVERSIONINFOW>() as u32;
            if RtlGetVersion(&mut v) == 0 {
                return format!(
                    "{}.{}.{}",
                    v.dwMajorVersion, v.dwMinorVersion, v.dwBuildNumber
                );
            }
        }
    }
    String::new()
}

/// A string `sysctl` value by name, if there is one.
#[cfg(target_os = "macos")]
fn sysctl_string(name: &std::ffi::CStr) -> Option<String> {
    let mut buf = [0u8; 256];
    let mut len = buf.len();
    // SAFETY: `buf` and `len` describe a buffer we own; sysctlbyname writes at most
    // `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let text = buf.get(..len)?;
    let text = text.split(|&b| b == 0).next()?;
    let s = std::str::from_utf8(text).ok()?.trim();
    (!s.is_empty()).then(|| s.to_string())
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
/// Linux only (kernels before 5.11 refuse the flag, and then nothing changes); on
/// Windows the detached child is created inheriting nothing ([`spawn_detached`]).
#[cfg(not(windows))]
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
/// thread holds (on Windows, no DLL detach notifications either: `TerminateProcess`).
pub(crate) fn exit_now() -> ! {
    #[cfg(unix)]
    // SAFETY: _exit has no preconditions.
    unsafe {
        libc::_exit(0)
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};
        // SAFETY: the pseudo-handle of this process is always valid; TerminateProcess
        // on it does not return when it succeeds.
        unsafe {
            TerminateProcess(GetCurrentProcess(), 0);
        }
    }
    #[allow(unreachable_code)]
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
    /// Ctrl-C (SIGINT) while waiting. Unix only: on Windows Ctrl-C goes to the
    /// console's handlers (the host's, or the default that ends the process).
    #[cfg_attr(not(unix), allow(dead_code))]
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

/// The identity of the file at `path` (device and inode on Unix, volume serial and
/// file index on Windows), so a rename-and-recreate is told apart from the same file;
/// `None` if it cannot be read.
pub(crate) fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        use std::os::windows::io::AsRawHandle;
        use windows_sys::Win32::Storage::FileSystem::{
            BY_HANDLE_FILE_INFORMATION, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
            GetFileInformationByHandle,
        };
        // No access rights: reading attributes needs none, and it shares everything,
        // so it never stands in the way of a rename by another process.
        let file = std::fs::OpenOptions::new()
            .access_mode(0)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)
            .ok()?;
        // SAFETY: the handle is open for the call; the struct is an out-parameter we own.
        unsafe {
            let mut info: BY_HANDLE_FILE_INFORMATION = std::mem::zeroed();
            if GetFileInformationByHandle(file.as_raw_handle(), &mut info) == 0 {
                return None;
            }
            let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
            Some((u64::from(info.dwVolumeSerialNumber), index))
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = path;
        None
    }
}

/// Starts `exe` with `var=value` added to this process's environment, as a process
/// that inherits no handle at all (`bInheritHandles` false: std's `Command` always
/// passes true, and so hands the child every handle the host holds inheritable, such as
/// the pipe its parent gave it as stdout). No console, no window, a process group of its
/// own; its standard handles are absent, which std treats as null. Returns its pid.
#[cfg(windows)]
pub(crate) fn spawn_detached(
    exe: &std::path::Path,
    var: &std::ffi::OsStr,
    value: &std::ffi::OsStr,
) -> std::io::Result<u32> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{
        CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, CREATE_UNICODE_ENVIRONMENT, CreateProcessW,
        DETACHED_PROCESS, PROCESS_INFORMATION, STARTUPINFOW,
    };
    let wide = |s: &std::ffi::OsStr| s.encode_wide().collect::<Vec<u16>>();
    if exe
        .as_os_str()
        .encode_wide()
        .any(|c| c == u16::from(b'"') || c == 0)
    {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut application = wide(exe.as_os_str());
    application.push(0);
    // The command line is the quoted program name alone (a path holds no quote).
    let mut command_line = vec![u16::from(b'"')];
    command_line.extend(wide(exe.as_os_str()));
    command_line.extend([u16::from(b'"'), 0]);
    // The environment block: `K=V\0` entries sorted by upper-cased name, then `\0`.
    let upper = |k: &std::ffi::OsStr| k.to_string_lossy().to_uppercase();
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(k, _)| upper(k) != upper(var))
        .collect();
    vars.push((var.to_os_string(), value.to_os_string()));
    vars.sort_by_key(|(k, _)| upper(k));
    let mut block = Vec::new();
    for (k, v) in &vars {
        if k.is_empty() || k.encode_wide().chain(v.encode_wide()).any(|c| c == 0) {
            continue;
        }
        block.extend(wide(k));
        block.push(u16::from(b'='));
        block.extend(wide(v));
        block.push(0);
    }
    block.push(0);
    // SAFETY: every pointer passed is to a NUL-terminated buffer (the environment block
    // double-NUL-terminated) that lives until the call returns; the structs are zeroed
    // out-parameters we own, and the two handles CreateProcessW returns are ours to close.
    unsafe {
        let mut startup: STARTUPINFOW = std::mem::zeroed();
        startup.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        let mut info: PROCESS_INFORMATION = std::mem::zeroed();
        let ok = CreateProcessW(
            application.as_ptr(),
            command_line.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            DETACHED_PROCESS
                | CREATE_NEW_PROCESS_GROUP
                | CREATE_NO_WINDOW
                | CREATE_UNICODE_ENVIRONMENT,
            block.as_ptr().cast(),
            std::ptr::null(),
            &startup,
            &mut info,
        );
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // No zombie to reap on Windows: closing our handles lets the process object go
        // when it ends.
        CloseHandle(info.hThread);
        CloseHandle(info.hProcess);
        Ok(info.dwProcessId)
    }
}

/// A named mutex held by this thread: Windows' stand-in for an `flock` on a directory
/// (a directory handle cannot be locked there). Released when dropped, and by the
/// system if the holder dies (the next owner is told it was abandoned, and proceeds).
#[cfg(windows)]
pub(crate) struct NamedLock(windows_sys::Win32::Foundation::HANDLE);

#[cfg(windows)]
impl NamedLock {
    /// Waits for the mutex `name` (created if no process has it yet) and holds it.
    pub(crate) fn acquire(name: &str) -> std::io::Result<NamedLock> {
        use windows_sys::Win32::Foundation::{WAIT_ABANDONED, WAIT_OBJECT_0};
        use windows_sys::Win32::System::Threading::{CreateMutexW, INFINITE, WaitForSingleObject};
        let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
        // SAFETY: `wide` is NUL-terminated and outlives the call; a non-null handle is
        // ours, closed in Drop.
        unsafe {
            let h = CreateMutexW(std::ptr::null(), 0, wide.as_ptr());
            if h.is_null() {
                return Err(std::io::Error::last_os_error());
            }
            let lock = NamedLock(h);
            match WaitForSingleObject(h, INFINITE) {
                WAIT_OBJECT_0 | WAIT_ABANDONED => Ok(lock),
                _ => Err(std::io::Error::last_os_error()),
            }
        }
    }
}

#[cfg(windows)]
impl Drop for NamedLock {
    fn drop(&mut self) {
        use windows_sys::Win32::Foundation::CloseHandle;
        use windows_sys::Win32::System::Threading::ReleaseMutex;
        // SAFETY: the handle is ours; ReleaseMutex fails harmlessly if this thread does
        // not own it (the wait failed).
        unsafe {
            ReleaseMutex(self.0);
            CloseHandle(self.0);
        }
    }
}
