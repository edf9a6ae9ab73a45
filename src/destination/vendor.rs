//! What the vendors' JSON formats (PostHog, Segment) share: the stored payload as
//! they read it, the OS and app names in the vocabulary their SDKs use, the URL a
//! path is joined onto, and the body compression rule.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use reqwest::Url;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Compression, Encoded};
use crate::delivery::{self, GZIP_THRESHOLD};

/// The library name sent as `$lib` / `context.library.name`.
pub(super) const LIBRARY: &str = "eventspool";

/// This crate's version, sent as `$lib_version` / `context.library.version`.
pub(super) const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A stored payload ([`crate::event::Payload`]) as a vendor format reads it,
/// borrowed from the stored text: every event is mapped once to be measured and once
/// to be sent, so nothing is copied that can be borrowed, and the properties stay
/// raw JSON. Every field defaults, so a payload written by an older version missing
/// one still maps.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Stored<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub anonymous_id: Cow<'a, str>,
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
    #[serde(borrow)]
    pub context: StoredContext<'a>,
    /// The host's properties as stored: a JSON object (checked by [`Stored::parse`]).
    #[serde(borrow)]
    pub properties: Option<&'a RawValue>,
}

/// The stored `context` ([`crate::context::Context`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct StoredContext<'a> {
    #[serde(borrow)]
    pub tool: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub os: Cow<'a, str>,
    #[serde(borrow)]
    pub os_release: Cow<'a, str>,
    #[serde(borrow)]
    pub arch: Cow<'a, str>,
    #[serde(borrow)]
    pub machine_hash: Cow<'a, str>,
    pub docker: bool,
    pub ci: bool,
}

impl<'a> Stored<'a> {
    /// The payload, or `None` if it is not a JSON object of this shape (recording
    /// never writes one; such a payload is never sent).
    pub fn parse(payload: &'a str) -> Option<Stored<'a>> {
        let s: Stored<'a> = serde_json::from_str(payload).ok()?;
        match s.properties {
            Some(p) if !p.get().starts_with('{') => None,
            _ => Some(s),
        }
    }

    /// The properties' entries in stored order, keys unescaped, values raw.
    pub fn property_entries(&self) -> Option<Vec<(Cow<'a, str>, &'a RawValue)>> {
        match self.properties {
            None => Some(Vec::new()),
            Some(p) => serde_json::from_str::<Entries<'a>>(p.get())
                .ok()
                .map(|e| e.0),
        }
    }
}

/// Serializes stored properties as they are, or `{}` when there were none.
pub(super) fn properties_or_empty<S: Serializer>(
    p: &Option<&RawValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        Some(raw) => raw.serialize(s),
        None => s.serialize_map(Some(0))?.end(),
    }
}

/// A JSON object's entries, in order, borrowed where the text allows.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed unless it has escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each<'de>(PhantomData<&'de ()>);
        impl<'de> Visitor<'de> for Each<'de> {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Each(PhantomData))
    }
}

impl StoredContext<'_> {
    /// The host tool's name and version, from `name@version` split at the last `@`
    /// (a scoped npm name such as `@acme/cli@1.2.0` keeps its first one); a tool
    /// without a version gives its name alone.
    pub fn app(&self) -> Option<(&str, Option<&str>)> {
        let tool: &str = self.tool.as_deref().filter(|t| !t.is_empty())?;
        match tool.rsplit_once('@') {
            Some((name, version)) if !name.is_empty() => {
                Some((name, Some(version).filter(|v| !v.is_empty())))
            }
            _ => Some((tool, None)),
        }
    }

    /// The OS family in the vocabulary of the vendors' SDKs (posthog-python's
    /// `$os`: `Linux`, `Mac OS X`, `Windows`, `FreeBSD`; posthog-js's `Android`,
    /// `iOS`), from Rust's `std::env::consts::OS` as recording stored it. Another
    /// family is passed on as stored.
    pub fn os_name(&self) -> &str {
        match &*self.os {
            "linux" => "Linux",
            "macos" => "Mac OS X",
            "windows" => "Windows",
            "freebsd" => "FreeBSD",
            "android" => "Android",
            "ios" => "iOS",
            other => other,
        }
    }
}

