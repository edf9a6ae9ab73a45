//! `spool serve [--addr 127.0.0.1:PORT] [--out FILE.jsonl]`

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::collector::Collector;

/// Arguments of `spool serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub addr: String,
    /// Append each new event to this JSONL file (ids already in it are not saved twice)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Allow an address other machines can reach (the sink has no authentication)
    #[arg(long)]
    pub allow_remote: bool,
}

pub(super) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let collector = Arc::new(Collector::new(args.out.as_deref(), true)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        // An unauthenticated sink on every interface accepts anyone's events: only
        // when asked for in so many words, and said out loud.
        if !addr.ip().is_loopback() {
            if !args.allow_remote {
                anyhow::bail!(
                    "refusing to listen on {addr}: other machines can reach it and the development sink has no authentication; use a loopback address, or pass --allow-remote"
                );
            }
            eprintln!(
                "spool serve: warning: listening on {addr}, reachable from other machines, without authentication"
            );
        }
        let saved = args.out.as_ref().map_or_else(
            || "not saved".to_string(),
            |p| format!("appended to {}", p.display()),
        );
        eprintln!(
            "spool serve: listening on http://{addr}/ (a development sink; events printed, {saved})"
        );
        tokio::select! {
            r = crate::collector::serve(listener, collector) => r.context("server failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
