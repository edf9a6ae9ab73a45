//! The Node and Python example hosts (`examples/node/`, `examples/python/`), run with
//! the machine's `node` and `python3` against loopback endpoints: every field of the
//! two published tables, one session per dev-tool run, opt-outs that write nothing,
//! failed sends that change nothing, a session summary on SIGINT and SIGTERM.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{
    JOB_FIELDS, TestServer, clean_command, queued, refused_url, spool, spool_bin, tree,
};

/// The dev tool's journey events and their key fields, as its table lists them.
const JOURNEY_FIELDS: [(&str, &[(&str, &str)]); 5] = [
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
            ("framework", "string|null"),
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

/// The dev tool's 32 session fields, as its table lists them.
const SESSION_FIELDS: [(&str, &str); 32] = [
    ("brakit_version", "string"),
    // The Python SDK has no Node to report.
    ("node_version", "string|null"),
    ("os", "string"),
    ("arch", "string"),
    ("sdk", "string"),
    ("framework", "string|null"),
    ("package_manager", "string|null"),
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
    ("avg_duration_ms", "number"),
    ("slowest_endpoint_bucket", "string|null"),
    ("tabs_viewed", "array"),
    ("dashboard_opened", "boolean"),
    ("explain_used", "boolean"),
    ("session_duration_s", "number"),
    ("setup_succeeded", "boolean"),
    ("setup_duration_ms", "number"),
    ("time_to_first_request_ms", "number|null"),
    ("time_to_dashboard_ms", "number|null"),
    ("exit_reason", "string"),
];

/// The two languages, each with its interpreter's real path and file-name style.
#[derive(Clone, Copy, Debug)]
enum Lang {
    Node,
    Python,
}

const LANGS: [Lang; 2] = [Lang::Node, Lang::Python];

impl Lang {
    /// The machine's interpreter, resolved once to its real executable, so a version
    /// manager's shim (which may read HOME) is not in the way when HOME is a temp dir.
    fn interpreter(self) -> &'static Path {
        static NODE: OnceLock<PathBuf> = OnceLock::new();
        static PYTHON: OnceLock<PathBuf> = OnceLock::new();
        let (cell, program, ask) = match self {
            Lang::Node => (&NODE, "node", ["-p", "process.execPath"]),
            Lang::Python => (
                &PYTHON,
                "python3",
                ["-c", "import sys; print(sys.executable)"],
            ),
        };
        cell.get_or_init(|| {
            let out = Command::new(program)
                .args(ask)
                .output()
                .unwrap_or_else(|e| panic!("{program} must be installed to run these tests: {e}"));
            assert!(out.status.success(), "{program} failed");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
    }

    fn script(self, tool: Tool) -> PathBuf {
        let name = match (self, tool) {
            (Lang::Node, Tool::JobRunner) => "node/job-runner.mjs",
            (Lang::Node, Tool::DevTool) => "node/devtool.mjs",
            (Lang::Python, Tool::JobRunner) => "python/job_runner.py",
            (Lang::Python, Tool::DevTool) => "python/devtool.py",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }
}

#[derive(Clone, Copy, Debug)]
enum Tool {
    JobRunner,
    DevTool,
}

impl Tool {
    fn prefix(self) -> &'static str {
        match self {
            Tool::JobRunner => "JOBRUNNER",
            Tool::DevTool => "DEVTOOL",
        }
    }
}

/// Where one host keeps things: its HOME (never the real one), its queue directory
/// (`<APP>_TELEMETRY_DIR`), and a project directory to run in.
struct Machine {
    _t: tempfile::TempDir,
    home: PathBuf,
    queue: PathBuf,
    project: PathBuf,
}

fn machine() -> Machine {
    let t = tempfile::tempdir().unwrap();
    let (home, queue, project) = (
        t.path().join("home"),
        t.path().join("queue"),
        t.path().join("project"),
    );
    std::fs::create_dir(&home).unwrap();
    // A Next.js project with Prisma installed and Redis listed but not installed.
    std::fs::create_dir_all(project.join("node_modules/prisma")).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"dependencies": {"next": "14.2.0", "prisma": "5.0.0", "redis": "4.6.0"}}"#,
    )
    .unwrap();
    std::fs::write(project.join("pnpm-lock.yaml"), "lockfileVersion: '9.0'\n").unwrap();
    Machine {
        _t: t,
        home,
        queue,
        project,
    }
}

