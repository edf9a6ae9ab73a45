//! `spool clear [--json]`

use std::io::Write;

use super::JsonArg;
use crate::Spool;

pub(super) fn run(spool: &Spool, args: JsonArg, out: &mut dyn Write) -> anyhow::Result<()> {
    let n = spool.clear()?;
    if args.json {
        writeln!(out, "{}", serde_json::json!({"removed": n}))?;
        return Ok(());
    }
    writeln!(
        out,
        "Removed {n} queued event{}.",
        if n == 1 { "" } else { "s" }
    )?;
    if spool.deletion_request_pending() {
        writeln!(
            out,
            "Kept the pending deletion request: it asks the receiver to erase what it holds, and is sent even while telemetry is off."
        )?;
    }
    Ok(())
}
