//! `spool enable` and `spool disable`

use std::io::Write;

use super::JsonArg;
use crate::Spool;

/// What `enable`/`disable --json` print: the choice saved, and what is in force.
fn json_line(spool: &Spool, purged: Option<u64>) -> String {
    let consent = spool.consent();
    let mut v = serde_json::json!({
        "app": spool.app(),
        "enabled": consent.enabled,
        "rule": consent.rule,
        "reason": consent.reason,
    });
    if let Some(n) = purged {
        v["purged"] = n.into();
    }
    v.to_string()
}

pub(super) fn enable(spool: &Spool, args: JsonArg, out: &mut dyn Write) -> anyhow::Result<()> {
    spool.enable()?;
    if args.json {
        writeln!(out, "{}", json_line(spool, None))?;
        return Ok(());
    }
    let consent = spool.consent();
    if consent.enabled {
        writeln!(out, "Telemetry enabled for {}.", spool.app())?;
    } else {
        writeln!(
            out,
            "Saved the choice to enable telemetry for {}, but it stays off: {}.",
            spool.app(),
            consent.reason
        )?;
    }
    Ok(())
}

pub(super) fn disable(spool: &Spool, args: JsonArg, out: &mut dyn Write) -> anyhow::Result<()> {
    let purged = spool.disable()?;
    if args.json {
        writeln!(out, "{}", json_line(spool, Some(purged)))?;
        return Ok(());
    }
    writeln!(
        out,
        "Telemetry disabled for {}; purged {purged} queued event{}.",
        spool.app(),
        if purged == 1 { "" } else { "s" }
    )?;
    Ok(())
}
