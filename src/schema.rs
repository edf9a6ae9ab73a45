//! What an app sends, generated from the code that builds its events, so the list a
//! tool publishes to its users cannot drift from what it collects.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{Event, json_type};
use crate::privacy::is_error_key;

/// One field of the events an app sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Field {
    /// Dotted path in the payload, e.g. `context.os` or `properties.duration`.
    pub name: String,
    /// JSON type(s): `string`, `number`, `boolean`, `object`, `array`, `null`.
    pub kind: String,
    /// The events that carry it; empty means every event.
    pub events: Vec<String>,
    /// What it is and how it is treated.
    pub notes: String,
    /// Why the app collects it, in the host's words (see [`SpoolBuilder::purpose`]);
    /// `None` where the host gave none. A property several events carry with
    /// different purposes lists each as `event: purpose`.
    ///
    /// [`SpoolBuilder::purpose`]: crate::SpoolBuilder::purpose
    pub purpose: Option<String>,
}

/// Every field an app sends: the envelope and context every event has, then the
/// properties of each event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Schema {
    /// The app name.
    pub app: String,
    /// The event names, in the order first seen.
    pub events: Vec<String>,
    /// The fields, envelope first.
    pub fields: Vec<Field>,
    /// What the app never collects, in its own words (see
    /// [`SpoolBuilder::never_collected`]); empty when it published no such list.
    ///
    /// [`SpoolBuilder::never_collected`]: crate::SpoolBuilder::never_collected
    pub never_collected: Vec<String>,
}

/// What a host says about its events beyond the samples: the purpose of each
/// `(event, property)` and what it never collects. Kept by the builder, applied by
/// [`Spool::schema`](crate::Spool::schema).
#[derive(Debug, Clone, Default)]
pub(crate) struct Annotations {
    /// `(event, property, purpose)`, in the order given; a later entry for the same
    /// pair replaces an earlier one.
    pub(crate) purposes: Vec<(String, String, String)>,
    pub(crate) never_collected: Vec<String>,
}

impl Annotations {
    pub(crate) fn set_purpose(&mut self, event: &str, field: &str, purpose: &str) {
        self.purposes
            .retain(|(e, f, _)| !(e == event && f == field));
        self.purposes
            .push((event.to_string(), field.to_string(), purpose.to_string()));
    }

    fn purpose(&self, event: &str, field: &str) -> Option<&str> {
        self.purposes
            .iter()
            .find(|(e, f, _)| e == event && f == field)
            .map(|(_, _, p)| p.as_str())
    }
}

