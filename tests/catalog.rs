//! The event catalog: each refusal kind through `try_track` and through `spool
//! track` (one line, exit 1, nothing queued, counted as `dropped_undeclared`); invalid
//! catalog files (exit 2, queue untouched); `max_length`, `enum`s stored as declared,
//! dotted names nested or flat; the published page against the reference tables;
//! `schema --check`; `--catalog`, `SPOOL_CATALOG` and `config set catalog`.

use std::path::{Path, PathBuf};

use eventspool::{Catalog, DeclaredEvent, Event, Expiry, Recorded, Spool};
use serde_json::{Value, json};

use crate::util::{example_bin, queued, run_clean, spool, status, temp};

/// A catalog for the `spool` app (the default of `spool`), with one property of each
/// type, a dotted name, an enum whose value the scrubber would redact, a cut string
/// and an event that expired.
const CATALOG: &str = r#"{
  "app": "spool",
  "sent_to": "https://t.example.com/e",
  "never_collected": ["Source code"],
  "events": {
    "job_finished": {
      "description": "A job finished.",
      "category": "usage",
      "expires": "never",
      "properties": {
        "duration": {"type": "integer", "purpose": "How long, in ms", "example": 31812},
        "ratio": {"type": "number", "purpose": "Cache hits"},
        "success": {"type": "bool", "purpose": "Did it work"},
        "trigger": {"type": "enum", "values": ["user", "service", "ops@example.com"], "purpose": "Who started it"},
        "owner": {"type": "string", "purpose": "Whose job"},
        "host.platform": {"type": "string", "purpose": "The OS"},
        "error.message": {"type": "string", "max_length": 10, "purpose": "Why it failed"},
        "adapters": {"type": "string_list", "max_length": 4, "purpose": "Adapters"}
      }
    },
    "legacy_ping": {
      "description": "No longer sent.",
      "category": "usage",
      "expires": "2020-01-01"
    }
  }
}"#;

/// `CATALOG` written into `t`, and its path.
fn catalog_file(t: &Path) -> PathBuf {
    let path = t.join("catalog.json");
    std::fs::write(&path, CATALOG).unwrap();
    path
}

fn catalog() -> Catalog {
    Catalog::from_json(CATALOG).unwrap()
}

fn undeclared(dir: &Path) -> u64 {
    status(dir)["dropped_undeclared"].as_u64().unwrap()
}

/// The refusals every path must make: the event, the properties, and what the
/// one-line error must name.
fn refusals() -> Vec<(Event, &'static str)> {
    vec![
        (
            Event::new("job_started").property("duration", 1),
            "job_started: not declared",
        ),
        (
            Event::new("job_finished").property("colour", "red"),
            "job_finished.colour: not declared",
        ),
        (
            Event::new("job_finished").property("duration", "31812"),
            "job_finished.duration: expected integer, got a string",
        ),
        (
            Event::new("job_finished").property("trigger", "robot"),
            "job_finished.trigger: a value outside its enum",
        ),
        (
            Event::new("legacy_ping"),
            "legacy_ping: expired on 2020-01-01",
        ),
    ]
}

