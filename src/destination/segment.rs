//! Segment's HTTP tracking API, as segment-analytics-python (2.x) speaks it, which
//! RudderStack and Jitsu accept too: `POST {endpoint}/v1/batch` with HTTP Basic
//! authentication (the write key as the user, no password) and
//! `{"batch":[…],"sentAt":…,"writeKey":…}`, each event a `track` call.
//!
//! Segment's limits are 32 KB an event and 500 KB a request, and it answers 400
//! (not 413) to a request over them, which would drop the whole batch: so events are
//! measured as mapped, and batches cut below the limit, before anything is sent.

use std::time::SystemTime;

use base64::Engine as _;
use reqwest::Url;
use serde::Serialize;
use serde_json::value::RawValue;

use super::vendor::{self, LIBRARY, LIBRARY_VERSION, Stored};
use super::{Batch, ByteLimits, Compression, Destination, Encoded, Target};
use crate::delivery::{Outcome, parse_retry_after};

/// segment-analytics-python's `MAX_MSG_SIZE` (`32 << 10`): Segment's per-event limit.
pub(crate) const MAX_EVENT_BYTES: usize = 32 << 10;

/// segment-analytics-python's `BATCH_SIZE_LIMIT`: under Segment's 500 KB a request,
/// leaving room for the envelope (`sentAt`, `writeKey`).
pub(crate) const MAX_BATCH_BYTES: usize = 475_000;

/// The Segment format for one write key. Not `Debug`: it holds the key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The write key, already a JSON string literal.
    write_key: String,
    /// `Basic base64(writeKey + ":")`.
    authorization: String,
    compression: Option<Compression>,
    /// Each event mapped once, though measured before it is encoded.
    memo: vendor::MapMemo,
}

/// One `track` call as Segment's batch takes it, field for field what
/// segment-analytics-python sends (its `userId` is null for an anonymous call).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    integrations: Empty,
    anonymous_id: &'a str,
    #[serde(serialize_with = "vendor::properties_or_empty")]
    properties: Option<&'a RawValue>,
    timestamp: &'a str,
    context: Context<'a>,
    user_id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'a str,
    message_id: &'a str,
}

/// `{}`: the SDK's default `integrations` (every destination the source has).
#[derive(Serialize)]
struct Empty {}

/// The call's `context`: Segment's `app`, `os` and `library`, then the rest of the
/// stored context (`arch`, `machine_hash`, `docker`, `ci`) and the session, under
/// their native names.
#[derive(Serialize)]
struct Context<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<App<'a>>,
    os: NameVersion<'a>,
    library: NameVersion<'a>,
    arch: &'a str,
    machine_hash: &'a str,
    docker: bool,
    ci: bool,
    session_id: &'a str,
}

#[derive(Serialize)]
struct App<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

#[derive(Serialize)]
struct NameVersion<'a> {
    name: &'a str,
    version: &'a str,
}

impl Segment {
    /// The format for a resolved Segment target (its key was checked when resolved).
    pub fn new(target: &Target) -> Self {
        let key = target.api_key.as_deref().unwrap_or_default();
        Segment {
            write_key: vendor::json_str(key),
            authorization: authorization(key),
            compression: target.compression,
            memo: vendor::MapMemo::default(),
        }
    }

    /// One stored payload as a `track` call, or `None` if it cannot be read.
    fn map(payload: &str) -> Option<String> {
        let s = Stored::parse(payload)?;
        let ctx = &s.context;
        serde_json::to_string(&Event {
            integrations: Empty {},
            anonymous_id: &s.anonymous_id,
            properties: s.properties,
            timestamp: &s.timestamp,
            context: Context {
                app: ctx.app().map(|(name, version)| App { name, version }),
                os: NameVersion {
                    name: ctx.os_name(),
                    version: &ctx.os_release,
                },
                library: NameVersion {
                    name: LIBRARY,
                    version: LIBRARY_VERSION,
                },
                arch: &ctx.arch,
                machine_hash: &ctx.machine_hash,
                docker: ctx.docker,
                ci: ctx.ci,
                session_id: &s.session_id,
            },
            user_id: None,
            kind: "track",
            event: &s.event,
            message_id: &s.id,
        })
        .ok()
    }
}

