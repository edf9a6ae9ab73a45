//! The event catalog: every event a host sends and every property of each, declared
//! once, so recording can refuse what was never declared and the page a tool
//! publishes is generated from the same declaration.
//!
//! This file has the declaration itself, its builder and its checks; [`json`] reads
//! the catalog file; [`enforce`] is what recording asks of it; [`page`] is the
//! published page and `schema --check`; [`date`] is the calendar arithmetic of
//! `expires`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Kind, Result};
use crate::fingerprint::Fingerprint;

mod date;
pub(crate) mod enforce;
mod json;
pub(crate) mod page;

pub use date::Date;
pub use page::{Check, Difference, OptOut, Page, PageEvent, PageField, SentTo};

/// The largest catalog file read: far more than a tool with hundreds of events needs.
const MAX_CATALOG_BYTES: u64 = 4 << 20;

/// What an app declares it sends: its events, their properties, what it never
/// collects and where it sends data.
///
/// Built in code, or read from the catalog file with [`Catalog::from_json`] (the
/// `spool` command's `--catalog FILE`, `SPOOL_CATALOG`, `spool config set catalog`).
/// Given to [`SpoolBuilder::catalog`](crate::SpoolBuilder::catalog), it makes
/// recording refuse anything it does not declare, and `spool schema` print it.
///
/// ```
/// use eventspool::{Catalog, DeclaredEvent, DeclaredProperty};
/// let catalog = Catalog::new("jobrunner")
///     .sent_to("https://telemetry.example.com/usage")
///     .never_collected(["Source code or file contents"])
///     .event(
///         DeclaredEvent::usage("job_finished", "A job finished.")
///             .property(DeclaredProperty::integer("duration", "How long it took, in ms").example(31812))
///             .property(DeclaredProperty::one_of("trigger", ["user", "service"], "Who started it"))
///             .property(DeclaredProperty::string("error.message", "Why it failed").max_length(1000)),
///     );
/// assert!(catalog.validate().is_ok());
/// assert!(catalog.fingerprint().entries().any(|e| e == "job_finished.trigger: enum user"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Catalog {
    /// The app the catalog is for; a spool of another app refuses it.
    pub app: String,
    /// Where the app says it sends data (shown on the page; `schema --check` compares
    /// it with the configured destination).
    pub sent_to: Option<String>,
    /// What the app never collects, in its own words.
    pub never_collected: Vec<String>,
    /// The events, in the order declared.
    pub events: Vec<DeclaredEvent>,
}

/// One declared event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeclaredEvent {
    /// The event name, as sent.
    pub name: String,
    /// What it is and when it is sent.
    pub description: String,
    /// Whether it reports usage or an error.
    pub category: Category,
    /// When recording it stops: never, or on a date.
    pub expires: Expiry,
    /// Its properties, in the order declared; each is optional when recorded.
    pub properties: Vec<DeclaredProperty>,
}

/// One declared property of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeclaredProperty {
    /// The property name; a dotted name (`host.platform`) matches the flat key or the
    /// nested value (`{"host": {"platform": …}}`), whichever the host sends.
    pub name: String,
    /// The type its values must have (serialized as the file has it: `"type"`, and
    /// `"values"` for an `enum`).
    #[serde(flatten)]
    pub kind: PropertyType,
    /// Why the app collects it.
    pub purpose: String,
    /// A value to show on the page: one of the type, or for a type other than
    /// `string_list` an array of several such values.
    pub example: Option<Value>,
    /// The most characters a string (each string of a `string_list`) keeps: longer
    /// ones are cut, the ellipsis included, never refused.
    pub max_length: Option<u64>,
}

/// Whether an event reports usage or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// What was used.
    Usage,
    /// What went wrong.
    Error,
}

impl Category {
    /// `usage` or `error`, as the catalog file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Usage => "usage",
            Category::Error => "error",
        }
    }
}

/// When an event stops being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Expiry {
    /// It never expires.
    Never,
    /// From this date (UTC) on, it is refused.
    On(Date),
}

