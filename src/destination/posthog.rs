//! PostHog's batch API, as posthog-python (7.x) speaks it: `POST {endpoint}/batch/`
//! with `{"batch":[…],"historical_migration":false,"sent_at":…,"api_key":…}`, each
//! event `{"uuid","event","distinct_id","timestamp","properties"}`.
//!
//! The properties are the host's, plus what the SDK adds itself (`$lib`,
//! `$lib_version`, `$os`, `$os_version`, `$geoip_disable`) and what an anonymous CLI
//! tool means: `$session_id` (a UUIDv7, the only kind PostHog counts as a session),
//! `$process_person_profile: false` (no person profile for an anonymous install),
//! `$ignore_sent_at: true` (the stored timestamp is kept as it is, so a retried
//! event carries the same one and PostHog dedupes it by `uuid`), `$app_name` and
//! `$app_version` from the host tool, and the rest of the context (`arch`,
//! `machine_hash`, `docker`, `ci`) under its own names.

use std::time::SystemTime;

use reqwest::Url;

use super::vendor::{self, LIBRARY, LIBRARY_VERSION, Stored};
use super::{Batch, ByteLimits, Compression, Destination, Encoded, Target};
use crate::delivery::{self, Outcome};

/// posthog-python's `MAX_MSG_SIZE`: an event larger than this (as sent) is dropped.
pub(crate) const MAX_EVENT_BYTES: usize = 900 * 1024;

/// posthog-python's `BATCH_SIZE_LIMIT`: well under the capture endpoint's 20 MiB.
pub(crate) const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;

/// The PostHog format for one project key. Not `Debug`: it holds the key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Posthog {
    /// The project key, already a JSON string literal.
    api_key: String,
    compression: Option<Compression>,
    /// Each event mapped once, though measured before it is encoded.
    memo: vendor::MapMemo,
}

impl Posthog {
    /// The format for a resolved PostHog target (its key was checked when resolved).
    pub fn new(target: &Target) -> Self {
        Posthog {
            api_key: vendor::json_str(target.api_key.as_deref().unwrap_or_default()),
            compression: target.compression,
            memo: vendor::MapMemo::default(),
        }
    }

    /// One stored payload as PostHog's JSON, or `None` if it cannot be read. Written
    /// by hand from the borrowed payload: the properties' values are copied as raw
    /// JSON, never parsed into a tree (this runs twice for every event sent).
    fn map(payload: &str) -> Option<String> {
        let s = Stored::parse(payload)?;
        let host = s.property_entries()?;
        let ctx = &s.context;
        let mut ours: Vec<(&str, Scalar<'_>)> = vec![
            ("$session_id", Scalar::Str(&s.session_id)),
            ("$lib", Scalar::Str(LIBRARY)),
            ("$lib_version", Scalar::Str(LIBRARY_VERSION)),
            ("$os", Scalar::Str(ctx.os_name())),
            ("$os_version", Scalar::Str(&ctx.os_release)),
            ("$process_person_profile", Scalar::Bool(false)),
            ("$geoip_disable", Scalar::Bool(true)),
            ("$ignore_sent_at", Scalar::Bool(true)),
        ];
        if let Some((name, version)) = ctx.app() {
            ours.push(("$app_name", Scalar::Str(name)));
            if let Some(v) = version {
                ours.push(("$app_version", Scalar::Str(v)));
            }
        }
        // The rest of the context under its native names, unless the host sent a
        // property of the same name: that is the host's data and stays.
        let context = [
            ("arch", Scalar::Str(&ctx.arch)),
            ("machine_hash", Scalar::Str(&ctx.machine_hash)),
            ("docker", Scalar::Bool(ctx.docker)),
            ("ci", Scalar::Bool(ctx.ci)),
        ];
        let mut out = Vec::with_capacity(payload.len() + 320);
        out.extend_from_slice(b"{\"uuid\":");
        vendor::push_json_str(&mut out, &s.id);
        out.extend_from_slice(b",\"event\":");
        vendor::push_json_str(&mut out, &s.event);
        out.extend_from_slice(b",\"distinct_id\":");
        vendor::push_json_str(&mut out, &s.anonymous_id);
        out.extend_from_slice(b",\"timestamp\":");
        vendor::push_json_str(&mut out, &s.timestamp);
        out.extend_from_slice(b",\"properties\":{");
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, k: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            vendor::push_json_str(out, k);
            out.push(b':');
        };
        // PostHog's own names always say what eventspool means by them.
        for (k, v) in &host {
            if !ours.iter().any(|(o, _)| o == k) {
                key(&mut out, k);
                out.extend_from_slice(v.get().as_bytes());
            }
        }
        for (k, v) in context
            .iter()
            .filter(|(k, _)| !host.iter().any(|(h, _)| h == k))
            .chain(&ours)
        {
            key(&mut out, k);
            v.push(&mut out);
        }
        out.extend_from_slice(b"}}");
        String::from_utf8(out).ok()
    }
}

