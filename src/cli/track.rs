//! `spool track EVENT [-p key=value]… [--props JSON]`, and `spool track --stdin` for
//! many events in one call (NDJSON in, one id per line out).

use std::io::{Read, Write};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::{Event, Recorded, Spool};

/// Arguments of `spool track`.
#[derive(Debug, Clone, Args)]
pub struct TrackArgs {
    /// Event name: 1-64 characters of A-Z a-z 0-9 _ . : -
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    pub event: Option<String>,
    /// A property: `key=value` stores a string, `key:=JSON` a typed value (e.g. `count:=3`)
    #[arg(
        short = 'p',
        long = "prop",
        value_name = "KEY=VALUE",
        conflicts_with = "stdin"
    )]
    pub props: Vec<String>,
    /// Properties as one JSON object; `-p` entries override its keys
    #[arg(long = "props", value_name = "JSON", conflicts_with = "stdin")]
    pub props_json: Option<String>,
    /// A property stored exactly as given, skipping the privacy scrubber (same syntax as
    /// -p): only for values known to hold no personal data, such as a hash
    #[arg(
        short = 'u',
        long = "unscrubbed",
        value_name = "KEY=VALUE",
        conflicts_with = "stdin"
    )]
    pub unscrubbed: Vec<String>,
    /// Read events from stdin, one JSON object per line ({"event": …, "properties": {…}}),
    /// and record them all in one transaction: all or none. Prints one id per line
    #[arg(long)]
    pub stdin: bool,
    /// The session this event belongs to (a UUID; UUIDv7 for PostHog), so that a host
    /// calling `spool` once per event keeps one session; default: a new one per call
    #[arg(long, env = "SPOOL_SESSION_ID", value_name = "UUID")]
    pub session_id: Option<String>,
    /// The host tool and its version, sent as context.tool, e.g. @acme/cli@1.2.0
    #[arg(long, env = "SPOOL_TOOL", value_name = "NAME@VERSION")]
    pub tool: Option<String>,
    /// Print {"id": …} per event (or {"recorded": false, "reason": …}) instead of bare ids
    #[arg(long)]
    pub json: bool,
    /// Set from the global `--quiet`: no notice when telemetry is off.
    #[arg(skip)]
    pub quiet: bool,
}

/// Parses one `spool track -p` argument: `key=value` gives a string, `key:=JSON` a
/// typed value.
///
/// ```
/// let (k, v) = eventspool::cli::parse_property_arg("count:=3").unwrap();
/// assert_eq!((k.as_str(), v), ("count", serde_json::json!(3)));
/// ```
pub fn parse_pair(arg: &str) -> anyhow::Result<(String, Value)> {
    parse_pair_for("-p", arg)
}

/// [`parse_pair`] for the flag `flag` (`-p` or `-u`), named in its errors.
fn parse_pair_for(flag: &str, arg: &str) -> anyhow::Result<(String, Value)> {
    let Some(eq) = arg.find('=') else {
        bail!("{flag} expects key=value or key:=json, got {arg:?}");
    };
    let (key, value) = (&arg[..eq], &arg[eq + 1..]);
    let (key, value) = match key.strip_suffix(':') {
        Some(k) => (
            k,
            serde_json::from_str(value)
                .with_context(|| format!("{flag} {k}:= needs a JSON value, got {value:?}"))?,
        ),
        None => (key, Value::String(value.to_string())),
    };
    if key.is_empty() {
        bail!("{flag} has an empty key in {arg:?}");
    }
    Ok((key.to_string(), value))
}

/// Most bytes `spool track --stdin` reads: far more than the queue holds by default.
const MAX_STDIN_BYTES: u64 = 64 * 1024 * 1024;

/// One line of `spool track --stdin`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    event: String,
    #[serde(default)]
    properties: Option<Value>,
    /// Properties stored as given, skipping the scrubber (`spool track -u`).
    #[serde(default)]
    unscrubbed: Option<serde_json::Map<String, Value>>,
}

/// Parses the NDJSON of `spool track --stdin`: one event per non-blank line, each
/// checked, an error naming its line.
pub(super) fn parse_ndjson(text: &str) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("stdin line {}", n + 1);
        let line: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: expected {{\"event\": NAME, \"properties\": {{…}}}}",
                at()
            )
        })?;
        crate::event::validate_name(&line.event).with_context(at)?;
        let mut event = Event::new(&line.event);
        if let Some(props) = line.properties.filter(|p| !p.is_null()) {
            event = event.properties(props).with_context(at)?;
        }
        for (k, v) in line.unscrubbed.unwrap_or_default() {
            event = event.unscrubbed_property(k, v);
        }
        events.push(event);
    }
    if events.is_empty() {
        bail!("stdin held no events");
    }
    Ok(events)
}

