//! Child processes: writers re-run from this test binary, limits on a child (file size,
//! user), a resolver that never answers, and whether a process has exited.

use std::io::Write;
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::Output;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use serde_json::Value;

use super::clean_command;

/// Whether the process `pid` (not necessarily our child) has exited: it is gone, or it
/// is a zombie (dead, waiting to be reaped by a parent that may never do so). Windows:
/// no process has the id, or its process object is signalled (ended, with a handle
/// still open somewhere). Asked of the OS directly, independently of the library's
/// own liveness check.
#[cfg(windows)]
pub fn exited(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, ERROR_ACCESS_DENIED, GetLastError};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, WaitForSingleObject,
    };
    // SAFETY: OpenProcess has no preconditions; a non-null handle is closed below.
    unsafe {
        let h = OpenProcess(
            PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE,
            0,
            pid,
        );
        if h.is_null() {
            // Denied: it exists. Any other failure (invalid parameter): no such process.
            return GetLastError() != ERROR_ACCESS_DENIED;
        }
        let signalled = WaitForSingleObject(h, 0) == 0;
        CloseHandle(h);
        signalled
    }
}

/// Whether the process `pid` (not necessarily our child) has exited: it is gone, or it
/// is a zombie (dead, waiting to be reaped by a parent that may never do so).
#[cfg(unix)]
pub fn exited(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return true; // no process has such an id
    };
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    if unsafe { libc::kill(raw, 0) } != 0 {
        // EPERM: it exists, under another user.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    match process_state(pid) {
        Some(state) => state == 'Z',
        // `/proc` is there but this pid is not: it ended since the probe above.
        None if proc_mounted() => true,
        // No `/proc` and no `ps` to ask: the probe said it exists, and that is all we know.
        None => false,
    }
}

/// Whether this is Linux with `/proc` mounted, where `/proc/<pid>` is the truth.
#[cfg(unix)]
fn proc_mounted() -> bool {
    cfg!(target_os = "linux") && Path::new("/proc/self/stat").exists()
}

/// The state letter of `pid` (`R`, `S`, `Z`, …): from `/proc/<pid>/stat` where
/// [`proc_mounted`], from `ps` elsewhere; `None` when that does not know the process.
#[cfg(unix)]
fn process_state(pid: u32) -> Option<char> {
    if proc_mounted() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name, in parentheses, may hold spaces and parentheses; the state follows
        // its last `)`.
        let (_, rest) = stat.rsplit_once(')')?;
        return rest.trim_start().chars().next();
    }
    let out = Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().chars().next()
}

