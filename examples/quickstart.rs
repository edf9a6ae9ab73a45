//! The whole loop in one command: `cargo run --example quickstart`.
//!
//! Starts a local collection endpoint (the one `spool serve` runs), records a few
//! events into a queue in a temporary directory, lists the queue, flushes it, and
//! shows what the endpoint received. Nothing leaves this machine.

use std::sync::Arc;
use std::time::Duration;

use eventspool::collector::Collector;
use eventspool::{Event, FlushOptions, Spool};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    eventspool::detached_flush_hook();
    let work = tempfile::tempdir()?;
    let received = work.path().join("received.jsonl");

    // 1. A local endpoint, like `spool serve --out received.jsonl`.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let endpoint = format!("http://{}/v1/events", listener.local_addr()?);
    let collector = Arc::new(Collector::new(Some(&received), false)?);
    rt.spawn(eventspool::collector::serve(listener, collector));
    println!("1. local endpoint listening at {endpoint}");

    // 2. A host records events: each lands in the SQLite queue at once.
    let spool = Spool::builder("quickstart")
        .dir(work.path().join("queue"))
        .tool("quickstart", env!("CARGO_PKG_VERSION"))
        .endpoint(&endpoint)
        .build();
    spool.track(Event::new("cli_invoked").property("command", "build"));
    spool.track(
        Event::new("job_finished")
            .property("duration_ms", 1234)
            .property("success", false)
            // Scrubbed before it is stored: the home directory becomes `~`.
            .property(
                "error.message",
                format!(
                    "cannot open {}/project/app.toml",
                    std::env::var("HOME").unwrap_or_default()
                ),
            ),
    );
    spool.track(Event::new("session").property("request_count", 3));
    if !spool.consent().enabled {
        println!(
            "telemetry is disabled here ({}); nothing to show",
            spool.consent().reason
        );
        return Ok(());
    }

    // 3. What is queued, exactly as it will be sent (`spool list`).
    println!(
        "2. queued in {}:",
        spool
            .dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    for e in spool.list(10)? {
        println!("   {}  {:<13} {} bytes", e.id, e.event, e.bytes);
    }
    let first = &spool.list(10)?[1];
    println!("   payload of {}: {}", first.event, first.payload);

    // 4. Flush (`spool flush`).
    let report = spool.flush_blocking(FlushOptions::with_deadline(Duration::from_secs(10)))?;
    println!(
        "3. flushed: sent {}, dropped {}, remaining {}",
        report.sent,
        report.dropped_total(),
        report.remaining
    );

    // 5. What the endpoint received.
    let lines = std::fs::read_to_string(&received)?;
    println!("4. the endpoint received {} events:", lines.lines().count());
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        println!("   {} {}", v["event"], v["properties"]);
    }
    Ok(())
}
