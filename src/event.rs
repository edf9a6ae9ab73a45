//! Events: what a host records, how names are validated, and the payload that is sent.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::context::Context;
use crate::error::{Kind, Result};
use crate::privacy::Scrubber;

/// Longest event name accepted, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Deepest nesting of arrays and objects accepted in properties. Scrubbing and
/// serializing recurse, so a host's accidentally self-similar value must be refused
/// before them, not overflow the stack.
pub const MAX_DEPTH: usize = 32;

/// Returns an error if `props` nest deeper than [`MAX_DEPTH`], or if their keys and
/// strings, as the host gave them, add up to more than `max_event_bytes`. The size is
/// judged before scrubbing: an oversized value must be refused with a clear error,
/// not silently shrunk to `<redacted>` and accepted. Error messages count only up to
/// the length they are truncated to (that truncation is documented). Checked without
/// recursion.
pub(crate) fn check_shape(props: &Map<String, Value>, max_event_bytes: u64) -> Result<()> {
    let budget = max_event_bytes;
    // Four bytes per character at most, once truncated.
    let error_cap = (crate::privacy::MAX_ERROR_CHARS * 4) as u64;
    let is_error = |k: &str| crate::privacy::is_error_key(k);
    let mut size: u64 = props.keys().map(|k| k.len() as u64).sum();
    // (value, depth, whether it is an error message the scrubber will truncate)
    let mut stack: Vec<(&Value, usize, bool)> =
        props.iter().map(|(k, v)| (v, 1, is_error(k))).collect();
    while let Some((v, depth, truncated)) = stack.pop() {
        let children: Box<dyn Iterator<Item = (&Value, bool)>> = match v {
            Value::Array(a) => Box::new(a.iter().map(|c| (c, false))),
            Value::Object(o) => {
                size += o.keys().map(|k| k.len() as u64).sum::<u64>();
                Box::new(o.iter().map(|(k, c)| (c, is_error(k))))
            }
            Value::String(s) if truncated => {
                size += (s.len() as u64).min(error_cap);
                continue;
            }
            Value::String(s) => {
                size += s.len() as u64;
                continue;
            }
            _ => continue,
        };
        if depth >= MAX_DEPTH {
            return Err(Kind::Properties(format!("nested deeper than {MAX_DEPTH} levels")).into());
        }
        stack.extend(children.map(|(c, t)| (c, depth + 1, t)));
    }
    if size > budget {
        return Err(Kind::EventTooLarge {
            size: size as usize,
            max: max_event_bytes as usize,
        }
        .into());
    }
    Ok(())
}

/// Drops a value without recursion, so a refused, very deep value cannot overflow
/// the stack on its way out either.
pub(crate) fn drop_flat(props: Map<String, Value>) {
    let mut stack: Vec<Value> = props.into_iter().map(|(_, v)| v).collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// A usage event a host records: a name and a JSON object of properties.
///
/// Every string property is scrubbed of personal data before it is stored (see
/// the scrubber); [`Event::unscrubbed_property`] is the explicit way out.
///
/// ```
/// use eventspool::Event;
/// let e = Event::new("job_finished")
///     .property("duration", 1234)
///     .property("success", true)
///     .property("error.message", "exit status 1");
/// assert_eq!(e.name(), "job_finished");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    name: String,
    properties: Map<String, Value>,
    unscrubbed: BTreeSet<String>,
}

impl Event {
    /// An event named `name` with no properties. The name is checked when recorded.
    pub fn new(name: impl Into<String>) -> Self {
        Event {
            name: name.into(),
            properties: Map::new(),
            unscrubbed: BTreeSet::new(),
        }
    }

    /// Adds (or replaces) a property. Keys may contain `.` and `-`, like `error.message`.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        self.unscrubbed.remove(&key);
        self.properties.insert(key, value.into());
        self
    }

    /// Adds a property whose strings are stored exactly as given, skipping the privacy
    /// scrubber. Use it only for values you know hold no personal data.
    pub fn unscrubbed_property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        self.unscrubbed.insert(key.clone());
        self.properties.insert(key, value.into());
        self
    }

    /// Adds every entry of a JSON object; fails unless `value` is an object.
    pub fn properties(mut self, value: Value) -> Result<Self> {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    self = self.property(k, v);
                }
                Ok(self)
            }
            other => Err(Kind::Properties(format!(
                "expected a JSON object, got {}",
                json_type(&other)
            ))
            .into()),
        }
    }

    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn properties_map(&self) -> &Map<String, Value> {
        &self.properties
    }

    pub(crate) fn is_unscrubbed(&self, key: &str) -> bool {
        self.unscrubbed.contains(key)
    }

    pub(crate) fn into_parts(self) -> (String, Map<String, Value>, BTreeSet<String>) {
        (self.name, self.properties, self.unscrubbed)
    }
}

