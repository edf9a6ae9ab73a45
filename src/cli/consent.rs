//! `spool enable` and `spool disable`

use std::io::Write;

use crate::Spool;

pub(super) fn enable(spool: &Spool, out: &mut dyn Write) -> anyhow::Result<()> {
    spool.enable()?;
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

pub(super) fn disable(spool: &Spool, out: &mut dyn Write) -> anyhow::Result<()> {
    let purged = spool.disable()?;
    writeln!(
        out,
        "Telemetry disabled for {}; purged {purged} queued event{}.",
        spool.app(),
        if purged == 1 { "" } else { "s" }
    )?;
    Ok(())
}
