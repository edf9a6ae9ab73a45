//! `spool clear`

use std::io::Write;

use crate::Spool;

pub(super) fn run(spool: &Spool, out: &mut dyn Write) -> anyhow::Result<()> {
    let n = spool.clear()?;
    writeln!(
        out,
        "Removed {n} queued event{}.",
        if n == 1 { "" } else { "s" }
    )?;
    Ok(())
}