#[test]
fn try_track_refuses_each_kind_with_a_typed_error_nothing_queued_every_one_counted() {
    let (_t, dir) = temp();
    let spool = Spool::builder("spool")
        .dir(&dir)
        .catalog(catalog())
        .try_build()
        .unwrap();
    for (n, (event, says)) in refusals().into_iter().enumerate() {
        let err = spool.try_track(event).unwrap_err();
        assert!(err.is_undeclared() && err.is_invalid_input(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(says), "{msg} should name {says}");
        assert!(
            !msg.contains("robot") && !msg.contains("31812"),
            "the value is never echoed: {msg}"
        );
        assert!(queued(&dir).is_empty(), "{says}: nothing queued");
        assert_eq!(undeclared(&dir), n as u64 + 1, "{says}: counted");
    }
    // The refused values never reached any file, only the count did.
    for file in crate::util::tree(&dir) {
        let bytes = std::fs::read(dir.join(&file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("colour") && !text.contains("robot"),
            "{file}"
        );
    }
    // What the catalog declares is recorded; `track` drops a refusal silently.
    let ok = spool.try_track(Event::new("job_finished").property("duration", 3));
    assert!(matches!(ok, Ok(Recorded::Queued(_))), "{ok:?}");
    spool.track(Event::new("job_finished").property("colour", "red"));
    assert_eq!(queued(&dir).len(), 1);
    assert_eq!(undeclared(&dir), 6);
}

#[test]
fn an_event_expires_on_its_date_by_the_spools_clock() {
    let (_t, dir) = temp();
    let expiring = Catalog::new("spool").event(
        DeclaredEvent::usage("trial_started", "A trial began.")
            .expires(Expiry::parse("2026-06-01").unwrap()),
    );
    let at = |ms: i64| {
        Spool::builder("spool")
            .dir(&dir)
            .catalog(expiring.clone())
            .clock(std::sync::Arc::new(move || ms))
            .build()
    };
    // 2026-05-31T23:59:59.999Z, then 2026-06-01T00:00:00Z.
    let june = 1_780_272_000_000;
    assert!(at(june - 1).try_track(Event::new("trial_started")).is_ok());
    let err = at(june).try_track(Event::new("trial_started")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused by the catalog: trial_started: expired on 2026-06-01 (the catalog's expires date)"
    );
    assert_eq!(queued(&dir).len(), 1);
}

#[test]
fn track_batch_drops_only_the_refused_events_and_try_track_batch_refuses_the_batch() {
    let (_t, dir) = temp();
    let spool = Spool::builder("spool").dir(&dir).catalog(catalog()).build();
    let batch = || {
        vec![
            Event::new("job_finished").property("duration", 1),
            Event::new("job_finished").property("colour", "red"),
            Event::new("job_started"),
        ]
    };
    let err = spool.try_track_batch(batch()).unwrap_err();
    assert!(err.to_string().contains("job_finished.colour"), "{err}");
    assert!(queued(&dir).is_empty(), "all or none");
    assert_eq!(undeclared(&dir), 2, "each refused event counted");
    spool.track_batch(batch());
    let q = queued(&dir);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["payload"]["properties"], json!({"duration": 1}));
    assert_eq!(undeclared(&dir), 4);
}

#[test]
fn spool_track_refuses_each_kind_in_one_line_exit_1_nothing_queued_counted() {
    let (t, dir) = temp();
    let file = catalog_file(t.path());
    for (n, (event, says)) in refusals().into_iter().enumerate() {
        let mut args = vec![
            "--catalog".to_string(),
            file.display().to_string(),
            "track".into(),
            event.name().to_string(),
        ];
        let props = match says {
            s if s.contains("colour") => Some(r#"{"colour": "red"}"#),
            s if s.contains("duration") => Some(r#"{"duration": "31812"}"#),
            s if s.contains("trigger") => Some(r#"{"trigger": "robot"}"#),
            s if s.starts_with("job_started") => Some(r#"{"duration": 1}"#),
            _ => None,
        };
        if let Some(p) = props {
            args.extend(["--props".into(), p.into()]);
        }
        let line = spool(&dir).args(&args).fails_with(1);
        assert!(line.contains(says), "{line} should name {says}");
        assert!(line.contains("refused by the catalog"), "{line}");
        assert!(queued(&dir).is_empty(), "{says}: nothing queued");
        assert_eq!(undeclared(&dir), n as u64 + 1, "{says}: counted");
    }
    // The same through `--stdin`, all in one batch: refused whole, each counted.
    let lines = "{\"event\":\"job_finished\",\"properties\":{\"duration\":1}}\n\
                 {\"event\":\"job_finished\",\"properties\":{\"host\":{\"secret\":\"x\"}}}\n";
    let line = spool(&dir)
        .args([
            "--catalog".as_ref(),
            file.as_os_str(),
            "track".as_ref(),
            "--stdin".as_ref(),
        ])
        .input(lines)
        .fails_with(1);
    assert!(
        line.contains("job_finished.host.secret: not declared"),
        "{line}"
    );
    assert!(queued(&dir).is_empty());
    assert_eq!(undeclared(&dir), 6);
    let text = spool(&dir).args(["status"]).ok();
    assert!(text.contains("dropped_undeclared: 6"), "{text}");
    // What the catalog declares is recorded by both.
    spool(&dir)
        .env("SPOOL_CATALOG", &file)
        .args([
            "track",
            "job_finished",
            "-p",
            "duration:=5",
            "-p",
            "success:=true",
        ])
        .ok();
    spool(&dir)
        .env("SPOOL_CATALOG", &file)
        .args(["track", "--stdin"])
        .input("{\"event\":\"job_finished\",\"properties\":{\"trigger\":\"user\"}}\n")
        .ok();
    assert_eq!(queued(&dir).len(), 2);
}

#[test]
fn debug_mode_says_why_a_refused_event_was_refused_and_writes_nothing() {
    let (t, dir) = temp();
    let file = catalog_file(t.path());
    let out = spool(&dir)
        .env("SPOOL_DEBUG", "1")
        .args(["--catalog".as_ref(), file.as_os_str()])
        .args(["track", "job_finished", "-p", "colour=red"])
        .run();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("telemetry: refused by the catalog: job_finished.colour: not declared"),
        "{stderr}"
    );
    assert!(
        !dir.exists(),
        "debug mode writes nothing, not even the count"
    );
}

#[test]
fn invalid_catalog_files_are_one_line_errors_exit_2_and_leave_the_queue_untouched() {
    let (t, dir) = temp();
    spool(&dir).args(["track", "before", "-p", "n:=1"]).ok();
    let before = queued(&dir);
    let bad = [
        (
            r#""expires": "never""#,
            r#""expires": "never", "owner": "me""#,
            "events.job_finished: unknown field `owner`",
        ),
        (
            r#""type": "enum""#,
            r#""type": "enumm""#,
            "unknown type \"enumm\"",
        ),
        (
            r#""expires": "2020-01-01""#,
            r#""expires": "2020-02-30""#,
            "bad date \"2020-02-30\"",
        ),
        (
            r#""app": "spool""#,
            r#""app": "jobrunner""#,
            "it is for app \"jobrunner\"",
        ),
    ];
    for (from, to, says) in bad {
        let path = t.path().join("bad.json");
        std::fs::write(&path, CATALOG.replacen(from, to, 1)).unwrap();
        for cmd in [&["track", "job_finished"][..], &["schema"]] {
            let line = spool(&dir)
                .args(["--catalog".as_ref(), path.as_os_str()])
                .args(cmd)
                .fails_with(2);
            assert!(line.contains(says), "{cmd:?}: {line} should say {says}");
            assert!(line.starts_with("spool: error: catalog"), "{line}");
        }
        // The place is named, not only a line and column.
        if says.contains("enumm") {
            let line = spool(&dir)
                .args([
                    "--catalog".as_ref(),
                    path.as_os_str(),
                    "track".as_ref(),
                    "x".as_ref(),
                ])
                .fails_with(2);
            assert!(
                line.contains("events.job_finished.properties.trigger: unknown type"),
                "{line}"
            );
        }
        // A library host: try_build says the same; build() records nothing.
        let text = std::fs::read_to_string(&path).unwrap();
        if let Ok(c) = Catalog::from_json(&text) {
            let b = Spool::builder("spool").dir(&dir).catalog(c);
            let err = b.clone().try_build().err().expect("refused");
            assert!(
                err.is_catalog_error() && err.to_string().contains(says),
                "{err}"
            );
            let spool = b.build();
            assert!(spool.try_track(Event::new("job_finished")).is_err());
            spool.track(Event::new("job_finished"));
        } else {
            let err = Catalog::from_json(&text).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
    let missing = spool(&dir)
        .args(["--catalog", "/nonexistent/catalog.json", "track", "x"])
        .fails_with(2);
    assert!(
        missing.contains("/nonexistent/catalog.json: no such file"),
        "{missing}"
    );
    assert_eq!(queued(&dir), before, "the queue is untouched");
    assert_eq!(undeclared(&dir), 0);
    // Commands that do not use the catalog still work (`disable` above all).
    let path = t.path().join("bad.json");
    spool(&dir)
        .args(["--catalog".as_ref(), path.as_os_str(), "disable".as_ref()])
        .ok();
}

#[test]
fn strings_are_cut_to_max_length_with_the_ellipsis_and_enums_stored_as_declared() {
    let (_t, dir) = temp();
    let spool = Spool::builder("spool").dir(&dir).catalog(catalog()).build();
    spool
        .try_track(
            Event::new("job_finished")
                .property("error.message", "exit status 1 while building")
                .property("adapters", vec!["prisma", "pg", "mongoose"])
                .property("trigger", "ops@example.com")
                .property("owner", "ops@example.com"),
        )
        .unwrap();
    let p = &queued(&dir)[0]["payload"]["properties"];
    assert_eq!(p["error.message"], "exit stat…");
    assert_eq!(p["adapters"], json!(["pri…", "pg", "mon…"]));
    assert_eq!(
        p["trigger"], "ops@example.com",
        "an enum value is stored as declared"
    );
    assert_eq!(p["owner"], "<email>", "other strings are scrubbed");
    // Never refused for length, only cut.
    let long = "why ".repeat(5000);
    assert!(
        spool
            .try_track(Event::new("job_finished").property("error.message", long))
            .is_ok()
    );
    assert_eq!(
        queued(&dir)[1]["payload"]["properties"]["error.message"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        10
    );
}

/// A declared name is the catalog's text, never the user's: it is stored as declared
/// even when it reads like the user's name, whether the event's values come flat or
/// nested, while the values are scrubbed. Without a catalog the same key is scrubbed.
/// Unix only: the user's name comes from `HOME` here; on Windows from the known-folder
/// API, which a test cannot point elsewhere (the unit test
/// `catalog::enforce::tests::a_flat_event_is_scrubbed_by_its_declared_types` covers
/// the same rules there, with its own scrubber).
#[cfg(unix)]
#[test]
fn declared_names_are_stored_as_declared_and_their_values_scrubbed() {
    let (t, dir) = temp();
    let home = t.path().join("zoe-quill");
    std::fs::create_dir_all(&home).unwrap();
    let file = t.path().join("named.json");
    std::fs::write(
        &file,
        r#"{"app": "spool", "events": {"e": {"description": "E.", "category": "usage",
            "expires": "never", "properties": {
              "zoe-quill": {"type": "string", "purpose": "Named like the user"},
              "host.zoe-quill": {"type": "string", "purpose": "Nested, named like the user"}
            }}}}"#,
    )
    .unwrap();
    let track = |catalog: bool, props: &str| {
        let mut args = Vec::new();
        if catalog {
            args.extend(["--catalog".to_string(), file.display().to_string()]);
        }
        args.extend(["track", "e", "--props", props].map(String::from));
        spool(&dir).env("HOME", &home).args(&args).ok();
    };
    track(
        true,
        r#"{"zoe-quill": "job of zoe-quill", "host.zoe-quill": "job of zoe-quill"}"#,
    );
    track(
        true,
        r#"{"zoe-quill": "job of zoe-quill", "host": {"zoe-quill": "job of zoe-quill"}}"#,
    );
    track(false, r#"{"zoe-quill": "job of zoe-quill"}"#);
    let props: Vec<Value> = queued(&dir)
        .iter()
        .map(|q| q["payload"]["properties"].clone())
        .collect();
    assert_eq!(
        props[0],
        json!({"zoe-quill": "job of <user>", "host.zoe-quill": "job of <user>"})
    );
    assert_eq!(
        props[1],
        json!({"zoe-quill": "job of <user>", "host": {"zoe-quill": "job of <user>"}})
    );
    assert_eq!(props[2], json!({"<user>": "job of <user>"}), "no catalog");
}

/// A string within its `max_length` that the scrubber makes longer is cut too: the
/// cut runs after scrubbing whenever the scrubber changed something, not only when a
/// value was long to begin with.
#[test]
fn a_string_the_scrubber_lengthens_past_max_length_is_cut() {
    let (_t, dir) = temp();
    let spool = Spool::builder("spool").dir(&dir).catalog(catalog()).build();
    let short = "pwd=abc";
    assert!(short.len() <= 10);
    spool
        .try_track(Event::new("job_finished").property("error.message", short))
        .unwrap();
    let stored = queued(&dir)[0]["payload"]["properties"]["error.message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!stored.contains("abc"), "scrubbed: {stored}");
    assert!(stored.chars().count() <= 10, "cut: {stored}");
    assert!(
        stored.ends_with('…'),
        "it grew past 10 and was cut: {stored}"
    );
}

#[test]
fn a_dotted_name_matches_the_flat_key_or_the_nested_value() {
    let (_t, dir) = temp();
    let spool = Spool::builder("spool").dir(&dir).catalog(catalog()).build();
    spool
        .try_track(Event::new("job_finished").property("host.platform", "linux"))
        .unwrap();
    spool
        .try_track(Event::new("job_finished").property("host", json!({"platform": "linux"})))
        .unwrap();
    let q = queued(&dir);
    assert_eq!(
        q[0]["payload"]["properties"],
        json!({"host.platform": "linux"})
    );
    assert_eq!(
        q[1]["payload"]["properties"],
        json!({"host": {"platform": "linux"}})
    );
    for (value, field) in [
        (
            json!({"platform": "linux", "arch": "x64"}),
            "job_finished.host.arch",
        ),
        (json!("linux"), "job_finished.host:"),
        (
            json!({"platform": 3}),
            "job_finished.host.platform: expected string",
        ),
    ] {
        let err = spool
            .try_track(Event::new("job_finished").property("host", value))
            .unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    // `null` is absent, for a declared property.
    spool
        .try_track(Event::new("job_finished").property("owner", Value::Null))
        .unwrap();
    assert_eq!(queued(&dir).len(), 3);
}

/// The reference page's table rows, `Field | Description | Examples`, by field name.
fn reference_job_fields() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/job-runner-usage-stats.txt");
    let text = std::fs::read_to_string(&path)
        .or_else(|_| std::fs::read_to_string("/work/shared/reference/job-runner-usage-stats.txt"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table = text
        .split("|---|---|---|")
        .nth(1)
        .and_then(|rest| rest.split("Collection endpoint").next())
        .expect("the reference table");
    table
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(f, _)| f.trim().to_string()))
        .filter(|f| !f.is_empty())
        .collect()
}

fn examples_catalog(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/catalogs")
        .join(name)
}

#[test]
fn the_job_runners_page_lists_exactly_the_reference_tables_fields() {
    let want = reference_job_fields();
    assert_eq!(want.len(), 17, "{want:?}");
    let (_t, dir) = temp();
    let file = examples_catalog("jobrunner.json");
    let json: Value = serde_json::from_str(
        &spool(&dir)
            .args([
                "--app".as_ref(),
                "jobrunner".as_ref(),
                "--catalog".as_ref(),
                file.as_os_str(),
            ])
            .args(["schema", "--json"])
            .ok(),
    )
    .unwrap();
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["name"], "job_finished");
    let fields: Vec<&str> = events[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, want, "the same fields, in the reference's order");
    for f in events[0]["fields"].as_array().unwrap() {
        assert!(f["purpose"].is_string() && f["example"].is_string(), "{f}");
    }
    assert_eq!(
        json["opt_out"]["environment"][0],
        "JOBRUNNER_TELEMETRY=false"
    );
    assert_eq!(json["check"]["field"], "telemetry");

    let md = spool(&dir)
        .args([
            "--app".as_ref(),
            "jobrunner".as_ref(),
            "--catalog".as_ref(),
            file.as_os_str(),
        ])
        .args(["schema"])
        .ok();
    let section = md.split("## `job_finished` (usage)").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim_start_matches("| `").split('`').next().unwrap())
        .collect();
    assert_eq!(rows, want);
    assert!(
        section.contains("| Field | Type | Purpose | Example |"),
        "{section}"
    );
    assert!(
        md.contains("| `error.message` | string, at most 1000 characters |"),
        "{md}"
    );
    for heading in [
        "## Sent with every event",
        "| `context.machine_hash` | string |",
        "## Never collected",
        "## Where it is sent",
        "To https://telemetry.jobrunner.example/v1/usage.",
        "## How to opt out",
        "- `JOBRUNNER_TELEMETRY=false`",
        "- `JOBRUNNER_TELEMETRY_DISABLED=1`",
        "- `DO_NOT_TRACK=1`",
        "`spool --app jobrunner disable`",
        "## How to check",
        "config.json`: its `telemetry` field",
    ] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    // The envelope is given once, not per event.
    assert_eq!(md.matches("`anonymous_id`").count(), 1);
}

#[test]
fn the_devtool_catalog_declares_the_reference_journey_key_fields_and_session_fields() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/devtool-telemetry.txt");
    let text = std::fs::read_to_string(&path)
        .or_else(|_| std::fs::read_to_string("/work/shared/reference/devtool-telemetry.txt"))
        .unwrap();
    let catalog = Catalog::from_file(examples_catalog("devtool.json")).unwrap();
    // Journey rows: `name | When | key, fields | Purpose`.
    let journey = text.split("|---|---|---|---|").nth(1).unwrap();
    let journey = journey.split("Session fields").next().unwrap();
    for row in journey.lines().filter(|l| l.contains(" | ")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let e = catalog
            .find(cells[0].trim())
            .unwrap_or_else(|| panic!("{row}"));
        if e.name == "session" {
            continue;
        }
        let keys: Vec<&str> = cells[2].split(", ").map(str::trim).collect();
        let declared: Vec<&str> = e.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(declared, keys, "{}", e.name);
    }
    let session = text.split("Session fields").nth(1).unwrap();
    let session = session.split("|---|---|---|").nth(1).unwrap();
    let session = session.split("What is NEVER collected").next().unwrap();
    let want: Vec<&str> = session
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(f, _)| f.trim()))
        .collect();
    assert_eq!(want.len(), 32);
    let declared: Vec<&str> = catalog
        .find("session")
        .unwrap()
        .properties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(declared, want);
    assert_eq!(catalog.events.len(), 6);
    assert_eq!(catalog.never_collected.len(), 8);
}

#[test]
fn schema_check_is_clean_then_lists_every_differing_queued_event_and_the_destination() {
    let (t, dir) = temp();
    let file = catalog_file(t.path());
    let with = |args: &[&str]| {
        spool(&dir)
            .args(["--catalog".as_ref(), file.as_os_str()])
            .args(args)
    };
    with(&["track", "job_finished", "-p", "duration:=3"]).ok();
    with(&["config", "set", "endpoint", "https://t.example.com/e/"]).ok();
    let out = with(&["schema", "--check"]).ok();
    assert!(out.contains("no differences"), "{out}");
    // Events queued without the catalog (by a host that did not pass it) differ.
    spool(&dir)
        .args([
            "track",
            "job_finished",
            "-p",
            "colour=red",
            "-p",
            "duration=3",
        ])
        .ok();
    spool(&dir)
        .args(["track", "job_finished", "-p", "colour=blue"])
        .ok();
    spool(&dir).args(["track", "job_started"]).ok();
    let out = with(&["schema", "--check"]).run();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].contains("job_finished.colour: not declared")
            && lines[0].contains("2 queued events"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("job_finished.duration: expected integer"),
        "{stdout}"
    );
    assert!(lines[2].contains("job_started: not declared"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 differences"));
    // A destination the catalog does not name is a difference too.
    spool(&dir).args(["clear"]).ok();
    with(&[
        "config",
        "set",
        "endpoint",
        "https://elsewhere.example.com/e",
    ])
    .ok();
    let out = with(&["schema", "--check", "--json"]).run();
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["clean"], false);
    assert_eq!(
        doc["differences"][0]["what"],
        "destination: events are sent to https://elsewhere.example.com/e, and the catalog says https://t.example.com/e"
    );
    // Without a catalog there is nothing to check against.
    let line = spool(&dir).args(["schema", "--check"]).fails_with(1);
    assert!(line.contains("no catalog"), "{line}");
}

#[test]
fn config_set_catalog_is_checked_kept_and_used_by_every_later_spool_command() {
    let (t, dir) = temp();
    let file = catalog_file(t.path());
    let bad = t.path().join("other.json");
    std::fs::write(
        &bad,
        CATALOG.replacen(r#""app": "spool""#, r#""app": "devtool""#, 1),
    )
    .unwrap();
    let line = spool(&dir)
        .args([
            "config".as_ref(),
            "set".as_ref(),
            "catalog".as_ref(),
            bad.as_os_str(),
        ])
        .fails_with(1);
    assert!(line.contains("it is for app \"devtool\""), "{line}");
    spool(&dir)
        .args([
            "config".as_ref(),
            "set".as_ref(),
            "catalog".as_ref(),
            file.as_os_str(),
        ])
        .ok();
    assert_eq!(
        spool(&dir).args(["config", "get", "catalog"]).ok().trim(),
        file.display().to_string()
    );
    let line = spool(&dir).args(["track", "job_started"]).fails_with(1);
    assert!(line.contains("job_started: not declared"), "{line}");
    assert!(
        spool(&dir)
            .args(["schema"])
            .ok()
            .contains("## `job_finished` (usage)")
    );
    // The flag wins over the kept file.
    let other = t.path().join("open.json");
    std::fs::write(
        &other,
        CATALOG.replacen("\"job_finished\"", "\"job_started\"", 1),
    )
    .unwrap();
    spool(&dir)
        .args([
            "--catalog".as_ref(),
            other.as_os_str(),
            "track".as_ref(),
            "job_started".as_ref(),
        ])
        .ok();
    spool(&dir).args(["config", "unset", "catalog"]).ok();
    spool(&dir).args(["track", "anything_goes"]).ok();
    assert_eq!(queued(&dir).len(), 2);
}

#[test]
fn a_hosts_telemetry_schema_prints_the_page_from_its_catalog() {
    let (_t, dir) = temp();
    let out = run_clean(
        &example_bin("job_runner"),
        &["telemetry", "schema"],
        &[("JOBRUNNER_TELEMETRY_DIR", dir.to_str().unwrap())],
    );
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = md
        .split("## `job_finished` (usage)")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim_start_matches("| `").split('`').next().unwrap())
        .collect();
    assert_eq!(rows, reference_job_fields());
    assert!(!dir.exists(), "printing the page writes nothing");
}
