//! Every opt-out rule: recording is a no-op that leaves no file at all.

#[cfg(unix)]
use std::time::{Duration, Instant};

use crate::util::{files_in, queued, spool, status, temp};

const APP: &str = "my-tool";

#[test]
fn each_opt_out_rule_leaves_the_directory_empty() {
    let rules: Vec<(&str, &str)> = vec![
        ("MY_TOOL_TELEMETRY_DISABLED", "1"),
        ("MY_TOOL_TELEMETRY_DISABLED", "true"),
        ("MY_TOOL_TELEMETRY_DISABLED", "YES"),
        ("MY_TOOL_TELEMETRY_DISABLED", "On"),
        ("MY_TOOL_TELEMETRY", "0"),
        ("MY_TOOL_TELEMETRY", "false"),
        ("MY_TOOL_TELEMETRY", "No"),
        ("MY_TOOL_TELEMETRY", "OFF"),
        ("DO_NOT_TRACK", "1"),
        ("DO_NOT_TRACK", "true"),
    ];
    for (var, value) in rules {
        let (t, dir) = temp();
        let out = spool(&dir)
            .args(["--app", APP, "track", "e", "-p", "k=v"])
            .env(var, value)
            .run();
        assert!(out.status.success(), "{var}={value}");
        assert!(out.stdout.is_empty(), "{var}={value}: printed an id");
        assert!(!dir.exists(), "{var}={value} created {:?}", files_in(&dir));
        assert_eq!(files_in(t.path()), Vec::<String>::new());
        let status = spool(&dir)
            .args(["--app", APP, "status", "--json"])
            .env(var, value)
            .ok();
        assert!(
            status.contains("\"enabled\":false") && status.contains(var),
            "{status}"
        );
        assert!(!dir.exists(), "status created files");
    }
}

#[test]
fn values_that_do_not_opt_out_leave_telemetry_on() {
    for (var, value) in [
        ("MY_TOOL_TELEMETRY_DISABLED", "0"),
        ("MY_TOOL_TELEMETRY", "1"),
        ("DO_NOT_TRACK", "0"),
        ("DO_NOT_TRACK", ""),
    ] {
        let (_t, dir) = temp();
        spool(&dir)
            .args(["--app", APP, "track", "e"])
            .env(var, value)
            .ok();
        assert_eq!(queued(&dir).len(), 1, "{var}={value}");
    }
}

#[test]
fn another_apps_variable_does_not_apply() {
    let (_t, dir) = temp();
    spool(&dir)
        .args(["--app", APP, "track", "e"])
        .env("OTHER_TELEMETRY_DISABLED", "1")
        .ok();
    assert_eq!(queued(&dir).len(), 1);
}

#[test]
fn persisted_choice_off_records_nothing_and_disable_purges() {
    let (_t, dir) = temp();
    spool(&dir).args(["track", "before"]).ok();
    assert_eq!(queued(&dir).len(), 1);
    let out = spool(&dir).args(["disable"]).ok();
    assert!(out.contains("purged 1"), "{out}");
    assert!(queued(&dir).is_empty());
    spool(&dir).args(["track", "after"]).ok();
    assert!(queued(&dir).is_empty());
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"telemetry\": false"), "{config}");

    // Disabled on a fresh directory: the choice is the only file.
    let (_t2, fresh) = temp();
    spool(&fresh).args(["disable"]).ok();
    spool(&fresh).args(["track", "e"]).ok();
    assert_eq!(files_in(&fresh), ["config.json"]);

    spool(&dir).args(["enable"]).ok();
    spool(&dir).args(["track", "again"]).ok();
    assert_eq!(queued(&dir).len(), 1);
}

