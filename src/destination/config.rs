//! Which destination a spool sends to, as the host sets it in code, as `config.json`
//! keeps it (`"destination": {"kind": …, "endpoint": …, "api_key": …, "headers": {…}}`),
//! and as one flush overrides it; and the rule that resolves them into a [`Target`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Kind, Result};

/// A wire format eventspool speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// eventspool's own `{"batch": […], "sent_at": …}` body, posted to the endpoint.
    #[default]
    Native,
    /// PostHog's batch API (`POST {endpoint}/batch/`).
    Posthog,
    /// Segment's HTTP tracking API (`POST {endpoint}/v1/batch`), also spoken by
    /// RudderStack and Jitsu.
    Segment,
    /// OpenTelemetry logs over OTLP/HTTP (`POST {endpoint}/v1/logs`).
    Otlp,
}

impl DestinationKind {
    /// Every kind, in the order the help text lists them.
    pub const ALL: [DestinationKind; 4] = [
        DestinationKind::Native,
        DestinationKind::Posthog,
        DestinationKind::Segment,
        DestinationKind::Otlp,
    ];

    /// The kind's name as written in `config.json` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Native => "native",
            DestinationKind::Posthog => "posthog",
            DestinationKind::Segment => "segment",
            DestinationKind::Otlp => "otlp",
        }
    }

    /// The endpoint used when none is configured: the vendor's cloud, or for OTLP
    /// the collector's standard local port. The native kind has none.
    pub fn default_endpoint(self) -> Option<&'static str> {
        match self {
            DestinationKind::Native => None,
            DestinationKind::Posthog => Some("https://us.i.posthog.com"),
            DestinationKind::Segment => Some("https://api.segment.io"),
            DestinationKind::Otlp => Some("http://localhost:4318"),
        }
    }

    /// True if the kind authenticates with an API key (PostHog's project key,
    /// Segment's write key); the others take headers.
    pub fn needs_api_key(self) -> bool {
        matches!(self, DestinationKind::Posthog | DestinationKind::Segment)
    }
}

impl fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DestinationKind {
    type Err = crate::Error;

    /// Parses a kind name, case-insensitively.
    ///
    /// ```
    /// use eventspool::DestinationKind;
    /// assert_eq!("PostHog".parse::<DestinationKind>().unwrap(), DestinationKind::Posthog);
    /// assert!("kafka".parse::<DestinationKind>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        DestinationKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Kind::Destination(format!(
                    "unknown destination {s:?}; expected one of native, posthog, segment, otlp"
                ))
                .into()
            })
    }
}

/// How OTLP bodies are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// `application/x-protobuf` (the default, as in every OpenTelemetry SDK).
    #[default]
    #[serde(rename = "http/protobuf")]
    Protobuf,
    /// `application/json`, the protobuf JSON mapping.
    #[serde(rename = "http/json")]
    Json,
}

impl FromStr for OtlpProtocol {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "http/protobuf" | "protobuf" => Ok(OtlpProtocol::Protobuf),
            "http/json" | "json" => Ok(OtlpProtocol::Json),
            _ => Err(Kind::Destination(format!(
                "unknown OTLP protocol {s:?}; expected http/protobuf or http/json"
            ))
            .into()),
        }
    }
}

/// Whether request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `Content-Encoding: gzip`.
    Gzip,
    /// Sent as they are.
    None,
}

impl FromStr for Compression {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            _ => Err(Kind::Destination(format!(
                "unknown compression {s:?}; expected gzip or none"
            ))
            .into()),
        }
    }
}

