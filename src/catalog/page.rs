//! The page a tool publishes, generated from its catalog: the envelope and context
//! once, a table per event, what is never collected, where it is sent, how to opt
//! out and how to check. And `schema --check`: what is queued (and the destination)
//! against the catalog.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::enforce::Rules;
use super::{Catalog, DeclaredProperty, PropertyType};
use crate::schema::{cell, code};

/// The published page: everything `spool schema` prints from a catalog, and its
/// `--json` form.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Page {
    /// The app name.
    pub app: String,
    /// The fields every event carries (envelope and context), once.
    pub envelope: Vec<PageField>,
    /// Each declared event with its fields, in the catalog's order.
    pub events: Vec<PageEvent>,
    /// What the app never collects.
    pub never_collected: Vec<String>,
    /// Where it is sent.
    pub sent_to: SentTo,
    /// How to opt out, with this app's real variable names.
    pub opt_out: OptOut,
    /// How to check the choice.
    pub check: Check,
}

/// One event's section of the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PageEvent {
    /// The event name.
    pub name: String,
    /// What it is and when it is sent.
    pub description: String,
    /// `usage` or `error`.
    pub category: String,
    /// `never` or the date (`YYYY-MM-DD`) from which it is no longer recorded.
    pub expires: String,
    /// Its properties.
    pub fields: Vec<PageField>,
}

/// One row of a table: Field | Type | Purpose | Example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PageField {
    /// The field's name: dotted for the envelope's context (`context.os`), as
    /// declared for a property (`error.message`).
    pub field: String,
    /// Its type, with an `enum`'s values and a length limit (`string, at most 1000
    /// characters`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Why it is collected; `None` where nobody said.
    pub purpose: Option<String>,
    /// An example value as text; `None` where the catalog gives none.
    pub example: Option<String>,
}

/// Where events are sent: the configured destination and what the catalog says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SentTo {
    /// The endpoint a flush sends to now, if one is configured.
    pub endpoint: Option<String>,
    /// The destination's kind (`native`, `posthog`, `segment`, `otlp`).
    pub kind: String,
    /// Where the catalog says data goes (`sent_to`), if it says.
    pub catalog: Option<String>,
}

/// How to opt out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OptOut {
    /// Settings in the environment that each turn telemetry off, e.g.
    /// `JOBRUNNER_TELEMETRY=false`.
    pub environment: Vec<String>,
    /// The command that turns it off for good (and purges what is queued).
    pub command: String,
}

/// How to check the choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// The settings file whose `telemetry` field holds the choice (the home
    /// directory written `~`).
    pub settings_file: Option<String>,
    /// The field to read.
    pub field: String,
    /// The command that says whether telemetry is on and which rule decided.
    pub status_command: String,
}

/// One difference `schema --check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Difference {
    /// What differs, naming the event and field, or the destination.
    pub what: String,
    /// How many queued events show it (0 for the destination).
    pub queued: u64,
    /// One queued event that shows it (`spool show ID`), if any.
    pub example_id: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.example_id, self.queued) {
            (Some(id), 1) => write!(f, "{} (queued event {id})", self.what),
            (Some(id), n) => write!(f, "{} ({n} queued events, e.g. {id})", self.what),
            (None, _) => f.write_str(&self.what),
        }
    }
}

/// What the page needs to know about the spool besides the catalog.
pub(crate) struct Where {
    pub(crate) endpoint: Option<String>,
    pub(crate) kind: String,
    pub(crate) settings_file: Option<String>,
}