impl Expiry {
    /// `never` or a date written `YYYY-MM-DD`, as the catalog file has it.
    pub fn parse(text: &str) -> Result<Expiry> {
        match text {
            "never" => Ok(Expiry::Never),
            date => Date::parse(date).map(Expiry::On).ok_or_else(|| {
                catalog_error(format!(
                    "bad date {date:?}: expected \"never\" or YYYY-MM-DD"
                ))
            }),
        }
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expiry::Never => f.write_str("never"),
            Expiry::On(d) => d.fmt(f),
        }
    }
}

impl From<Expiry> for String {
    fn from(e: Expiry) -> String {
        e.to_string()
    }
}

/// The type a declared property's values must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "values", rename_all = "snake_case")]
pub enum PropertyType {
    /// A string, scrubbed of personal data.
    String,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// One of these strings, stored exactly as declared (not scrubbed).
    Enum(Vec<String>),
    /// An array of strings, each scrubbed.
    StringList,
}

impl PropertyType {
    /// The type's name in the catalog file: `string`, `bool`, `integer`, `number`,
    /// `enum`, `string_list`.
    pub fn name(&self) -> &'static str {
        match self {
            PropertyType::String => "string",
            PropertyType::Bool => "bool",
            PropertyType::Integer => "integer",
            PropertyType::Number => "number",
            PropertyType::Enum(_) => "enum",
            PropertyType::StringList => "string_list",
        }
    }

    /// Returns true if and only if `value` is of this type (`null` is not: callers
    /// treat it as absent first).
    #[inline]
    pub fn accepts(&self, value: &Value) -> bool {
        match (self, value) {
            (PropertyType::String, Value::String(_)) => true,
            (PropertyType::Bool, Value::Bool(_)) => true,
            (PropertyType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (PropertyType::Number, Value::Number(_)) => true,
            (PropertyType::Enum(values), Value::String(s)) => values.iter().any(|v| v == s),
            (PropertyType::StringList, Value::Array(items)) => items.iter().all(Value::is_string),
            _ => false,
        }
    }
}

impl Catalog {
    /// An empty catalog for `app`: with it, recording refuses every event until
    /// events are declared.
    pub fn new(app: impl Into<String>) -> Catalog {
        Catalog {
            app: app.into(),
            sent_to: None,
            never_collected: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Reads a catalog file's text (the shape in the crate's documentation). Unknown
    /// keys, unknown types, bad dates and an `enum` without values are errors naming
    /// the place, e.g. `catalog: events.job_finished.properties.trigger: unknown type
    /// "enumm"`.
    ///
    /// ```
    /// let c = eventspool::Catalog::from_json(r#"{"app": "t", "events": {"run": {
    ///     "description": "A run.", "category": "usage", "expires": "never",
    ///     "properties": {"ok": {"type": "bool", "purpose": "Did it work"}}}}}"#).unwrap();
    /// assert_eq!(c.events[0].properties[0].name, "ok");
    /// let err = eventspool::Catalog::from_json(r#"{"app": "t", "evnts": {}}"#).unwrap_err();
    /// assert!(err.to_string().starts_with("catalog: unknown field `evnts`"), "{err}");
    /// ```
    pub fn from_json(text: &str) -> Result<Catalog> {
        let catalog = json::parse(text).map_err(catalog_error)?;
        catalog.validate()?;
        Ok(catalog)
    }

    /// [`Catalog::from_json`] of the file at `path`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Catalog> {
        let path = path.as_ref();
        let text = match crate::settings::read_small_regular_file(path, MAX_CATALOG_BYTES) {
            Ok(Some(text)) => text,
            Ok(None) => return Err(catalog_error(format!("{}: no such file", path.display()))),
            Err(why) => return Err(catalog_error(format!("{}: {why}", path.display()))),
        };
        let place = path.display().to_string();
        let catalog = json::parse(&text).map_err(|why| catalog_error(format!("{place}: {why}")))?;
        catalog
            .check()
            .map_err(|why| catalog_error(format!("{place}: {why}")))?;
        Ok(catalog)
    }

