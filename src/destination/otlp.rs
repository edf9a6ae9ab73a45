//! OpenTelemetry logs over OTLP/HTTP: `POST {endpoint}/v1/logs` with an
//! `ExportLogsServiceRequest`, protobuf by default or OTLP/JSON on request, gzipped
//! unless compression is `none`.
//!
//! Each event becomes one log record; the events of a batch are grouped into one
//! `ResourceLogs` per distinct install and context (the `anonymous_id` and the whole
//! `context` object), keeping their order within a group. What goes where:
//!
//! | OTLP | from the stored event |
//! | --- | --- |
//! | resource `service.name` / `service.version` | `context.tool` split at its last `@`; without a tool `unknown_service` (OpenTelemetry's own default) and no version |
//! | resource `os.type` | `context.os` as a semantic-conventions value (`macos` → `darwin`, …) |
//! | resource `os.version` | `context.os_release` |
//! | resource `host.arch` | `context.arch` as a semantic-conventions value (`x86_64` → `amd64`, `aarch64` → `arm64`, …) |
//! | resource `app.installation.id` | `anonymous_id` |
//! | resource `telemetry.sdk.name` / `.language` / `.version` | `eventspool`, `rust`, this crate's version |
//! | resource `eventspool.machine_hash` / `eventspool.docker` / `eventspool.ci` | `context.machine_hash` / `.docker` / `.ci` (no semantic convention fits a keyed hostname hash) |
//! | scope name / version | `eventspool`, this crate's version |
//! | record `event_name` | `event` |
//! | record `time_unix_nano` and `observed_time_unix_nano` | `timestamp` (recording is where OpenTelemetry would observe it; a retry sends the same bytes) |
//! | record `severity_number` / `severity_text` | `INFO` (9) |
//! | record attributes | `properties`, typed; then `session.id` = `session_id`, `log.record.uid` = `id` |
//!
//! Properties map to typed values: strings, booleans, integers (`int_value`; one
//! beyond `i64` becomes a double), other numbers (`double_value`), arrays
//! (`array_value`) and objects (`kvlist_value`). A JSON `null` is never sent: it is
//! left out of objects and arrays alike. (OTLP's own null, an empty `AnyValue`, would
//! keep an array's positions, but OTLP/JSON decoders in the field refuse it with a
//! 400, and a 400 loses the whole batch.)
//! A property named `session.id` or `log.record.uid` gives way to eventspool's own.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use reqwest::Url;
use serde_json::{Map, Value};

use super::{Batch, ByteLimits, Compression, Destination, Encoded, OtlpProtocol, Target};
use crate::delivery::{self, Outcome};

mod proto;

use proto::{
    AnyValue, ArrayValue, ExportLogsPartialSuccess, ExportLogsServiceRequest,
    ExportLogsServiceResponse, InstrumentationScope, KeyValue, KeyValueList, LogRecord, Resource,
    ResourceLogs, ScopeLogs,
};

/// The most bytes of log records one request carries, before compression. OTLP/HTTP
/// receivers refuse larger bodies (the OpenTelemetry Collector at 20 MiB by default,
/// gRPC-minded ones at 4 MiB): 4 MiB stays under every common default, and a
/// default batch of 100 events of at most 32 KiB each never reaches it.
pub(crate) const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The instrumentation scope and `telemetry.sdk.name`.
const SDK_NAME: &str = "eventspool";

/// `service.name` when the host named no tool: OpenTelemetry's default for an
/// unnamed service.
const UNKNOWN_SERVICE: &str = "unknown_service";

/// Record attributes eventspool sets itself; a property of the same name gives way.
const OWN_ATTRIBUTES: [&str; 2] = ["session.id", "log.record.uid"];

/// The OTLP/HTTP logs destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Otlp {
    protocol: OtlpProtocol,
    gzip: bool,
}

impl Otlp {
    /// The destination for a resolved target: its protocol, and gzip unless the
    /// target's compression is `none`.
    pub fn new(target: &Target) -> Self {
        Otlp {
            protocol: target.protocol,
            gzip: target.compression != Some(Compression::None),
        }
    }