/// HTTP Basic with the write key as the user name and an empty password, as
/// Segment documents and its SDKs send it.
pub(crate) fn authorization(write_key: &str) -> String {
    let credentials = format!("{write_key}:");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// Segment's status rules, as segment-analytics-python applies them: 2xx delivered;
/// 408, 410, 429 and 460 (its client timeout) retried; any other 4xx dropped
/// (400 is also Segment's answer to a request too large, which the cut prevents);
/// 5xx retried except 501 and 505, which no retry will change. eventspool keeps its
/// own rules beside them: 413 (from a Segment-compatible server) splits the batch,
/// an unfollowed 3xx is retried, as for every destination, and so is 511 (the SDK
/// retries it only with OAuth; without OAuth a 511 usually comes from a captive
/// portal on the way, which a later attempt may get past).
pub(crate) fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
    let retry = || Outcome::Retry(retry_after.and_then(|v| parse_retry_after(v, now)));
    match status {
        200..=299 => Outcome::Delivered,
        413 => Outcome::TooLarge,
        408 | 410 | 429 | 460 => retry(),
        400..=499 | 501 | 505 => Outcome::Rejected,
        _ => retry(),
    }
}

impl Destination for Segment {
    fn url(&self, endpoint: &Url) -> Url {
        vendor::join(endpoint, "/v1/batch")
    }

    fn encode(&self, batch: &Batch<'_>) -> Encoded {
        let tail = format!(
            "\"sentAt\":{},\"writeKey\":{}}}",
            vendor::json_str(batch.sent_at),
            self.write_key
        );
        let events = batch
            .payloads
            .iter()
            .filter_map(|p| self.memo.take(p, Self::map));
        let mut encoded = vendor::json_body(vendor::batch_body(events, &tail), self.compression);
        encoded
            .headers
            .push(("authorization", self.authorization.clone()));
        // How many times these events were sent before, as the SDK counts its own
        // retries: Segment uses it to tell a retry from a first send.
        if batch.retry > 0 {
            encoded
                .headers
                .push(("x-retry-count", batch.retry.to_string()));
        }
        encoded
    }

    fn event_len(&self, payload: &str) -> usize {
        // A payload that cannot be mapped is never sent: past any bound.
        self.memo.measure(payload, Self::map)
    }

    fn byte_limits(&self) -> ByteLimits {
        ByteLimits {
            per_event: Some(MAX_EVENT_BYTES),
            per_batch: Some(MAX_BATCH_BYTES),
        }
    }

    fn classify(&self, status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
        classify(status, retry_after, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::destination::vendor::tests::payload;
    use crate::destination::{DestinationConfig, resolve};

    fn segment() -> Segment {
        let d = DestinationConfig::segment("wk_123").compression(Compression::None);
        Segment::new(&resolve(d, &Default::default()).unwrap().unwrap())
    }

    fn send(s: &Segment, payloads: &[&str], retry: u32) -> Encoded {
        s.encode(&Batch {
            payloads,
            sent_at: "2026-01-02T03:04:06.000Z",
            retry,
        })
    }

    fn header<'a>(e: &'a Encoded, name: &str) -> Option<&'a str> {
        e.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn posts_to_v1_batch_under_the_endpoint() {
        let s = segment();
        for (e, want) in [
            ("https://api.segment.io", "https://api.segment.io/v1/batch"),
            ("https://api.segment.io/", "https://api.segment.io/v1/batch"),
            (
                "https://rs.example.com/rudder/",
                "https://rs.example.com/rudder/v1/batch",
            ),
        ] {
            assert_eq!(s.url(&Url::parse(e).unwrap()).as_str(), want);
        }
    }

    #[test]
    fn the_write_key_is_the_basic_auth_user_with_no_password() {
        // base64("wk_123:")
        assert_eq!(authorization("wk_123"), "Basic d2tfMTIzOg==");
        let e = send(&segment(), &[&payload(None, json!({}))], 0);
        assert_eq!(header(&e, "authorization"), Some("Basic d2tfMTIzOg=="));
        assert_eq!(header(&e, "content-type"), Some("application/json"));
    }

    #[test]
    fn an_event_maps_to_a_track_call() {
        let stored = payload(Some("mytool@1.2.3"), json!({"command": "build", "n": 3}));
        let e = send(&segment(), &[&stored], 0);
        let b: Value = serde_json::from_slice(&e.body).unwrap();
        let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["batch", "sentAt", "writeKey"]);
        assert_eq!(b["sentAt"], "2026-01-02T03:04:06.000Z");
        assert_eq!(b["writeKey"], "wk_123");
        assert_eq!(
            b["batch"][0],
            json!({
                "integrations": {},
                "anonymousId": "2ee2e145-632c-4523-8767-66f1112f4443",
                "properties": {"command": "build", "n": 3},
                "timestamp": "2026-01-02T03:04:05.678Z",
                "context": {
                    "app": {"name": "mytool", "version": "1.2.3"},
                    "os": {"name": "Linux", "version": "6.1.0-18-amd64"},
                    "library": {"name": "eventspool", "version": env!("CARGO_PKG_VERSION")},
                    "arch": "x86_64",
                    "machine_hash": "ab12",
                    "docker": false,
                    "ci": true,
                    "session_id": "01900000-0000-7000-8000-0000000000aa",
                },
                "userId": null,
                "type": "track",
                "event": "cli_invoked",
                "messageId": "01900000-0000-7000-8000-000000000001",
            })
        );
        let bare = send(&segment(), &[&payload(None, json!({}))], 0);
        let b: Value = serde_json::from_slice(&bare.body).unwrap();
        assert!(
            b["batch"][0]["context"].get("app").is_none(),
            "no tool, no app"
        );
    }