    /// Where the app says it sends data; replaces an earlier one.
    pub fn sent_to(mut self, url: impl Into<String>) -> Self {
        self.sent_to = Some(url.into());
        self
    }

    /// What the app never collects; replaces an earlier list.
    pub fn never_collected<S: Into<String>>(mut self, items: impl IntoIterator<Item = S>) -> Self {
        self.never_collected = items.into_iter().map(Into::into).collect();
        self
    }

    /// Declares an event; one of the same name declared earlier is replaced.
    pub fn event(mut self, event: DeclaredEvent) -> Self {
        match self.events.iter_mut().find(|e| e.name == event.name) {
            Some(old) => *old = event,
            None => self.events.push(event),
        }
        self
    }

    /// The declared event named `name`, if any.
    pub fn find(&self, name: &str) -> Option<&DeclaredEvent> {
        self.events.iter().find(|e| e.name == name)
    }

    /// Checks the whole declaration (a catalog built in code is checked here, and by
    /// [`SpoolBuilder::try_build`](crate::SpoolBuilder::try_build)): a valid app
    /// name, valid and unique event names, property names that are not empty and do
    /// not nest under another declared property, an `enum` with values, a
    /// `max_length` of at least 1 on a string type only, examples of the declared
    /// type, real dates. The error names the place.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(catalog_error)
    }

    fn check(&self) -> std::result::Result<(), String> {
        crate::app::validate_app_name(&self.app).map_err(|e| format!("app: {e}"))?;
        let mut seen = BTreeSet::new();
        for e in &self.events {
            let at = format!("events.{}", e.name);
            crate::event::validate_name(&e.name).map_err(|err| format!("{at}: {err}"))?;
            if !seen.insert(e.name.as_str()) {
                return Err(format!("{at}: declared twice"));
            }
            if let Expiry::On(d) = e.expires {
                if !d.is_valid() {
                    return Err(format!("{at}.expires: bad date {d}"));
                }
            }
            let names: BTreeSet<&str> = e.properties.iter().map(|p| p.name.as_str()).collect();
            if names.len() != e.properties.len() {
                return Err(format!("{at}: a property is declared twice"));
            }
            for p in &e.properties {
                let at = format!("{at}.properties.{}", p.name);
                check_property(p, &names).map_err(|why| format!("{at}: {why}"))?;
            }
        }
        Ok(())
    }

    /// The fingerprint of what this catalog discloses: per event `event: category`;
    /// per property `event.property: type`, one `event.property: enum VALUE` per
    /// value, and `event.property: max_length N` when it has one. The envelope and
    /// context are the same for every catalog, so they are not in it.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut entries = Vec::new();
        for e in &self.events {
            entries.push(format!("{}: {}", e.name, e.category.as_str()));
            for p in &e.properties {
                let key = format!("{}.{}", e.name, p.name);
                entries.push(format!("{key}: {}", p.kind.name()));
                if let PropertyType::Enum(values) = &p.kind {
                    for v in values {
                        entries.push(format!("{key}: enum {v}"));
                    }
                }
                if let Some(n) = p.max_length {
                    entries.push(format!("{key}: max_length {n}"));
                }
            }
        }
        Fingerprint::from_entries(entries)
    }
}