/// Where and how a spool delivers: a kind, its endpoint, and its credentials.
/// Persisted in `config.json` under `destination`, so `spool flush` run later by hand
/// sends where the host does.
///
/// ```
/// use eventspool::{DestinationConfig, Spool};
/// let dir = tempfile::tempdir().unwrap();
/// let spool = Spool::builder("mytool")
///     .dir(dir.path())
///     .destination(DestinationConfig::posthog("phc_project_key").endpoint("https://eu.i.posthog.com"))
///     .build();
/// assert_eq!(spool.endpoint().as_deref(), Some("https://eu.i.posthog.com"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DestinationConfig {
    /// The wire format.
    #[serde(default)]
    pub kind: DestinationKind,
    /// The base URL; the kind adds its path (`/batch/`, `/v1/batch`, `/v1/logs`).
    /// `None`: the kind's default ([`DestinationKind::default_endpoint`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub endpoint: Option<String>,
    /// PostHog's project API key or Segment's write key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub api_key: Option<String>,
    /// Extra request headers, e.g. `authorization` for an OTLP collector.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub headers: BTreeMap<String, String>,
    /// OTLP only: protobuf (default) or JSON bodies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub protocol: Option<OtlpProtocol>,
    /// Body compression; `None`: the kind's default (gzip from 1 KiB; OTLP always).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compression: Option<Compression>,
    /// True when the user chose it (`spool config set`): the host's code no longer
    /// replaces it, until `spool config unset destination` gives it back.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub set_by_user: bool,
    /// Fields this version does not know, preserved on rewrite.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl DestinationConfig {
    /// A destination of this kind with its defaults.
    pub fn new(kind: DestinationKind) -> Self {
        DestinationConfig {
            kind,
            ..Default::default()
        }
    }

    /// The native format, posted to `endpoint`.
    pub fn native(endpoint: impl Into<String>) -> Self {
        Self::new(DestinationKind::Native).endpoint(endpoint)
    }

    /// PostHog, with the project's API key (`phc_…`). Default endpoint: PostHog's
    /// US cloud; set [`DestinationConfig::endpoint`] for the EU cloud or your own.
    pub fn posthog(api_key: impl Into<String>) -> Self {
        Self::new(DestinationKind::Posthog).api_key(api_key)
    }

    /// Segment (or RudderStack, Jitsu), with the source's write key.
    pub fn segment(write_key: impl Into<String>) -> Self {
        Self::new(DestinationKind::Segment).api_key(write_key)
    }

    /// An OpenTelemetry collector over OTLP/HTTP; default `http://localhost:4318`.
    pub fn otlp() -> Self {
        Self::new(DestinationKind::Otlp)
    }

    /// Sets the endpoint (base URL).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .insert(name.into().to_ascii_lowercase(), value.into());
        self
    }

    /// OTLP only: protobuf or JSON bodies.
    pub fn protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Body compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// The same destination with the secrets hidden, for `spool status`: the key
    /// shown by its first characters only, header values replaced.
    pub fn redacted(&self) -> DestinationConfig {
        let mut d = self.clone();
        d.api_key = d.api_key.as_deref().map(redact_key);
        for v in d.headers.values_mut() {
            *v = "…".into();
        }
        // Fields this version does not know may hold a misplaced credential.
        d.other.clear();
        d
    }
}

/// A key shown without giving it away: a short prefix (the vendor's marker, such as
/// `phc_`) and its length.
pub(crate) fn redact_key(key: &str) -> String {
    let shown: String = key
        .chars()
        .take(if key.len() >= 16 { 4 } else { 0 })
        .collect();
    format!("{shown}… ({} chars)", key.chars().count())
}

/// What one flush (or the `spool` command's flags and variables) puts in place of
/// the configured destination: each field given replaces the configured one, and a
/// different kind starts from that kind's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Overrides {
    pub kind: Option<DestinationKind>,
    pub endpoint: Option<String>,
    pub api_key: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Overrides {
    /// `self` (the environment's) with `top` (the flags) over it, field by field.
    pub fn under(self, top: &Overrides) -> Overrides {
        let mut headers = self.headers;
        headers.extend(top.headers.iter().cloned());
        Overrides {
            kind: top.kind.or(self.kind),
            endpoint: top.endpoint.clone().or(self.endpoint),
            api_key: top.api_key.clone().or(self.api_key),
            headers,
        }
    }
}

/// A destination resolved for sending: every field decided and checked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    pub kind: DestinationKind,
    /// Checked by [`crate::delivery::check_endpoint`].
    pub endpoint: String,
    pub api_key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub protocol: OtlpProtocol,
    pub compression: Option<Compression>,
}

// By hand, so that no `{:?}` of a target or a destination can log a key or a header
// value.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_deref().map(redact_key))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("protocol", &self.protocol)
            .field("compression", &self.compression)
            .finish()
    }
}

