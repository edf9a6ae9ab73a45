//! `schema [--json]`

use std::io::Write;

use clap::Args;

use crate::Spool;

/// Arguments of `schema`.
#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// Print the fields as JSON instead of a Markdown table
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(spool: &Spool, args: SchemaArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let schema = spool.schema()?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&schema)?)?;
    } else {
        write!(out, "{}", schema.to_markdown())?;
    }
    Ok(())
}
