//! A dev tool with the journey-and-session design: journey events at milestones
//! (`cli_invoked`, `setup_completed`, `first_request`, `dashboard_viewed`,
//! `cli_uninstall`) and one `session` summary on exit. Sending is handed to a
//! detached child, so the tool exits at once and network failures never show.
//!
//! ```sh
//! cargo run --example devtool -- setup
//! cargo run --example devtool -- dev --requests 5 --errors 1 --open-dashboard
//! cargo run --example devtool -- telemetry status
//! DEVTOOL_TELEMETRY=false cargo run --example devtool -- dev     # opted out
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use eventspool::{Event, Spool};
use serde_json::Value;

const APP: &str = "devtool";

#[derive(Parser)]
#[command(name = "devtool", version, about = "A development server")]
enum Cli {
    /// Set up the project
    Setup,
    /// Run the development server (simulated: serves some requests, then stops)
    Dev {
        /// Requests to serve
        #[arg(long, default_value_t = 3)]
        requests: u64,
        /// How many of them fail
        #[arg(long, default_value_t = 0)]
        errors: u64,
        /// Open the dashboard
        #[arg(long)]
        open_dashboard: bool,
    },
    /// Remove devtool from this machine
    Uninstall,
    /// See, send or switch off the usage statistics devtool keeps
    #[command(subcommand)]
    Telemetry(eventspool::cli::TelemetryCommand),
}

fn spool() -> Spool {
    Spool::builder(APP)
        .tool(APP, env!("CARGO_PKG_VERSION"))
        .endpoint("https://telemetry.devtool.example/v1/events")
        .describe(|| {
            vec![
                Event::new("cli_invoked").property("command", "dev"),
                Event::new("setup_completed").property("setup_duration_ms", 1),
                Event::new("first_request").property("time_to_first_request_ms", 1),
                Event::new("dashboard_viewed"),
                Event::new("cli_uninstall"),
                session_event(&Session::default(), "completed", true, Some(1), Some(1)),
            ]
        })
        .build()
}

#[derive(Default)]
struct Session {
    requests: u64,
    errors: u64,
    duration: Duration,
}

fn session_event(
    s: &Session,
    exit_reason: &str,
    first: bool,
    setup_ms: Option<u64>,
    ttfr_ms: Option<u64>,
) -> Event {
    Event::new("session")
        .property("request_count", s.requests)
        .property("error_count", s.errors)
        .property("session_duration_s", s.duration.as_secs_f64())
        .property("exit_reason", exit_reason)
        .property("first_session", first)
        .property("setup_duration_ms", setup_ms)
        .property("time_to_first_request_ms", ttfr_ms)
}

/// Reads a number devtool keeps in its telemetry settings (beside the anonymous id).
fn remembered(spool: &Spool, key: &str) -> Option<u64> {
    spool.host_value(key).as_ref().and_then(Value::as_u64)
}

fn remember(spool: &Spool, key: &str, value: u64) {
    let _ = spool.set_host_value(key, value);
}

fn main() -> ExitCode {
    eventspool::detached_flush_hook();
    let cli = Cli::parse();
    let spool = spool();
    if let Cli::Telemetry(cmd) = cli {
        return cmd.execute(&spool);
    }
    // With telemetry off nothing below may write a file: every step checks.
    let on = spool.consent().enabled;
    if on {
        spool.notice_once(
            "devtool collects anonymous usage statistics (never code, paths or names).\n\
             See `devtool telemetry schema`; opt out with DEVTOOL_TELEMETRY=false or `devtool telemetry disable`.",
        );
    }
    let started = Instant::now();
    let command = match &cli {
        Cli::Setup => "setup",
        Cli::Dev { .. } => "dev",
        Cli::Uninstall => "uninstall",
        Cli::Telemetry(_) => "telemetry",
    };
    spool.track(Event::new("cli_invoked").property("command", command));

    match cli {
        Cli::Setup => {
            std::thread::sleep(Duration::from_millis(15)); // the work of setting up
            let ms = started.elapsed().as_millis() as u64;
            spool.track(Event::new("setup_completed").property("setup_duration_ms", ms));
            if on {
                remember(&spool, "devtool_setup_duration_ms", ms);
            }
            println!("project set up");
        }
        Cli::Dev {
            requests,
            errors,
            open_dashboard,
        } => {
            let first_session = on && remembered(&spool, "devtool_sessions").unwrap_or(0) == 0;
            let mut ttfr = None;
            for i in 0..requests {
                std::thread::sleep(Duration::from_millis(2)); // serving a request
                if i == 0 {
                    let ms = started.elapsed().as_millis() as u64;
                    ttfr = Some(ms);
                    if on && remembered(&spool, "devtool_first_request_ms").is_none() {
                        spool.track(
                            Event::new("first_request").property("time_to_first_request_ms", ms),
                        );
                        remember(&spool, "devtool_first_request_ms", ms);
                    }
                }
            }
            if open_dashboard {
                spool.track(Event::new("dashboard_viewed"));
            }
            println!("served {requests} requests ({errors} failed)");
            let session = Session {
                requests,
                errors,
                duration: started.elapsed(),
            };
            let reason = if errors > 0 { "error" } else { "completed" };
            let setup_ms = remembered(&spool, "devtool_setup_duration_ms");
            spool.track(session_event(
                &session,
                reason,
                first_session,
                setup_ms,
                ttfr,
            ));
            if on {
                remember(
                    &spool,
                    "devtool_sessions",
                    remembered(&spool, "devtool_sessions").unwrap_or(0) + 1,
                );
            }
        }
        Cli::Uninstall => {
            spool.track(Event::new("cli_uninstall"));
            println!("devtool removed");
        }
        Cli::Telemetry(_) => unreachable!("handled above"),
    }
    // Hand the sending to a detached child and exit now; failures are ignored.
    let _ = spool.flush_detached(eventspool::DEFAULT_DETACHED_LIFETIME);
    ExitCode::SUCCESS
}
