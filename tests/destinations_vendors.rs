//! The `posthog` and `segment` destinations against the vendors' official Python SDKs
//! (posthog-python, segment-analytics-python, from `util::python()`): each SDK sends
//! the same stored events to a loopback recorder, `spool flush` sends them to
//! another, and the bodies and headers must match field for field but for the
//! differences listed here (each one documented in the README). Nothing recorded
//! from an SDK is committed: the requests are recorded when the test runs. Then the
//! per-destination rules against loopback faults: Segment's statuses, `Retry-After`,
//! `X-Retry-Count`, HTTP Basic, batches cut under 500 KB, events measured as mapped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::util::{
    Received, Reply, TestServer, clean_command, fill, python, queued, spool, status, temp,
};

const POSTHOG_KEY: &str = "phc_test_0123456789abcdef";
const SEGMENT_KEY: &str = "wk_test_0123456789abcdef";
/// `base64("wk_test_0123456789abcdef:")`: HTTP Basic, the write key as the user.
const SEGMENT_BASIC: &str = "Basic d2tfdGVzdF8wMTIzNDU2Nzg5YWJjZGVmOg==";

/// posthog-python properties eventspool does not send: the SDK's runtime, the Linux
/// distribution (eventspool's context has the kernel release, not the distro), and
/// `$is_server` (eventspool runs in tools on users' machines, not on servers).
const POSTHOG_SDK_ONLY: [&str; 4] = [
    "$python_runtime",
    "$python_version",
    "$os_distro",
    "$is_server",
];

/// posthog-python properties both send with different values: the library's name
/// and version, and `$os_version` (the SDK's distro version on Linux, eventspool's
/// kernel release).
const POSTHOG_DIFFERENT: [&str; 3] = ["$lib", "$lib_version", "$os_version"];

/// The base URL of a test server (it listens on every path).
fn base(server: &TestServer) -> String {
    server.url.trim_end_matches("/v1/events").to_string()
}

/// Events as a host records them: typed properties, a host tool (`$app_name`,
/// `context.app`), and one from `spool track` without a tool, in another session.
fn record(dir: &Path) -> Vec<Value> {
    let spool_lib = eventspool::Spool::builder("spool")
        .dir(dir)
        .tool("mytool", "1.2.3")
        .build();
    spool_lib
        .try_track_batch(vec![
            eventspool::Event::new("cli_invoked")
                .property("command", "build")
                .property("count", 3)
                .property("ok", true)
                .property("ratio", 0.25)
                .property("tags", json!(["a", "b"]))
                .property("nested", json!({"k": "v", "n": 1})),
            eventspool::Event::new("job.finished").property("duration_ms", 1234),
        ])
        .unwrap();
    spool(dir)
        .args([
            "track",
            "ns:event-1",
            "-p",
            "note=hello world",
            "-p",
            "n:=7",
        ])
        .ok();
    let payloads: Vec<Value> = queued(dir)
        .into_iter()
        .map(|r| r["payload"].clone())
        .collect();
    assert_eq!(payloads.len(), 3);
    payloads
}