    fn serialize<M: prost::Message + serde::Serialize>(&self, message: &M) -> Vec<u8> {
        match self.protocol {
            OtlpProtocol::Protobuf => message.encode_to_vec(),
            // Our messages hold only strings, numbers and bools: this cannot fail.
            OtlpProtocol::Json => serde_json::to_vec(message).unwrap_or_default(),
        }
    }
}

impl Destination for Otlp {
    fn url(&self, endpoint: &Url) -> Url {
        logs_url(endpoint)
    }

    fn encode(&self, batch: &Batch<'_>) -> Encoded {
        let body = self.serialize(&request(batch.payloads));
        let content_type = match self.protocol {
            OtlpProtocol::Protobuf => "application/x-protobuf",
            OtlpProtocol::Json => "application/json",
        };
        let mut headers = vec![("content-type", content_type.to_string())];
        let body = if self.gzip {
            match delivery::gzip(&body) {
                Ok(gz) => {
                    headers.push(("content-encoding", "gzip".to_string()));
                    gz
                }
                Err(_) => body,
            }
        } else {
            body
        };
        Encoded { body, headers }
    }

    /// The size of the event's log record as this protocol encodes it (the resource
    /// it shares with its group is not counted: a few hundred bytes per install).
    fn event_len(&self, payload: &str) -> usize {
        let (_, _, record) = parse(payload);
        match self.protocol {
            // A repeated field's tag and length prefix come on top of the message.
            OtlpProtocol::Protobuf => record.encoded_len() + 6,
            OtlpProtocol::Json => self.serialize(&record).len() + 1,
        }
    }

    fn byte_limits(&self) -> ByteLimits {
        ByteLimits {
            // Recording's own event limit is far below any collector's body limit.
            per_event: None,
            per_batch: Some(MAX_BATCH_BYTES),
        }
    }

    fn classify(&self, status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
        classify(status, retry_after, now)
    }

    fn reads_reply(&self) -> bool {
        true
    }

    fn reply_note(&self, body: &[u8]) -> Option<String> {
        partial_success_note(&decode_reply(body)?)
    }
}

/// `{endpoint}/v1/logs`: the endpoint is the collector's base URL, with or without
/// a trailing slash or a path prefix; one that already ends in `/v1/logs` is kept.
fn logs_url(endpoint: &Url) -> Url {
    let mut url = endpoint.clone();
    let path = endpoint.path().trim_end_matches('/');
    if !path.ends_with("/v1/logs") {
        url.set_path(&format!("{path}/v1/logs"));
    }
    url
}

/// OTLP/HTTP's status rules: only 429, 502, 503 and 504 are retried (with the
/// server's `Retry-After`), 413 splits the batch, every other 4xx and 5xx drops it.
/// A redirect that was not followed stays a retryable failure, as for every
/// destination: a batch is never dropped because a proxy moved.
pub(crate) fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
    let after = || retry_after.and_then(|v| delivery::parse_retry_after(v, now));
    match status {
        200..=299 => Outcome::Delivered,
        413 => Outcome::TooLarge,
        429 | 502 | 503 | 504 => Outcome::Retry(after()),
        300..=399 => Outcome::Retry(after()),
        _ => Outcome::Rejected,
    }
}

/// The request for a batch: one `ResourceLogs` per distinct install and context, in
/// the order each first appears, its records in batch order.
fn request(payloads: &[&str]) -> ExportLogsServiceRequest {
    let mut groups: Vec<ResourceLogs> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for payload in payloads {
        let (key, resource, record) = parse(payload);
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SDK_NAME.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    log_records: Vec::new(),
                }],
            });
            groups.len() - 1
        });
        groups[at].scope_logs[0].log_records.push(record);
    }
    ExportLogsServiceRequest {
        resource_logs: groups,
    }
}