impl Machine {
    /// The host as a command: only PATH, LANG and what is given here in its environment.
    fn host(&self, lang: Lang, tool: Tool, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = clean_command(lang.interpreter());
        cmd.arg(lang.script(tool))
            .args(args)
            .current_dir(&self.project)
            .env("HOME", &self.home)
            .env("SPOOL_BIN", spool_bin())
            .env(format!("{}_TELEMETRY_DIR", tool.prefix()), &self.queue);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, lang: Lang, tool: Tool, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.host(lang, tool, args, env).output().unwrap()
    }

    /// Sends what is queued to `server`, as `spool` run by hand would.
    fn flush_to(&self, app: &str, server: &TestServer) {
        spool(&self.queue)
            .args(["--app", app, "flush", "--endpoint", &server.url])
            .ok();
    }
}

#[track_caller]
fn assert_fields(event: &Value, table: &[(&str, &str)]) {
    let props = event["properties"].as_object().unwrap();
    let got: BTreeSet<&str> = props.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = table.iter().map(|(k, _)| *k).collect();
    assert_eq!(got, want, "{} fields differ from the table", event["event"]);
    for (key, kinds) in table {
        let v = &props[*key];
        let ok = kinds.split('|').any(|kind| match kind {
            "string" => v.is_string(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "null" => v.is_null(),
            _ => unreachable!("{kind}"),
        });
        assert!(ok, "{}.{key} should be {kinds}, is {v}", event["event"]);
    }
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The properties of the events `server` received, by name, in arrival order.
fn received<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn job_runner_sends_one_event_per_job_with_every_field_of_its_table() {
    let server = TestServer::answering(200);
    for lang in LANGS {
        let m = machine();
        let env = [("JOBRUNNER_TELEMETRY_ENDPOINT", server.url.as_str())];
        let before = server.events().len();
        let out = m.run(
            lang,
            Tool::JobRunner,
            &[
                "run",
                "--owner",
                "acme",
                "--project",
                "web",
                "--id",
                "2850677077",
            ],
            &env,
        );
        assert_eq!(
            ok(&out),
            format!(
                "job 2850677077: updated acme/web ({})\n",
                match lang {
                    Lang::Node => "npm",
                    Lang::Python => "pip",
                }
            )
        );
        let message = "Error running updater: lockfile conflict. ".repeat(40);
        let out = m.run(
            lang,
            Tool::JobRunner,
            &[
                "run",
                "--owner",
                "acme",
                "--project",
                "web",
                "--package-manager",
                "terraform",
                "--multi-ecosystem",
                "--trigger",
                "service",
                "--fail",
                &message,
            ],
            &env,
        );
        assert_eq!(out.status.code(), Some(1), "{lang:?}");
        // Each job's event goes out on its own from a detached flush: no `spool flush` here.
        server.wait_for_requests(before + 2, Duration::from_secs(30));
        let events = server.events();
        let jobs = &events[before..];
        assert_eq!(jobs.len(), 2, "{lang:?}: one event per job");
        for e in jobs {
            assert_eq!(e["event"], "job_finished");
            assert_fields(e, &JOB_FIELDS);
            assert_eq!(e["context"]["tool"], "jobrunner@1.0.0");
            let p = &e["properties"];
            assert_eq!(p["tool"], "jobrunner@1.0.0");
            assert_eq!(p["host.platform"], std::env::consts::OS);
            // What the page promises, not the scrubber's `<redacted>` for a long hex run.
            let hostname = gethostname::gethostname().to_string_lossy().into_owned();
            let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(hostname.as_bytes()));
            assert_eq!(p["host.machine-hash"], want, "{lang:?}");
            // The job works 20 ms; a timer may fire a millisecond early by the wall clock.
            assert!(p["duration"].as_u64().unwrap() >= 10, "{p}");
            humantime::parse_rfc3339(p["started"].as_str().unwrap()).unwrap();
        }
        let (done, failed) = (&jobs[0]["properties"], &jobs[1]["properties"]);
        assert_eq!(
            (done["success"].as_bool(), done["error.message"].is_null()),
            (Some(true), true)
        );
        assert_eq!(done["id"], "2850677077");
        assert_eq!(failed["success"], false);
        assert_eq!(
            failed["error.message"].as_str().unwrap().chars().count(),
            1000
        );
        assert!(message.starts_with(failed["error.message"].as_str().unwrap()));
        assert_eq!(
            (
                &failed["trigger"],
                &failed["package-manager"],
                &failed["multi-ecosystem-update"]
            ),
            (&"service".into(), &"terraform".into(), &true.into())
        );
    }
}

#[test]
fn dev_tool_sends_its_journey_and_a_session_with_all_32_fields_in_one_session() {
    let server = TestServer::answering(200);
    for lang in LANGS {
        let m = machine();
        let dev = [
            "dev",
            "--requests",
            "5",
            "--errors",
            "1",
            "--open-dashboard",
            "--tabs",
            "requests,queries",
            "--command",
            "pnpm start",
        ];
        ok(&m.run(lang, Tool::DevTool, &dev, &[]));
        ok(&m.run(lang, Tool::DevTool, &["dev", "--requests", "1"], &[]));
        ok(&m.run(lang, Tool::DevTool, &["uninstall"], &[]));
        let before = server.events().len();
        m.flush_to("devtool", &server);
        let events = server.events()[before..].to_vec();
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "cli_invoked",
                "setup_completed",
                "first_request",
                "dashboard_viewed",
                "session",
                "cli_invoked",
                "setup_completed",
                "first_request",
                "session",
                "cli_invoked",
                "cli_uninstall"
            ],
            "{lang:?}"
        );
        for e in &events {
            let table = JOURNEY_FIELDS
                .iter()
                .find(|(name, _)| e["event"] == *name)
                .map(|(_, t)| *t)
                .unwrap_or(&SESSION_FIELDS);
            assert_fields(e, table);
            assert_eq!(e["context"]["tool"], "devtool@0.9.1");
        }
        // One session id per run, each a UUIDv7, and never shared between runs.
        let runs = [&events[..5], &events[5..9], &events[9..]];
        let mut ids = BTreeSet::new();
        for run in runs {
            let id = run[0]["session_id"].as_str().unwrap();
            assert!(
                run.iter().all(|e| e["session_id"] == id),
                "{lang:?}: {run:?}"
            );
            assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
            ids.insert(id);
        }
        assert_eq!(ids.len(), 3);

        let s = &events[4]["properties"];
        let want = serde_json::json!({
            "brakit_version": "0.9.1",
            "sdk": match lang { Lang::Node => "node", Lang::Python => "python" },
            "framework": "nextjs",
            "package_manager": "pnpm",
            "is_custom_command": true,
            "first_session": true,
            "adapters_detected": ["prisma"],
            "adapters_failed": ["redis"],
            "framework_detection_candidates": ["next", "prisma", "redis"],
            "request_count": 5,
            "error_count": 1,
            "endpoint_count": 5,
            "tabs_viewed": ["requests", "queries"],
            "dashboard_opened": true,
            "explain_used": false,
            "setup_succeeded": false,
            "exit_reason": "clean",
        });
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&s[k], v, "{lang:?} session.{k}");
        }
        assert!(
            s["time_to_first_request_ms"].as_u64().unwrap()
                <= s["time_to_dashboard_ms"].as_u64().unwrap()
        );
        assert_eq!(events[8]["properties"]["first_session"], false, "{lang:?}");
        assert_eq!(events[8]["properties"]["time_to_dashboard_ms"], Value::Null);
        assert_eq!(events[10]["properties"]["data_removed"], true, "{lang:?}");
        assert_eq!(
            received(&events, "dashboard_viewed")[0]["properties"]["request_count_at_open"],
            1
        );
    }
}

