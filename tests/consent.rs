//! Every opt-out rule: recording is a no-op that leaves no file at all.

use crate::util::{files_in, queued, spool, temp};

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
