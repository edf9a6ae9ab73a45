//! `schema [--json] [--check]`: the page to publish, from the catalog when there is
//! one (else from the samples or what is queued); `--check` compares the queue and the
//! destination with the catalog.

use std::io::Write;

use clap::Args;

use crate::Spool;

/// Arguments of `schema`.
#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// Print the page as JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
    /// Compare what is queued now (and the destination) with the catalog: list every
    /// difference, exit 1 if there is any
    #[arg(long)]
    pub check: bool,
}

pub(super) fn run(spool: &Spool, args: SchemaArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.check {
        return check(spool, args.json, out);
    }
    if let Some(page) = spool.page() {
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&page)?)?;
        } else {
            write!(out, "{}", page.to_markdown())?;
        }
        return Ok(());
    }
    let schema = spool.schema()?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&schema)?)?;
    } else {
        write!(out, "{}", schema.to_markdown())?;
    }
    Ok(())
}

fn check(spool: &Spool, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let differences = spool.catalog_differences()?;
    if json {
        let doc = serde_json::json!({"clean": differences.is_empty(), "differences": differences});
        writeln!(out, "{doc}")?;
    } else if differences.is_empty() {
        writeln!(
            out,
            "no differences: what is queued and the destination agree with the catalog"
        )?;
    } else {
        for d in &differences {
            writeln!(out, "- {d}")?;
        }
    }
    match differences.len() {
        0 => Ok(()),
        1 => anyhow::bail!("1 difference between the catalog and what is queued or configured"),
        n => anyhow::bail!("{n} differences between the catalog and what is queued or configured"),
    }
}