/// `endpoint` with `suffix` (starting with `/`) appended to its path: with or
/// without a trailing slash, under a path prefix (a reverse proxy) too, the query
/// kept, as the SDKs join `host + path`.
pub(super) fn join(endpoint: &Url, suffix: &str) -> Url {
    let mut url = endpoint.clone();
    let path = format!("{}{suffix}", endpoint.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    url
}

/// A JSON body with its headers (for every JSON format, native included): gzipped
/// from [`GZIP_THRESHOLD`] bytes by default,
/// always with `compression: gzip`, never with `none` (a receiver that does not
/// take gzip, such as some self-hosted Segment-compatible servers).
pub(super) fn json_body(body: String, compression: Option<Compression>) -> Encoded {
    let mut headers = vec![("content-type", "application/json".to_string())];
    let gzip = match compression {
        Some(Compression::None) => false,
        Some(Compression::Gzip) => true,
        None => body.len() >= GZIP_THRESHOLD,
    };
    let body = if gzip {
        match delivery::gzip(body.as_bytes()) {
            Ok(gz) => {
                headers.push(("content-encoding", "gzip".to_string()));
                gz
            }
            Err(_) => body.into_bytes(),
        }
    } else {
        body.into_bytes()
    };
    Encoded { body, headers }
}

/// `{"batch":[e1,e2,…],` followed by `tail` (the rest of the envelope, ending in
/// `}`): each event already serialized, so its size was measured as sent.
pub(super) fn batch_body(events: impl Iterator<Item = String>, tail: &str) -> String {
    let mut out = String::from("{\"batch\":[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&e);
    }
    out.push_str("],");
    out.push_str(tail);
    out
}

/// Events mapped to measure them ([`super::Destination::event_len`]), kept until
/// the batch they are measured for is encoded right after, so each event is mapped
/// once (mapping parses the stored JSON and writes the vendor's: ~3 µs an event, half
/// a vendor flush's work when done twice). Keyed by the stored payload itself, so
/// only the very same text reuses a mapping.
#[derive(Default)]
pub(super) struct MapMemo(std::sync::Mutex<std::collections::HashMap<String, Option<String>>>);

/// A cache, not part of what a format is: a copy starts empty, and any two are equal.
impl Clone for MapMemo {
    fn clone(&self) -> Self {
        MapMemo::default()
    }
}

impl PartialEq for MapMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MapMemo {}

/// Most mappings kept: a little more than the largest batch planned at once.
const MEMO_MAX: usize = 20_000;

impl MapMemo {
    /// The mapped event for `payload` (`None`: it cannot be mapped), remembered.
    pub fn measure(&self, payload: &str, map: impl Fn(&str) -> Option<String>) -> usize {
        // A plan measures an event more than once (against the per-event and the
        // per-batch limit): mapped the first time only.
        if let Some(kept) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(payload)
        {
            return kept.as_ref().map_or(usize::MAX, String::len);
        }
        let mapped = map(payload);
        let len = mapped.as_ref().map_or(usize::MAX, String::len);
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= MEMO_MAX {
            // Events measured and never sent (dropped by the plan): start afresh.
            memo.clear();
        }
        memo.insert(payload.to_string(), mapped);
        len
    }

    /// The mapped event for `payload`, from the memo if it was measured, else mapped now.
    pub fn take(&self, payload: &str, map: impl Fn(&str) -> Option<String>) -> Option<String> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(payload);
        kept.unwrap_or_else(|| map(payload))
    }
}