/// One stored payload as its group key (install and context), its resource and its
/// log record. Read leniently: a field missing or of another type is left out, never
/// a reason to lose the event.
fn parse(payload: &str) -> (String, Resource, LogRecord) {
    let mut stored = match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let text = |m: &Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let anonymous_id = text(&stored, "anonymous_id");
    let context = match stored.remove("context") {
        Some(Value::Object(c)) => c,
        _ => Map::new(),
    };
    let key = format!(
        "{anonymous_id}\n{}",
        serde_json::to_string(&context).unwrap_or_default()
    );
    let resource = resource(&context, &anonymous_id);
    let properties = match stored.remove("properties") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let mut attributes: Vec<KeyValue> = properties
        .into_iter()
        .filter(|(k, _)| !OWN_ATTRIBUTES.contains(&k.as_str()))
        .filter_map(|(k, v)| key_value(k, v))
        .collect();
    let session = text(&stored, "session_id");
    if !session.is_empty() {
        attributes.push(string_attr("session.id", session));
    }
    attributes.push(string_attr("log.record.uid", text(&stored, "id")));
    let time = unix_nanos(&text(&stored, "timestamp"));
    let record = LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: proto::SEVERITY_INFO,
        severity_text: "INFO".into(),
        attributes,
        event_name: text(&stored, "event"),
    };
    (key, resource, record)
}

/// The resource attributes of one install and context.
fn resource(context: &Map<String, Value>, anonymous_id: &str) -> Resource {
    let text = |k: &str| {
        context
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut attributes = Vec::with_capacity(12);
    let (name, version) = match text("tool") {
        Some(tool) => split_tool(tool),
        None => (UNKNOWN_SERVICE, None),
    };
    attributes.push(string_attr("service.name", name.into()));
    if let Some(v) = version {
        attributes.push(string_attr("service.version", v.into()));
    }
    if let Some(os) = text("os") {
        attributes.push(string_attr("os.type", os_type(os).into()));
    }
    if let Some(release) = text("os_release") {
        attributes.push(string_attr("os.version", release.into()));
    }
    if let Some(arch) = text("arch") {
        attributes.push(string_attr("host.arch", host_arch(arch).into()));
    }
    if !anonymous_id.is_empty() {
        attributes.push(string_attr("app.installation.id", anonymous_id.into()));
    }
    attributes.push(string_attr("telemetry.sdk.name", SDK_NAME.into()));
    attributes.push(string_attr("telemetry.sdk.language", "rust".into()));
    attributes.push(string_attr(
        "telemetry.sdk.version",
        env!("CARGO_PKG_VERSION").into(),
    ));
    if let Some(hash) = text("machine_hash") {
        attributes.push(string_attr("eventspool.machine_hash", hash.into()));
    }
    for (ours, theirs) in [("docker", "eventspool.docker"), ("ci", "eventspool.ci")] {
        if let Some(b) = context.get(ours).and_then(Value::as_bool) {
            attributes.push(KeyValue {
                key: theirs.into(),
                value: Some(AnyValue {
                    value: Some(proto::Value::Bool(b)),
                }),
            });
        }
    }
    Resource { attributes }
}

/// `name@version` split at the last `@` (so `@scope/pkg@1.0` keeps its scope); a
/// tool without a version is all name.
fn split_tool(tool: &str) -> (&str, Option<&str>) {
    match tool.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => (name, Some(version)),
        _ => (tool, None),
    }
}

/// Rust's `std::env::consts::OS` as a semantic-conventions `os.type` (which names
/// kernels: iOS and macOS are `darwin`, Android is `linux`); others pass as they are.
fn os_type(os: &str) -> &str {
    match os {
        "macos" | "ios" | "tvos" | "watchos" | "visionos" => "darwin",
        "android" => "linux",
        "dragonfly" => "dragonflybsd",
        "illumos" => "solaris",
        other => other,
    }
}

/// Rust's `std::env::consts::ARCH` as a semantic-conventions `host.arch`; others
/// pass as they are.
fn host_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "powerpc" => "ppc32",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// An RFC 3339 time as Unix nanoseconds; 0 (OTLP's "unknown") if it does not parse.
fn unix_nanos(timestamp: &str) -> u64 {
    humantime::parse_rfc3339(timestamp)
        .or_else(|_| humantime::parse_rfc3339_weak(timestamp))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_attr(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(proto::Value::String(value)),
        }),
    }
}

