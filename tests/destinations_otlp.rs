//! The `otlp` destination against software nobody here wrote: rotel, a real
//! OpenTelemetry collector (its debug log shows every resource, record and typed
//! attribute it decoded), and opentelemetry-proto's generated types decoding the very
//! bodies we send; then its status rules against loopback fault servers.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{Value, json};

use crate::util::{Received, Reply, TestServer, queued, rotel_agent, spool, status, temp};

/// rotel's collector on two free loopback ports, its output in files of its own.
struct Rotel {
    child: Child,
    http: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Rotel {
    /// Starts the collector and waits until its OTLP/HTTP port accepts connections.
    fn start() -> Rotel {
        let dir = tempfile::tempdir().expect("tempdir");
        let (http, grpc) = (free_port(), free_port());
        let file = |name: &str| File::create(dir.path().join(name)).expect("output file");
        let child = Command::new(rotel_agent())
            .arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "logs", "--debug-log-verbosity", "detailed"])
            // Its defaults are shared files in /tmp: tests run several at once.
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("rotel-agent starts");
        let mut rotel = Rotel { child, http, dir };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", http)).is_err() {
            if let Ok(Some(exit)) = rotel.child.try_wait() {
                panic!("rotel-agent exited ({exit}): {}", rotel.output());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "rotel-agent not listening after 30 s: {}",
                rotel.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rotel
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Everything it printed, without terminal colours.
    fn output(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        strip_ansi(&format!("{}{}", read("stdout"), read("stderr")))
    }

    /// Waits until the records with these uids were logged, and returns them in the
    /// order of `uids`.
    #[track_caller]
    fn wait_for(&self, uids: &[String]) -> Vec<Seen> {
        let t = Instant::now();
        loop {
            let seen = parse_debug_log(&self.output());
            let found: Vec<Seen> = uids
                .iter()
                .filter_map(|u| {
                    seen.iter()
                        .find(|s| s.attr("log.record.uid") == Some(&format!("Str({u})")))
                        .cloned()
                })
                .collect();
            if found.len() == uids.len() {
                return found;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "rotel logged {} of {} records:\n{}",
                found.len(),
                uids.len(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One log record as rotel's detailed debug log shows it: values in its own
/// notation (`Str(x)`, `Int(3)`, `Bool(true)`, `Double(0.5)`, `Slice(…)`, `Map(k:…)`).
#[derive(Clone, Debug, Default)]
struct Seen {
    resource: Vec<(String, String)>,
    scope: String,
    observed: String,
    timestamp: String,
    severity: String,
    severity_text: String,
    event_name: String,
    attributes: Vec<(String, String)>,
}

impl Seen {
    fn attr(&self, key: &str) -> Option<&String> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

fn parse_debug_log(log: &str) -> Vec<Seen> {
    #[derive(PartialEq)]
    enum In {
        Nothing,
        Resource,
        Record,
    }
    let mut records: Vec<Seen> = Vec::new();
    let mut resource: Vec<(String, String)> = Vec::new();
    let mut scope = String::new();
    let mut section = In::Nothing;
    for line in log.lines() {
        let t = line.trim();
        if t.starts_with("ResourceLog #") {
            resource.clear();
            section = In::Nothing;
        } else if t == "Resource attributes:" {
            section = In::Resource;
        } else if let Some(s) = t.strip_prefix("InstrumentationScope ") {
            scope = s.to_string();
            section = In::Nothing;
        } else if t.starts_with("LogRecord #") {
            records.push(Seen {
                resource: resource.clone(),
                scope: scope.clone(),
                ..Seen::default()
            });
            section = In::Nothing;
        } else if t == "Attributes:" {
            section = In::Record;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let (k, v) = kv.split_once(": ").unwrap_or((kv, ""));
            let pair = (k.to_string(), v.to_string());
            match section {
                In::Resource => resource.push(pair),
                In::Record => records.last_mut().expect("a record").attributes.push(pair),
                In::Nothing => {}
            }
        } else {
            section = In::Nothing;
            let Some(rec) = records.last_mut() else {
                continue;
            };
            let field = |name: &str| t.strip_prefix(name).map(str::to_string);
            if let Some(v) = field("ObservedTimestamp: ") {
                rec.observed = v;
            } else if let Some(v) = field("Timestamp: ") {
                rec.timestamp = v;
            } else if let Some(v) = field("SeverityNumber: ") {
                rec.severity = v;
            } else if let Some(v) = field("SeverityText: ") {
                rec.severity_text = v;
            } else if let Some(v) = field("EventName: ") {
                rec.event_name = v;
            }
        }
    }
    records
}

/// The events every collector test records: two through `spool track` (no tool:
/// `unknown_service`), one through the library with a tool (another resource),
/// with properties of every JSON type.
fn record_events(dir: &Path) -> Vec<Value> {
    spool(dir)
        .args([
            "track",
            "cli_invoked",
            "-p",
            "command=build",
            "-p",
            "count:=3",
        ])
        .args([
            "-p",
            "neg:=-7",
            "-p",
            "ratio:=0.5",
            "-p",
            "ok:=true",
            "-p",
            "nothing:=null",
        ])
        .args(["-p", r#"list:=[1,"two",null,false]"#])
        .args(["-p", r#"nested:={"a":{"b":"c"},"gone":null}"#])
        .ok();
    let lib = eventspool::Spool::builder("spool")
        .dir(dir)
        .tool("mytool", "1.2.3")
        .build();
    let queued_one = lib
        .try_track(
            eventspool::Event::new("job_finished")
                .property("duration_ms", 1234)
                .property("success", false)
                .property("stage", "deploy"),
        )
        .expect("recorded");
    assert!(
        matches!(queued_one, eventspool::Recorded::Queued(_)),
        "{queued_one:?}"
    );
    spool(dir)
        .args(["track", "cli_exited", "-p", "code:=0"])
        .ok();
    let events: Vec<Value> = queued(dir)
        .into_iter()
        .map(|r| r["payload"].clone())
        .collect();
    assert_eq!(events.len(), 3);
    events
}

/// The attributes we expect on each recorded event, in rotel's notation.
fn expected_attributes(event: &Value) -> Vec<(String, String)> {
    let props: &[(&str, &str)] = match event["event"].as_str().unwrap() {
        "cli_invoked" => &[
            ("command", "Str(build)"),
            ("count", "Int(3)"),
            ("neg", "Int(-7)"),
            ("ratio", "Double(0.5)"),
            ("ok", "Bool(true)"),
            ("list", "Slice(Int(1), Str(two), Bool(false))"),
            ("nested", "Map(a:Map(b:Str(c)))"),
        ],
        "job_finished" => &[
            ("duration_ms", "Int(1234)"),
            ("success", "Bool(false)"),
            ("stage", "Str(deploy)"),
        ],
        "cli_exited" => &[("code", "Int(0)")],
        other => panic!("unexpected event {other}"),
    };
    let mut want: Vec<(String, String)> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.push((
        "session.id".into(),
        format!("Str({})", event["session_id"].as_str().unwrap()),
    ));
    want.push((
        "log.record.uid".into(),
        format!("Str({})", event["id"].as_str().unwrap()),
    ));
    want
}

fn os_type(os: &str) -> &str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

fn host_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The resource attributes we expect for an event's install and context.
fn expected_resource(event: &Value) -> Vec<(String, String)> {
    let c = &event["context"];
    let str_of = |v: &Value| format!("Str({})", v.as_str().unwrap());
    let mut want = vec![];
    match c["tool"].as_str() {
        Some(tool) => {
            let (name, version) = tool.rsplit_once('@').unwrap();
            want.push(("service.name", format!("Str({name})")));
            want.push(("service.version", format!("Str({version})")));
        }
        None => want.push(("service.name", "Str(unknown_service)".into())),
    }
    want.push((
        "os.type",
        format!("Str({})", os_type(c["os"].as_str().unwrap())),
    ));
    want.push(("os.version", str_of(&c["os_release"])));
    want.push((
        "host.arch",
        format!("Str({})", host_arch(c["arch"].as_str().unwrap())),
    ));
    want.push(("app.installation.id", str_of(&event["anonymous_id"])));
    want.push(("telemetry.sdk.name", "Str(eventspool)".into()));
    want.push(("telemetry.sdk.language", "Str(rust)".into()));
    want.push((
        "telemetry.sdk.version",
        format!("Str({})", env!("CARGO_PKG_VERSION")),
    ));
    want.push(("eventspool.machine_hash", str_of(&c["machine_hash"])));
    want.push(("eventspool.docker", format!("Bool({})", c["docker"])));
    want.push(("eventspool.ci", format!("Bool({})", c["ci"])));
    want.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn unix_nanos(rfc3339: &str) -> u64 {
    let t = humantime::parse_rfc3339(rfc3339).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The request a received OTLP body holds, decoded by opentelemetry-proto in the
/// format its content type names.
#[track_caller]
fn decode(r: &Received) -> ExportLogsServiceRequest {
    match r.header("content-type") {
        Some("application/x-protobuf") => {
            ExportLogsServiceRequest::decode(r.raw.as_slice()).expect("protobuf body")
        }
        Some("application/json") => serde_json::from_slice(&r.raw).expect("OTLP/JSON body"),
        other => panic!("content type {other:?}"),
    }
}

fn records(req: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
    req.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn uids_in(r: &Received) -> Vec<String> {
    records(&decode(r))
        .iter()
        .map(|rec| match attr(&rec.attributes, "log.record.uid") {
            Some(V::StringValue(s)) => s.clone(),
            other => panic!("log.record.uid {other:?}"),
        })
        .collect()
}

/// Writes the destination into the queue directory's `config.json`, as the host
/// (or `spool config set`) would persist it.
fn configure(dir: &Path, destination: Value) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["destination"] = destination;
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// How one collector test sends.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `spool flush --destination otlp`: the defaults, protobuf and gzip.
    Flags,
    /// `config.json` with this protocol and compression.
    Config(&'static str, &'static str),
}

/// Records the events, captures the body a flush sends (the capturing server
/// answers 503, so the events stay queued), decodes it with opentelemetry-proto,
/// then sends the same events (the same bytes: a retry re-encodes nothing that
/// changed) to rotel and checks every field it logged.
fn round_trip(rotel: &Rotel, via: Via) {
    let (_t, dir) = temp();
    let events = record_events(&dir);
    let uids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let flush = |endpoint: &str| {
        let cmd = spool(&dir).args(["flush", "--endpoint", endpoint]);
        match via {
            Via::Flags => cmd.args(["--destination", "otlp"]),
            Via::Config(..) => cmd,
        }
    };
    let (content_type, gzip) = match via {
        Via::Flags => ("application/x-protobuf", true),
        Via::Config(protocol, compression) => {
            configure(
                &dir,
                json!({"kind": "otlp", "endpoint": rotel.url(), "protocol": protocol, "compression": compression}),
            );
            let ct = if protocol == "http/json" {
                "application/json"
            } else {
                "application/x-protobuf"
            };
            (ct, compression == "gzip")
        }
    };

    // The body, as opentelemetry-proto reads it.
    let capture = TestServer::answering(503);
    let out = flush(&capture.origin()).ok();
    assert!(out.contains("backing off"), "{via:?}: {out}");
    let reqs = capture.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/logs"));
    assert_eq!(r.header("content-type"), Some(content_type), "{via:?}");
    assert_eq!(
        r.header("content-encoding"),
        gzip.then_some("gzip"),
        "{via:?}"
    );
    let req = decode(r);
    assert_eq!(
        req.resource_logs.len(),
        2,
        "two contexts, two resources: {req:?}"
    );
    let names: Vec<&str> = records(&req)
        .iter()
        .map(|r| r.event_name.as_str())
        .collect();
    // Grouped by resource, in order within each: the CLI's two, then the library's.
    assert_eq!(names, ["cli_invoked", "cli_exited", "job_finished"]);
    let first = records(&req)[0];
    assert_eq!(attr(&first.attributes, "count"), Some(&V::IntValue(3)));
    assert_eq!(attr(&first.attributes, "ratio"), Some(&V::DoubleValue(0.5)));
    assert_eq!(attr(&first.attributes, "nothing"), None);
    let Some(V::ArrayValue(list)) = attr(&first.attributes, "list") else {
        panic!("list: {first:?}");
    };
    assert_eq!(list.values.len(), 3, "the null is left out: {list:?}");
    assert!(list.values.iter().all(|v| v.value.is_some()), "{list:?}");
    assert_eq!(
        first.time_unix_nano,
        unix_nanos(events[0]["timestamp"].as_str().unwrap())
    );

    // The same events at a real collector.
    let out = flush(&rotel.url()).args(["--force"]).ok();
    assert!(
        out.contains("sent 3, dropped 0, remaining 0"),
        "{via:?}: {out}"
    );
    let seen = rotel.wait_for(&uids);
    for (event, s) in events.iter().zip(&seen) {
        let what = format!("{via:?} {}", event["event"]);
        assert_eq!(s.event_name, event["event"].as_str().unwrap(), "{what}");
        let nanos = unix_nanos(event["timestamp"].as_str().unwrap()).to_string();
        assert_eq!((&s.timestamp, &s.observed), (&nanos, &nanos), "{what}");
        assert_eq!(s.severity, "SEVERITY_NUMBER_INFO(9)", "{what}");
        assert_eq!(s.severity_text, "INFO", "{what}");
        assert_eq!(
            s.scope,
            format!("eventspool {}", env!("CARGO_PKG_VERSION")),
            "{what}"
        );
        assert_eq!(s.attributes, expected_attributes(event), "{what}");
        assert_eq!(s.resource, expected_resource(event), "{what}");
    }
    assert!(queued(&dir).is_empty());
}

#[test]
fn protobuf_reaches_a_real_collector_gzipped_or_not_field_for_field() {
    let rotel = Rotel::start();
    round_trip(&rotel, Via::Flags);
    round_trip(&rotel, Via::Config("http/protobuf", "none"));
}

#[test]
fn json_reaches_a_real_collector_gzipped_or_not_field_for_field() {
    let rotel = Rotel::start();
    round_trip(&rotel, Via::Config("http/json", "gzip"));
    round_trip(&rotel, Via::Config("http/json", "none"));
}

/// Records `n` events through the library.
fn fill_otlp(dir: &Path, n: usize, pad: usize) -> Vec<String> {
    let s = eventspool::Spool::builder("spool").dir(dir).build();
    let events = (0..n)
        .map(|i| {
            eventspool::Event::new("filled")
                .property("i", i as u64)
                .property("pad", "x".repeat(pad))
        })
        .collect();
    s.try_track_batch(events)
        .expect("fill")
        .into_iter()
        .map(|r| match r {
            eventspool::Recorded::Queued(id) => id,
            other => panic!("not queued: {other:?}"),
        })
        .collect()
}

fn otlp_flush(dir: &Path, server: &TestServer) -> crate::util::SpoolCmd {
    spool(dir).args([
        "flush",
        "--destination",
        "otlp",
        "--endpoint",
        &server.origin(),
    ])
}

#[test]
fn every_request_is_a_gzipped_protobuf_post_to_v1_logs_with_the_extra_headers() {
    let (_t, dir) = temp();
    let ids = fill_otlp(&dir, 3, 0);
    let server = TestServer::answering(200);
    let out = spool(&dir)
        .args([
            "flush",
            "--destination",
            "otlp",
            "--header",
            "authorization=Bearer x",
        ])
        .args(["--endpoint", &format!("{}/otlp/", server.origin())])
        .ok();
    assert!(out.contains("sent 3, dropped 0, remaining 0"), "{out}");
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/otlp/v1/logs")
    );
    assert_eq!(r.header("authorization"), Some("Bearer x"));
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(uids_in(r), ids);
}

#[test]
fn retry_after_on_429_is_honoured_then_the_same_records_are_sent() {
    let (_t, dir) = temp();
    let ids = fill_otlp(&dir, 3, 0);
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::with_header(429, "Retry-After", "2")
        } else {
            Reply::status(200)
        }
    });
    let out = otlp_flush(&dir, &server).ok();
    assert!(out.contains("HTTP 429 (Retry-After 2s)"), "{out}");
    let first = server.requests()[0].at;
    while server.requests().len() < 2 {
        assert!(first.elapsed() < Duration::from_secs(10), "never retried");
        otlp_flush(&dir, &server).ok();
        std::thread::sleep(Duration::from_millis(100));
    }
    let reqs = server.requests();
    let gap = reqs[1].at.duration_since(first);
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert_eq!(reqs.len(), 2);
    assert_eq!(uids_in(&reqs[0]), ids);
    assert_eq!(reqs[1].raw, reqs[0].raw, "a retry sends the same bytes");
    assert!(queued(&dir).is_empty());
}

#[test]
fn only_502_503_and_504_besides_429_are_retried() {
    for code in [502, 503, 504] {
        let (_t, dir) = temp();
        fill_otlp(&dir, 3, 0);
        let server = TestServer::answering(code);
        let out = otlp_flush(&dir, &server).ok();
        assert!(
            out.contains(&format!("HTTP {code}")) && out.contains("backing off"),
            "{code}: {out}"
        );
        let rows = queued(&dir);
        assert_eq!(rows.len(), 3, "{code}: kept");
        assert!(
            rows.iter().all(|r| r["attempts"] == 1),
            "{code}: attempt counted"
        );
        let again = otlp_flush(&dir, &server).ok();
        assert!(again.contains("backing off"), "{again}");
        assert_eq!(server.requests().len(), 1, "{code}: the backoff holds");
    }
}

/// The native format retries a 500 and a 408; OTLP says they are final.
#[test]
fn a_500_and_other_errors_drop_the_batch_without_a_retry() {
    for code in [500, 501, 400, 401, 403, 404, 408] {
        let (_t, dir) = temp();
        fill_otlp(&dir, 3, 0);
        let server = TestServer::answering(code);
        let out = otlp_flush(&dir, &server).ok();
        assert!(
            out.contains(&format!("HTTP {code}: 3 events rejected")),
            "{code}: {out}"
        );
        assert!(queued(&dir).is_empty(), "{code}: dropped");
        assert_eq!(
            status(&dir)["last_flush"]["reason"],
            format!("HTTP {code}: 3 events rejected")
        );
        otlp_flush(&dir, &server).ok();
        assert_eq!(server.requests().len(), 1, "{code}: never retried");
    }
}

#[test]
fn a_413_splits_the_batch_until_each_part_is_accepted() {
    let (_t, dir) = temp();
    let ids = fill_otlp(&dir, 5, 0);
    let server = TestServer::start(|_, r| {
        if records(&decode(r)).len() > 1 {
            Reply::status(413)
        } else {
            Reply::status(200)
        }
    });
    let out = otlp_flush(&dir, &server).ok();
    assert!(out.contains("sent 5, dropped 0, remaining 0"), "{out}");
    let delivered: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| records(&decode(r)).len() == 1)
        .flat_map(uids_in)
        .collect();
    assert_eq!(delivered, ids, "each once, in order");
}

/// A large queue goes out in requests no collector refuses for their size.
#[test]
fn batches_are_cut_below_four_mebibytes_of_records() {
    let (_t, dir) = temp();
    let ids = fill_otlp(&dir, 200, 30_000);
    let server = TestServer::answering(200);
    let out = otlp_flush(&dir, &server)
        .env("SPOOL_BATCH_SIZE", "200")
        .ok();
    assert!(out.contains("sent 200, dropped 0, remaining 0"), "{out}");
    let reqs = server.requests();
    assert!(reqs.len() >= 2, "one batch of 6 MB was not cut");
    for r in &reqs {
        assert!(r.raw.len() <= 4 * 1024 * 1024, "{} bytes", r.raw.len());
    }
    let sent: Vec<String> = reqs.iter().flat_map(uids_in).collect();
    assert_eq!(sent, ids);
}

#[test]
fn a_partial_success_is_delivered_reported_and_not_retried() {
    let reply = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "attribute value too long".into(),
        }),
    };
    let note = "the collector rejected 2 log records (partial success: attribute value too long)";
    let protobuf = reply.encode_to_vec();
    let json = serde_json::to_vec(&reply).unwrap();
    for (protocol, content_type, body) in [
        ("http/protobuf", "application/x-protobuf", protobuf),
        ("http/json", "application/json", json),
    ] {
        let (_t, dir) = temp();
        fill_otlp(&dir, 3, 0);
        let server = TestServer::start(move |_, _| {
            Reply::Status(
                200,
                vec![("content-type".into(), content_type.into())],
                body.clone(),
            )
        });
        configure(
            &dir,
            json!({"kind": "otlp", "endpoint": server.origin(), "protocol": protocol}),
        );
        let out = spool(&dir).args(["flush"]).ok();
        assert!(
            out.contains("sent 3, dropped 0, remaining 0"),
            "{protocol}: {out}"
        );
        assert!(out.contains(note), "{protocol}: {out}");
        assert_eq!(
            server.requests()[0].header("content-type"),
            Some(content_type)
        );
        assert_eq!(status(&dir)["last_flush"]["reason"], note, "{protocol}");
        assert!(
            queued(&dir).is_empty(),
            "{protocol}: delivered, not kept for a retry"
        );
        spool(&dir).args(["flush"]).ok();
        assert_eq!(server.requests().len(), 1, "{protocol}: not retried");
    }
}