/// Has the SDK send `payloads` through `script` (under tests/counterparts) to `host`.
fn sdk_send(script: &str, host: &str, key: &str, payloads: &[Value]) {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("input.json");
    let config = json!({"host": host, "api_key": key, "payloads": payloads});
    std::fs::write(&input, config.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/counterparts")
        .join(script);
    let out = clean_command(&python())
        .arg(&script)
        .arg(&input)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}: {}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flush_to(dir: &Path, kind: &str, endpoint: &str, key: &str) -> crate::util::SpoolCmd {
    spool(dir).args([
        "flush",
        "--destination",
        kind,
        "--endpoint",
        endpoint,
        "--api-key",
        key,
    ])
}

fn flush_segment(dir: &Path, endpoint: &str) -> crate::util::SpoolCmd {
    flush_to(dir, "segment", endpoint, SEGMENT_KEY)
}

/// An RFC 3339 UTC time as the SDKs write it (`+00:00`, microseconds) or as we do
/// (`Z`, milliseconds), as an instant.
#[track_caller]
fn instant(v: &Value) -> SystemTime {
    let s = v.as_str().expect("a time string");
    let z = s
        .strip_suffix("+00:00")
        .map_or(s.to_string(), |t| format!("{t}Z"));
    humantime::parse_rfc3339(&z).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The events of `requests`, by the id field `id`.
fn by_id(requests: &[Received], id: &str) -> BTreeMap<String, Value> {
    requests
        .iter()
        .flat_map(Received::events)
        .map(|e| (e[id].as_str().expect("an id").to_string(), e))
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// Replaces a field both sides send with different values, after checking each
/// side's value, so that the rest can be compared whole.
#[track_caller]
fn documented(ours: &mut Value, theirs: &mut Value, field: &str, want_ours: &Value) {
    assert_eq!(&ours[field], want_ours, "our {field}");
    assert!(!theirs[field].is_null(), "the SDK sends {field}");
    ours[field] = "<documented difference>".into();
    theirs[field] = "<documented difference>".into();
}

/// The request headers a destination decides (not the transport's own: host,
/// length, accept, connection), by lower-case name.
fn format_headers(r: &Received) -> BTreeMap<String, String> {
    r.headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "host" | "content-length" | "accept" | "accept-encoding" | "connection"
            )
        })
        .collect()
}

#[test]
fn posthog_bodies_match_posthog_python_field_for_field() {
    let (_t, dir) = temp();
    let payloads = record(&dir);
    let sdk = TestServer::answering(200);
    sdk_send("posthog_send.py", &base(&sdk), POSTHOG_KEY, &payloads);
    let ours = TestServer::answering(200);
    let out = flush_to(&dir, "posthog", &base(&ours), POSTHOG_KEY).ok();
    assert!(out.contains("sent 3, dropped 0, remaining 0"), "{out}");

    let theirs: Vec<Received> = sdk
        .requests()
        .into_iter()
        .filter(|r| r.path == "/batch/")
        .collect();
    let mine = ours.requests();
    assert!(!theirs.is_empty(), "the SDK sent nothing to /batch/");
    for r in &mine {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/batch/"));
    }
    // The envelope: the same fields; `sent_at` is each side's own send time.
    for (m, t) in mine.iter().zip(&theirs) {
        assert_eq!(keys(&m.body), keys(&t.body));
        assert_eq!(m.body["api_key"], POSTHOG_KEY);
        assert_eq!(t.body["api_key"], POSTHOG_KEY);
        assert_eq!(
            m.body["historical_migration"],
            t.body["historical_migration"]
        );
        instant(&m.body["sent_at"]);
        instant(&t.body["sent_at"]);
        // Headers: the same content type and encoding (the SDK's `gzip=True`; ours
        // is on from 1 KiB, which this body is), no auth header (the key is in the
        // body); the user agent names each library.
        let (mut mh, mut th) = (format_headers(m), format_headers(t));
        assert!(mh.remove("user-agent").unwrap().starts_with("eventspool/"));
        assert!(
            th.remove("user-agent")
                .unwrap()
                .starts_with("posthog-python/")
        );
        assert_eq!(mh, th, "headers");
        assert_eq!(mh["content-type"], "application/json");
        assert_eq!(mh["content-encoding"], "gzip");
    }
    let (mut mine, mut theirs) = (by_id(&mine, "uuid"), by_id(&theirs, "uuid"));
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for p in &payloads {
        let id = p["id"].as_str().unwrap();
        let (m, t) = (mine.get_mut(id).unwrap(), theirs.get_mut(id).unwrap());
        assert_eq!(keys(m), keys(t), "event fields");
        // The same instant: ours as stored (`Z`, ms), the SDK's as `isoformat()`.
        assert_eq!(
            m["timestamp"], p["timestamp"],
            "the stored timestamp, unchanged"
        );
        assert_eq!(instant(&m["timestamp"]), instant(&t["timestamp"]));
        t["timestamp"] = m["timestamp"].clone();
        let (mp, tp) = (&mut m["properties"], &mut t["properties"]);
        for k in POSTHOG_SDK_ONLY {
            assert!(mp.get(k).is_none(), "we send no {k}");
            let Some(obj) = tp.as_object_mut() else {
                panic!("properties")
            };
            // The SDK names a distribution only on Linux, and only when it finds one.
            let sent = obj.remove(k).is_some();
            assert!(sent || k == "$os_distro", "the SDK sends {k}");
        }
        for k in POSTHOG_DIFFERENT {
            let want = match k {
                "$lib" => json!("eventspool"),
                "$lib_version" => json!(env!("CARGO_PKG_VERSION")),
                _ => p["context"]["os_release"].clone(),
            };
            documented(mp, tp, k, &want);
        }
        assert_eq!(m, t, "event {id}, all but the documented differences");
    }
}

