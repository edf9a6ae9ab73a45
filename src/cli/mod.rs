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
mod config;
mod consent;
mod flush;
mod list;
mod schema;
#[cfg(feature = "serve")]
mod serve;
mod show;
mod status;
mod track;

pub use track::parse_pair as parse_property_arg;

/// `spool`: see and manage the local telemetry queue of an app.
#[derive(Debug, Parser)]
#[command(
    name = "spool",
    version,
    arg_required_else_help = true,
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
        value_name = "NAME",
        value_parser = parse_app_name
    )]
    pub app: String,
    /// Queue directory, instead of the app's (its `<APP>_TELEMETRY_DIR`, else its
    /// config directory).
    #[arg(
        long,
        global = true,
        env = "SPOOL_DIR",
        value_name = "PATH",
        help = "Queue directory, instead of the app's (its <APP>_TELEMETRY_DIR, else its config directory)"
    )]
    pub dir: Option<PathBuf>,
    /// The app's catalog file: what it declares it sends. `track` refuses anything it
    /// does not declare and `schema` prints it as the page to publish. Else the one
    /// `spool config set catalog FILE` keeps.
    #[arg(
        long,
        global = true,
        env = "SPOOL_CATALOG",
        value_name = "FILE",
        help = "The app's catalog file (what it declares it sends): track refuses anything it does not declare, schema prints it; else the one `config set catalog` keeps"
    )]
    pub catalog: Option<PathBuf>,
    /// Print no notices on stderr (errors are still printed)
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `--json` for a command that has no other options.
#[derive(Debug, Clone, Default, Args)]
pub struct JsonArg {
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Checks `--app` with [`crate::validate_app_name`], so a bad name is a usage error.
fn parse_app_name(name: &str) -> Result<String, String> {
    crate::validate_app_name(name)
        .map(|()| name.to_string())
        .map_err(|e| e.to_string())
}

/// Every `spool` subcommand: the [`TelemetryCommand`]s a host can mount, plus
/// `track` and `serve`, which only the standalone tool needs.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Record an event (for shell scripts and other languages)
    Track(track::TrackArgs),
    /// Run a local development endpoint that prints and saves what it receives
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// The commands a host mounts too.
    #[command(flatten)]
    Telemetry(TelemetryCommand),
}

impl Command {
    /// Runs the command against `spool`, writing its output to `out`. Errors carry
    /// context for a one-line message.
    pub fn run(self, spool: &Spool, out: &mut dyn Write) -> anyhow::Result<()> {
        let result = match self {
            Command::Track(args) => track::run(spool, args, out),
            #[cfg(feature = "serve")]
            Command::Serve(args) => serve::run(args),
            Command::Telemetry(t) => return t.run(spool, out),
        };
        print_notes(spool);
        result
    }
}

/// The telemetry commands a host mounts under its own name, bound to its app:
///
/// ```
/// use clap::Parser;
///
/// #[derive(Parser)]
/// #[command(name = "mytool")]
/// enum MyTool {
///     /// Build the project
///     Build,
///     /// See, send or switch off the usage statistics mytool keeps
///     #[command(subcommand)]
///     Telemetry(eventspool::cli::TelemetryCommand),
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let spool = eventspool::Spool::builder("mytool").dir(dir.path()).build();
/// match MyTool::parse_from(["mytool", "telemetry", "status"]) {
///     MyTool::Build => {}
///     MyTool::Telemetry(cmd) => {
///         let code = cmd.execute(&spool); // prints; errors as one line on stderr
///         # let _ = code;
///     }
/// }
/// ```
#[derive(Debug, Clone, Subcommand)]
pub enum TelemetryCommand {
    /// Whether telemetry is on and why, where the queue is, what it holds
    Status(status::StatusArgs),
    /// List queued events, oldest first, exactly as they will be sent
    List(list::ListArgs),
    /// Show one queued event's full payload
    Show(show::ShowArgs),
    /// Purge the queue
    Clear(JsonArg),
    /// Send queued events to the endpoint now
    Flush(flush::FlushArgs),
    /// Turn telemetry on (persisted)
    Enable(JsonArg),
    /// Turn telemetry off (persisted) and purge the queue
    Disable(JsonArg),
    /// Ask for consent at a terminal (`ask`), or print the decision (`status`)
    Consent(consent::ConsentArgs),
    /// Print every field this app sends, as a Markdown table (or JSON)
    Schema(schema::SchemaArgs),
    /// Read or change a persisted setting (destination, endpoint, api_key, limits, …)
    Config(config::ConfigArgs),
}

impl TelemetryCommand {
    /// Runs the command against `spool`, writing its output to `out`.
    pub fn run(self, spool: &Spool, out: &mut dyn Write) -> anyhow::Result<()> {
        let result = match self {
            TelemetryCommand::Status(args) => status::run(spool, args, out),
            TelemetryCommand::List(args) => list::run(spool, args, out),
            TelemetryCommand::Show(args) => show::run(spool, args, out),
            TelemetryCommand::Clear(args) => clear::run(spool, args, out),
            TelemetryCommand::Flush(args) => flush::run(spool, args, out),
            TelemetryCommand::Enable(args) => consent::enable(spool, args, out),
            TelemetryCommand::Disable(args) => consent::disable(spool, args, out),
            TelemetryCommand::Consent(args) => consent::consent(spool, args, out),
            TelemetryCommand::Schema(args) => schema::run(spool, args, out),
            TelemetryCommand::Config(args) => config::run(spool, args, out),
        };
        print_notes(spool);
        result
    }

