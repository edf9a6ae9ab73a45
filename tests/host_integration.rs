//! The two reference designs as real hosts (`examples/job_runner.rs`,
//! `examples/devtool.rs`) against loopback endpoints; commands mounted in a host's
//! own CLI; the first-use notice.

use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use serde_json::Value;

use crate::util::{
    Reply, TestServer, example_bin, files_in, refused_url, run_clean, temp, wait_exited,
};

fn job_runner(
    dir: &std::path::Path,
    endpoint: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    run_example("job_runner", dir, endpoint, args, env)
}

/// Runs an example host with its queue in `dir` and its endpoint set to `endpoint`,
/// through the host's own variables (`SPOOL_*` configure only the `spool` command).
fn run_example(
    name: &str,
    dir: &std::path::Path,
    endpoint: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let dir = dir.to_str().unwrap();
    let prefix = if name == "job_runner" {
        "JOBRUNNER"
    } else {
        "DEVTOOL"
    };
    let (dir_var, endpoint_var) = (
        format!("{prefix}_TELEMETRY_DIR"),
        format!("{prefix}_TELEMETRY_ENDPOINT"),
    );
    // Every run is due for a flush, for the hosts that flush only when one is.
    let mut all = vec![
        (dir_var.as_str(), dir),
        (endpoint_var.as_str(), endpoint),
        ("SPOOL_FLUSH_INTERVAL", "0s"),
    ];
    all.extend_from_slice(env);
    run_clean(&example_bin(name), args, &all)
}

use crate::util::{JOB, JOB_FIELDS};

#[track_caller]
fn assert_kind(props: &Value, key: &str, kind: &str) {
    let v = &props[key];
    let ok = kind.split('|').any(|kind| match kind {
        "string" => v.is_string(),
        "number" => v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => unreachable!(),
    });
    assert!(ok, "{key} should be {kind}, is {v}");
}