/// Checks an event name: 1–64 characters of `[A-Za-z0-9_.:-]`, holding no secret
/// token, IP address, long hex or base64 run, or the current user's name (see
/// [`Scrubber::for_current_user`]). Names are sent unscrubbed, so such a name is
/// refused rather than mangled.
///
/// ```text
/// assert!(eventspool::validate_name("cli_invoked").is_ok());
/// assert!(eventspool::validate_name("has space").is_err());
/// assert!(eventspool::validate_name("ghp_16C7e42F292c6912E7710c838347Ae178B4a").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    validate_name_for(name, crate::privacy::current_user())
}

/// [`validate_name`] with the user's `scrubber`, which knows their names.
pub(crate) fn validate_name_for(name: &str, scrubber: &Scrubber) -> Result<()> {
    let why = if name.is_empty() {
        Some("must not be empty")
    } else if name.chars().count() > MAX_NAME_LEN {
        Some("longer than 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
    {
        Some("only letters, digits and _ . : - are allowed")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(Kind::EventName {
            name: truncate_for_message(name),
            why,
        }
        .into());
    }
    // The message shows the scrubbed name: it may be logged, and must not leak either.
    match scrubber.name_leak(name) {
        Some((what, shown)) => Err(Kind::EventNamePrivate { shown, what }.into()),
        None => Ok(()),
    }
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(80).collect()
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON document stored in the queue and sent to the endpoint, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// UUIDv7: time-ordered, and the receiver's dedupe key.
    pub id: String,
    /// The event name.
    pub event: String,
    /// When it was recorded, RFC 3339 UTC.
    pub timestamp: String,
    /// Random per install, persisted in `config.json`.
    pub anonymous_id: String,
    /// Random per host process.
    pub session_id: String,
    /// Where it was recorded.
    pub context: Context,
    /// The host's properties, scrubbed.
    pub properties: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "cli_invoked",
            "job.finished",
            "ns:event-1",
            &"x".repeat(64),
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "emoji🎉",
            "semi;colon",
            "a/b",
            &"x".repeat(65),
            "nul\0",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_holding_a_secret_or_personal_data_are_refused_without_echoing_it() {
        let s = Scrubber::new(Some("/home/zoe"), Some("zoe"));
        // (name, the part that must not be echoed, what the message says)
        for (bad, secret, what) in [
            (
                "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                "16C7e42F292c6912E7710c838347Ae178B4a",
                "a secret token",
            ),
            (
                "upload.sk-abc123def456ghi789jk",
                "abc123def456ghi789jk",
                "a secret token",
            ),
            ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE", "a secret token"),
            (
                "glpat-xYz12AbCdEfGhIjKlMnOp",
                "xYz12AbCdEfGhIjKlMnOp",
                "a secret token",
            ),
            ("connect_10.1.2.3", "10.1.2.3", "an IP address"),
            ("zoe:signed_in", "zoe", "the user's name"),
            (
                "blob.0123456789abcdef0123456789abcdef",
                "0123456789abcdef0123456789abcdef",
                "long hex",
            ),
        ] {
            let err = validate_name_for(bad, &s).unwrap_err();
            let msg = err.to_string();
            assert!(err.is_invalid_input(), "{msg}");
            assert!(
                msg.contains(what) && msg.contains("refused"),
                "{bad}: {msg}"
            );
            assert!(!msg.contains(secret), "{bad} echoed: {msg}");
        }
        for ok in [
            "cli_invoked",
            "auth:login",
            "token:refresh",
            "v1.2.3.4",
            "zoe_x",
        ] {
            assert!(validate_name_for(ok, &s).is_ok(), "{ok}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        let mut props = Map::new();
        props.insert("deep".into(), v);
        let err = check_shape(&props, 32 * 1024).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 32"), "{err}");
        drop_flat(props);
        let mut ok = Map::new();
        ok.insert("a".into(), serde_json::json!({"b": [1, {"c": 2}]}));
        assert!(check_shape(&ok, 32 * 1024).is_ok());
        ok.insert("big".into(), "z".repeat(200 * 1024).into());
        assert!(
            check_shape(&ok, 32 * 1024)
                .unwrap_err()
                .to_string()
                .contains("over the 32768-byte limit")
        );
    }

    #[test]
    fn properties_must_be_an_object() {
        assert!(
            Event::new("e")
                .properties(serde_json::json!({"a": 1}))
                .is_ok()
        );
        let err = Event::new("e")
            .properties(serde_json::json!([1]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid properties: expected a JSON object, got an array"
        );
    }
}