/// Starts `devtool dev --until-signal` and waits until it serves.
fn serving(m: &Machine, lang: Lang, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["dev", "--until-signal"];
    args.extend_from_slice(extra);
    let mut child = m
        .host(lang, Tool::DevTool, &args, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("devtool: serving"), "{lang:?}: {line:?}");
    child
}

/// Waits for `child` to exit, at most `within`, killing it if it does not.
fn wait(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t.elapsed() > within {
            let _ = child.kill();
            panic!("still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_and_sigterm_end_a_dev_tool_session_with_exit_reason_signal() {
    for lang in LANGS {
        for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
            let m = machine();
            let mut child = serving(&m, lang, &[]);
            std::thread::sleep(Duration::from_millis(100)); // a few requests served
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
            let status = wait(&mut child, Duration::from_secs(30));
            assert_eq!(status.code(), Some(code), "{lang:?} {signal}");
            let q = queued(&m.queue);
            let last = &q.last().unwrap()["payload"];
            assert_eq!(last["event"], "session", "{lang:?}");
            assert_fields(last, &SESSION_FIELDS);
            assert_eq!(
                last["properties"]["exit_reason"], "signal",
                "{lang:?} {signal}"
            );
            assert!(last["properties"]["request_count"].as_u64().unwrap() >= 1);
            let session = &q[0]["payload"]["session_id"];
            assert!(q.iter().all(|e| &e["payload"]["session_id"] == session));
        }
    }
}

#[test]
fn a_dev_tool_that_fails_ends_its_session_with_exit_reason_error() {
    for lang in LANGS {
        let m = machine();
        let out = m.run(lang, Tool::DevTool, &["dev", "--fail", "port in use"], &[]);
        assert_eq!(out.status.code(), Some(1), "{lang:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "devtool: error: port in use\n"
        );
        let q = queued(&m.queue);
        let last = &q.last().unwrap()["payload"];
        assert_eq!(last["event"], "session");
        assert_fields(last, &SESSION_FIELDS);
        assert_eq!(last["properties"]["exit_reason"], "error", "{lang:?}");
    }
}

#[test]
fn opted_out_hosts_write_nothing_at_all() {
    let server = TestServer::answering(200);
    let endpoint = server.url.as_str();
    for lang in LANGS {
        for env in [
            ("JOBRUNNER_TELEMETRY_DISABLED", "1"),
            ("JOBRUNNER_TELEMETRY_DISABLED", "true"),
            ("DO_NOT_TRACK", "1"),
        ] {
            let m = machine();
            let out = m.run(
                lang,
                Tool::JobRunner,
                &["run", "--owner", "a", "--project", "b"],
                &[env, ("JOBRUNNER_TELEMETRY_ENDPOINT", endpoint)],
            );
            ok(&out);
            assert!(!m.queue.exists(), "{lang:?} {env:?}: {:?}", tree(&m.queue));
        }
        let m = machine();
        let dev = ["dev", "--open-dashboard"];
        ok(&m.run(lang, Tool::DevTool, &dev, &[("DEVTOOL_TELEMETRY", "false")]));
        ok(&m.run(
            lang,
            Tool::DevTool,
            &["uninstall"],
            &[("DEVTOOL_TELEMETRY", "false")],
        ));
        assert!(!m.queue.exists(), "{lang:?}: {:?}", tree(&m.queue));
        // The user's persisted choice, as `spool --app devtool disable` leaves it.
        std::fs::create_dir(&m.queue).unwrap();
        std::fs::write(m.queue.join("config.json"), r#"{"telemetry": false}"#).unwrap();
        ok(&m.run(lang, Tool::DevTool, &dev, &[]));
        assert_eq!(tree(&m.queue), ["config.json"], "{lang:?}");
        // Nor does the tool keep its own telemetry state (the first-session counter).
        assert!(tree(&m.home).is_empty(), "{lang:?}: {:?}", tree(&m.home));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.requests().is_empty());
}

#[test]
fn a_failed_send_or_a_missing_spool_leaves_the_job_result_as_with_telemetry_off() {
    let failing = TestServer::answering(500);
    let refused = refused_url();
    for lang in LANGS {
        for fail in [None, Some("lockfile conflict")] {
            let mut args = vec!["run", "--owner", "acme", "--project", "web", "--id", "7"];
            args.extend(fail.iter().flat_map(|f| ["--fail", f]));
            let off = machine().run(
                lang,
                Tool::JobRunner,
                &args,
                &[("JOBRUNNER_TELEMETRY_DISABLED", "1")],
            );
            assert_eq!(off.status.code(), Some(if fail.is_some() { 1 } else { 0 }));
            let requests = failing.requests().len();
            for env in [
                ("JOBRUNNER_TELEMETRY_ENDPOINT", failing.url.as_str()),
                ("JOBRUNNER_TELEMETRY_ENDPOINT", refused.as_str()),
                ("SPOOL_BIN", "/nonexistent/spool"),
                // A `spool` that fails: a bad limit variable is an error for it.
                ("SPOOL_MAX_EVENTS", "lots"),
            ] {
                let m = machine();
                let on = m.run(lang, Tool::JobRunner, &args, &[env]);
                let what = format!("{lang:?} {fail:?} {env:?}");
                assert_eq!(on.status.code(), off.status.code(), "{what}");
                assert_eq!(on.stdout, off.stdout, "{what}");
                assert_eq!(
                    String::from_utf8_lossy(&on.stderr),
                    String::from_utf8_lossy(&off.stderr),
                    "{what}"
                );
            }
            // The 500 was really answered (to the detached flush), and changed nothing.
            failing.wait_for_requests(requests + 1, Duration::from_secs(30));
        }
    }
}
