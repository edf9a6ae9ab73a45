//! The `devtool` example (`examples/devtool.rs`) against the reference dev tool's
//! published page: every journey event with exactly its key fields, the `session`
//! summary with exactly its 32 fields, typed, on a clean exit, a crash, SIGINT and
//! SIGTERM; nothing written when opted out; the schema's purposes and "never
//! collected" list. Every run keeps its queue in a temp dir and sends to loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{TestServer, clean_command, example_bin, files_in, temp};

/// The 32 session fields of the reference page, with the JSON type each has
/// (`?` after it: `null` when there is nothing to measure).
const SESSION_FIELDS: [(&str, &str); 32] = [
    ("brakit_version", "string"),
    ("node_version", "string?"),
    ("os", "string"),
    ("arch", "string"),
    ("sdk", "string"),
    ("framework", "string"),
    ("package_manager", "string"),
    ("is_custom_command", "boolean"),
    ("first_session", "boolean"),
    ("adapters_detected", "array"),
    ("adapters_failed", "array"),
    ("framework_detection_candidates", "array"),
    ("request_count", "number"),
    ("error_count", "number"),
    ("query_count", "number"),
    ("fetch_count", "number"),
    ("insight_count", "number"),
    ("finding_count", "number"),
    ("insight_types", "array"),
    ("rules_triggered", "array"),
    ("endpoint_count", "number"),
    ("avg_duration_ms", "number?"),
    ("slowest_endpoint_bucket", "string?"),
    ("tabs_viewed", "array"),
    ("dashboard_opened", "boolean"),
    ("explain_used", "boolean"),
    ("session_duration_s", "number"),
    ("setup_succeeded", "boolean"),
    ("setup_duration_ms", "number"),
    ("time_to_first_request_ms", "number?"),
    ("time_to_dashboard_ms", "number?"),
    ("exit_reason", "string"),
];

/// The journey events of the reference page and their key fields, with types.
const JOURNEY: [(&str, &[(&str, &str)]); 5] = [
    (
        "cli_invoked",
        &[
            ("command", "string"),
            ("has_package_json", "boolean"),
            ("cwd_has_node_modules", "boolean"),
        ],
    ),
    (
        "setup_completed",
        &[
            ("framework", "string"),
            ("framework_detection_candidates", "array"),
            ("adapters_detected", "array"),
            ("adapters_failed", "array"),
            ("setup_duration_ms", "number"),
        ],
    ),
    (
        "first_request",
        &[("port", "number"), ("time_to_first_request_ms", "number")],
    ),
    (
        "dashboard_viewed",
        &[
            ("time_to_dashboard_ms", "number"),
            ("request_count_at_open", "number"),
        ],
    ),
    (
        "cli_uninstall",
        &[
            ("instrumentation_removed", "boolean"),
            ("package_removed", "boolean"),
            ("mcp_removed", "boolean"),
            ("data_removed", "boolean"),
        ],
    ),
];

/// A Next.js project with Prisma installed and `pg` declared but not installed,
/// pnpm's lock file and an MCP entry: what detection reads.
fn next_project(root: &Path) -> PathBuf {
    let dir = root.join("app");
    std::fs::create_dir_all(dir.join("node_modules/next")).unwrap();
    std::fs::create_dir_all(dir.join("node_modules/prisma")).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name": "secret-project", "dependencies": {"next": "14.2.0", "prisma": "5.0.0", "pg": "8.0.0", "left-pad": "1.0.0"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("pnpm-lock.yaml"), "lockfileVersion: '9.0'\n").unwrap();
    std::fs::write(dir.join(".mcp.json"), "{}").unwrap();
    dir
}

/// `devtool ARGS` in `project`, its queue in `queue`, sending to `endpoint`.
fn devtool_cmd(
    project: &Path,
    queue: &Path,
    endpoint: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut cmd = clean_command(&example_bin("devtool"));
    cmd.current_dir(project)
        .args(args)
        .env("DEVTOOL_TELEMETRY_DIR", queue)
        .env("DEVTOOL_TELEMETRY_ENDPOINT", endpoint)
        // devtool flushes only when a flush is due: here every run is, so each test
        // sees its events arrive (`a_run_with_nothing_due_starts_no_flusher` unsets it).
        .env("SPOOL_FLUSH_INTERVAL", "0s");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn devtool(project: &Path, queue: &Path, endpoint: &str, args: &[&str]) -> Output {
    devtool_cmd(project, queue, endpoint, args, &[])
        .output()
        .unwrap()
}

/// The properties of the one `name` event among `events`.
#[track_caller]
fn only<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    &found[0]["properties"]
}