#[test]
fn a_corrupt_settings_file_never_turns_telemetry_on() {
    let (_t, dir) = temp();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{\"telemetry\": fal").unwrap();
    // The library path (a host) treats it as off, writes nothing, and says why.
    let host = eventspool::Spool::builder("spool").dir(&dir).build();
    let err = host
        .try_track(eventspool::Event::new("e"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("not valid"),
        "{err}"
    );
    host.track(eventspool::Event::new("e"));
    assert_eq!(host.failures(), 1);
    let consent = host.consent();
    assert!(!consent.enabled);
    assert_eq!(consent.rule, "unreadable_settings");
    assert_eq!(files_in(&dir), ["config.json"]);
}

#[test]
fn debug_mode_prints_to_stderr_and_queues_nothing() {
    for var in ["MY_TOOL_TELEMETRY_DEBUG", "SPOOL_DEBUG"] {
        let (_t, dir) = temp();
        let out = spool(&dir)
            .args(["--app", APP, "track", "dbg", "-p", "k=v"])
            .env(var, "1")
            .run();
        assert!(out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        let printed: serde_json::Value =
            serde_json::from_str(stderr.trim()).expect("stderr is the event JSON");
        assert_eq!(printed["event"], "dbg");
        assert_eq!(printed["properties"]["k"], "v");
        assert!(out.stdout.is_empty());
        assert!(!dir.join("queue.db").exists(), "{var}: queued");
    }
}

#[cfg(unix)]
/// Runs `spool track` with a deadline; returns (exit code, stderr, how long it took).
fn track_within(dir: &std::path::Path, limit: Duration) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let mut child = spool(dir).args(["track", "e"]).spawn();
    while t0.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("spool track still running after {limit:?}");
}

#[cfg(unix)] // FIFOs and /dev/zero
#[test]
fn a_settings_file_that_is_a_fifo_a_device_or_huge_never_blocks_or_slows_a_host() {
    let (_t, dir) = temp();
    std::fs::create_dir_all(&dir).unwrap();
    let settings = dir.join("config.json");
    let fifo = std::ffi::CString::new(settings.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (code, err, took) = track_within(&dir, Duration::from_secs(5));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    eprintln!("FIFO config.json: spool track failed in {took:?}");

    std::fs::remove_file(&settings).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &settings).unwrap();
    let (code, err, _) = track_within(&dir, Duration::from_secs(5));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    std::fs::remove_file(&settings).unwrap();
    let big = std::fs::File::create(&settings).unwrap();
    big.set_len(100 << 20).unwrap();
    let (code, err, took) = track_within(&dir, Duration::from_secs(5));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("byte limit"), "{err}");
    assert!(took < Duration::from_secs(2), "a 100 MB file took {took:?}");

    // A library host: off, at once, and `status` says why.
    let host = eventspool::Spool::builder("spool").dir(&dir).build();
    let t0 = Instant::now();
    for _ in 0..100 {
        host.track(eventspool::Event::new("e"));
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let consent = host.consent();
    assert!(!consent.enabled);
    assert!(consent.reason.contains("byte limit"), "{}", consent.reason);
    assert!(queued(&dir).is_empty());
}

/// A host's consent for `dir` is off and names `why`, and `spool track` fails saying it.
#[track_caller]
fn off_because(dir: &std::path::Path, why: &str) {
    let consent = eventspool::Spool::builder("spool")
        .dir(dir)
        .build()
        .consent();
    assert!(!consent.enabled);
    assert!(consent.reason.contains(why), "{}", consent.reason);
    let line = spool(dir).args(["track", "e"]).fails();
    assert!(line.contains(why), "{line}");
}

#[test]
fn status_names_the_real_reason_telemetry_is_off() {
    // A --dir that is a file.
    let (_t, dir) = temp();
    std::fs::write(&dir, "not a directory").unwrap();
    let line = spool(&dir).args(["status"]).fails();
    assert!(line.contains("is not a directory"), "{line}");
    off_because(&dir, "is not a directory");

    // A directory that belongs to someone else (Unix: Windows files have no owner uid).
    #[cfg(unix)]
    {
        let (_t, dir) = temp();
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        off_because(&dir, "belongs to another user");
    }

    // A malformed config.json.
    let (_t, dir) = temp();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{\"telemetry\": tru").unwrap();
    let s = status(&dir);
    assert_eq!(s["rule"], "unreadable_settings");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("config.json") && reason.contains("not valid"),
        "{reason}"
    );
    assert!(!reason.contains("spool disable"), "{reason}");

    // The user's own choice names the file that holds it, not another tool's command.
    let (_t, dir) = temp();
    spool(&dir).args(["disable"]).ok();
    let s = status(&dir);
    assert_eq!(s["rule"], "persisted");
    let reason = s["reason"].as_str().unwrap();
    assert!(reason.contains("\"telemetry\": false"), "{reason}");
    assert!(!reason.contains("spool disable"), "{reason}");
}

#[test]
fn recording_never_decides_for_the_user_and_an_environment_choice_shows_in_status() {
    let (_t, dir) = temp();
    spool(&dir).args(["track", "e"]).ok();
    let settings = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(!settings.contains("telemetry"), "{settings}");
    let s = status(&dir);
    assert_eq!(
        (s["enabled"].as_bool(), s["rule"].as_str()),
        (Some(true), Some("default"))
    );

    let s: serde_json::Value = serde_json::from_str(
        &spool(&dir)
            .env("SPOOL_TELEMETRY", "false")
            .args(["status", "--json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(
        (s["enabled"].as_bool(), s["rule"].as_str()),
        (Some(false), Some("env"))
    );
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("SPOOL_TELEMETRY=false"),
        "{s}"
    );

    // <APP>_TELEMETRY=true turns it on for that environment over a persisted "off".
    spool(&dir).args(["disable"]).ok();
    let s: serde_json::Value = serde_json::from_str(
        &spool(&dir)
            .env("SPOOL_TELEMETRY", "true")
            .args(["status", "--json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(s["enabled"], true);
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("persisted choice is off"),
        "{s}"
    );
}