/// Waits until `pid` has [`exited`], failing once `within` has passed since `since`.
#[track_caller]
pub fn wait_exited(pid: u32, since: Instant, within: Duration) {
    while !exited(pid) {
        assert!(
            since.elapsed() < within,
            "process {pid} still running after {:?} (allowed {within:?})",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Set in a child started by [`child_writer`]: the queue directory it writes to.
const CHILD_DIR: &str = "EVENTSPOOL_TEST_WRITER_DIR";

/// Starts a child process (this test binary, re-run on [`child_writer_entry`]) that
/// records events into `dir` as fast as it can and prints `ID <id>` on stdout after
/// each `track` returns, until it has written `max` events or is killed.
pub fn child_writer(dir: &Path, max: usize) -> std::process::Child {
    let mut cmd = child_command(dir);
    cmd.env("EVENTSPOOL_TEST_WRITER_MAX", max.to_string())
        .env("SPOOL_MAX_EVENTS", "10000000")
        .env("SPOOL_MAX_BYTES", "1GiB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    super::retrying_start(|| cmd.spawn()).expect("child writer starts")
}

/// A child writer that records `n` events fire-and-forget (`track`) and prints
/// `FAILURES <count>` at the end; optionally with its file size limit (RLIMIT_FSIZE)
/// at `fsize` bytes, as on a full disk, and as another user (`uid`, when root).
#[cfg(unix)]
pub fn child_writer_fire(dir: &Path, n: usize, fsize: Option<u64>, uid: Option<u32>) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let exe = if uid.is_some() {
        runnable_by_others(&exe)
    } else {
        exe
    };
    let mut cmd = child_command_of(&exe, dir);
    cmd.env("EVENTSPOOL_TEST_WRITER_MAX", n.to_string())
        .env("EVENTSPOOL_TEST_WRITER_FIRE", "1");
    limit_child(&mut cmd, fsize, uid);
    cmd.output().expect("child runs")
}

/// Sets a child's file size limit and its user. SIGXFSZ is set to its default action,
/// as in a host that never thought about it: a write past the limit kills the child
/// unless eventspool keeps it from doing so.
#[cfg(unix)]
pub fn limit_child(cmd: &mut Command, fsize: Option<u64>, uid: Option<u32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fsize) = fsize {
                let lim = libc::rlimit {
                    rlim_cur: fsize,
                    rlim_max: fsize,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
}

/// `program`, at a path another user can execute: the clone may sit under a private
/// directory (`mktemp -d` makes it 0700), which a child running as `nobody` cannot
/// reach. Copied once per program into a world-readable temp directory when needed.
#[cfg(unix)]
pub fn runnable_by_others(program: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COPIES: std::sync::Mutex<Vec<(PathBuf, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let reachable = program
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable {
        return program.to_path_buf();
    }
    let mut copies = COPIES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, copy)) = copies.iter().find(|(p, _)| p == program) {
        return copy.clone();
    }
    let dir = std::env::temp_dir().join(format!("eventspool-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("shared test dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join(program.file_name().expect("a file name"));
    std::fs::copy(program, &copy).expect("copy the program");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copies.push((program.to_path_buf(), copy.clone()));
    copy
}

/// This test binary, re-run on [`child_writer_entry`] to write into `dir`.
fn child_command(dir: &Path) -> Command {
    child_command_of(&std::env::current_exe().expect("test binary"), dir)
}

/// [`child_command`] running `exe`, a copy of this test binary.
fn child_command_of(exe: &Path, dir: &Path) -> Command {
    let mut cmd = clean_command(exe);
    cmd.args([
        "--exact",
        "util::children::child_writer_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir);
    cmd
}

/// The ids a child writer printed, in order.
pub fn printed_ids(out: &[u8]) -> Vec<String> {
    // libtest may print `test … ... ` before the first line, without a newline.
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.rsplit_once("ID "))
        .map(|(_, id)| id.to_string())
        .collect()
}

/// Not a test: the entry point of [`child_writer`] processes, which run it with
/// `--ignored`. Ignored in the normal test run.
#[test]
#[ignore = "the entry point of child-writer processes, run by util::children::child_writer"]
fn child_writer_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let max: usize = std::env::var("EVENTSPOOL_TEST_WRITER_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let spool = eventspool::Spool::builder("spool")
        .dir(PathBuf::from(dir))
        .build();
    let mut out = std::io::stdout().lock();
    if std::env::var_os("EVENTSPOOL_TEST_WRITER_FIRE").is_some() {
        for i in 0..max {
            let pad = "p".repeat(800);
            spool.track(
                eventspool::Event::new("written")
                    .property("i", i as u64)
                    .property("pad", pad),
            );
        }
        writeln!(out, "FAILURES {}", spool.failures()).expect("stdout");
        return;
    }
    for i in 0..max {
        let t = std::time::Instant::now();
        // A write lock held past the spool's lock timeout (16 processes starting on
        // a loaded 2-core machine) is refused, not lost: the caller is told, and this
        // writer tries the same event again. Anything else ends it.
        let mut tries = 0;
        loop {
            tries += 1;
            match spool.try_track(eventspool::Event::new("written").property("i", i as u64)) {
                Ok(eventspool::Recorded::Queued(id)) => {
                    writeln!(out, "ID {id}").expect("stdout");
                    out.flush().expect("stdout");
                    break;
                }
                Err(e) if more_tries(tries, t) && e.to_string().contains("database is locked") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => {
                    writeln!(out, "ERR after {:?} at event {i}: {other:?}", t.elapsed())
                        .expect("stdout");
                    std::process::exit(3);
                }
            }
        }
    }
}

/// Whether a child writer tries an event refused for a held lock once more: 20 tries
/// (about 4 s at the 200 ms lock timeout). Under Wine every lock call is a round trip
/// to wineserver and a commit takes about 30 ms with 16 writers, 2 flushers and a list
/// loop on 2 cores, so one writer can lose the race for the lock for longer: there the
/// budget is 60 s of trying instead (still bounded, and a refused event is still tried
/// again, never skipped).
fn more_tries(tries: u32, since: std::time::Instant) -> bool {
    if cfg!(windows) {
        since.elapsed() < std::time::Duration::from_secs(60)
    } else {
        tries < 20
    }
}

/// Set in the child started by [`with_silent_dns`]: the command to run, as JSON.
#[cfg(target_os = "linux")]
const SILENT_DNS_CMD: &str = "EVENTSPOOL_TEST_SILENT_DNS_CMD";
/// Set in that child: the resolv.conf to mount over /etc/resolv.conf.
#[cfg(target_os = "linux")]
const SILENT_DNS_CONF: &str = "EVENTSPOOL_TEST_SILENT_DNS_CONF";

/// Runs `program args` where the system resolver never answers: in new mount and
/// network namespaces (`unshare`, as root) with `lo` up, a UDP socket on
/// 127.0.0.1:53 that reads nothing, and a resolv.conf naming it with
/// `timeout:5 attempts:2`, so a lookup hangs for 10 s or more as on a broken network.
/// `env` is added to the command's clean environment. Returns its output and how
/// long it took. Linux only (namespaces).
#[cfg(target_os = "linux")]
pub fn with_silent_dns(program: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let conf = tempfile::NamedTempFile::new().expect("temp resolv.conf");
    std::fs::write(
        conf.path(),
        "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n",
    )
    .expect("write resolv.conf");
    let mut argv = vec![program.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let spec = serde_json::json!({ "argv": argv, "env": env });
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = clean_command(Path::new("unshare"));
    cmd.args(["--mount", "--net"])
        .arg(&exe)
        .args([
            "--exact",
            "util::children::silent_dns_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SILENT_DNS_CMD, spec.to_string())
        .env(SILENT_DNS_CONF, conf.path());
    let t = Instant::now();
    let out = cmd
        .output()
        .expect("unshare(1) from util-linux runs (these tests need root, as CI has)");
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("SILENT_DNS_SETUP_FAILED") && !stderr.contains("unshare failed"),
        "could not set up a silent resolver (needs root and unshare): {stderr}"
    );
    (out, took)
}

/// Not a test: the entry point of [`with_silent_dns`], run inside the new
/// namespaces with `--ignored`. Ignored in the normal test run.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "the entry point of with_silent_dns, run inside unshare"]
fn silent_dns_entry() {
    let (Some(spec), Some(conf)) = (
        std::env::var_os(SILENT_DNS_CMD),
        std::env::var_os(SILENT_DNS_CONF),
    ) else {
        return;
    };
    let setup = || -> std::io::Result<std::net::UdpSocket> {
        loopback_up()?;
        let src = std::ffi::CString::new(conf.as_encoded_bytes()).expect("path");
        let dst = c"/etc/resolv.conf";
        // SAFETY: valid NUL-terminated paths; a bind mount in our own mount namespace.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Bound and never read: queries are accepted and never answered.
        std::net::UdpSocket::bind("127.0.0.1:53")
    };
    let _socket = match setup() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SILENT_DNS_SETUP_FAILED: {e}");
            std::process::exit(2);
        }
    };
    let spec: Value = serde_json::from_str(&spec.to_string_lossy()).expect("spec");
    let argv: Vec<String> = spec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .collect();
    let mut cmd = clean_command(Path::new(&argv[0]));
    cmd.args(&argv[1..]);
    for pair in spec["env"].as_array().expect("env") {
        cmd.env(
            pair[0].as_str().expect("key"),
            pair[1].as_str().expect("value"),
        );
    }
    let out = cmd.output().expect("command runs");
    std::io::stdout().write_all(&out.stdout).expect("stdout");
    std::io::stderr().write_all(&out.stderr).expect("stderr");
    std::process::exit(out.status.code().unwrap_or(1));
}

/// Brings the loopback interface of this (new) network namespace up.
#[cfg(target_os = "linux")]
fn loopback_up() -> std::io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 24],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 24],
    };
    for (d, s) in req.name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: an ioctl on a socket we own, with a buffer the size of struct ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req) == 0
        };
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if !ok {
            return Err(err);
        }
    }
    Ok(())
}
