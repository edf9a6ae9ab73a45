//! `spool show ID`

use std::io::Write;

use clap::Args;

use crate::Spool;

/// Arguments of `spool show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The event's id, or a unique prefix of it
    pub id: String,
}

pub(super) fn run(spool: &Spool, args: ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let event = spool.get(&args.id)?;
    let value: serde_json::Value = serde_json::from_str(&event.payload)?;
    writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    Ok(())
}