/// A property as an attribute; `None` for a null.
fn key_value(key: String, value: Value) -> Option<KeyValue> {
    let value = any_value(value)?;
    Some(KeyValue {
        key,
        value: Some(value),
    })
}

/// A JSON value as a typed `AnyValue`; `None` for a null. Recursion is bounded:
/// recording refuses properties nested deeper than [`crate::event::MAX_DEPTH`].
fn any_value(value: Value) -> Option<AnyValue> {
    let v = match value {
        Value::Null => return None,
        Value::Bool(b) => proto::Value::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => proto::Value::Int(i),
            None => proto::Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => proto::Value::String(s),
        Value::Array(items) => proto::Value::Array(ArrayValue {
            values: items.into_iter().filter_map(any_value).collect(),
        }),
        Value::Object(map) => proto::Value::Kvlist(KeyValueList {
            values: map
                .into_iter()
                .filter_map(|(k, v)| key_value(k, v))
                .collect(),
        }),
    };
    Some(AnyValue { value: Some(v) })
}

/// A collector's 2xx reply: its partial success, if it sent one. The reply comes in
/// the request's format (its content type says which), and the two cannot be
/// confused: a JSON object starts with `{`, a protobuf `ExportLogsServiceResponse`
/// with the tag of its field 1 (0x0a).
fn decode_reply(body: &[u8]) -> Option<ExportLogsPartialSuccess> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    let reply = if *first == b'{' {
        serde_json::from_slice::<ExportLogsServiceResponse>(body).ok()?
    } else {
        ExportLogsServiceResponse::decode(body).ok()?
    };
    reply.partial_success
}