#[test]
fn job_runner_sends_exactly_the_usage_fields_one_post_per_job() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let out = job_runner(&dir, &server.url, &JOB, &[]);
    assert_eq!(out.status.code(), Some(0));
    let mut args = JOB.to_vec();
    let long = "x".repeat(3000);
    args.extend(["--fail", &long, "--trigger", "service", "--multi-ecosystem"]);
    let out = job_runner(&dir, &server.url, &args, &[]);
    assert_eq!(out.status.code(), Some(1));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one POST per job");
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let machine_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(hostname.as_bytes()))
    };
    for (i, r) in reqs.iter().enumerate() {
        assert!(
            r.body.get("batch").is_none(),
            "batch size 1 sends a bare event"
        );
        assert_eq!(r.body["event"], "job_finished");
        let props = &r.body["properties"];
        let mut keys: Vec<&str> = props
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        let mut want: Vec<&str> = JOB_FIELDS.iter().map(|(k, _)| *k).collect();
        want.sort();
        assert_eq!(keys, want);
        for (k, kinds) in JOB_FIELDS {
            assert_kind(props, k, kinds);
        }
        assert_eq!(
            props["tool"],
            format!("jobrunner@{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(props["host.machine-hash"], machine_hash.as_str());
        assert!(humantime::parse_rfc3339(props["started"].as_str().unwrap()).is_ok());
        assert!(uuid::Uuid::parse_str(props["id"].as_str().unwrap()).is_ok());
        if i == 0 {
            assert_eq!(
                (props["success"].as_bool(), props["trigger"].as_str()),
                (Some(true), Some("user"))
            );
            assert_kind(props, "error.message", "null");
        } else {
            assert_eq!(
                (props["success"].as_bool(), props["trigger"].as_str()),
                (Some(false), Some("service"))
            );
            assert_eq!(props["multi-ecosystem-update"], true);
            assert_eq!(
                props["error.message"].as_str().unwrap().chars().count(),
                1000,
                "truncated"
            );
        }
    }
}

#[test]
fn job_runner_exit_code_is_the_same_whether_the_endpoint_is_up_down_or_hanging() {
    let up = TestServer::answering(200);
    let hanging = TestServer::start(|_, _| Reply::Hang);
    for (what, url) in [
        ("up", up.url.clone()),
        ("down", refused_url()),
        ("hanging", hanging.url.clone()),
    ] {
        for (fail, want) in [(false, 0), (true, 1)] {
            let (_t, dir) = temp();
            let mut args = JOB.to_vec();
            if fail {
                args.extend(["--fail", "boom"]);
            }
            let t = Instant::now();
            let out = job_runner(&dir, &url, &args, &[]);
            assert_eq!(
                out.status.code(),
                Some(want),
                "endpoint {what}, fail={fail}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(8),
                "endpoint {what}: took {:?}",
                t.elapsed()
            );
            assert!(
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .all(|l| !l.contains("telemetry")),
                "no telemetry noise"
            );
        }
    }
    assert!(up.requests().len() == 2);
}

#[test]
fn job_runner_opt_out_and_validation_send_and_write_nothing() {
    let server = TestServer::answering(200);
    let (t, dir) = temp();
    let out = job_runner(
        &dir,
        &server.url,
        &JOB,
        &[("JOBRUNNER_TELEMETRY_DISABLED", "1")],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(!dir.exists(), "opted out: {:?}", files_in(&dir));

    let config = t.path().join("config.json");
    std::fs::write(&config, "{\"updates\": []}").unwrap();
    let out = job_runner(
        &dir,
        &server.url,
        &["validate", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "validation wrote {:?}", files_in(&dir));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.connections(), 0);
}

fn devtool(
    dir: &std::path::Path,
    endpoint: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    run_example("devtool", dir, endpoint, args, env)
}

#[test]
fn devtool_sends_journey_events_and_one_session_summary() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    assert!(devtool(&dir, &server.url, &["setup"], &[]).status.success());
    server.wait_for_events(&["cli_invoked", "setup_completed"], Duration::from_secs(10));
    let out = devtool(
        &dir,
        &server.url,
        &[
            "dev",
            "--requests",
            "4",
            "--errors",
            "1",
            "--open-dashboard",
        ],
        &[],
    );
    assert!(out.status.success());
    let events = server.wait_for_events(
        &["first_request", "dashboard_viewed", "session"],
        Duration::from_secs(10),
    );
    let session: Vec<&Value> = events.iter().filter(|e| e["event"] == "session").collect();
    assert_eq!(session.len(), 1);
    let p = &session[0]["properties"];
    assert_eq!(p["request_count"], 4);
    assert_eq!(p["error_count"], 1);
    // Failed requests are the app's errors, counted; the server itself ended cleanly.
    assert_eq!(p["exit_reason"], "clean");
    assert_eq!(p["first_session"], true);
    assert!(p["session_duration_s"].is_u64());
    assert!(p["setup_duration_ms"].is_u64(), "{p}");
    assert!(p["time_to_first_request_ms"].is_u64());

    // The anonymous id is the one in the persisted settings, on every event.
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["anonymous_id"] == config["anonymous_id"])
    );

    // A second session: not first, and no second `first_request`.
    devtool(&dir, &server.url, &["dev"], &[]);
    let t = Instant::now();
    while server
        .events()
        .iter()
        .filter(|e| e["event"] == "session")
        .count()
        < 2
    {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = server.events();
    let last = events
        .iter()
        .rev()
        .find(|e| e["event"] == "session")
        .unwrap();
    assert_eq!(last["properties"]["first_session"], false);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "first_request")
            .count(),
        1
    );

    devtool(&dir, &server.url, &["uninstall"], &[]);
    server.wait_for_events(&["cli_uninstall"], Duration::from_secs(10));
}