/// The envelope and context fields every event carries, with what each is.
pub(crate) fn common(app: &str) -> Vec<Field> {
    let f = |name: &str, kind: &str, notes: String| Field {
        name: name.into(),
        kind: kind.into(),
        events: Vec::new(),
        notes,
        purpose: None,
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
                "HMAC-SHA256 of the hostname keyed by \"{app}\": the hostname is not sent, and the value differs per app; someone who knows the app name and guesses the hostname can confirm the guess"
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
                purpose: None,
            });
        }
        Schema {
            app: app.to_string(),
            events,
            fields,
            never_collected: Vec::new(),
        }
    }

    /// This schema with the host's purposes on its properties and its "never
    /// collected" list. A purpose for a property no event carries has no row to go
    /// in, and is left out.
    pub(crate) fn annotate(mut self, notes: &Annotations) -> Schema {
        for field in &mut self.fields {
            let Some(key) = field.name.strip_prefix("properties.") else {
                continue;
            };
            let given: Vec<(&str, &str)> = field
                .events
                .iter()
                .filter_map(|e| notes.purpose(e, key).map(|p| (e.as_str(), p)))
                .collect();
            let all_same = given.windows(2).all(|w| w[0].1 == w[1].1);
            field.purpose = match given.as_slice() {
                [] => None,
                [(_, p), ..] if all_same => Some((*p).to_string()),
                many => Some(
                    many.iter()
                        .map(|(e, p)| format!("{e}: {p}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
        }
        self.never_collected = notes.never_collected.clone();
        self
    }

    /// A Markdown table to publish: field, type, events, purpose (`—` where the host
    /// gave none), notes; then what the app never collects, when it said. Names come
    /// from what a host sent, so every cell is escaped: a `|` or a newline cannot
    /// break the table, and a terminal escape sequence is shown, never obeyed.
    pub fn to_markdown(&self) -> String {
        let app = cell(&self.app);
        let mut out = if self.events.is_empty() {
            format!(
                "No {app} events are known yet: the queue is empty and {app} describes none.\n\nThe fields every event carries:\n\n"
            )
        } else {
            let names: Vec<String> = self.events.iter().map(|e| code(e)).collect();
            format!(
                "Events {app} sends: {}.\n\nTheir fields:\n\n",
                names.join(", ")
            )
        };
        out.push_str(
            "| field | type | events | purpose | notes |\n| --- | --- | --- | --- | --- |\n",
        );
        for f in &self.fields {
            let events = if f.events.is_empty() {
                "all".to_string()
            } else {
                f.events
                    .iter()
                    .map(|e| cell(e))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&f.name),
                cell(&f.kind),
                events,
                f.purpose.as_deref().map_or_else(|| "—".to_string(), cell),
                cell(&f.notes)
            ));
        }
        if !self.never_collected.is_empty() {
            out.push_str(&format!("\nWhat {app} never collects:\n\n"));
            for item in &self.never_collected {
                out.push_str(&format!("- {}\n", cell(item)));
            }
        }
        out
    }
}

/// Text made safe for one Markdown table cell printed on a terminal: `|` escaped,
/// line breaks as spaces, control and bidirectional-override characters written as
/// `\u{…}` escapes.
pub(crate) fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() || is_invisible_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// [`cell`] text as a Markdown code span, fenced with more backticks than any run
/// inside it, so a backtick in a name cannot end the span early.
pub(crate) fn code(s: &str) -> String {
    let text = cell(s);
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// Characters that change how a line is displayed without showing themselves
/// (bidirectional overrides, zero-width characters, the byte-order mark).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
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

    #[test]
    fn markdown_cells_are_escaped() {
        let samples = [Event::new("job")
            .property("a|b", 1)
            .property("line\nbreak", 1)
            .property("esc\u{1b}[31mred", 1)
            .property("rtl\u{202e}txt", 1)
            .property("tick`s", 1)];
        let md = Schema::from_samples("jobrunner", &samples).to_markdown();
        assert!(md.contains("`properties.a\\|b`"), "{md}");
        assert!(md.contains("`properties.line break`"), "{md}");
        assert!(md.contains("esc\\u{1b}[31mred"), "{md}");
        assert!(md.contains("rtl\\u{202e}txt"), "{md}");
        assert!(md.contains("``properties.tick`s``"), "{md}");
        assert!(!md.contains('\u{1b}') && !md.contains('\u{202e}'));
        // Every table row still has exactly six unescaped pipes.
        for row in md.lines().filter(|l| l.starts_with('|')) {
            let pipes = row.replace("\\|", "").matches('|').count();
            assert_eq!(pipes, 6, "{row}");
        }
    }

    #[test]
    fn purposes_and_never_collected_are_published() {
        let samples = [
            Event::new("setup_completed")
                .property("framework", "nextjs")
                .property("adapters_detected", vec!["prisma"]),
            Event::new("session")
                .property("framework", "nextjs")
                .property("adapters_detected", vec!["prisma"])
                .property("request_count", 1),
        ];
        let mut notes = Annotations::default();
        notes.set_purpose("setup_completed", "framework", "Diagnose setup failures");
        notes.set_purpose("session", "framework", "Prioritize framework support");
        notes.set_purpose("setup_completed", "adapters_detected", "Adapter adoption");
        notes.set_purpose("session", "adapters_detected", "old wording");
        notes.set_purpose("session", "adapters_detected", "Adapter adoption");
        notes.set_purpose("session", "not_sent", "has no row");
        notes.never_collected = vec!["Source code | file contents".into(), "IP addresses".into()];
        let s = Schema::from_samples("devtool", &samples).annotate(&notes);
        let get = |n: &str| s.fields.iter().find(|f| f.name == n).unwrap().clone();
        assert_eq!(
            get("properties.framework").purpose.as_deref(),
            Some("setup_completed: Diagnose setup failures; session: Prioritize framework support")
        );
        assert_eq!(
            get("properties.adapters_detected").purpose.as_deref(),
            Some("Adapter adoption"),
            "the same purpose twice is given once; a later one replaces an earlier"
        );
        assert_eq!(get("properties.request_count").purpose, None);
        assert_eq!(get("context.os").purpose, None);
        assert!(!s.fields.iter().any(|f| f.name.contains("not_sent")));

        let md = s.to_markdown();
        assert!(
            md.contains("| field | type | events | purpose | notes |"),
            "{md}"
        );
        assert!(
            md.contains("| `properties.adapters_detected` | array | setup_completed, session | Adapter adoption |"),
            "{md}"
        );
        assert!(
            md.contains("| `properties.request_count` | number | session | — |"),
            "{md}"
        );
        assert!(
            md.ends_with(
                "What devtool never collects:\n\n- Source code \\| file contents\n- IP addresses\n"
            ),
            "{md}"
        );

        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["never_collected"][1], "IP addresses");
        let rc = json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "properties.request_count")
            .unwrap();
        assert!(rc["purpose"].is_null(), "{rc}");

        // Without annotations the page has no list at all.
        let plain = Schema::from_samples("devtool", &samples).to_markdown();
        assert!(!plain.contains("never collects"), "{plain}");
    }

    #[test]
    fn empty_schema_says_so() {
        let md = Schema::from_payloads("spool", std::iter::empty()).to_markdown();
        assert!(md.starts_with("No spool events are known yet"), "{md}");
        assert!(!md.contains("sends: ."), "{md}");
        assert!(md.contains("`context.machine_hash`"), "{md}");
    }
}
