//! `spool track EVENT [-p key=value]… [--props JSON]`

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::{Event, Recorded, Spool};

/// Arguments of `spool track`.
#[derive(Debug, Clone, Args)]
pub struct TrackArgs {
    /// Event name: 1-64 characters of A-Z a-z 0-9 _ . : -
    pub event: String,
    /// A property: `key=value` stores a string, `key:=JSON` a typed value (e.g. `count:=3`)
    #[arg(short = 'p', long = "prop", value_name = "KEY=VALUE")]
    pub props: Vec<String>,
    /// Properties as one JSON object; `-p` entries override its keys
    #[arg(long = "props", value_name = "JSON")]
    pub props_json: Option<String>,
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
    let Some(eq) = arg.find('=') else {
        bail!("-p expects key=value or key:=json, got {arg:?}");
    };
    let (key, value) = (&arg[..eq], &arg[eq + 1..]);
    let (key, value) = match key.strip_suffix(':') {
        Some(k) => (
            k,
            serde_json::from_str(value)
                .with_context(|| format!("-p {k}:= needs a JSON value, got {value:?}"))?,
        ),
        None => (key, Value::String(value.to_string())),
    };
    if key.is_empty() {
        bail!("-p has an empty key in {arg:?}");
    }
    Ok((key.to_string(), value))
}

pub(super) fn run(spool: &Spool, args: TrackArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    super::check_env_limits()?;
    crate::event::validate_name(&args.event)?;
    let mut event = Event::new(&args.event);
    if let Some(json) = &args.props_json {
        let value: Value = serde_json::from_str(json).context("--props is not valid JSON")?;
        event = event.properties(value).context("--props")?;
    }
    for pair in &args.props {
        let (k, v) = parse_pair(pair)?;
        event = event.property(k, v);
    }
    match spool
        .try_track(event)
        .context("could not record the event")?
    {
        Recorded::Queued(id) => writeln!(out, "{id}")?,
        // A script calling `spool track` for an opted-out user must not litter its
        // stderr on every call: the notice is for a person at a terminal.
        Recorded::Disabled => {
            if !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!(
                    "spool: telemetry is disabled ({}); nothing recorded",
                    spool.consent().reason
                );
            }
        }
        Recorded::Printed => {}
    }
    Ok(())
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
}