fn check_property(p: &DeclaredProperty, names: &BTreeSet<&str>) -> std::result::Result<(), String> {
    let name = p.name.as_str();
    if name.is_empty()
        || name.chars().count() > 128
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains("..")
        || name.chars().any(char::is_control)
    {
        return Err("a property name is 1-128 characters, no control characters, and no empty part between dots".into());
    }
    // `host` and `host.platform` both declared: `{"host": {"platform": …}}` would be
    // both a wrong type for one and a value of the other.
    for (i, _) in name.match_indices('.') {
        if names.contains(&name[..i]) {
            return Err(format!(
                "nests under the declared property {:?}",
                &name[..i]
            ));
        }
    }
    match &p.kind {
        PropertyType::Enum(values) if values.is_empty() => {
            return Err("an enum needs its values".into());
        }
        PropertyType::Enum(values) => {
            let unique: BTreeSet<&String> = values.iter().collect();
            if unique.len() != values.len() {
                return Err("an enum value is listed twice".into());
            }
        }
        _ => {}
    }
    if let Some(n) = p.max_length {
        if !matches!(p.kind, PropertyType::String | PropertyType::StringList) {
            return Err(format!(
                "max_length applies to string and string_list, not {}",
                p.kind.name()
            ));
        }
        if n == 0 {
            return Err("max_length must be at least 1".into());
        }
    }
    if let Some(example) = &p.example {
        let fits = p.kind.accepts(example)
            || (p.kind != PropertyType::StringList
                && matches!(example, Value::Array(items)
                    if !items.is_empty() && items.iter().all(|v| p.kind.accepts(v))));
        if !fits {
            return Err(format!(
                "example {example} is not of type {}",
                p.kind.name()
            ));
        }
    }
    Ok(())
}

impl DeclaredEvent {
    /// An event of `category` that never expires and has no properties yet.
    pub fn new(
        name: impl Into<String>,
        category: Category,
        description: impl Into<String>,
    ) -> Self {
        DeclaredEvent {
            name: name.into(),
            description: description.into(),
            category,
            expires: Expiry::Never,
            properties: Vec::new(),
        }
    }

    /// A usage event ([`Category::Usage`]).
    pub fn usage(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, Category::Usage, description)
    }

    /// An error event ([`Category::Error`]).
    pub fn error(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, Category::Error, description)
    }

    /// When it stops being recorded (default: never).
    pub fn expires(mut self, expiry: Expiry) -> Self {
        self.expires = expiry;
        self
    }

    /// Declares a property; one of the same name declared earlier is replaced.
    pub fn property(mut self, property: DeclaredProperty) -> Self {
        match self.properties.iter_mut().find(|p| p.name == property.name) {
            Some(old) => *old = property,
            None => self.properties.push(property),
        }
        self
    }

    /// The declared property named `name` (its dotted name), if any.
    pub fn find(&self, name: &str) -> Option<&DeclaredProperty> {
        self.properties.iter().find(|p| p.name == name)
    }
}

impl DeclaredProperty {
    /// A property of type `kind`, with no example and no length limit.
    pub fn new(name: impl Into<String>, kind: PropertyType, purpose: impl Into<String>) -> Self {
        DeclaredProperty {
            name: name.into(),
            kind,
            purpose: purpose.into(),
            example: None,
            max_length: None,
        }
    }

    /// A string property.
    pub fn string(name: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self::new(name, PropertyType::String, purpose)
    }

    /// A `true`/`false` property.
    pub fn bool(name: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Bool, purpose)
    }

    /// A whole-number property.
    pub fn integer(name: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Integer, purpose)
    }

    /// A number property.
    pub fn number(name: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Number, purpose)
    }

    /// A property whose value is one of `values` (type `enum`).
    pub fn one_of<S: Into<String>>(
        name: impl Into<String>,
        values: impl IntoIterator<Item = S>,
        purpose: impl Into<String>,
    ) -> Self {
        let values = values.into_iter().map(Into::into).collect();
        Self::new(name, PropertyType::Enum(values), purpose)
    }

    /// A list-of-strings property.
    pub fn string_list(name: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self::new(name, PropertyType::StringList, purpose)
    }

    /// A value shown on the page (see [`DeclaredProperty::example`]'s field).
    pub fn example(mut self, example: impl Into<Value>) -> Self {
        self.example = Some(example.into());
        self
    }

    /// The most characters a string value keeps (the ellipsis included).
    pub fn max_length(mut self, chars: u64) -> Self {
        self.max_length = Some(chars);
        self
    }
}