impl fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.redacted();
        f.debug_struct("DestinationConfig")
            .field("kind", &d.kind)
            .field("endpoint", &d.endpoint)
            .field("api_key", &d.api_key)
            .field("headers", &d.headers.keys().collect::<Vec<_>>())
            .field("protocol", &d.protocol)
            .field("compression", &d.compression)
            .field("set_by_user", &d.set_by_user)
            .finish()
    }
}

impl Target {
    /// The endpoint as a URL (checked when the target was resolved).
    pub fn url(&self) -> Result<Url> {
        crate::delivery::check_endpoint(&self.endpoint)
    }
}

/// `base` with `over` applied: each field given replaces the configured one, and a
/// different kind starts from that kind's defaults.
pub(crate) fn apply(base: DestinationConfig, over: &Overrides) -> DestinationConfig {
    let mut d = match over.kind {
        Some(kind) if kind != base.kind => DestinationConfig::new(kind),
        _ => base,
    };
    if let Some(e) = &over.endpoint {
        d.endpoint = Some(e.clone());
    }
    if let Some(k) = &over.api_key {
        d.api_key = Some(k.clone());
    }
    for (k, v) in &over.headers {
        d.headers.insert(k.to_ascii_lowercase(), v.clone());
    }
    d
}

impl From<&Target> for DestinationConfig {
    /// The configuration that resolves to exactly this target again (for a
    /// detached child, which must send where its parent decided).
    fn from(t: &Target) -> Self {
        DestinationConfig {
            kind: t.kind,
            endpoint: Some(t.endpoint.clone()),
            api_key: t.api_key.clone(),
            headers: t.headers.clone(),
            protocol: (t.kind == DestinationKind::Otlp).then_some(t.protocol),
            compression: t.compression,
            ..Default::default()
        }
    }
}

/// Resolves `base` (the configured destination) with `over` into a target, or
/// `Ok(None)` when no endpoint is known (the native kind without one).
pub(crate) fn resolve(base: DestinationConfig, over: &Overrides) -> Result<Option<Target>> {
    finish(apply(base, over))
}

/// Checks a destination and decides its defaults: `Ok(None)` when no endpoint is
/// known (the native kind without one).
pub(crate) fn finish(d: DestinationConfig) -> Result<Option<Target>> {
    // Everything but the endpoint first: a native destination without one is not
    // sent anywhere, yet a key or a header it holds must still be checked.
    let api_key = d.api_key.filter(|k| !k.is_empty());
    match (&api_key, d.kind.needs_api_key()) {
        (None, true) => {
            return Err(Kind::Destination(format!(
                "the {} destination needs an API key: pass --api-key, set SPOOL_API_KEY, or `spool config set api_key KEY`",
                d.kind
            ))
            .into());
        }
        (Some(_), false) => {
            return Err(Kind::Destination(format!(
                "the {} destination takes no API key; send credentials with --header NAME=VALUE",
                d.kind
            ))
            .into());
        }
        _ => {}
    }
    for (name, value) in &d.headers {
        check_header(name, value)?;
    }
    if d.protocol.is_some() && d.kind != crate::DestinationKind::Otlp {
        return Err(
            Kind::Destination(format!("a protocol applies only to otlp, not {}", d.kind)).into(),
        );
    }
    let Some(endpoint) = d
        .endpoint
        .clone()
        .or_else(|| d.kind.default_endpoint().map(str::to_string))
    else {
        return Ok(None);
    };
    crate::delivery::check_endpoint(&endpoint)?;
    Ok(Some(Target {
        kind: d.kind,
        endpoint,
        api_key,
        headers: d.headers,
        protocol: d.protocol.unwrap_or_default(),
        compression: d.compression,
    }))
}