#[test]
fn devtool_opt_out_sends_and_writes_nothing() {
    let server = TestServer::answering(200);
    for value in ["false", "0", "off"] {
        let (_t, dir) = temp();
        let out = devtool(&dir, &server.url, &["dev"], &[("DEVTOOL_TELEMETRY", value)]);
        assert!(out.status.success());
        assert!(
            !dir.exists(),
            "DEVTOOL_TELEMETRY={value}: {:?}",
            files_in(&dir)
        );
    }
    // The persisted `"telemetry": false`.
    let (_t, dir) = temp();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{\"telemetry\": false}").unwrap();
    assert!(
        devtool(&dir, &server.url, &["dev", "--open-dashboard"], &[])
            .status
            .success()
    );
    assert_eq!(files_in(&dir), ["config.json"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        "{\"telemetry\": false}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.connections(), 0);
}

#[test]
fn devtool_exits_at_once_with_a_hanging_endpoint_and_its_child_delivers_later() {
    let (_t, dir) = temp();
    // The endpoint holds each request for 4 s before it answers.
    let server = TestServer::start(|_, _| Reply::Delay(Duration::from_secs(4), 200));
    let t = Instant::now();
    let out = devtool(&dir, &server.url, &["dev", "--requests", "1"], &[]);
    let took = t.elapsed();
    assert!(out.status.success());
    // Well under the endpoint's 4 s (start-up asks `node --version`, ~10 ms; a
    // process start under wine on a loaded machine can take a second).
    let bound = Duration::from_secs(if cfg!(windows) { 2 } else { 1 });
    assert!(took < bound, "devtool took {took:?} to exit");

    server.wait_for_requests(1, Duration::from_secs(5));
    let child =
        crate::util::lease_holder(&dir).expect("the detached child holds the lease while it sends");
    server.wait_for_events(&["session"], Duration::from_secs(10));
    wait_exited(child, Instant::now(), Duration::from_secs(10));
    assert!(
        crate::util::lease_holder(&dir).is_none(),
        "the lease was given back"
    );
}

/// A host's own CLI with the telemetry commands mounted under its name.
#[derive(Parser)]
#[command(name = "mytool")]
enum MyTool {
    /// Build things
    Build,
    /// See, send or switch off mytool's usage statistics
    #[command(subcommand)]
    Telemetry(eventspool::cli::TelemetryCommand),
}

#[test]
fn a_host_cli_mounts_the_telemetry_commands() {
    let help = MyTool::command().render_long_help().to_string();
    assert!(help.contains("telemetry"), "{help}");
    let sub = MyTool::command()
        .find_subcommand_mut("telemetry")
        .unwrap()
        .render_long_help()
        .to_string();
    for cmd in [
        "status", "list", "show", "clear", "enable", "disable", "flush", "schema",
    ] {
        assert!(sub.contains(cmd), "{cmd} missing from {sub}");
    }

    let (_t, dir) = temp();
    let spool = eventspool::Spool::builder("mytool").dir(&dir).build();
    spool.track(eventspool::Event::new("build_started").property("target", "release"));
    spool.track(eventspool::Event::new("build_finished").property("ok", true));
    let MyTool::Telemetry(cmd) = MyTool::parse_from(["mytool", "telemetry", "list", "--json"])
    else {
        panic!()
    };
    let mut out = Vec::new();
    cmd.run(&spool, &mut out).unwrap();
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"], "build_started");
    assert_eq!(lines[1]["payload"]["properties"]["ok"], true);

    // The same through a real host process: devtool mounts them too.
    let (_t2, dir2) = temp();
    let server = TestServer::answering(503);
    devtool(&dir2, &server.url, &["setup"], &[]);
    let out = devtool(&dir2, &server.url, &["telemetry", "list", "--json"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"event\":\"setup_completed\""), "{text}");
    let out = devtool(
        &dir2,
        &server.url,
        &["telemetry", "show", "no-such-id"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .starts_with("devtool: error: no queued event")
    );
}

#[test]
fn notice_prints_once_and_never_with_consent_off() {
    let (_t, dir) = temp();
    let spool = eventspool::Spool::builder("mytool").dir(&dir).build();
    let mut err = Vec::new();
    assert!(
        !spool.notice_once_to("hello", false, &mut err),
        "not interactive: no notice"
    );
    assert!(spool.notice_once_to("hello", true, &mut err));
    assert!(!spool.notice_once_to("hello", true, &mut err));
    assert_eq!(String::from_utf8(err).unwrap(), "hello\n");
    assert!(spool.settings().unwrap().notice_shown);

    let (_t2, off) = temp();
    let disabled = eventspool::Spool::builder("mytool").dir(&off).build();
    disabled.disable().unwrap();
    let mut err = Vec::new();
    assert!(!disabled.notice_once_to("hello", true, &mut err));
    assert!(err.is_empty());
}

#[cfg(unix)]
/// Runs devtool in a pseudo-terminal (util-linux `script`), as a person would.
fn devtool_in_terminal(dir: &std::path::Path, env: &str) -> String {
    let cmd = format!(
        "{env} DEVTOOL_TELEMETRY_DIR='{}' DEVTOOL_TELEMETRY_ENDPOINT='{}' '{}' dev",
        dir.display(),
        refused_url(),
        example_bin("devtool").display()
    );
    let out = crate::util::clean_command(std::path::Path::new("script"))
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(unix)] // a pseudo-terminal through util-linux `script`
#[test]
fn devtool_notice_shows_once_in_a_terminal_and_never_when_piped_or_opted_out() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let (_t, dir) = temp();
    // Piped output (a script parsing it): no notice, and it stays unshown.
    let out = devtool(&dir, &refused_url(), &["dev"], &[]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("usage statistics"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("usage statistics"));
    let first = devtool_in_terminal(&dir, "");
    assert!(
        first.contains("devtool collects anonymous usage statistics"),
        "{first}"
    );
    let second = devtool_in_terminal(&dir, "");
    assert!(!second.contains("usage statistics"), "{second}");

    let (_t2, off) = temp();
    let out = devtool_in_terminal(&off, "DEVTOOL_TELEMETRY=false");
    assert!(out.contains("served"), "{out}");
    assert!(!out.contains("usage statistics"), "{out}");
    assert!(!off.exists());
}