    /// Runs the command with output on stdout; a failure is printed as one line,
    /// `<app>: error: …`, on stderr. Returns the exit code to use.
    pub fn execute(self, spool: &Spool) -> ExitCode {
        let mut stdout = std::io::stdout();
        report_as(spool.app(), self.run(spool, &mut stdout))
    }
}

/// Tells the user, on stderr, what happened behind a command's back (a queue file
/// that was not valid and was moved aside), so an empty listing is never a mystery.
fn print_notes(spool: &Spool) {
    for note in spool.take_notes() {
        eprintln!("{}: warning: {note}", spool.app());
    }
}

/// How long `spool track` waits for another process's write lock: bounded well under
/// a second, like a library host (a script calling it must not hang on another
/// process), yet long enough for many processes recording at once to take turns.
/// Listing and purging wait longer on their own.
pub const CLI_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Builds the spool the global options name, with the catalog they name (`--catalog`,
/// `SPOOL_CATALOG`, else `config set catalog`) if it can be used.
pub fn spool_for(global: &Global) -> Spool {
    let b = builder_for(global);
    with_catalog(b.clone(), global).unwrap_or_else(|_| b.build())
}

/// [`spool_for`], failing if the catalog named cannot be used (a file that is not a
/// valid catalog, or one for another app): for the commands that use it.
pub fn try_spool_for(global: &Global) -> crate::Result<Spool> {
    with_catalog(builder_for(global), global)
}

/// Builds `b` with the catalog `global` names (`--catalog`/`SPOOL_CATALOG`, else the
/// persisted `catalog` setting), if any.
fn with_catalog(b: crate::SpoolBuilder, global: &Global) -> crate::Result<Spool> {
    let path = match &global.catalog {
        Some(path) => Some(path.clone()),
        None => b
            .clone()
            .build()
            .settings()
            .and_then(|s| s.catalog)
            .map(PathBuf::from),
    };
    match path {
        Some(path) => b.catalog(crate::Catalog::from_file(path)?).try_build(),
        None => b.try_build(),
    }
}

/// Prints a catalog that cannot be used as one line, and returns exit code 2 (bad
/// usage: nothing was read from the queue or written to it).
fn catalog_error(e: crate::Error) -> ExitCode {
    eprintln!("spool: error: {e}");
    ExitCode::from(2)
}

fn builder_for(global: &Global) -> crate::SpoolBuilder {
    let mut b = Spool::builder(&global.app)
        .for_cli()
        .lock_timeout(CLI_LOCK_TIMEOUT);
    if let Some(dir) = &global.dir {
        b = b.dir(dir);
    }
    b
}

/// The spool `spool track` records with: the global options, plus the session and
/// tool a host in another language passes on each call.
fn track_builder(global: &Global, args: &track::TrackArgs) -> anyhow::Result<crate::SpoolBuilder> {
    let mut b = builder_for(global);
    if let Some(id) = &args.session_id {
        b = b.session_id(track::parse_session_id(id)?);
    }
    if let Some(tool) = &args.tool {
        let (name, version) = track::parse_tool(tool)?;
        b = b.tool(&name, &version);
    }
    Ok(b)
}

/// The `spool` binary: parses arguments, runs, prints errors as one line, and
/// returns the exit code (0 ok, 1 failed, 2 bad usage).
pub fn main() -> ExitCode {
    crate::detached_flush_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let (spool, command) = match cli.command {
        Command::Track(mut args) => {
            args.quiet |= cli.global.quiet;
            // The session and tool are the spool's own: built with them.
            let builder = match track_builder(&cli.global, &args) {
                Ok(b) => b,
                Err(e) => return report(Err(e)),
            };
            // An opt-out in the environment records nothing, so no catalog is read
            // (named by `--catalog`, `SPOOL_CATALOG` or the `catalog` setting alike)
            // and none refuses: an opted-out `spool track` reads no file at all.
            let env_opt_out =
                !crate::Consent::decide(&cli.global.app, |k| std::env::var(k).ok(), Some(true))
                    .enabled;
            let spool = if env_opt_out {
                builder.try_build()
            } else {
                with_catalog(builder, &cli.global)
            };
            match spool {
                Ok(spool) => (spool, Command::Track(args)),
                Err(e) => return catalog_error(e),
            }
        }
        // The page is the catalog's: a catalog that cannot be read is an error. The
        // other commands (`disable` above all) work whatever state the catalog is in.
        // The consent prompt shows the catalog and keeps its fingerprint: the same.
        other @ Command::Telemetry(TelemetryCommand::Schema(_) | TelemetryCommand::Consent(_)) => {
            match try_spool_for(&cli.global) {
                Ok(spool) => (spool, other),
                Err(e) => return catalog_error(e),
            }
        }
        other => (spool_for(&cli.global), other),
    };
    // Not locked for the whole run: `spool serve` prints from worker threads.
    let mut stdout = std::io::stdout();
    report(command.run(&spool, &mut stdout))
}

/// Turns a command's result into an exit code, printing a failure as one line on stderr.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    report_as("spool", result)
}

/// [`report`] with the program name `name` in the error line.
pub fn report_as(name: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            let line = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("{name}: error: {line}");
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
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            // "the following required arguments were not provided:" names them on
            // the next line: one line must say which.
            if first.ends_with(':') {
                if let Some(next) = lines.next() {
                    first = format!("{first} {next}");
                }
            }
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
