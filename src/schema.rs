//! What an app sends, generated from the code that builds its events, so the list a
//! tool publishes to its users cannot drift from what it collects.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{Event, json_type};
use crate::privacy::is_error_key;

/// One field of the events an app sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// Dotted path in the payload, e.g. `context.os` or `properties.duration`.
    pub name: String,
    /// JSON type(s): `string`, `number`, `boolean`, `object`, `array`, `null`.
    pub kind: String,
    /// The events that carry it; empty means every event.
    pub events: Vec<String>,
    /// What it is and how it is treated.
    pub notes: String,
}

/// Every field an app sends: the envelope and context every event has, then the
/// properties of each event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schema {
    /// The app name.
    pub app: String,
    /// The event names, in the order first seen.
    pub events: Vec<String>,
    /// The fields, envelope first.
    pub fields: Vec<Field>,
}

fn common(app: &str) -> Vec<Field> {
    let f = |name: &str, kind: &str, notes: String| Field {
        name: name.into(),
        kind: kind.into(),
        events: Vec::new(),
        notes,
    };
    vec![
        f(
            "id",
            "string",
            "UUIDv7 of the event; lets the receiver drop duplicates".into(),
        ),
        f("event", "string", "the event name".into()),
        f(
            "timestamp",
            "string",
            "when it was recorded, RFC 3339 UTC".into(),
        ),
        f(
            "anonymous_id",
            "string",
            format!("random UUID created once per install, kept in {app}'s config.json"),
        ),
        f("session_id", "string", "random UUID per process".into()),
        f(
            "context.tool",
            "string",
            format!("{app}'s name@version (when set)"),
        ),
        f("context.os", "string", "operating system family".into()),
        f(
            "context.os_release",
            "string",
            "kernel or OS release".into(),
        ),
        f("context.arch", "string", "CPU architecture".into()),
        f(
            "context.machine_hash",
            "string",
            format!(
                "HMAC-SHA256 of the hostname keyed by \"{app}\": not reversible, not joinable across apps"
            ),
        ),
        f(
            "context.docker",
            "boolean",
            "whether it runs in a container".into(),
        ),
        f("context.ci", "boolean", "whether it runs under CI".into()),
    ]
}

impl Schema {
    /// The schema of `app` from sample events built by the same code as the real
    /// ones: their property names and types, and whether each is scrubbed.
    pub fn from_samples(app: &str, samples: &[Event]) -> Schema {
        let mut props: BTreeMap<String, (Vec<String>, Vec<String>, bool)> = BTreeMap::new();
        let mut events = Vec::new();
        for e in samples {
            add_unique(&mut events, e.name());
            for (key, value) in e.properties_map() {
                let entry = props
                    .entry(key.clone())
                    .or_insert_with(|| (Vec::new(), Vec::new(), true));
                add_unique(&mut entry.0, kind(value));
                add_unique(&mut entry.1, e.name());
                entry.2 &= !e.is_unscrubbed(key);
            }
        }
        Self::build(app, events, props, true)
    }

    /// The schema as seen in queued payloads (for apps that gave no samples).
    pub fn from_payloads<'a>(app: &str, payloads: impl IntoIterator<Item = &'a str>) -> Schema {
        let mut props: BTreeMap<String, (Vec<String>, Vec<String>, bool)> = BTreeMap::new();
        let mut events = Vec::new();
        for p in payloads {
            let Ok(v) = serde_json::from_str::<Value>(p) else {
                continue;
            };
            let name = v["event"].as_str().unwrap_or("?").to_string();
            add_unique(&mut events, &name);
            let empty = Map::new();
            for (key, value) in v["properties"].as_object().unwrap_or(&empty) {
                let entry = props
                    .entry(key.clone())
                    .or_insert_with(|| (Vec::new(), Vec::new(), true));
                add_unique(&mut entry.0, kind(value));
                add_unique(&mut entry.1, &name);
            }
        }
        Self::build(app, events, props, false)
    }

    fn build(
        app: &str,
        events: Vec<String>,
        props: BTreeMap<String, (Vec<String>, Vec<String>, bool)>,
        known: bool,
    ) -> Schema {
        let mut fields = common(app);
        for (key, (kinds, events, scrubbed)) in props {
            let text = kinds
                .iter()
                .any(|k| k == "string" || k == "array" || k == "object");
            let mut notes = match (known, text, scrubbed) {
                (false, _, _) => "seen in the queue".to_string(),
                (true, false, _) => String::new(),
                (true, true, true) => "scrubbed of personal data before it is stored".to_string(),
                (true, true, false) => {
                    "sent exactly as the app gives it (not scrubbed)".to_string()
                }
            };
            if text && is_error_key(&key) {
                notes.push_str("; truncated to 1000 characters");
            }
            fields.push(Field {
                name: format!("properties.{key}"),
                kind: kinds.join(" or "),
                events,
                notes,
            });
        }
        Schema {
            app: app.to_string(),
            events,
            fields,
        }
    }

    /// A Markdown table to publish: field, type, events, notes.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Events {app} sends: {}.\n\nTheir fields:\n\n| field | type | events | notes |\n| --- | --- | --- | --- |\n",
            self.events
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", "),
            app = self.app
        );
        for f in &self.fields {
            let events = if f.events.is_empty() {
                "all".to_string()
            } else {
                f.events.join(", ")
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                f.name, f.kind, events, f.notes
            ));
        }
        out
    }
}

fn kind(v: &Value) -> &'static str {
    match json_type(v) {
        "a boolean" => "boolean",
        "a number" => "number",
        "a string" => "string",
        "an array" => "array",
        "an object" => "object",
        _ => "null",
    }
}

fn add_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_give_names_types_events_and_scrubbing() {
        let samples = [
            Event::new("job")
                .property("duration", 3)
                .property("error.message", "x")
                .unscrubbed_property("host.machine-hash", "ab"),
            Event::new("session").property("duration", "3s"),
        ];
        let s = Schema::from_samples("jobrunner", &samples);
        let get = |n: &str| s.fields.iter().find(|f| f.name == n).unwrap().clone();
        assert_eq!(get("properties.duration").kind, "number or string");
        assert_eq!(get("properties.duration").events, ["job", "session"]);
        assert!(get("properties.error.message").notes.contains("truncated"));
        assert!(
            get("properties.host.machine-hash")
                .notes
                .contains("not scrubbed")
        );
        assert!(
            s.to_markdown()
                .contains("| `context.machine_hash` | string | all |")
        );
    }
}