pub(super) fn run(spool: &Spool, args: TrackArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    super::check_env_limits()?;
    let events = if args.stdin {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_STDIN_BYTES + 1)
            .read_to_string(&mut text)
            .context("could not read stdin")?;
        if text.len() as u64 > MAX_STDIN_BYTES {
            bail!("stdin holds more than {MAX_STDIN_BYTES} bytes of events");
        }
        let events = parse_ndjson(&text)?;
        // More than the queue holds would evict the batch's own first lines in the
        // same commit, printing ids of events already gone. (Opted out in the
        // environment, nothing is recorded: the limits in `config.json` are not read.)
        let max = match spool.inner.env_opt_out() {
            Some(_) => u64::MAX,
            None => spool.limits().max_events,
        };
        if events.len() as u64 > max {
            bail!(
                "stdin holds {} events, more than the queue holds (max_events {max}); none was recorded",
                events.len()
            );
        }
        events
    } else {
        let name = args.event.as_deref().unwrap_or_default();
        crate::event::validate_name(name)?;
        let mut event = Event::new(name);
        if let Some(json) = &args.props_json {
            let value: Value = serde_json::from_str(json).context("--props is not valid JSON")?;
            event = event.properties(value).context("--props")?;
        }
        for pair in &args.props {
            let (k, v) = parse_pair(pair)?;
            event = event.property(k, v);
        }
        for pair in &args.unscrubbed {
            let (k, v) = parse_pair_for("-u", pair)?;
            event = event.unscrubbed_property(k, v);
        }
        vec![event]
    };
    let n = events.len();
    let recorded = spool.try_track_batch(events).with_context(|| match n {
        1 => "could not record the event".to_string(),
        n => format!("could not record the {n} events (none was recorded)"),
    })?;
    for r in &recorded {
        match r {
            Recorded::Queued(id) if args.json => {
                writeln!(out, "{}", serde_json::json!({"id": id}))?
            }
            Recorded::Queued(id) => writeln!(out, "{id}")?,
            other if args.json => {
                let reason = match other {
                    Recorded::Printed => "debug mode: printed to stderr, not queued".to_string(),
                    _ => {
                        spool
                            .inner
                            .env_opt_out()
                            .unwrap_or_else(|| spool.consent())
                            .reason
                    }
                };
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"recorded": false, "reason": reason})
                )?
            }
            _ => {}
        }
    }
    // A script calling `spool track` for an opted-out user must not litter its
    // stderr on every call: the notice is for a person at a terminal.
    if recorded.iter().any(|r| matches!(r, Recorded::Disabled))
        && !args.json
        && !args.quiet
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        eprintln!(
            "spool: telemetry is disabled ({}); nothing recorded",
            spool.consent().reason
        );
    }
    Ok(())
}

/// Checks `--session-id`: a UUID, any version, written in any of the usual forms;
/// returns it hyphenated and lower-case.
pub(super) fn parse_session_id(value: &str) -> anyhow::Result<String> {
    let id = uuid::Uuid::parse_str(value.trim())
        .map_err(|_| anyhow::anyhow!("--session-id must be a UUID, got {value:?}"))?;
    Ok(id.hyphenated().to_string())
}

/// Splits `--tool NAME@VERSION` at its last `@`, so a scoped npm name such as
/// `@acme/cli@1.2.0` keeps its own.
pub(super) fn parse_tool(value: &str) -> anyhow::Result<(String, String)> {
    let bad = || anyhow::anyhow!("--tool expects NAME@VERSION (e.g. mytool@1.2.3), got {value:?}");
    let (name, version) = value.rsplit_once('@').ok_or_else(bad)?;
    let ok = |s: &str| !s.is_empty() && s.len() <= 100 && !s.chars().any(char::is_control);
    if !ok(name) || !ok(version) || version.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((name.to_string(), version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        assert_eq!(parse_pair("a=b").unwrap(), ("a".into(), Value::from("b")));
        assert_eq!(
            parse_pair("a=b=c").unwrap(),
            ("a".into(), Value::from("b=c"))
        );
        assert_eq!(parse_pair("n:=3").unwrap(), ("n".into(), Value::from(3)));
        assert_eq!(
            parse_pair("v=1.10").unwrap(),
            ("v".into(), Value::from("1.10"))
        );
        assert_eq!(
            parse_pair("error.message=").unwrap(),
            ("error.message".into(), Value::from(""))
        );
        assert!(parse_pair("novalue").is_err());
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("n:={").is_err());
    }

    #[test]
    fn ndjson_lines_are_checked_one_by_one_and_named() {
        let ok = parse_ndjson("{\"event\":\"a\"}\n\n{\"event\":\"b\",\"properties\":{\"n\":1}}\n")
            .unwrap();
        assert_eq!(ok.len(), 2);
        let kept = parse_ndjson("{\"event\":\"a\",\"unscrubbed\":{\"h\":\"ab\"}}").unwrap();
        assert!(kept[0].is_unscrubbed("h"));
        for (text, says) in [
            ("{\"event\":\"a\"}\nnot json", "stdin line 2"),
            ("{\"event\":\"a b\"}", "stdin line 1"),
            ("{\"event\":\"a\",\"props\":{}}", "stdin line 1"),
            ("{\"event\":\"a\",\"properties\":[1]}", "stdin line 1"),
            ("\n  \n", "no events"),
        ] {
            let e = format!("{:#}", parse_ndjson(text).unwrap_err());
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn session_ids_and_tools() {
        let v7 = uuid::Uuid::now_v7().to_string();
        assert_eq!(parse_session_id(&v7.to_uppercase()).unwrap(), v7);
        assert!(parse_session_id("session-1").is_err());
        assert_eq!(
            parse_tool("@paklo/cli@0.21.0").unwrap(),
            ("@paklo/cli".into(), "0.21.0".into())
        );
        for bad in ["tool", "tool@", "@1.0", "t@1 2"] {
            assert!(parse_tool(bad).is_err(), "{bad}");
        }
    }
}