/// Appends `s` to `out` as a JSON string literal.
pub(super) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A string as a JSON string literal.
pub(super) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn an_event_measured_then_encoded_is_mapped_once() {
        let calls = std::cell::Cell::new(0);
        let map = |p: &str| {
            calls.set(calls.get() + 1);
            (p != "garbage").then(|| format!("[{p}]"))
        };
        let memo = MapMemo::default();
        assert_eq!(memo.measure("a", map), 3);
        assert_eq!(memo.measure("garbage", map), usize::MAX);
        assert_eq!(calls.get(), 2);
        assert_eq!(memo.take("a", map).as_deref(), Some("[a]"));
        assert_eq!(memo.take("garbage", map), None);
        assert_eq!(calls.get(), 2, "the measured mappings were reused");
        // Taken once: the memo keeps nothing it already gave out.
        assert_eq!(memo.take("a", map).as_deref(), Some("[a]"));
        assert_eq!(calls.get(), 3);
        assert!(memo.0.lock().unwrap().is_empty());
    }

    /// A stored payload as recording writes it.
    pub fn payload(tool: Option<&str>, properties: Value) -> String {
        let mut context = serde_json::json!({
            "os": "linux",
            "os_release": "6.1.0-18-amd64",
            "arch": "x86_64",
            "machine_hash": "ab12",
            "docker": false,
            "ci": true,
        });
        if let Some(t) = tool {
            context["tool"] = t.into();
        }
        serde_json::json!({
            "id": "01900000-0000-7000-8000-000000000001",
            "event": "cli_invoked",
            "timestamp": "2026-01-02T03:04:05.678Z",
            "anonymous_id": "2ee2e145-632c-4523-8767-66f1112f4443",
            "session_id": "01900000-0000-7000-8000-0000000000aa",
            "context": context,
            "properties": properties,
        })
        .to_string()
    }

    #[test]
    fn the_tool_splits_at_its_last_at_sign() {
        let ctx = |t: &'static str| StoredContext {
            tool: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(ctx("mytool@1.2.3").app(), Some(("mytool", Some("1.2.3"))));
        assert_eq!(
            ctx("@acme/cli@2.0.0").app(),
            Some(("@acme/cli", Some("2.0.0")))
        );
        assert_eq!(ctx("bare").app(), Some(("bare", None)));
        assert_eq!(ctx("@scoped").app(), Some(("@scoped", None)));
        assert_eq!(ctx("trailing@").app(), Some(("trailing", None)));
        assert_eq!(StoredContext::default().app(), None);
    }

    #[test]
    fn os_families_use_the_sdks_names() {
        let ctx = |os: &'static str| StoredContext {
            os: os.into(),
            ..Default::default()
        };
        assert_eq!(ctx("linux").os_name(), "Linux");
        assert_eq!(ctx("macos").os_name(), "Mac OS X");
        assert_eq!(ctx("windows").os_name(), "Windows");
        assert_eq!(ctx("openbsd").os_name(), "openbsd");
    }

    #[test]
    fn paths_join_onto_any_endpoint() {
        for (endpoint, want) in [
            ("https://e.example.com", "https://e.example.com/batch/"),
            ("https://e.example.com/", "https://e.example.com/batch/"),
            (
                "https://e.example.com/ph",
                "https://e.example.com/ph/batch/",
            ),
            (
                "https://e.example.com/ph/",
                "https://e.example.com/ph/batch/",
            ),
            (
                "https://e.example.com/ph?x=1#f",
                "https://e.example.com/ph/batch/?x=1",
            ),
        ] {
            let url = Url::parse(endpoint).unwrap();
            assert_eq!(join(&url, "/batch/").as_str(), want, "{endpoint}");
        }
    }

    #[test]
    fn compression_follows_the_setting() {
        let enc = |n: usize, c| json_body("x".repeat(n), c);
        let gz = |e: &Encoded| e.headers.iter().any(|(k, _)| *k == "content-encoding");
        assert!(!gz(&enc(GZIP_THRESHOLD - 1, None)));
        assert!(gz(&enc(GZIP_THRESHOLD, None)));
        assert!(!gz(&enc(GZIP_THRESHOLD * 4, Some(Compression::None))));
        assert!(gz(&enc(10, Some(Compression::Gzip))));
    }

    #[test]
    fn a_payload_missing_fields_still_reads_and_garbage_does_not() {
        let s = Stored::parse(r#"{"id":"a","event":"e"}"#).unwrap();
        assert_eq!((&*s.id, &*s.session_id), ("a", ""));
        assert!(s.properties.is_none());
        assert!(Stored::parse(r#"{"properties":[1]}"#).is_none());
        let s = Stored::parse(r#"{"properties":{"a\"b":1,"c":{"d":[2]}}}"#).unwrap();
        let entries = s.property_entries().unwrap();
        let got: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (&**k, v.get())).collect();
        assert_eq!(got, [("a\"b", "1"), ("c", r#"{"d":[2]}"#)]);
        assert!(Stored::parse("[1]").is_none());
        assert!(Stored::parse("not json").is_none());
    }
}