#[test]
fn segment_bodies_match_segment_analytics_python_field_for_field() {
    let (_t, dir) = temp();
    let payloads = record(&dir);
    let sdk = TestServer::answering(200);
    sdk_send("segment_send.py", &base(&sdk), SEGMENT_KEY, &payloads);
    let ours = TestServer::answering(200);
    let out = flush_segment(&dir, &base(&ours)).ok();
    assert!(out.contains("sent 3, dropped 0, remaining 0"), "{out}");

    let (theirs, mine) = (sdk.requests(), ours.requests());
    assert!(!theirs.is_empty(), "the SDK sent nothing");
    for (m, t) in mine.iter().zip(&theirs) {
        assert_eq!((m.method.as_str(), m.path.as_str()), ("POST", "/v1/batch"));
        assert_eq!((t.method.as_str(), t.path.as_str()), ("POST", "/v1/batch"));
        assert_eq!(keys(&m.body), keys(&t.body));
        assert_eq!(m.body["writeKey"], t.body["writeKey"]);
        instant(&m.body["sentAt"]);
        instant(&t.body["sentAt"]);
        // The same content type, encoding (the SDK's `gzip=True`) and HTTP Basic
        // header; the user agent names each library. No X-Retry-Count on a first
        // send, on either side.
        let (mut mh, mut th) = (format_headers(m), format_headers(t));
        assert!(mh.remove("user-agent").unwrap().starts_with("eventspool/"));
        assert!(
            th.remove("user-agent")
                .unwrap()
                .starts_with("analytics-python/")
        );
        assert_eq!(mh, th, "headers");
        assert_eq!(mh["authorization"], SEGMENT_BASIC);
    }
    let (mut mine, mut theirs) = (by_id(&mine, "messageId"), by_id(&theirs, "messageId"));
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for p in &payloads {
        let id = p["id"].as_str().unwrap();
        let (m, t) = (mine.get_mut(id).unwrap(), theirs.get_mut(id).unwrap());
        assert_eq!(
            m["timestamp"], p["timestamp"],
            "the stored timestamp, unchanged"
        );
        assert_eq!(instant(&m["timestamp"]), instant(&t["timestamp"]));
        t["timestamp"] = m["timestamp"].clone();
        let library = json!({"name": "eventspool", "version": env!("CARGO_PKG_VERSION")});
        documented(&mut m["context"], &mut t["context"], "library", &library);
        assert_eq!(m, t, "event {id}, all but the documented differences");
    }
}

#[test]
fn segment_retries_408_410_429_460_and_5xx_and_drops_other_4xx_and_501_505() {
    let retried = [408, 410, 429, 460, 500, 503, 511];
    let dropped = [400, 401, 404, 422, 501, 505];
    for code in retried.into_iter().chain(dropped) {
        let (_t, dir) = temp();
        fill(&dir, 2);
        let server = TestServer::answering(code);
        let out = flush_segment(&dir, &base(&server)).ok();
        assert_eq!(server.requests().len(), 1, "{code}");
        let rows = queued(&dir);
        if retried.contains(&code) {
            assert!(out.contains("backing off"), "{code}: {out}");
            assert_eq!(rows.len(), 2, "{code}: kept");
            assert!(rows.iter().all(|r| r["attempts"] == 1), "{code}");
        } else {
            assert!(out.contains("dropped 2 (2 rejected)"), "{code}: {out}");
            assert!(rows.is_empty(), "{code}: dropped");
        }
    }
    // The native format's rules are its own: 460 is a rejection there.
    let (_t, dir) = temp();
    fill(&dir, 1);
    let server = TestServer::answering(460);
    let out = spool(&dir).args(["flush", "--endpoint", &server.url]).ok();
    assert!(out.contains("1 rejected"), "{out}");
}