/// A catalog error: `catalog: ` then the place and what is wrong.
fn catalog_error(why: impl fmt::Display) -> crate::Error {
    Kind::Catalog(format!("catalog: {why}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Catalog {
        Catalog::new("jobrunner").event(
            DeclaredEvent::usage("job_finished", "A job finished.")
                .property(DeclaredProperty::integer("duration", "ms"))
                .property(DeclaredProperty::one_of(
                    "trigger",
                    ["user", "service"],
                    "who",
                ))
                .property(DeclaredProperty::string("error.message", "why").max_length(1000)),
        )
    }

    #[test]
    fn fingerprint_has_exactly_the_documented_entries() {
        let f = sample().fingerprint();
        let entries: Vec<&str> = f.entries().collect();
        assert_eq!(
            entries,
            [
                "job_finished.duration: integer",
                "job_finished.error.message: max_length 1000",
                "job_finished.error.message: string",
                "job_finished.trigger: enum",
                "job_finished.trigger: enum service",
                "job_finished.trigger: enum user",
                "job_finished: usage",
            ]
        );
        let wider = sample().event(
            DeclaredEvent::error("crash", "It crashed.")
                .property(DeclaredProperty::string("error.message", "why")),
        );
        assert_eq!(
            wider.fingerprint().additions(&f),
            ["crash.error.message: string", "crash: error"]
        );
    }

    #[test]
    fn declarations_that_cannot_work_are_refused_naming_the_place() {
        let bad = |p: DeclaredProperty| {
            Catalog::new("t")
                .event(DeclaredEvent::usage("e", "d").property(p))
                .validate()
                .unwrap_err()
                .to_string()
        };
        let e = bad(DeclaredProperty::one_of("k", Vec::<String>::new(), "p"));
        assert_eq!(
            e,
            "catalog: events.e.properties.k: an enum needs its values"
        );
        assert!(bad(DeclaredProperty::bool("k", "p").max_length(3)).contains("max_length applies"));
        assert!(bad(DeclaredProperty::string("k", "p").max_length(0)).contains("at least 1"));
        assert!(bad(DeclaredProperty::integer("k", "p").example("x")).contains("example \"x\""));
        assert!(bad(DeclaredProperty::string("a..b", "p")).contains("empty part"));
        let nested = Catalog::new("t")
            .event(
                DeclaredEvent::usage("e", "d")
                    .property(DeclaredProperty::string("host", "p"))
                    .property(DeclaredProperty::string("host.os", "p")),
            )
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            nested.contains("events.e.properties.host.os: nests under"),
            "{nested}"
        );
        let app = Catalog::new("../x").validate().unwrap_err().to_string();
        assert!(app.starts_with("catalog: app: invalid app name"), "{app}");
        let name = Catalog::new("t")
            .event(DeclaredEvent::usage("has space", "d"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            name.starts_with("catalog: events.has space: invalid event name"),
            "{name}"
        );
        // Examples of the type, or several of them, are fine.
        assert!(
            Catalog::new("t")
                .event(
                    DeclaredEvent::usage("e", "d")
                        .property(DeclaredProperty::bool("b", "p").example(vec![true, false]))
                        .property(DeclaredProperty::string_list("l", "p").example(vec!["prisma"]))
                )
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn serializes_in_the_files_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        let p = &v["events"][0]["properties"];
        assert_eq!(p[0]["type"], "integer");
        assert_eq!(p[1]["type"], "enum");
        assert_eq!(p[1]["values"], serde_json::json!(["user", "service"]));
        assert_eq!(p[2]["max_length"], 1000);
        assert_eq!(v["events"][0]["category"], "usage");
        assert_eq!(v["events"][0]["expires"], "never");
    }

    #[test]
    fn a_later_declaration_replaces_an_earlier_one() {
        let c = sample().event(DeclaredEvent::error("job_finished", "again"));
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.events[0].category, Category::Error);
        let e = DeclaredEvent::usage("e", "d")
            .property(DeclaredProperty::bool("x", "one"))
            .property(DeclaredProperty::integer("x", "two"));
        assert_eq!(e.properties.len(), 1);
        assert_eq!(e.find("x").unwrap().kind, PropertyType::Integer);
    }
}