/// A value eventspool adds to the properties.
enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
}

impl Scalar<'_> {
    fn push(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Str(s) => vendor::push_json_str(out, s),
            Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

impl Destination for Posthog {
    fn url(&self, endpoint: &Url) -> Url {
        vendor::join(endpoint, "/batch/")
    }

    fn encode(&self, batch: &Batch<'_>) -> Encoded {
        let tail = format!(
            "\"historical_migration\":false,\"sent_at\":{},\"api_key\":{}}}",
            vendor::json_str(batch.sent_at),
            self.api_key
        );
        let events = batch
            .payloads
            .iter()
            .filter_map(|p| self.memo.take(p, Self::map));
        vendor::json_body(vendor::batch_body(events, &tail), self.compression)
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
        // PostHog's capture answers 400 for a malformed batch, 401 for a bad key,
        // 413 for a body too large, 429/503 when overloaded: the native rules, which
        // posthog-python also follows (it retries 408, 429 and 5xx).
        delivery::classify(status, retry_after, now)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::destination::vendor::tests::payload;
    use crate::destination::{DestinationConfig, resolve};

    fn posthog(compression: Option<Compression>) -> Posthog {
        let mut d = DestinationConfig::posthog("phc_key\"with quote");
        d.compression = compression;
        Posthog::new(&resolve(d, &Default::default()).unwrap().unwrap())
    }

    fn body(e: &Encoded) -> Value {
        let gz = e
            .headers
            .iter()
            .any(|(k, v)| *k == "content-encoding" && v == "gzip");
        let mut plain = Vec::new();
        if gz {
            flate2::read::GzDecoder::new(e.body.as_slice())
                .read_to_end(&mut plain)
                .unwrap();
        } else {
            plain = e.body.clone();
        }
        serde_json::from_slice(&plain).unwrap()
    }

    fn send(p: &Posthog, payloads: &[&str]) -> Encoded {
        p.encode(&Batch {
            payloads,
            sent_at: "2026-01-02T03:04:06.000Z",
            retry: 0,
        })
    }

    #[test]
    fn posts_to_batch_under_the_endpoint() {
        let p = posthog(None);
        for (e, want) in [
            (
                "https://us.i.posthog.com",
                "https://us.i.posthog.com/batch/",
            ),
            (
                "https://eu.i.posthog.com/",
                "https://eu.i.posthog.com/batch/",
            ),
            (
                "https://t.example.com/ingest",
                "https://t.example.com/ingest/batch/",
            ),
        ] {
            assert_eq!(p.url(&Url::parse(e).unwrap()).as_str(), want);
        }
    }

    #[test]
    fn an_event_maps_to_posthogs_fields_and_properties() {
        let stored = payload(Some("mytool@1.2.3"), json!({"command": "build", "n": 3}));
        let b = body(&send(&posthog(None), &[&stored]));
        assert_eq!(b["api_key"], "phc_key\"with quote");
        assert_eq!(b["historical_migration"], false);
        assert_eq!(b["sent_at"], "2026-01-02T03:04:06.000Z");
        let e = &b["batch"][0];
        assert_eq!(
            *e,
            json!({
                "uuid": "01900000-0000-7000-8000-000000000001",
                "event": "cli_invoked",
                "distinct_id": "2ee2e145-632c-4523-8767-66f1112f4443",
                "timestamp": "2026-01-02T03:04:05.678Z",
                "properties": {
                    "command": "build",
                    "n": 3,
                    "arch": "x86_64",
                    "machine_hash": "ab12",
                    "docker": false,
                    "ci": true,
                    "$session_id": "01900000-0000-7000-8000-0000000000aa",
                    "$lib": "eventspool",
                    "$lib_version": env!("CARGO_PKG_VERSION"),
                    "$os": "Linux",
                    "$os_version": "6.1.0-18-amd64",
                    "$process_person_profile": false,
                    "$geoip_disable": true,
                    "$ignore_sent_at": true,
                    "$app_name": "mytool",
                    "$app_version": "1.2.3",
                }
            })
        );
        let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["batch", "historical_migration", "sent_at", "api_key"]
        );
    }

    #[test]
    fn host_properties_keep_their_names_but_not_posthogs_own() {
        let odd = json!({"we\"ird\n": "ü \u{1} \\", "list": [1, {"a": null}], "f": 1.5e300});
        let stored = payload(
            None,
            json!({"ci": "github", "$lib": "forged", "odd": odd.clone(), "we\"ird": "ü"}),
        );
        let b = body(&send(&posthog(None), &[&stored]));
        let props = b["batch"][0]["properties"].as_object().unwrap();
        assert_eq!(
            props["ci"], "github",
            "the host's property wins over context"
        );
        assert_eq!(props["$lib"], "eventspool", "PostHog's own names are ours");
        assert_eq!(props["odd"], odd, "values are copied exactly");
        assert_eq!(props["we\"ird"], "ü", "keys are escaped again");
        assert!(props.get("$app_name").is_none(), "no tool, no app name");
        // Each name once: the body is a JSON object a strict parser accepts.
        let text = Posthog::map(&stored).unwrap();
        assert_eq!(text.matches("\"ci\":").count(), 1, "{text}");
        assert_eq!(text.matches("\"$lib\":").count(), 1, "{text}");
    }

    #[test]
    fn event_len_is_the_mapped_size_and_garbage_is_never_sent() {
        let p = posthog(None);
        let stored = payload(None, json!({}));
        let mapped = Posthog::map(&stored).unwrap();
        assert!(mapped.len() > stored.len());
        assert_eq!(p.event_len(&stored), mapped.len());
        assert_eq!(p.event_len("not json"), usize::MAX);
        assert_eq!(
            p.byte_limits(),
            ByteLimits {
                per_event: Some(900 * 1024),
                per_batch: Some(5 * 1024 * 1024)
            }
        );
    }

    #[test]
    fn bodies_are_gzipped_unless_compression_is_none() {
        let stored = payload(None, json!({"pad": "x".repeat(2000)}));
        let gz = |e: &Encoded| e.headers.contains(&("content-encoding", "gzip".into()));
        assert!(gz(&send(&posthog(None), &[&stored])));
        let plain = send(&posthog(Some(Compression::None)), &[&stored]);
        assert!(!gz(&plain));
        assert_eq!(
            body(&plain)["batch"][0]["properties"]["pad"]
                .as_str()
                .unwrap()
                .len(),
            2000
        );
        let small = payload(None, json!({}));
        assert!(!gz(&send(&posthog(None), &[&small])));
        let e = send(&posthog(None), &[&small]);
        assert!(
            e.headers
                .contains(&("content-type", "application/json".into()))
        );
    }

    #[test]
    fn statuses_follow_the_native_rules() {
        let p = posthog(None);
        let now = SystemTime::now();
        assert_eq!(p.classify(200, None, now), Outcome::Delivered);
        assert_eq!(p.classify(400, None, now), Outcome::Rejected);
        assert_eq!(p.classify(401, None, now), Outcome::Rejected);
        assert_eq!(p.classify(413, None, now), Outcome::TooLarge);
        assert_eq!(
            p.classify(429, Some("9"), now),
            Outcome::Retry(Some(Duration::from_secs(9)))
        );
        assert_eq!(p.classify(503, None, now), Outcome::Retry(None));
    }
}
