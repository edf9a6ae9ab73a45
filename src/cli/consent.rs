//! `spool enable`, `spool disable`, and `spool consent ask|status`

use std::io::Write;

use clap::{Args, Subcommand};

use super::JsonArg;
use crate::Spool;

/// Arguments of `spool consent`.
#[derive(Debug, Clone, Args)]
pub struct ConsentArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ConsentAction,
}

/// `ask` or `status`.
#[derive(Debug, Clone, Subcommand)]
pub enum ConsentAction {
    /// Ask once, at a terminal, if the policy is opt_in and nobody answered for
    /// this catalog; otherwise ask nothing. Prints granted, denied or undecided
    Ask(JsonArg),
    /// Print granted, denied or undecided (with --json, the rule that decided)
    Status(JsonArg),
}

pub(super) fn consent(spool: &Spool, args: ConsentArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (json, decision) = match args.action {
        ConsentAction::Ask(a) => (a.json, spool.ask_consent()),
        ConsentAction::Status(a) => (a.json, spool.consent().decision),
    };
    if json {
        let c = spool.consent();
        let v = serde_json::json!({
            "app": spool.app(),
            "decision": decision,
            "enabled": c.enabled,
            "policy": c.policy,
            "rule": c.rule,
            "reason": c.reason,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{decision}")?;
    }
    Ok(())
}

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
