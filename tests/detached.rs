//! The detached flusher against hostile hosts: a host that ignores SIGALRM and SIGTERM
//! cannot keep it alive past its lifetime, a stray `EVENTSPOOL_DETACHED_FLUSH` does not
//! turn a host into a flusher, and the child holds none of the host's handles.

use std::io::Read;
#[cfg(unix)]
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    TestServer, assert_delivered_once, clean_command, detached_pid, example_bin, exited, fill,
    queued, run_clean, spool, spool_bin, temp, wait_exited,
};

/// `spool flush --detach` against `dir` as a host that ignores SIGALRM and SIGTERM (both
/// dispositions survive exec into the detached child; on Unix). The child stalls inside its
/// flush, where the flush's own deadline cannot reach it, like a flush stuck in a
/// blocking call.
fn stalling_host(dir: &Path, url: &str, lifetime: &str) -> Command {
    let mut cmd = clean_command(Path::new(spool_bin()));
    cmd.arg("--dir").arg(dir);
    cmd.args([
        "flush",
        "--detach",
        "--timeout",
        lifetime,
        "--endpoint",
        url,
    ])
    .env("EVENTSPOOL_TEST_PAUSE", "before_request");
    // Windows has no signal dispositions to inherit: there the child's own watchdog is
    // all that ends it, which is what the lifetime tests check.
    #[cfg(unix)]
    // SAFETY: only signal(), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGALRM, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    cmd
}

// Regression: the lifetime was an alarm, so a host ignoring SIGALRM kept a stuck
// detached flusher alive (20 s for a 2 s lifetime).
#[test]
fn a_host_ignoring_sigalrm_and_sigterm_cannot_keep_its_detached_flusher_past_its_lifetime() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 5);
    let server = TestServer::answering(200);
    let t = Instant::now();
    let out = stalling_host(&dir, &server.url, "2s").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = detached_pid(&String::from_utf8_lossy(&out.stdout));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!exited(pid), "the child should still be inside its flush");
    // Lifetime 2 s; the stall would hold it for a minute.
    wait_exited(pid, t, Duration::from_secs(5));
    assert_eq!(server.connections(), 0);
    // Nothing lost, and the dead child's lease does not stand in the way.
    let out = spool(&dir).args(["flush", "--endpoint", &server.url]).ok();
    assert!(out.contains("sent 5"), "{out}");
    assert_delivered_once(&server, &ids);
}

// Regression: any value of the variable made every host exit 0 at the hook without
// doing its work (`spool --help` printed nothing).
#[test]
fn a_stray_detached_flush_variable_leaves_spool_running_normally() {
    let (_t, dir) = temp();
    let forged_old_format = format!(
        r#"{{"app":"spool","dir":{:?},"endpoint":"http://127.0.0.1:9/","lifetime_ms":1000}}"#,
        dir.to_str().unwrap()
    );
    let no_such_ticket = format!("{}:{}", "0".repeat(32), dir.display());
    for value in ["1", "", forged_old_format.as_str(), no_such_ticket.as_str()] {
        let out = run_clean(
            Path::new(spool_bin()),
            &["--help"],
            &[("EVENTSPOOL_DETACHED_FLUSH", value)],
        );
        assert_eq!(out.status.code(), Some(0), "{value:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Usage"),
            "{value:?}: no help printed: {help:?}"
        );
    }
    spool(&dir)
        .args(["track", "still_works"])
        .env("EVENTSPOOL_DETACHED_FLUSH", "1")
        .ok();
    assert_eq!(queued(&dir).len(), 1, "the event was recorded");
}

// Regression: as above, `job_runner run` exited 0 without running the job.
#[test]
fn a_stray_detached_flush_variable_leaves_a_library_host_doing_its_work() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let out = run_clean(
        &example_bin("job_runner"),
        &["run", "--owner", "acme", "--project", "web"],
        &[
            ("JOBRUNNER_TELEMETRY_DIR", dir.to_str().unwrap()),
            ("JOBRUNNER_TELEMETRY_ENDPOINT", &server.url),
            ("EVENTSPOOL_DETACHED_FLUSH", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("updated acme/web"),
        "the job did not run: {stdout:?}"
    );
    assert_eq!(server.requests().len(), 1, "its usage event was sent");
}

#[cfg(target_os = "linux")] // reads the child's environment from /proc
#[test]
fn a_detached_childs_ticket_serves_once_and_stale_tickets_are_swept() {
    let (_t, dir) = temp();
    fill(&dir, 3);
    // A ticket whose child died before claiming it, and one a child may be about to claim.
    let stale = dir.join(format!("detached-flush-{}", "0".repeat(32)));
    let fresh = format!("detached-flush-{}", "1".repeat(32));
    std::fs::write(&stale, "{}").unwrap();
    std::fs::write(dir.join(&fresh), "{}").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let server = TestServer::answering(200);
    let out = stalling_host(&dir, &server.url, "3s").output().unwrap();
    let pid = detached_pid(&String::from_utf8_lossy(&out.stdout));
    // The child's own variable, read while it stalls: copying it does not make
    // another process a flusher, because the child has claimed the ticket.
    let t = Instant::now();
    let value = loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let found = environ
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(b"EVENTSPOOL_DETACHED_FLUSH="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if let Some(v) = found {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no variable in the child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(value.contains(':'), "{value}");
    std::thread::sleep(Duration::from_millis(300));
    let tickets: Vec<String> = crate::util::files_in(&dir)
        .into_iter()
        .filter(|f| f.starts_with("detached-flush-"))
        .collect();
    assert_eq!(
        tickets,
        [fresh],
        "the child claimed its own ticket, the stale one was swept"
    );
    let out = run_clean(
        Path::new(spool_bin()),
        &["--help"],
        &[("EVENTSPOOL_DETACHED_FLUSH", &value)],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    wait_exited(pid, t, Duration::from_secs(8));
}

// Regression: a descriptor the host left inheritable reached the detached child, so
// `host | cat` waited for the child.
#[test]
fn a_hosts_pipes_close_when_it_exits_though_its_detached_child_lives_on() {
    let (_t, dir) = temp();
    fill(&dir, 3);
    let server = TestServer::answering(200);
    let mut host = stalling_host(&dir, &server.url, "5s");
    // On Windows the pipes std gives the host are inheritable handles in it, as from
    // any parent: a child created with handle inheritance would hold them.
    host.stdout(Stdio::piped()).stderr(Stdio::piped());
    #[cfg(unix)]
    // SAFETY: only dup2, async-signal-safe, between fork and exec.
    unsafe {
        // A descriptor the host leaves inheritable (as from its own parent): the same
        // pipe as its stdout, as fd 3 without close-on-exec.
        host.pre_exec(|| {
            if libc::dup2(1, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let mut child = host.spawn().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let took = t.elapsed();
    assert!(child.wait().unwrap().success(), "{stderr}");
    let pid = detached_pid(&stdout);
    assert!(
        took < Duration::from_secs(3),
        "the host's pipes stayed open {took:?}: held by its detached child"
    );
    assert!(
        !exited(pid),
        "the child should still be alive, inside its 5 s"
    );
    wait_exited(pid, t, Duration::from_secs(9));
}
