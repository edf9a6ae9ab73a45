//! `spool show ID`

use std::io::Write;

use clap::Args;

use crate::Spool;

/// Arguments of `spool show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The event's id, or a unique prefix of it
    pub id: String,
    /// Print the payload on one line, byte for byte as queued
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(spool: &Spool, args: ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let event = spool.get(&args.id)?;
    if args.json {
        writeln!(out, "{}", event.payload)?;
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_str(&event.payload)?;
    writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    Ok(())
}