#[test]
fn segment_honours_retry_after_and_counts_the_retry_in_x_retry_count() {
    let (_t, dir) = temp();
    fill(&dir, 3);
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::with_header(460, "Retry-After", "30")
        } else {
            Reply::status(200)
        }
    });
    let out = flush_segment(&dir, &base(&server)).ok();
    assert!(out.contains("HTTP 460 (Retry-After 30s)"), "{out}");
    let until = humantime::parse_rfc3339(status(&dir)["not_before"].as_str().unwrap()).unwrap();
    let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    // Honoured by the next process too.
    let out = flush_segment(&dir, &base(&server)).ok();
    assert!(out.contains("backing off"), "{out}");
    assert_eq!(server.requests().len(), 1);
    let out = flush_segment(&dir, &base(&server)).args(["--force"]).ok();
    assert!(out.contains("sent 3"), "{out}");
    let r = server.requests();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].header("x-retry-count"), None, "a first send");
    assert_eq!(r[1].header("x-retry-count"), Some("1"), "the first retry");
    for req in &r {
        assert_eq!(req.header("authorization"), Some(SEGMENT_BASIC));
    }
    assert_eq!(
        by_id(&r[..1], "messageId").keys().collect::<Vec<_>>(),
        by_id(&r[1..], "messageId").keys().collect::<Vec<_>>()
    );
    assert!(queued(&dir).is_empty());
}

/// Records events with a `pad` property of `len` characters.
fn fill_padded(dir: &Path, n: usize, len: usize) {
    let s = eventspool::Spool::builder("spool").dir(dir).build();
    let events = (0..n)
        .map(|i| {
            eventspool::Event::new("padded")
                .property("i", i as u64)
                .property("pad", "x".repeat(len))
        })
        .collect();
    s.try_track_batch(events).unwrap();
}

