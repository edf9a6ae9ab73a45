//! `spool list [--json] [--limit N]`

use std::io::Write;

use clap::Args;
use serde_json::value::RawValue;

use crate::time::rfc3339_ms;
use crate::{QueuedEvent, Spool};

/// Arguments of `spool list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// One JSON object per line: id, event, created_at, attempts, next_attempt_at, bytes, payload
    #[arg(long)]
    pub json: bool,
    /// Show at most N events (oldest first); at least 1
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    id: &'a str,
    event: &'a str,
    created_at: String,
    attempts: u32,
    next_attempt_at: Option<String>,
    bytes: u64,
    payload: &'a RawValue,
}

pub(super) fn run(spool: &Spool, args: ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let limit = args.limit.map_or(usize::MAX >> 1, |n| {
        usize::try_from(n).unwrap_or(usize::MAX >> 1)
    });
    let events = spool.list(limit)?;
    if args.json {
        for e in &events {
            writeln!(out, "{}", json_line(e)?)?;
        }
        return Ok(());
    }
    if events.is_empty() {
        writeln!(out, "The queue is empty.")?;
        return Ok(());
    }
    let width = events
        .iter()
        .map(|e| e.event.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<36}  {:<width$}  {:<24}  {:>8}  {:>6}",
        "ID", "EVENT", "CREATED", "ATTEMPTS", "BYTES"
    )?;
    for e in &events {
        writeln!(
            out,
            "{:<36}  {:<width$}  {:<24}  {:>8}  {:>6}",
            e.id,
            e.event,
            rfc3339_ms(e.created_at),
            e.attempts,
            e.bytes
        )?;
    }
    let status = spool.status()?;
    if status.queue.events as usize > events.len() {
        writeln!(
            out,
            "({} of {} queued events shown)",
            events.len(),
            status.queue.events
        )?;
    }
    Ok(())
}

/// One `--json` line: the queue's view of the event, with the payload embedded byte
/// for byte as it will be sent.
pub(crate) fn json_line(e: &QueuedEvent) -> anyhow::Result<String> {
    let payload: &RawValue = serde_json::from_str(&e.payload)?;
    Ok(serde_json::to_string(&JsonLine {
        id: &e.id,
        event: &e.event,
        created_at: rfc3339_ms(e.created_at),
        attempts: e.attempts,
        next_attempt_at: (e.next_attempt_at > 0).then(|| rfc3339_ms(e.next_attempt_at)),
        bytes: e.bytes,
        payload,
    })?)
}