impl Page {
    pub(crate) fn new(catalog: &Catalog, at: Where) -> Page {
        let app = catalog.app.as_str();
        let prefix = crate::consent::env_prefix(app);
        Page {
            app: app.to_string(),
            envelope: crate::schema::common(app)
                .into_iter()
                .map(|f| PageField {
                    example: envelope_example(&f.name).map(str::to_string),
                    kind: if f.kind == "boolean" {
                        "bool".into()
                    } else {
                        f.kind
                    },
                    purpose: Some(f.notes),
                    field: f.name,
                })
                .collect(),
            events: catalog
                .events
                .iter()
                .map(|e| PageEvent {
                    name: e.name.clone(),
                    description: e.description.clone(),
                    category: e.category.as_str().to_string(),
                    expires: e.expires.to_string(),
                    fields: e.properties.iter().map(field).collect(),
                })
                .collect(),
            never_collected: catalog.never_collected.clone(),
            sent_to: SentTo {
                endpoint: at.endpoint,
                kind: at.kind,
                catalog: catalog.sent_to.clone(),
            },
            opt_out: OptOut {
                environment: vec![
                    format!("{prefix}_TELEMETRY=false"),
                    format!("{prefix}_TELEMETRY_DISABLED=1"),
                    "DO_NOT_TRACK=1".to_string(),
                ],
                command: format!("spool --app {app} disable"),
            },
            check: Check {
                settings_file: at.settings_file,
                field: "telemetry".into(),
                status_command: format!("spool --app {app} status"),
            },
        }
    }

    /// The page as Markdown. Every cell is escaped (see [`crate::Schema::to_markdown`]):
    /// a catalog's text cannot break a table or send a terminal escape.
    pub fn to_markdown(&self) -> String {
        let app = cell(&self.app);
        let mut out = format!("# What {app} collects\n\n");
        out.push_str(&format!(
            "{app} sends small anonymous usage events, each one of the events below with only the fields listed. \
             This page is generated from its catalog, which recording enforces: an event or field it does not list is refused before it is stored.\n\n"
        ));
        out.push_str("## Sent with every event\n\n");
        table(&mut out, &self.envelope);
        for e in &self.events {
            out.push_str(&format!(
                "\n## {} ({})\n\n",
                code(&e.name),
                cell(&e.category)
            ));
            out.push_str(&cell(&e.description));
            if e.expires != "never" {
                out.push_str(&format!(" No longer recorded from {}.", cell(&e.expires)));
            }
            out.push_str("\n\n");
            if e.fields.is_empty() {
                out.push_str("No fields beyond those sent with every event.\n");
            } else {
                table(&mut out, &e.fields);
            }
        }
        out.push_str("\n## Never collected\n\n");
        if self.never_collected.is_empty() {
            out.push_str("Anything not listed above.\n");
        }
        for item in &self.never_collected {
            out.push_str(&format!("- {}\n", cell(item)));
        }
        out.push_str("\n## Where it is sent\n\n");
        let s = &self.sent_to;
        match (&s.endpoint, &s.catalog) {
            (Some(e), _) => {
                out.push_str(&format!("To {} ({} format).", cell(e), cell(&s.kind)));
                if let Some(c) = s.catalog.as_ref().filter(|c| !same_place(c, e)) {
                    out.push_str(&format!(" The catalog says {}.", cell(c)));
                }
                out.push('\n');
            }
            (None, Some(c)) => out.push_str(&format!("To {}.\n", cell(c))),
            (None, None) => out.push_str("Nowhere yet: no destination is configured.\n"),
        }
        out.push_str(&format!(
            "Events wait in a local queue until they are sent; `spool --app {app} list` shows them exactly as they will be sent. A failed send is retried later and never changes what {app} does.\n"
        ));
        out.push_str("\n## How to opt out\n\nSet any of these in the environment:\n\n");
        for v in &self.opt_out.environment {
            out.push_str(&format!("- {}\n", code(v)));
        }
        out.push_str(&format!(
            "\nor turn telemetry off for good with {}, which also deletes what is queued.\n",
            code(&self.opt_out.command)
        ));
        out.push_str("\n## How to check\n\n");
        let file = self
            .check
            .settings_file
            .as_deref()
            .map_or_else(|| code("config.json"), code);
        out.push_str(&format!(
            "Read {file}: its {} field is `false` once you opted out (`true` if you opted in; no field until you decide). {} says whether telemetry is on and which rule decided.\n",
            code(&self.check.field),
            code(&self.check.status_command)
        ));
        out
    }
}

