//! `spool flush [--endpoint URL] [--timeout DURATION] [--force] [--detach]`

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::limits::parse_duration;
use crate::{FlushEnd, FlushOptions, Spool};

/// Arguments of `spool flush`.
#[derive(Debug, Clone, Args)]
pub struct FlushArgs {
    /// Wire format: native, posthog, segment or otlp; default: SPOOL_DESTINATION, then the persisted one
    #[arg(long, value_name = "KIND")]
    pub destination: Option<String>,
    /// Collection endpoint (https://, or http:// to a loopback host); default: SPOOL_ENDPOINT, then the persisted one, then the kind's default
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// PostHog project key or Segment write key; default: SPOOL_API_KEY, then the persisted one
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// An extra request header, e.g. authorization=Bearer… for an OTLP collector (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Give up after this long, e.g. 60s or 500ms
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: String,
    /// Hand the flush to a background process and return at once (prints its pid)
    #[arg(long)]
    pub detach: bool,
    /// With --detach: start the background flush only if one is due (a batch queued, or the oldest event older than the flush interval), never while backing off or beside another flusher
    #[arg(long, requires = "detach")]
    pub if_due: bool,
    /// Send now even while backing off after a failure (another running flush is still waited for)
    #[arg(long, conflicts_with = "detach")]
    pub force: bool,
    /// Print the report as one JSON object (with --detach: {"detached": …, "pid"|"skipped": …})
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(spool: &Spool, args: FlushArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    super::check_env_limits()?;
    let deadline = parse_duration("--timeout", &args.timeout)?;
    let destination = target(spool, &args)?;
    if args.detach {
        return detach(spool, destination, deadline, &args, out);
    }
    let bar = if args.json { None } else { progress_bar() };
    let opts = FlushOptions {
        endpoint: None,
        destination,
        deadline,
        progress: bar.clone().map(|b| {
            Arc::new(move |done: u64, total: u64| {
                b.set_length(total);
                b.set_position(done);
            }) as crate::Progress
        }),
        force: args.force,
    };
    let report = spool.flush_blocking(opts).context("flush failed")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    let dropped: Vec<String> = report
        .dropped
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let dropped = if dropped.is_empty() {
        "0".to_string()
    } else {
        format!("{} ({})", report.dropped_total(), dropped.join(", "))
    };
    match &report.end {
        FlushEnd::Disabled { reason } if report.requests == 0 => {
            writeln!(out, "Telemetry is disabled ({reason}); nothing sent.")?
        }
        FlushEnd::Busy { pid } => writeln!(
            out,
            "Another flush (pid {pid}) holds the queue; nothing sent."
        )?,
        end => {
            writeln!(
                out,
                "sent {}, dropped {dropped}, remaining {}",
                report.sent, report.remaining
            )?;
            let why = report.reason.as_deref();
            match end {
                FlushEnd::BackingOff { until } if report.requests == 0 => writeln!(
                    out,
                    "Not sent: {}; backing off until {until} (--force to try now).",
                    why.unwrap_or("backing off after an earlier failure")
                )?,
                FlushEnd::BackingOff { until } => writeln!(
                    out,
                    "Stopped: {}; backing off until {until}.",
                    why.unwrap_or("a retryable failure")
                )?,
                FlushEnd::Deadline => writeln!(
                    out,
                    "Stopped: {}; run again to continue.",
                    why.unwrap_or("reached the deadline")
                )?,
                FlushEnd::Disabled { reason } => {
                    writeln!(out, "Stopped: telemetry was turned off ({reason}).")?
                }
                _ => {
                    // A delivered round may still have something to say (a collector's
                    // partial success): "Dropped" only when something was.
                    if let Some(why) = why {
                        let head = if report.dropped_total() > 0 {
                            "Dropped"
                        } else {
                            "Note"
                        };
                        writeln!(out, "{head}: {why}.")?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The destination this flush sends to, from the flags over the environment over
/// the persisted one, checked before anything is sent; `None`: no endpoint (the
/// flush says so).
fn target(spool: &Spool, args: &FlushArgs) -> anyhow::Result<Option<crate::DestinationConfig>> {
    let over = crate::destination::Overrides {
        kind: args.destination.as_deref().map(str::parse).transpose()?,
        endpoint: args.endpoint.clone(),
        api_key: args.api_key.clone(),
        headers: args
            .headers
            .iter()
            .map(|h| crate::destination::parse_header(h))
            .collect::<crate::Result<_>>()?,
    };
    let target = spool.target(None, &over)?;
    Ok(target.as_ref().map(crate::DestinationConfig::from))
}

fn detach(
    spool: &Spool,
    endpoint: Option<crate::DestinationConfig>,
    lifetime: Duration,
    args: &FlushArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let done = spool.flush_detached_to(endpoint, lifetime, args.if_due)?;
    if args.json {
        let v = match &done {
            crate::Detached::Spawned(pid) => serde_json::json!({"detached": true, "pid": pid}),
            crate::Detached::Skipped(why) => {
                serde_json::json!({"detached": false, "skipped": why.code(), "why": why.to_string()})
            }
        };
        writeln!(out, "{v}")?;
        return Ok(());
    }
    match done {
        crate::Detached::Spawned(pid) => {
            writeln!(out, "Flushing in the background (pid {pid}).")?;
        }
        crate::Detached::Skipped(why) => {
            writeln!(out, "Not flushing in the background: {why}.")?;
        }
    }
    Ok(())
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {msg}")
    {
        bar.set_style(style);
    }
    Some(bar)
}