    #[test]
    fn a_retry_says_how_many_sends_came_before() {
        let p = payload(None, json!({}));
        assert_eq!(header(&send(&segment(), &[&p], 0), "x-retry-count"), None);
        assert_eq!(
            header(&send(&segment(), &[&p], 2), "x-retry-count"),
            Some("2")
        );
    }

    #[test]
    fn events_are_measured_as_mapped_against_segments_limits() {
        let s = segment();
        let stored = payload(None, json!({"pad": "x".repeat(100)}));
        let mapped = Segment::map(&stored).unwrap();
        assert!(mapped.len() > stored.len(), "the mapping is larger");
        assert_eq!(s.event_len(&stored), mapped.len());
        assert_eq!(s.event_len("{"), usize::MAX);
        assert_eq!(
            s.byte_limits(),
            ByteLimits {
                per_event: Some(32 * 1024),
                per_batch: Some(475_000)
            }
        );
        // ~20 KB events: a batch of 100 is cut to what fits 475,000 bytes.
        let big = payload(None, json!({"pad": "x".repeat(20_000)}));
        let batch = vec![big.as_str(); 100];
        let (too_large, send) = crate::destination::cut(batch, s.byte_limits(), |p| s.event_len(p));
        assert!(too_large.is_empty());
        let n = s.event_len(&big) + 1;
        assert_eq!(send.len(), 475_000 / n);
        let body = self::send(&s, &send, 0).body;
        assert!(body.len() <= 500_000, "{}", body.len());
    }

    #[test]
    fn statuses_follow_the_sdk() {
        let now = SystemTime::now();
        assert_eq!(classify(200, None, now), Outcome::Delivered);
        for code in [408, 410, 429, 460, 500, 502, 503, 504, 511, 599] {
            assert_eq!(classify(code, None, now), Outcome::Retry(None), "{code}");
        }
        assert_eq!(
            classify(460, Some("12"), now),
            Outcome::Retry(Some(Duration::from_secs(12)))
        );
        for code in [400, 401, 403, 404, 422, 501, 505] {
            assert_eq!(classify(code, None, now), Outcome::Rejected, "{code}");
        }
        assert_eq!(classify(413, None, now), Outcome::TooLarge);
        assert_eq!(classify(302, None, now), Outcome::Retry(None));
        // The native rules are unchanged: 410 and 460 are rejections there.
        assert_eq!(crate::delivery::classify(410, None, now), Outcome::Rejected);
        assert_eq!(crate::delivery::classify(460, None, now), Outcome::Rejected);
        assert_eq!(
            crate::delivery::classify(501, None, now),
            Outcome::Retry(None)
        );
    }
}