/// What the flush report says of a partial success: how many records the collector
/// refused and its message, or its warning when it refused none. `None` when it
/// says nothing.
fn partial_success_note(p: &ExportLogsPartialSuccess) -> Option<String> {
    let message: String = p
        .error_message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let message = message.trim();
    match (p.rejected_log_records.max(0), message.is_empty()) {
        (0, true) => None,
        (0, false) => Some(format!(
            "the collector accepted every log record but warned: {message}"
        )),
        (n, empty) => {
            let records = if n == 1 { "record" } else { "records" };
            let why = if empty {
                String::new()
            } else {
                format!(": {message}")
            };
            Some(format!(
                "the collector rejected {n} log {records} (partial success{why})"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::logs::v1 as collector;
    use opentelemetry_proto::tonic::common::v1::{self as common, any_value::Value as V};

    use super::*;

    const P1: &str = r#"{"id":"0190a1b2-0000-7000-8000-000000000001","event":"cli_invoked","timestamp":"2026-11-22T10:04:05.123Z","anonymous_id":"anon-1","session_id":"0190a1b2-0000-7000-8000-00000000000a","context":{"tool":"mytool@1.2.3","os":"macos","os_release":"24.1.0","arch":"aarch64","machine_hash":"abc123","docker":false,"ci":true},"properties":{"command":"build","count":3,"neg":-7,"ratio":0.5,"ok":true,"nothing":null,"big":18446744073709551615,"list":[1,"two",null,false],"nested":{"a":{"b":"c"},"gone":null},"session.id":"spoofed"}}"#;
    const P2: &str = r#"{"id":"0190a1b2-0000-7000-8000-000000000002","event":"job_finished","timestamp":"2026-11-22T10:04:06Z","anonymous_id":"anon-2","session_id":"s2","context":{"os":"linux","os_release":"6.1.0","arch":"x86_64","machine_hash":"def456","docker":true,"ci":false},"properties":{}}"#;
    const P3: &str = r#"{"id":"0190a1b2-0000-7000-8000-000000000003","event":"cli_exited","timestamp":"2026-11-22T10:04:07.5Z","anonymous_id":"anon-1","session_id":"0190a1b2-0000-7000-8000-00000000000a","context":{"tool":"mytool@1.2.3","os":"macos","os_release":"24.1.0","arch":"aarch64","machine_hash":"abc123","docker":false,"ci":true},"properties":{"code":0}}"#;

    fn otlp(protocol: OtlpProtocol, compression: Option<Compression>) -> Otlp {
        Otlp::new(&Target {
            kind: crate::DestinationKind::Otlp,
            endpoint: "http://127.0.0.1:4318".into(),
            api_key: None,
            headers: Default::default(),
            protocol,
            compression,
        })
    }

    fn enc(o: &Otlp, payloads: &[&str]) -> Encoded {
        o.encode(&Batch {
            payloads,
            sent_at: "2026-11-22T11:00:00.000Z",
            retry: 0,
        })
    }

    fn header<'a>(e: &'a Encoded, name: &str) -> Option<&'a str> {
        e.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Our protobuf body, decoded with opentelemetry-proto's generated types.
    fn decoded_protobuf(payloads: &[&str]) -> collector::ExportLogsServiceRequest {
        let e = enc(&otlp(OtlpProtocol::Protobuf, None), payloads);
        collector::ExportLogsServiceRequest::decode(gunzip(&e.body).as_slice()).unwrap()
    }

    fn attr<'a>(attrs: &'a [common::KeyValue], key: &str) -> Option<&'a V> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn s(v: &str) -> V {
        V::StringValue(v.into())
    }

    #[test]
    fn posts_to_v1_logs_under_the_endpoint_whatever_its_shape() {
        let o = otlp(OtlpProtocol::Protobuf, None);
        for (endpoint, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/logs"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/logs"),
            (
                "https://otlp.example.com/otlp",
                "https://otlp.example.com/otlp/v1/logs",
            ),
            (
                "https://otlp.example.com/otlp/",
                "https://otlp.example.com/otlp/v1/logs",
            ),
            (
                "https://otlp.example.com/v1/logs",
                "https://otlp.example.com/v1/logs",
            ),
            (
                "https://otlp.example.com/p?tenant=a",
                "https://otlp.example.com/p/v1/logs?tenant=a",
            ),
        ] {
            assert_eq!(o.url(&Url::parse(endpoint).unwrap()).as_str(), want);
        }
    }

    #[test]
    fn protobuf_is_the_default_and_gzipped_unless_compression_is_none() {
        let e = enc(&otlp(OtlpProtocol::Protobuf, None), &[P1]);
        assert_eq!(header(&e, "content-type"), Some("application/x-protobuf"));
        assert_eq!(header(&e, "content-encoding"), Some("gzip"));
        let plain = enc(
            &otlp(OtlpProtocol::Protobuf, Some(Compression::None)),
            &[P1],
        );
        assert_eq!(header(&plain, "content-encoding"), None);
        assert_eq!(gunzip(&e.body), plain.body);
        let json = enc(&otlp(OtlpProtocol::Json, Some(Compression::Gzip)), &[P1]);
        assert_eq!(header(&json, "content-type"), Some("application/json"));
        assert_eq!(header(&json, "content-encoding"), Some("gzip"));
    }

    #[test]
    fn protobuf_bodies_decode_with_opentelemetry_proto_field_for_field() {
        let req = decoded_protobuf(&[P1]);
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        let res = &rl.resource.as_ref().unwrap().attributes;
        let version = env!("CARGO_PKG_VERSION");
        for (k, v) in [
            ("service.name", s("mytool")),
            ("service.version", s("1.2.3")),
            ("os.type", s("darwin")),
            ("os.version", s("24.1.0")),
            ("host.arch", s("arm64")),
            ("app.installation.id", s("anon-1")),
            ("telemetry.sdk.name", s("eventspool")),
            ("telemetry.sdk.language", s("rust")),
            ("telemetry.sdk.version", s(version)),
            ("eventspool.machine_hash", s("abc123")),
            ("eventspool.docker", V::BoolValue(false)),
            ("eventspool.ci", V::BoolValue(true)),
        ] {
            assert_eq!(attr(res, k), Some(&v), "resource {k}");
        }
        assert_eq!(res.len(), 12);
        let scope = rl.scope_logs[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("eventspool", version)
        );
        let rec = &rl.scope_logs[0].log_records[0];
        assert_eq!(rec.event_name, "cli_invoked");
        assert_eq!(rec.time_unix_nano, 1_795_341_845_123_000_000);
        assert_eq!(rec.observed_time_unix_nano, rec.time_unix_nano);
        assert_eq!(rec.severity_number, 9);
        assert_eq!(rec.severity_text, "INFO");
        assert!(rec.body.is_none());
        assert_eq!(
            attr(&rec.attributes, "log.record.uid"),
            Some(&s("0190a1b2-0000-7000-8000-000000000001"))
        );
    }

    #[test]
    fn properties_become_typed_attributes_and_nulls_are_dropped() {
        let req = decoded_protobuf(&[P1]);
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        let a = &rec.attributes;
        assert_eq!(attr(a, "command"), Some(&s("build")));
        assert_eq!(attr(a, "count"), Some(&V::IntValue(3)));
        assert_eq!(attr(a, "neg"), Some(&V::IntValue(-7)));
        assert_eq!(attr(a, "ratio"), Some(&V::DoubleValue(0.5)));
        assert_eq!(attr(a, "ok"), Some(&V::BoolValue(true)));
        assert_eq!(attr(a, "big"), Some(&V::DoubleValue(u64::MAX as f64)));
        assert!(a.iter().all(|kv| kv.key != "nothing"), "a null is left out");
        let Some(V::ArrayValue(list)) = attr(a, "list") else {
            panic!("list is an array: {a:?}");
        };
        let items: Vec<Option<&V>> = list.values.iter().map(|v| v.value.as_ref()).collect();
        // No empty value in the null's place: OTLP/JSON decoders in the field refuse one.
        assert_eq!(
            items,
            vec![
                Some(&V::IntValue(1)),
                Some(&s("two")),
                Some(&V::BoolValue(false))
            ]
        );
        let Some(V::KvlistValue(nested)) = attr(a, "nested") else {
            panic!("nested is a kvlist: {a:?}");
        };
        assert_eq!(nested.values.len(), 1, "the null inside is left out too");
        let Some(V::KvlistValue(inner)) = attr(&nested.values, "a") else {
            panic!("nested.a is a kvlist");
        };
        assert_eq!(attr(&inner.values, "b"), Some(&s("c")));
        // Our session id wins over a property of the same name, and keys stay unique.
        assert_eq!(
            attr(a, "session.id"),
            Some(&s("0190a1b2-0000-7000-8000-00000000000a"))
        );
        assert_eq!(a.iter().filter(|kv| kv.key == "session.id").count(), 1);
        let keys: Vec<&str> = a.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "command",
                "count",
                "neg",
                "ratio",
                "ok",
                "big",
                "list",
                "nested",
                "session.id",
                "log.record.uid"
            ],
            "properties in their order, then ours"
        );
    }

    #[test]
    fn zeros_false_and_empty_strings_are_sent_not_mistaken_for_unset_values() {
        // Proto3 leaves a default value out, except inside a oneof: a property of 0
        // must arrive as int 0, not as an empty value.
        let p = r#"{"id":"i","event":"e","properties":{"n":0,"f":false,"s":"","d":0.0}}"#;
        let req = decoded_protobuf(&[p]);
        let a = &req.resource_logs[0].scope_logs[0].log_records[0].attributes;
        assert_eq!(attr(a, "n"), Some(&V::IntValue(0)));
        assert_eq!(attr(a, "f"), Some(&V::BoolValue(false)));
        assert_eq!(attr(a, "s"), Some(&s("")));
        assert_eq!(attr(a, "d"), Some(&V::DoubleValue(0.0)));
        // The hand-written lengths agree with the bytes at every level.
        let ours = request(&[P1, P2, P3, p]);
        assert_eq!(ours.encoded_len(), ours.encode_to_vec().len());
    }

    #[test]
    fn one_resource_per_install_and_context_with_order_kept_inside_each() {
        let req = decoded_protobuf(&[P1, P2, P3]);
        assert_eq!(req.resource_logs.len(), 2);
        let names = |i: usize| -> Vec<String> {
            req.resource_logs[i].scope_logs[0]
                .log_records
                .iter()
                .map(|r| r.event_name.clone())
                .collect()
        };
        assert_eq!(names(0), ["cli_invoked", "cli_exited"]);
        assert_eq!(names(1), ["job_finished"]);
        let res = &req.resource_logs[1].resource.as_ref().unwrap().attributes;
        // No tool: OpenTelemetry's unknown service, and no version.
        assert_eq!(attr(res, "service.name"), Some(&s("unknown_service")));
        assert_eq!(attr(res, "service.version"), None);
        assert_eq!(attr(res, "os.type"), Some(&s("linux")));
        assert_eq!(attr(res, "host.arch"), Some(&s("amd64")));
        assert_eq!(attr(res, "app.installation.id"), Some(&s("anon-2")));
        assert_eq!(attr(res, "eventspool.docker"), Some(&V::BoolValue(true)));
        // The same context under another install is another resource.
        let other = P3.replace("anon-1", "anon-3");
        assert_eq!(decoded_protobuf(&[P1, &other]).resource_logs.len(), 2);
    }

    #[test]
    fn json_bodies_follow_the_otlp_json_mapping() {
        let e = enc(
            &otlp(OtlpProtocol::Json, Some(Compression::None)),
            &[P1, P2, P3],
        );
        let text = String::from_utf8(e.body.clone()).unwrap();
        // lowerCamelCase names, 64-bit integers as strings, enums as numbers.
        for part in [
            r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"mytool"}}"#,
            r#""scopeLogs":[{"scope":{"name":"eventspool","version":""#,
            r#""logRecords":[{"timeUnixNano":"1795341845123000000","observedTimeUnixNano":"1795341845123000000","severityNumber":9,"severityText":"INFO","attributes":[{"key":"command","value":{"stringValue":"build"}},{"key":"count","value":{"intValue":"3"}}"#,
            r#"{"key":"ratio","value":{"doubleValue":0.5}}"#,
            r#"{"key":"list","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"two"},{"boolValue":false}]}}}"#,
            r#"{"key":"nested","value":{"kvlistValue":{"values":[{"key":"a","value":{"kvlistValue":{"values":[{"key":"b","value":{"stringValue":"c"}}]}}}]}}}"#,
            r#""eventName":"cli_invoked"}"#,
            r#"{"key":"eventspool.ci","value":{"boolValue":true}}"#,
        ] {
            assert!(text.contains(part), "{part}\nnot in\n{text}");
        }
        // opentelemetry-proto's serde types read it as the same request as the protobuf.
        let from_json: collector::ExportLogsServiceRequest =
            serde_json::from_slice(&e.body).unwrap();
        assert_eq!(from_json, decoded_protobuf(&[P1, P2, P3]));
    }

    #[test]
    fn a_retry_sends_the_same_bytes() {
        let o = otlp(OtlpProtocol::Protobuf, Some(Compression::None));
        let later = o.encode(&Batch {
            payloads: &[P1, P2],
            sent_at: "2026-12-01T00:00:00.000Z",
            retry: 3,
        });
        assert_eq!(enc(&o, &[P1, P2]).body, later.body);
    }

    #[test]
    fn a_payload_missing_fields_still_becomes_a_record() {
        let req = decoded_protobuf(&[r#"{"event":"bare"}"#, "not json"]);
        let recs: Vec<_> = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs[0].log_records)
            .collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].event_name, "bare");
        assert_eq!(recs[0].time_unix_nano, 0, "unknown time");
    }

    #[test]
    fn semantic_convention_values_for_os_and_arch() {
        assert_eq!(os_type("macos"), "darwin");
        assert_eq!(os_type("ios"), "darwin");
        assert_eq!(os_type("windows"), "windows");
        assert_eq!(os_type("freebsd"), "freebsd");
        assert_eq!(os_type("dragonfly"), "dragonflybsd");
        assert_eq!(host_arch("x86_64"), "amd64");
        assert_eq!(host_arch("aarch64"), "arm64");
        assert_eq!(host_arch("x86"), "x86");
        assert_eq!(host_arch("arm"), "arm32");
        assert_eq!(host_arch("s390x"), "s390x");
        assert_eq!(split_tool("@scope/pkg@1.0"), ("@scope/pkg", Some("1.0")));
        assert_eq!(split_tool("plain"), ("plain", None));
        assert_eq!(split_tool("trailing@"), ("trailing@", None));
    }

    #[test]
    fn only_429_and_502_to_504_are_retried() {
        let o = otlp(OtlpProtocol::Protobuf, None);
        let now = SystemTime::now();
        for code in [200, 202, 204] {
            assert_eq!(o.classify(code, None, now), Outcome::Delivered, "{code}");
        }
        assert_eq!(o.classify(413, None, now), Outcome::TooLarge);
        assert_eq!(
            o.classify(429, Some("7"), now),
            Outcome::Retry(Some(Duration::from_secs(7)))
        );
        for code in [502, 503, 504] {
            assert_eq!(o.classify(code, None, now), Outcome::Retry(None), "{code}");
        }
        assert_eq!(
            o.classify(503, Some("30"), now),
            Outcome::Retry(Some(Duration::from_secs(30)))
        );
        for code in [400, 401, 403, 404, 408, 410, 500, 501, 505] {
            assert_eq!(
                o.classify(code, Some("5"), now),
                Outcome::Rejected,
                "{code}"
            );
        }
        // A redirect not followed is the transport's retryable failure, as everywhere.
        assert_eq!(o.classify(302, None, now), Outcome::Retry(None));
    }

    #[test]
    fn batches_are_cut_by_the_size_of_the_records_sent() {
        let o = otlp(OtlpProtocol::Protobuf, None);
        assert_eq!(
            o.byte_limits(),
            ByteLimits {
                per_event: None,
                per_batch: Some(MAX_BATCH_BYTES)
            }
        );
        let one = enc(
            &otlp(OtlpProtocol::Protobuf, Some(Compression::None)),
            &[P1],
        );
        let len = o.event_len(P1);
        // The record is most of the body; the resource adds a few hundred bytes.
        assert!(
            len < one.body.len() && one.body.len() < len + 400,
            "{len} vs {}",
            one.body.len()
        );
        let json = otlp(OtlpProtocol::Json, None);
        assert!(json.event_len(P1) > len, "JSON records are larger");
    }

    #[test]
    fn a_partial_success_is_noted_in_either_format_and_never_retried() {
        let o = otlp(OtlpProtocol::Protobuf, None);
        let reply = collector::ExportLogsServiceResponse {
            partial_success: Some(collector::ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "attribute too long\nsecond line".into(),
            }),
        };
        let note = "the collector rejected 2 log records (partial success: attribute too long second line)";
        assert_eq!(o.reply_note(&reply.encode_to_vec()).as_deref(), Some(note));
        let json = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"attribute too long\nsecond line"}}"#;
        assert_eq!(o.reply_note(json).as_deref(), Some(note));
        assert_eq!(
            o.reply_note(br#"{"partialSuccess":{"rejectedLogRecords":1}}"#)
                .as_deref(),
            Some("the collector rejected 1 log record (partial success)")
        );
        assert_eq!(
            o.reply_note(br#"{"partialSuccess":{"errorMessage":"slow down"}}"#)
                .as_deref(),
            Some("the collector accepted every log record but warned: slow down")
        );
        // Full successes say nothing, however they are written.
        for quiet in [
            &b""[..],
            b"{}",
            br#"{"partialSuccess":null}"#,
            br#"{"partialSuccess":{}}"#,
            b"not a reply",
        ] {
            assert_eq!(
                o.reply_note(quiet),
                None,
                "{}",
                String::from_utf8_lossy(quiet)
            );
        }
        assert_eq!(
            o.reply_note(&collector::ExportLogsServiceResponse::default().encode_to_vec()),
            None
        );
        assert!(o.reads_reply());
        assert_eq!(o.classify(200, None, SystemTime::now()), Outcome::Delivered);
    }
}
