//! `spool status [--json]`

use std::io::Write;

use clap::Args;

use crate::Spool;
use crate::time::rfc3339_ms;

/// Arguments of `spool status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(spool: &Spool, args: StatusArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    super::check_env_limits()?;
    let s = spool.status()?;
    let q = &s.queue;
    let time = |ms: Option<i64>| ms.map(rfc3339_ms);
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&s)?)?;
        return Ok(());
    }
    let on = if s.consent.enabled {
        "enabled"
    } else {
        "disabled"
    };
    writeln!(out, "telemetry:  {on} ({})", s.consent.reason)?;
    writeln!(
        out,
        "consent:    {} (policy {}; deletion request on opt-out: {})",
        s.consent.decision,
        s.consent.policy,
        if s.deletion_request { "on" } else { "off" }
    )?;
    if s.debug {
        writeln!(
            out,
            "debug:      on (events are printed to stderr, not queued)"
        )?;
    }
    writeln!(out, "app:        {}", s.app)?;
    writeln!(
        out,
        "dir:        {}",
        s.dir
            .as_ref()
            .map_or("(no home directory)".into(), |d| d.display().to_string())
    )?;
    let d = &s.destination;
    let mut sends = d.kind.to_string();
    if let Some(key) = &d.api_key {
        sends.push_str(&format!(", key {key}"));
    }
    if !d.headers.is_empty() {
        let names: Vec<&str> = d.headers.keys().map(String::as_str).collect();
        sends.push_str(&format!(", headers {}", names.join(", ")));
    }
    if let Some(p) = d
        .protocol
        .filter(|_| d.kind == crate::DestinationKind::Otlp)
    {
        sends.push_str(match p {
            crate::OtlpProtocol::Protobuf => ", http/protobuf",
            crate::OtlpProtocol::Json => ", http/json",
        });
    }
    if d.set_by_user {
        sends.push_str(" (set by you: spool config unset destination to give it back)");
    }
    writeln!(out, "destination: {sends}")?;
    writeln!(
        out,
        "endpoint:   {}",
        s.endpoint.as_deref().unwrap_or("(none)")
    )?;
    writeln!(out, "queued:     {} events, {} bytes", q.events, q.bytes)?;
    writeln!(
        out,
        "oldest:     {}",
        time(q.oldest).unwrap_or_else(|| "-".into())
    )?;
    writeln!(out, "sent:       {}", q.sent)?;
    let dropped: Vec<String> = q.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(
        out,
        "dropped:    {}",
        if dropped.is_empty() {
            "none".into()
        } else {
            dropped.join(", ")
        }
    )?;
    if q.dropped_undeclared > 0 || spool.catalog().is_some() {
        writeln!(
            out,
            "dropped_undeclared: {} (refused by the catalog before they were recorded; only the count is kept)",
            q.dropped_undeclared
        )?;
    }
    if let Some(nb) = q.not_before.filter(|t| *t > crate::time::now_ms()) {
        writeln!(out, "backoff:    no delivery before {}", rfc3339_ms(nb))?;
    }
    match &q.last_flush {
        Some(f) => writeln!(out, "last flush: {}", summarize_flush(f))?,
        None => writeln!(out, "last flush: never")?,
    }
    Ok(())
}

fn summarize_flush(f: &crate::LastFlush) -> String {
    let r = &f.report;
    let mut line = format!(
        "{}: sent {}, dropped {}, retried {}, remaining {}",
        f.finished_at, r.sent, f.dropped_total, r.retried, r.remaining
    );
    if let Some(why) = &r.reason {
        line.push_str(&format!(" ({why})"));
    }
    line
}
