//! Reading the catalog file. Each level is read with unknown keys refused, and the
//! events and properties are walked here, so an error names its place
//! (`events.job_finished.properties.trigger: unknown type "enumm"`), never only a
//! line and column.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Catalog, Category, DeclaredEvent, DeclaredProperty, Expiry, PropertyType};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    app: String,
    #[serde(default)]
    sent_to: Option<String>,
    #[serde(default)]
    never_collected: Vec<String>,
    events: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    description: String,
    category: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    properties: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProperty {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    values: Option<Vec<String>>,
    purpose: String,
    #[serde(default)]
    example: Option<Value>,
    #[serde(default)]
    max_length: Option<u64>,
}

/// Parses the catalog file's text; the error is the place and what is wrong there.
/// The declaration's own rules are checked after, by [`Catalog::validate`].
pub(super) fn parse(text: &str) -> Result<Catalog, String> {
    // The first level as a value first: a syntax error is reported with its line.
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    if !root.is_object() {
        return Err("expected a JSON object with \"app\" and \"events\"".into());
    }
    let raw: RawCatalog = serde_json::from_value(root).map_err(|e| e.to_string())?;
    let mut catalog = Catalog::new(raw.app);
    catalog.sent_to = raw.sent_to;
    catalog.never_collected = raw.never_collected;
    for (name, value) in raw.events {
        let at = format!("events.{name}");
        let event = parse_event(name, value).map_err(|why| format!("{at}{why}"))?;
        catalog.events.push(event);
    }
    Ok(catalog)
}

/// One event; the error starts with `: ` or with `.properties.NAME: `.
fn parse_event(name: String, value: Value) -> Result<DeclaredEvent, String> {
    let raw: RawEvent = serde_json::from_value(value).map_err(|e| format!(": {e}"))?;
    let category = match raw.category.as_str() {
        "usage" => Category::Usage,
        "error" => Category::Error,
        other => {
            return Err(format!(
                ".category: unknown category {other:?} (expected \"usage\" or \"error\")"
            ));
        }
    };
    let expires = match raw.expires.as_deref() {
        None => Expiry::Never,
        Some(text) => Expiry::parse(text).map_err(|_| {
            format!(".expires: bad date {text:?} (expected \"never\" or YYYY-MM-DD)")
        })?,
    };
    let mut event = DeclaredEvent::new(name, category, raw.description);
    event.expires = expires;
    for (pname, pvalue) in raw.properties {
        let at = format!(".properties.{pname}");
        let p = parse_property(pname, pvalue).map_err(|why| format!("{at}: {why}"))?;
        event.properties.push(p);
    }
    Ok(event)
}

fn parse_property(name: String, value: Value) -> Result<DeclaredProperty, String> {
    let raw: RawProperty = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let kind = match (raw.kind.as_str(), raw.values) {
        ("enum", Some(values)) => PropertyType::Enum(values),
        ("enum", None) => return Err("an enum needs its \"values\"".into()),
        (_, Some(_)) if known(&raw.kind) => {
            return Err(format!("\"values\" applies to enum, not {}", raw.kind));
        }
        ("string", None) => PropertyType::String,
        ("bool", None) => PropertyType::Bool,
        ("integer", None) => PropertyType::Integer,
        ("number", None) => PropertyType::Number,
        ("string_list", None) => PropertyType::StringList,
        (other, _) => {
            return Err(format!(
                "unknown type {other:?} (expected string, bool, integer, number, enum or string_list)"
            ));
        }
    };
    let mut p = DeclaredProperty::new(name, kind, raw.purpose);
    p.example = raw.example;
    p.max_length = raw.max_length;
    Ok(p)
}

fn known(kind: &str) -> bool {
    matches!(
        kind,
        "string" | "bool" | "integer" | "number" | "enum" | "string_list"
    )
}

#[cfg(test)]
mod tests {
    use super::super::Catalog;

    fn err(text: &str) -> String {
        Catalog::from_json(text).unwrap_err().to_string()
    }

    const OK: &str = r#"{
      "app": "jobrunner",
      "sent_to": "https://example.com/api/usage-telemetry",
      "never_collected": ["Source code or file contents", "Project names or file paths"],
      "events": {
        "job_finished": {
          "description": "A Dependabot job finished.",
          "category": "usage",
          "expires": "never",
          "properties": {
            "duration": {"type": "integer", "purpose": "How long the job took, in ms", "example": 31812},
            "trigger": {"type": "enum", "values": ["user", "service"], "purpose": "Who started it"},
            "error.message": {"type": "string", "max_length": 1000, "purpose": "Why it failed"},
            "adapters_detected": {"type": "string_list", "purpose": "Adapter adoption"}
          }
        }
      }
    }"#;

    #[test]
    fn the_designs_example_reads_in_order() {
        let c = Catalog::from_json(OK).unwrap();
        assert_eq!(c.app, "jobrunner");
        assert_eq!(c.never_collected.len(), 2);
        let e = &c.events[0];
        let names: Vec<&str> = e.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["duration", "trigger", "error.message", "adapters_detected"]
        );
        assert_eq!(e.find("error.message").unwrap().max_length, Some(1000));
    }

    #[test]
    fn every_mistake_names_its_place() {
        let with = |from: &str, to: &str| {
            assert!(OK.contains(from), "{from}");
            err(&OK.replacen(from, to, 1))
        };
        assert_eq!(
            with(r#""type": "enum""#, r#""type": "enumm""#),
            "catalog: events.job_finished.properties.trigger: unknown type \"enumm\" (expected string, bool, integer, number, enum or string_list)"
        );
        assert!(
            with(
                r#""purpose": "Who started it""#,
                r#""purpose": "x", "colour": 1"#
            )
            .starts_with("catalog: events.job_finished.properties.trigger: unknown field `colour`"),
        );
        assert!(
            with(
                r#""category": "usage""#,
                r#""category": "usage", "owner": "me""#
            )
            .starts_with("catalog: events.job_finished: unknown field `owner`")
        );
        assert!(
            with(r#""sent_to""#, r#""sent_too""#).starts_with("catalog: unknown field `sent_too`")
        );
        assert_eq!(
            with(r#""expires": "never""#, r#""expires": "2026-02-30""#),
            "catalog: events.job_finished.expires: bad date \"2026-02-30\" (expected \"never\" or YYYY-MM-DD)"
        );
        assert!(
            with(r#""values": ["user", "service"], "#, "")
                .ends_with("properties.trigger: an enum needs its \"values\"")
        );
        assert!(
            with(r#""category": "usage""#, r#""category": "use""#)
                .contains(".category: unknown category")
        );
        assert!(with(r#", "purpose": "Adapter adoption""#, "").contains("missing field `purpose`"));
        assert!(err("{\"app\": \"x\",").starts_with("catalog: not valid JSON"));
        assert!(err("[]").starts_with("catalog: expected a JSON object"));
        // Checks on the declaration run on files too.
        assert!(with(r#""example": 31812"#, r#""example": "long""#).contains("example \"long\""));
    }
}