fn table(out: &mut String, fields: &[PageField]) {
    out.push_str("| Field | Type | Purpose | Example |\n| --- | --- | --- | --- |\n");
    let dash = || "—".to_string();
    for f in fields {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            code(&f.field),
            cell(&f.kind),
            f.purpose.as_deref().map_or_else(dash, cell),
            f.example.as_deref().map_or_else(dash, cell)
        ));
    }
}

fn field(p: &DeclaredProperty) -> PageField {
    let mut kind = match &p.kind {
        PropertyType::Enum(values) => format!("enum: {}", values.join(", ")),
        other => other.name().to_string(),
    };
    if let Some(n) = p.max_length {
        let each = if p.kind == PropertyType::StringList {
            " each"
        } else {
            ""
        };
        kind.push_str(&format!(", at most {n} characters{each}"));
    }
    PageField {
        field: p.name.clone(),
        kind,
        purpose: Some(p.purpose.clone()).filter(|s| !s.is_empty()),
        example: p.example.as_ref().map(|v| example_text(&p.kind, v)),
    }
}

/// An example as the page shows it: a string as itself, several examples joined by
/// commas, a list as JSON.
fn example_text(kind: &PropertyType, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if *kind != PropertyType::StringList => items
            .iter()
            .map(|i| example_text(kind, i))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn envelope_example(name: &str) -> Option<&'static str> {
    Some(match name {
        "id" | "session_id" => "01936c2e-7d1a-7b3c-9f4e-2a5b6c7d8e9f",
        "timestamp" => "2026-03-01T10:04:05.123Z",
        "anonymous_id" => "5f0c8e7a-3b2d-4c1e-9a8b-7c6d5e4f3a2b",
        "context.os" => "linux, macos, windows",
        "context.arch" => "x86_64, aarch64",
        "context.docker" | "context.ci" => "true, false",
        _ => return None,
    })
}

/// Returns true if and only if two endpoints name the same place (a trailing `/`
/// aside).
fn same_place(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Every difference between the queued payloads (`(id, created_at ms, payload)`)
/// and the catalog, the same one on many events given once with a count; then the
/// destination, if one is configured and the catalog names another.
pub(crate) fn differences<'a>(
    catalog: &Catalog,
    rules: &Rules,
    queued: impl IntoIterator<Item = (&'a str, i64, &'a str)>,
    endpoint: Option<&str>,
) -> Vec<Difference> {
    let mut found: BTreeMap<String, Difference> = BTreeMap::new();
    let mut order = Vec::new();
    for (id, created_at, payload) in queued {
        let parsed: Option<Value> = serde_json::from_str(payload).ok();
        let problems = match parsed
            .as_ref()
            .and_then(|v| Some((v["event"].as_str()?, v)))
        {
            None => vec![format!("a queued payload is not an event")],
            Some((name, v)) => {
                let empty = serde_json::Map::new();
                let props = v["properties"].as_object().unwrap_or(&empty);
                // Judged at the time it was recorded: an event queued before its
                // expiry date was allowed then.
                rules
                    .problems(name, props, created_at)
                    .into_iter()
                    .map(|r| r.to_string())
                    .collect()
            }
        };
        for what in problems {
            let d = found.entry(what.clone()).or_insert_with(|| {
                order.push(what.clone());
                Difference {
                    what,
                    queued: 0,
                    example_id: Some(id.to_string()),
                }
            });
            d.queued += 1;
        }
    }
    let mut out: Vec<Difference> = order.into_iter().filter_map(|w| found.remove(&w)).collect();
    if let (Some(endpoint), Some(said)) = (endpoint, catalog.sent_to.as_deref()) {
        if !same_place(endpoint, said) {
            out.push(Difference {
                what: format!(
                    "destination: events are sent to {endpoint}, and the catalog says {said}"
                ),
                queued: 0,
                example_id: None,
            });
        }
    }
    out
}