#[track_caller]
fn sorted_keys(props: &Value) -> Vec<String> {
    let mut keys: Vec<String> = props.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Asserts `props` has exactly the fields of `fields`, each of its type.
#[track_caller]
fn assert_fields(event: &str, props: &Value, fields: &[(&str, &str)]) {
    let mut want: Vec<String> = fields.iter().map(|(k, _)| k.to_string()).collect();
    want.sort();
    assert_eq!(sorted_keys(props), want, "{event}: {props}");
    for (key, kind) in fields {
        let v = &props[*key];
        let (kind, nullable) = match kind.strip_suffix('?') {
            Some(k) => (k, true),
            None => (*kind, false),
        };
        let ok = (nullable && v.is_null())
            || match kind {
                "string" => v.is_string(),
                "number" => v.is_u64(),
                "boolean" => v.is_boolean(),
                "array" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                _ => unreachable!("{kind}"),
            };
        assert!(ok, "{event}.{key} should be {kind}, is {v}");
    }
}

#[test]
fn journey_events_carry_exactly_their_key_fields() {
    let (t, queue) = temp();
    let project = next_project(t.path());
    let server = TestServer::answering(200);
    assert!(
        devtool(&project, &queue, &server.url, &["setup"])
            .status
            .success()
    );
    let dev = [
        "dev",
        "--requests",
        "4",
        "--open-dashboard",
        "--port",
        "4321",
    ];
    assert!(
        devtool(&project, &queue, &server.url, &dev)
            .status
            .success()
    );
    let out = devtool(&project, &queue, &server.url, &["uninstall", "--keep-data"]);
    assert!(out.status.success());
    // A run whose detached flush found the previous run's flusher still sending
    // started none: its events wait in the queue for the next flush, which is this.
    let names = JOURNEY.map(|(name, _)| name);
    let t = std::time::Instant::now();
    while !names
        .iter()
        .all(|n| server.events().iter().any(|e| e["event"] == *n))
        && t.elapsed() < Duration::from_secs(10)
    {
        crate::util::spool(&queue)
            .args(["flush", "--endpoint", &server.url])
            .run();
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = server.wait_for_events(&names, Duration::from_secs(10));
    for (name, fields) in JOURNEY {
        for e in events.iter().filter(|e| e["event"] == name) {
            assert_fields(name, &e["properties"], fields);
        }
    }

    let commands: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "cli_invoked")
        .map(|e| &e["properties"]["command"])
        .collect();
    assert_eq!(commands, ["setup", "dev", "uninstall"]);
    let invoked = &events[0]["properties"];
    assert_eq!(
        (
            &invoked["has_package_json"],
            &invoked["cwd_has_node_modules"]
        ),
        (&Value::Bool(true), &Value::Bool(true))
    );
    // Detected from the project; only known package names, never the project's own.
    let setup = &events
        .iter()
        .find(|e| e["event"] == "setup_completed")
        .unwrap()["properties"];
    assert_eq!(setup["framework"], "nextjs");
    assert_eq!(
        setup["framework_detection_candidates"],
        serde_json::json!(["next", "prisma", "pg"])
    );
    assert_eq!(
        setup["adapters_detected"],
        serde_json::json!(["prisma", "pg"])
    );
    assert_eq!(
        setup["adapters_failed"],
        serde_json::json!(["pg"]),
        "declared, not installed"
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("secret-project") && !all.contains("left-pad"));
    assert!(!all.contains(project.to_str().unwrap()), "no path is sent");

    let first = only(&events, "first_request");
    assert_eq!(first["port"], 4321);
    let dashboard = only(&events, "dashboard_viewed");
    assert_eq!(
        dashboard["request_count_at_open"], 2,
        "after half the requests"
    );
    let uninstall = only(&events, "cli_uninstall");
    assert_eq!(uninstall["instrumentation_removed"], true);
    assert_eq!(uninstall["package_removed"], true);
    assert_eq!(uninstall["mcp_removed"], true);
    assert_eq!(uninstall["data_removed"], false, "--keep-data");

    // Outside any project: the same fields, the facts reversed.
    let (_t2, queue2) = temp();
    let empty = tempfile::tempdir().unwrap();
    let server2 = TestServer::answering(200);
    devtool(empty.path(), &queue2, &server2.url, &["uninstall"]);
    let events = server2.wait_for_events(&["cli_uninstall"], Duration::from_secs(10));
    let invoked = only(&events, "cli_invoked");
    assert_eq!(invoked["has_package_json"], false);
    assert_eq!(invoked["cwd_has_node_modules"], false);
    let uninstall = only(&events, "cli_uninstall");
    assert_eq!(
        (
            &uninstall["package_removed"],
            &uninstall["mcp_removed"],
            &uninstall["data_removed"]
        ),
        (&Value::Bool(false), &Value::Bool(false), &Value::Bool(true))
    );
}

/// `node --version` on this machine, as devtool would report it.
fn node_version() -> Option<String> {
    let out = Command::new("node").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn session_carries_exactly_the_32_fields_typed_with_real_values() {
    let (t, queue) = temp();
    let project = next_project(t.path());
    let server = TestServer::answering(200);
    let args = [
        "dev",
        "--requests",
        "4",
        "--errors",
        "1",
        "--open-dashboard",
        "--",
        "npm",
        "run",
        "start",
    ];
    let out = devtool(&project, &queue, &server.url, &args);
    assert!(out.status.success());
    let events = server.wait_for_events(&["session"], Duration::from_secs(10));
    let s = only(&events, "session");
    assert_fields("session", s, &SESSION_FIELDS);

    assert_eq!(s["brakit_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["node_version"], serde_json::json!(node_version()));
    let os = s["os"].as_str().unwrap();
    assert!(
        os.starts_with(&format!("{}-", std::env::consts::OS)) && os.len() > 6,
        "{os}"
    );
    assert_eq!(s["arch"], std::env::consts::ARCH);
    assert_eq!(s["sdk"], "rust");
    assert_eq!(s["framework"], "nextjs");
    assert_eq!(s["package_manager"], "pnpm");
    assert_eq!(s["is_custom_command"], true);
    assert_eq!(s["first_session"], true);
    assert_eq!(s["adapters_detected"], serde_json::json!(["prisma", "pg"]));
    assert_eq!(s["adapters_failed"], serde_json::json!(["pg"]));
    // Four simulated requests (45, 120, 230, 80 ms), Prisma instrumented: two queries
    // each, a fetch every other one, an N+1 on the third route, one 500 with a finding.
    assert_eq!(s["request_count"], 4);
    assert_eq!(s["error_count"], 1);
    assert_eq!(s["query_count"], 8);
    assert_eq!(s["fetch_count"], 2);
    assert_eq!(s["insight_count"], 1);
    assert_eq!(s["insight_types"], serde_json::json!(["n1"]));
    assert_eq!(s["finding_count"], 1);
    assert_eq!(
        s["rules_triggered"],
        serde_json::json!(["stack-trace-leak"])
    );
    assert_eq!(s["endpoint_count"], 4);
    assert_eq!(s["avg_duration_ms"], 118);
    assert_eq!(s["slowest_endpoint_bucket"], "100-500ms");
    assert_eq!(s["dashboard_opened"], true);
    // Opened after two requests: before the N+1 insight, so no insights tab.
    assert_eq!(s["tabs_viewed"], serde_json::json!(["requests", "queries"]));
    assert_eq!(s["explain_used"], false);
    assert_eq!(s["setup_succeeded"], true);
    assert_eq!(s["exit_reason"], "clean");
    assert!(s["time_to_first_request_ms"].is_u64() && s["time_to_dashboard_ms"].is_u64());

    // No requests, no dashboard, a broken package.json: the measures are null.
    std::fs::write(project.join("package.json"), "{not json").unwrap();
    let out = devtool(&project, &queue, &server.url, &["dev", "--requests", "0"]);
    assert!(out.status.success());
    let t0 = Instant::now();
    let s = loop {
        let events = server.events();
        let sessions: Vec<&Value> = events.iter().filter(|e| e["event"] == "session").collect();
        if sessions.len() == 2 {
            break sessions[1]["properties"].clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no second session");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_fields("session", &s, &SESSION_FIELDS);
    assert_eq!(s["first_session"], false);
    assert_eq!(s["setup_succeeded"], false);
    assert_eq!(s["framework"], "unknown");
    assert_eq!(s["request_count"], 0);
    for key in [
        "avg_duration_ms",
        "slowest_endpoint_bucket",
        "time_to_first_request_ms",
        "time_to_dashboard_ms",
    ] {
        assert!(s[key].is_null(), "{key}: {s}");
    }
}

/// Starts `devtool dev --forever` and waits until it has served its 3 requests and
/// idles (its signal handlers are installed before it starts).
fn running_dev(project: &Path, queue: &Path, endpoint: &str, env: &[(&str, &str)]) -> Child {
    let mut child = devtool_cmd(project, queue, endpoint, &["dev", "--forever"], env)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is dropped once devtool idles: from then on its stdout is a closed
    // pipe, which must not stop it recording its summary.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("idle") {
        let mut line = String::new();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "devtool ended: {seen}"
        );
        seen.push_str(&line);
    }
    child
}

/// How [`end`] ends a running devtool.
enum Ending {
    Int,
    Term,
}

/// Ends `child` as a person would: SIGINT or SIGTERM on Unix (exit 130 or 143); on
/// Windows, which has no signal to send another process, it is terminated.
fn end(child: &mut Child, how: Ending) {
    #[cfg(unix)]
    match how {
        Ending::Int => assert_eq!(signal_and_wait(child, libc::SIGINT), Some(130)),
        Ending::Term => assert_eq!(signal_and_wait(child, libc::SIGTERM), Some(143)),
    }
    #[cfg(not(unix))]
    {
        let _ = how;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[cfg(unix)]
/// Sends `sig` to `child` and returns its exit code, failing if it takes over 5 s.
#[track_caller]
fn signal_and_wait(child: &mut Child, sig: i32) -> Option<i32> {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: a signal to our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("devtool still running {:?} after signal {sig}", t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The queued events, as devtool's own `telemetry list --json` shows them.
fn queued_by_devtool(queue: &Path) -> Vec<Value> {
    let out = devtool_cmd(
        Path::new("/"),
        queue,
        &crate::util::refused_url(),
        &["telemetry", "list", "--json"],
        &[],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["payload"].clone())
        .collect()
}

#[cfg(unix)] // POSIX signals; Windows has no SIGINT/SIGTERM to send a process
#[test]
fn sigint_to_a_running_dev_queues_a_signal_session_and_exits_130_at_once() {
    let (t, queue) = temp();
    let project = next_project(t.path());
    // An endpoint that never answers: the exit cannot wait for it.
    let server = TestServer::start(|_, _| crate::util::Reply::Hang);
    let mut child = running_dev(&project, &queue, &server.url, &[]);
    end(&mut child, Ending::Int);
    let events = queued_by_devtool(&queue);
    let s = only(&events, "session");
    assert_fields("session", s, &SESSION_FIELDS);
    assert_eq!(s["exit_reason"], "signal");
    assert_eq!(
        s["request_count"], 3,
        "the requests served before the signal"
    );
}

#[cfg(unix)] // POSIX signals; Windows has no SIGINT/SIGTERM to send a process
#[test]
fn sigterm_to_a_running_dev_sends_a_signal_session_and_exits_143() {
    let (t, queue) = temp();
    let project = next_project(t.path());
    let server = TestServer::answering(200);
    let mut child = running_dev(&project, &queue, &server.url, &[]);
    assert_eq!(signal_and_wait(&mut child, libc::SIGTERM), Some(143));
    // Sent afterwards by the detached child.
    let events = server.wait_for_events(&["session"], Duration::from_secs(10));
    let s = only(&events, "session");
    assert_fields("session", s, &SESSION_FIELDS);
    assert_eq!(s["exit_reason"], "signal");
}

#[test]
fn a_crash_sends_an_error_session_and_exits_1() {
    let (t, queue) = temp();
    let project = next_project(t.path());
    let server = TestServer::answering(200);
    let out = devtool(
        &project,
        &queue,
        &server.url,
        &["dev", "--requests", "5", "--fail-after", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crashed"));
    let events = server.wait_for_events(&["session"], Duration::from_secs(10));
    let s = only(&events, "session");
    assert_fields("session", s, &SESSION_FIELDS);
    assert_eq!(s["exit_reason"], "error");
    assert_eq!(s["request_count"], 2);
}

#[test]
fn opted_out_dev_writes_nothing_on_any_ending() {
    let (t, _) = temp();
    let project = next_project(t.path());
    let server = TestServer::answering(200);
    let off = [("DEVTOOL_TELEMETRY", "false")];
    // By the variable: a signal, a crash, a clean run.
    let (_q, queue) = temp();
    let mut child = running_dev(&project, &queue, &server.url, &off);
    end(&mut child, Ending::Term);
    let crash = ["dev", "--fail-after", "1"];
    let out = devtool_cmd(&project, &queue, &server.url, &crash, &off)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = devtool_cmd(&project, &queue, &server.url, &["dev"], &off)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!queue.exists(), "opted out: {:?}", files_in(&queue));

    // By `"telemetry": false` in config.json.
    let (_q2, queue) = temp();
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::write(queue.join("config.json"), "{\"telemetry\": false}").unwrap();
    let mut child = running_dev(&project, &queue, &server.url, &[]);
    end(&mut child, Ending::Int);
    let out = devtool(&project, &queue, &server.url, &crash);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(files_in(&queue), ["config.json"]);
    assert_eq!(
        std::fs::read_to_string(queue.join("config.json")).unwrap(),
        "{\"telemetry\": false}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.connections(), 0);
}

#[test]
fn schema_gives_every_field_a_purpose_and_lists_what_is_never_collected() {
    // The page comes from devtool's catalog (examples/catalogs/devtool.json): every
    // declared field with its type and purpose, per event.
    let (t, queue) = temp();
    let out = devtool(
        t.path(),
        &queue,
        &crate::util::refused_url(),
        &["telemetry", "schema", "--json"],
    );
    assert!(out.status.success());
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |event: &str, name: &str| {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == event)
            .unwrap_or_else(|| panic!("{event} missing from the page"))["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == name)
            .unwrap_or_else(|| panic!("{event}.{name} missing from the page"))
            .clone()
    };
    // The declared type, as the JSON type the session test above checks.
    let json_kind = |declared: &str| match declared.split([':', ',']).next().unwrap() {
        "string" | "enum" => "string",
        "bool" => "boolean",
        "string_list" => "array",
        "integer" | "number" => "number",
        other => panic!("unknown type {other}"),
    };
    for (name, kind) in SESSION_FIELDS {
        let f = field("session", name);
        let purpose = f["purpose"].as_str().unwrap_or_default();
        assert!(!purpose.is_empty(), "{name} has no purpose: {f}");
        assert_eq!(
            json_kind(f["type"].as_str().unwrap()),
            kind.trim_end_matches('?'),
            "{name}"
        );
    }
    for (event, fields) in JOURNEY {
        for (name, kind) in fields {
            let f = field(event, name);
            assert!(f["purpose"].is_string(), "{event}.{name}: {f}");
            assert_eq!(
                json_kind(f["type"].as_str().unwrap()),
                *kind,
                "{event}.{name}"
            );
        }
    }
    assert_eq!(field("session", "request_count")["purpose"], "Usage volume");
    let never: Vec<&str> = page["never_collected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(never.len(), 8, "{never:?}");
    assert!(never.contains(&"IP addresses") && never.contains(&"Project names or file paths"));

    let out = devtool(
        t.path(),
        &queue,
        &crate::util::refused_url(),
        &["telemetry", "schema"],
    );
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.contains("| Field | Type | Purpose | Example |"), "{md}");
    assert!(
        md.contains(
            "| `exit_reason` | enum: clean, error, signal | Understand session endings | clean |"
        ),
        "{md}"
    );
    assert!(md.contains("- `DEVTOOL_TELEMETRY=false`"), "{md}");
    let list = md.split("## Never collected").nth(1).unwrap();
    for item in never {
        assert!(list.contains(&format!("- {item}\n")), "{item}: {list}");
    }
    assert!(!queue.exists(), "printing the schema writes nothing");
}

#[test]
fn a_run_with_nothing_due_starts_no_flusher() {
    let (t, queue) = temp();
    let project = next_project(t.path());
    let server = TestServer::answering(200);
    let mut cmd = devtool_cmd(
        &project,
        &queue,
        &server.url,
        &["dev", "--requests", "1"],
        &[],
    );
    cmd.env_remove("SPOOL_FLUSH_INTERVAL");
    assert!(cmd.output().unwrap().status.success());
    // A few events, none older than 15 minutes: queued, and no process sent them.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.connections(), 0);
    let queued = queued_by_devtool(&queue);
    assert!(queued.iter().any(|e| e["event"] == "session"), "{queued:?}");
}