/// Checks one extra header: a valid HTTP name and value, and not one the format
/// sets itself.
pub(crate) fn check_header(name: &str, value: &str) -> Result<()> {
    // Named up to a `:` or a space only: `Authorization: Bearer x=y` must not put the
    // token in an error line.
    let shown = name.split([':', ' ']).next().unwrap_or_default();
    let bad = |why: String| Kind::Destination(format!("header {shown:?}: {why}"));
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad("not a valid header name".into()))?;
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| bad("not a valid header value".into()))?;
    if matches!(
        name.to_ascii_lowercase().as_str(),
        "content-type" | "content-encoding" | "content-length" | "host" | "transfer-encoding"
    ) {
        return Err(bad("set by the destination itself".into()).into());
    }
    Ok(())
}

/// Parses `NAME=VALUE` (from `--header`).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn parse_header(arg: &str) -> Result<(String, String)> {
    // Never echo the argument: a curl-style `Authorization: Bearer …` holds a secret.
    let (name, value) = arg.split_once('=').ok_or_else(|| {
        let name = arg.split([':', ' ']).next().unwrap_or_default();
        Kind::Destination(format!(
            "header {name:?}: expected NAME=VALUE (the value is not shown)"
        ))
    })?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
    check_header(&name, &value)?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over() -> Overrides {
        Overrides::default()
    }

    #[test]
    fn a_native_destination_without_an_endpoint_resolves_to_nothing() {
        assert_eq!(
            resolve(DestinationConfig::default(), &over()).unwrap(),
            None
        );
    }

    #[test]
    fn vendor_kinds_default_to_their_cloud_and_need_a_key() {
        let t = resolve(DestinationConfig::segment("wk"), &over())
            .unwrap()
            .unwrap();
        assert_eq!(t.endpoint, "https://api.segment.io");
        let e = resolve(DestinationConfig::new(DestinationKind::Posthog), &over()).unwrap_err();
        assert!(e.to_string().contains("needs an API key"), "{e}");
        let e = resolve(DestinationConfig::otlp().api_key("k"), &over()).unwrap_err();
        assert!(e.to_string().contains("takes no API key"), "{e}");
    }

    #[test]
    fn another_kind_starts_from_its_own_defaults_and_the_same_kind_fills_gaps() {
        let base = DestinationConfig::native("https://e.example.com/in").header("x-a", "1");
        let switched = Overrides {
            kind: Some(DestinationKind::Otlp),
            ..over()
        };
        let t = resolve(base.clone(), &switched).unwrap().unwrap();
        assert_eq!(t.endpoint, "http://localhost:4318");
        assert!(t.headers.is_empty());
        let same = Overrides {
            kind: Some(DestinationKind::Native),
            headers: vec![("X-B".into(), "2".into())],
            ..over()
        };
        let t = resolve(base, &same).unwrap().unwrap();
        assert_eq!(t.endpoint, "https://e.example.com/in");
        assert_eq!(t.headers.len(), 2);
        assert_eq!(t.headers["x-b"], "2");
    }

    #[test]
    fn headers_and_endpoints_are_checked() {
        assert!(parse_header("authorization=Bearer x").is_ok());
        assert!(parse_header("no-equals").is_err());
        assert!(parse_header("bad name=x").is_err());
        assert!(parse_header("content-type=text/plain").is_err());
        let plain = Overrides {
            endpoint: Some("http://collector.example.com".into()),
            ..over()
        };
        assert!(resolve(DestinationConfig::otlp(), &plain).is_err());
    }

    #[test]
    fn status_never_shows_a_whole_key_or_a_header_value() {
        let d = DestinationConfig::posthog("phc_abcdefghijklmnopqrstuvwxyz")
            .header("authorization", "Bearer secret");
        let r = d.redacted();
        assert_eq!(r.api_key.as_deref(), Some("phc_… (30 chars)"));
        assert_eq!(r.headers["authorization"], "…");
        assert_eq!(redact_key("short"), "… (5 chars)");
    }

    #[test]
    fn the_config_json_shape_round_trips() {
        let text = r#"{"kind":"otlp","endpoint":"http://127.0.0.1:4318","headers":{"authorization":"k"},"protocol":"http/json","future":1}"#;
        let d: DestinationConfig = serde_json::from_str(text).unwrap();
        assert_eq!(d.kind, DestinationKind::Otlp);
        assert_eq!(d.protocol, Some(OtlpProtocol::Json));
        assert_eq!(serde_json::to_string(&d).unwrap(), text);
    }
}
