//! The `spool` command line: one file per subcommand, over the library.
//!
//! [`Command`] is a clap subcommand enum a host can mount under its own name, bound
//! to its app; [`main`] is the standalone `spool` binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::Spool;

mod clear;
mod consent;
mod flush;
mod list;
mod serve;
mod show;
mod status;
mod track;

/// `spool`: see and manage the local telemetry queue of an app.
#[derive(Debug, Parser)]
#[command(
    name = "spool",
    version,
    about = "Local-first usage telemetry: record, inspect, purge and send queued events"
)]
pub struct Cli {
    /// Where the queue lives, and whose.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every `spool` command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// App whose telemetry to manage (its config directory holds the queue)
    #[arg(
        long,
        global = true,
        env = "SPOOL_APP",
        default_value = "spool",
        value_name = "NAME"
    )]
    pub app: String,
    /// Queue directory, instead of the app's config directory
    #[arg(long, global = true, env = "SPOOL_DIR", value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// The spool subcommands; mount them in a host's clap CLI with
/// `#[command(subcommand)] telemetry: eventspool::Command` and run with [`Command::run`].
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Record an event (for shell scripts and other languages)
    Track(track::TrackArgs),
    /// List queued events, oldest first
    List(list::ListArgs),
    /// Show one queued event's full payload
    Show(show::ShowArgs),
    /// Purge the queue
    Clear,
    /// Whether telemetry is on and why, where the queue is, what it holds
    Status(status::StatusArgs),
    /// Send queued events to the endpoint now
    Flush(flush::FlushArgs),
    /// Run a local development endpoint that prints and saves what it receives
    Serve(serve::ServeArgs),
    /// Turn telemetry on (persisted)
    Enable,
    /// Turn telemetry off (persisted) and purge the queue
    Disable,
}

impl Command {
    /// Runs the command against `spool`, writing its output to `out`. Errors carry
    /// context for a one-line message.
    pub fn run(self, spool: &Spool, out: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Command::Track(args) => track::run(spool, args, out),
            Command::List(args) => list::run(spool, args, out),
            Command::Show(args) => show::run(spool, args, out),
            Command::Clear => clear::run(spool, out),
            Command::Status(args) => status::run(spool, args, out),
            Command::Flush(args) => flush::run(spool, args, out),
            Command::Serve(args) => serve::run(args),
            Command::Enable => consent::enable(spool, out),
            Command::Disable => consent::disable(spool, out),
        }
    }
}

/// Builds the spool the global options name.
pub fn spool_for(global: &Global) -> Spool {
    // A person or script waiting on `spool` can afford a longer wait for the write
    // lock than a host's hot path.
    let mut b = Spool::builder(&global.app).lock_timeout(std::time::Duration::from_secs(5));
    if let Some(dir) = &global.dir {
        b = b.dir(dir);
    }
    b.build()
}

/// The `spool` binary: parses arguments, runs, prints errors as one line, and
/// returns the exit code (0 ok, 1 failed, 2 bad usage).
pub fn main() -> ExitCode {
    crate::detached_flush_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let spool = spool_for(&cli.global);
    // Not locked for the whole run: `spool serve` prints from worker threads.
    let mut stdout = std::io::stdout();
    report(cli.command.run(&spool, &mut stdout))
}

/// Turns a command's result into an exit code, printing a failure as one line on stderr.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            let line = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("spool: error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a clap error: help and version in full, anything else as its first line.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("spool: error: {first} (see --help)");
            ExitCode::from(2)
        }
    }
}

/// Checks the limit environment variables, so a typo is an error rather than a
/// silent default for the commands whose behaviour they change.
fn check_env_limits() -> anyhow::Result<()> {
    crate::Limits::default().with_env(|k| std::env::var(k).ok())?;
    Ok(())
}