#[test]
fn segment_batches_are_cut_under_500_kb() {
    let (_t, dir) = temp();
    fill_padded(&dir, 60, 20_000);
    let server = TestServer::answering(200);
    let out = flush_segment(&dir, &base(&server)).ok();
    assert!(out.contains("sent 60, dropped 0, remaining 0"), "{out}");
    let r = server.requests();
    assert!(
        r.len() >= 3,
        "60 events of 20 KB need 3 requests: {}",
        r.len()
    );
    for req in &r {
        let bytes = serde_json::to_string(&req.body).unwrap().len();
        assert!(bytes <= 500_000, "a {bytes}-byte request");
        assert_eq!(req.header("content-encoding"), Some("gzip"));
    }
    let order: Vec<u64> = server
        .events()
        .iter()
        .map(|e| e["properties"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(order, (0..60).collect::<Vec<_>>(), "each once, in order");
}

#[test]
fn segment_drops_an_event_that_fits_32_kb_stored_but_not_mapped() {
    // Measure what a stored event of a given pad weighs, then record one just
    // under the 32 KiB recording limit: the Segment mapping makes it larger.
    let (_p, probe) = temp();
    fill_padded(&probe, 1, 32_000);
    let stored = queued(&probe)[0]["bytes"].as_u64().unwrap() as usize;
    let (_t, dir) = temp();
    fill_padded(&dir, 1, 32_000 + (32 * 1024 - 8) - stored);
    fill(&dir, 1);
    let rows = queued(&dir);
    assert_eq!(rows.len(), 2, "recorded: under the 32 KiB recording limit");
    assert!(rows[0]["bytes"].as_u64().unwrap() <= 32 * 1024);

    let server = TestServer::answering(200);
    let out = flush_segment(&dir, &base(&server)).ok();
    assert!(out.contains("sent 1, dropped 1 (1 too_large)"), "{out}");
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "filled");
    assert_eq!(status(&dir)["dropped"]["too_large"], 1);
}

#[test]
fn posthog_sends_the_key_in_the_body_and_the_same_event_on_a_retry() {
    let (_t, dir) = temp();
    let payloads = record(&dir);
    let server = TestServer::start(|i, _| Reply::status(if i == 0 { 503 } else { 200 }));
    // Under a path prefix with a trailing slash (a reverse proxy).
    let endpoint = format!("{}/ingest/", base(&server));
    let out = flush_to(&dir, "posthog", &endpoint, POSTHOG_KEY).ok();
    assert!(out.contains("backing off"), "{out}");
    let out = flush_to(&dir, "posthog", &endpoint, POSTHOG_KEY)
        .args(["--force"])
        .ok();
    assert!(out.contains("sent 3"), "{out}");
    let r = server.requests();
    assert_eq!(r.len(), 2);
    for req in &r {
        assert_eq!(req.path, "/ingest/batch/");
        assert_eq!(req.body["api_key"], POSTHOG_KEY);
        assert_eq!(req.header("authorization"), None);
    }
    // A retry carries the same events, timestamps included ($ignore_sent_at):
    // PostHog dedupes them by uuid.
    assert_eq!(r[0].events(), r[1].events());
    for (e, p) in r[1].events().iter().zip(&payloads) {
        assert_eq!(e["uuid"], p["id"]);
        assert_eq!(e["distinct_id"], p["anonymous_id"]);
        assert_eq!(e["timestamp"], p["timestamp"]);
        let props = &e["properties"];
        assert_eq!(props["$session_id"], p["session_id"]);
        for (k, v) in [
            ("$process_person_profile", json!(false)),
            ("$geoip_disable", json!(true)),
            ("$ignore_sent_at", json!(true)),
            ("$lib", json!("eventspool")),
        ] {
            assert_eq!(props[k], v, "{k}");
        }
        let uuid = p["session_id"].as_str().unwrap();
        assert_eq!(&uuid[14..15], "7", "a UUIDv7 session id: {uuid}");
    }
    assert_eq!(r[1].events()[0]["properties"]["$app_name"], "mytool");
    assert_eq!(r[1].events()[0]["properties"]["$app_version"], "1.2.3");
}

#[test]
fn status_names_a_vendor_destination_without_the_whole_key() {
    let (_t, dir) = temp();
    fill(&dir, 1);
    for (kind, key) in [("posthog", POSTHOG_KEY), ("segment", SEGMENT_KEY)] {
        let text = spool(&dir)
            .args(["status"])
            .env("SPOOL_DESTINATION", kind)
            .env("SPOOL_API_KEY", key)
            .ok();
        let line = text
            .lines()
            .find(|l| l.starts_with("destination:"))
            .unwrap();
        assert!(line.contains(kind), "{line}");
        assert!(
            line.contains(&format!("{}… ({} chars)", &key[..4], key.len())),
            "{line}"
        );
        let json = spool(&dir)
            .args(["status", "--json"])
            .env("SPOOL_DESTINATION", kind)
            .env("SPOOL_API_KEY", key)
            .ok();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["destination"]["kind"], kind);
        for out in [&text, &json] {
            assert!(!out.contains(key), "the whole key printed: {out}");
            assert!(!out.contains(&key[..12]), "most of the key printed: {out}");
        }
    }
}

#[test]
fn a_host_configured_segment_destination_without_gzip_sends_plain_json() {
    // A self-hosted Segment-compatible server that takes no gzip: set in code and
    // persisted, so a later `spool flush` by hand sends the same way.
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let config = eventspool::DestinationConfig::segment(SEGMENT_KEY)
        .endpoint(base(&server))
        .compression(eventspool::Compression::None);
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .destination(config)
        .build();
    let events = (0..30)
        .map(|i| eventspool::Event::new("filled").property("i", i as u64))
        .collect();
    host.try_track_batch(events).unwrap();
    let report = host
        .flush_blocking(eventspool::FlushOptions::default())
        .unwrap();
    assert_eq!(report.sent, 30);
    fill(&dir, 30);
    let out = spool(&dir).args(["flush"]).ok();
    assert!(out.contains("sent 30"), "{out}");
    let r = server.requests();
    assert_eq!(r.len(), 2);
    for req in &r {
        assert_eq!(req.path, "/v1/batch");
        assert_eq!(req.header("content-encoding"), None, "no gzip");
        let len: usize = req.header("content-length").unwrap().parse().unwrap();
        assert!(len > 1024, "a body gzip would have compressed: {len}");
        assert_eq!(req.header("authorization"), Some(SEGMENT_BASIC));
    }
}
