//! A dependency-update job runner with the usage-stats design of such tools: after each
//! job, one event with the tool, trigger, provider, owner, project, package manager,
//! timings, result, a truncated error message and host facts.
//!
//! ```sh
//! cargo run --example job_runner -- run --owner acme --project web --package-manager npm
//! cargo run --example job_runner -- run --owner acme --project web --fail "lockfile conflict"
//! cargo run --example job_runner -- validate config.json     # sends nothing
//! cargo run --example job_runner -- telemetry schema         # what is collected
//! JOBRUNNER_TELEMETRY_DISABLED=1 cargo run --example job_runner -- run --owner a --project b
//! ```
//!
//! Each event is its own POST (batch size 1), like the original. A failed send never
//! changes the job's result or exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Parser, ValueEnum};
use eventspool::{Catalog, Context, Event, FlushOptions, Limits, Spool};
use sha2::Digest;

const APP: &str = "jobrunner";
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(name = "jobrunner", version, about = "Runs dependency-update jobs")]
enum Cli {
    /// Run one update job
    Run(Job),
    /// Check a configuration file and exit (sends no telemetry)
    Validate {
        /// The configuration file (JSON)
        config: std::path::PathBuf,
    },
    /// See, send or switch off the usage statistics jobrunner keeps
    #[command(subcommand)]
    Telemetry(eventspool::cli::TelemetryCommand),
}

#[derive(Args, Clone)]
struct Job {
    /// Who started the job
    #[arg(long, value_enum, default_value_t = Trigger::User)]
    trigger: Trigger,
    /// Code host
    #[arg(long, default_value = "github")]
    provider: String,
    /// Owner of the repository
    #[arg(long)]
    owner: String,
    /// Repository
    #[arg(long)]
    project: String,
    /// Package manager being updated
    #[arg(long = "package-manager", default_value = "npm")]
    package_manager: String,
    /// The job updates several ecosystems at once
    #[arg(long)]
    multi_ecosystem: bool,
    /// Make the job fail with this error
    #[arg(long, value_name = "MESSAGE")]
    fail: Option<String>,
    /// How long the simulated work takes
    #[arg(long, default_value_t = 20)]
    work_ms: u64,
}

#[derive(ValueEnum, Clone, Copy)]
enum Trigger {
    User,
    Service,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::User => "user",
            Trigger::Service => "service",
        }
    }
}

/// What jobrunner declares it sends: the published table, field for field. The Node
/// and Python job runners pass the same file to `spool --catalog`.
const CATALOG: &str = include_str!("catalogs/jobrunner.json");

fn spool() -> Spool {
    let builder = Spool::builder(APP)
        .tool(APP, VERSION)
        // JOBRUNNER_TELEMETRY_ENDPOINT overrides this, e.g. to point at `spool serve`.
        .endpoint("https://telemetry.jobrunner.example/v1/usage")
        .limits(Limits {
            batch_size: 1,
            ..Limits::default()
        });
    // Recording refuses anything the catalog does not declare, and `telemetry
    // schema` prints it as the page to publish. (The tests check it is valid.)
    match Catalog::from_json(CATALOG) {
        Ok(catalog) => builder.catalog(catalog).build(),
        Err(_) => builder.build(),
    }
}

/// The one event a job sends, with exactly the fields of the original design.
fn usage_event(
    job: &Job,
    id: &str,
    started: SystemTime,
    took: Duration,
    error: Option<&str>,
) -> Event {
    let host = Context::detect(APP, None);
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let machine_hash = hex::encode(sha2::Sha256::digest(hostname.as_bytes()));
    Event::new("job_finished")
        .property("tool", format!("{APP}@{VERSION}"))
        .property("trigger", job.trigger.as_str())
        .property("provider", job.provider.as_str())
        .property("owner", job.owner.as_str())
        .property("project", job.project.as_str())
        .property("package-manager", job.package_manager.as_str())
        .property("multi-ecosystem-update", job.multi_ecosystem)
        .property("id", id)
        .property(
            "started",
            humantime::format_rfc3339_millis(started).to_string(),
        )
        .property("duration", took.as_millis() as u64)
        .property("success", error.is_none())
        // Truncated to 1000 characters and scrubbed by eventspool.
        .property("error.message", error)
        .property("host.platform", host.os)
        .property("host.release", host.os_release)
        .property("host.arch", host.arch)
        // A hash, so it would look like a secret to the scrubber: sent as is, on purpose.
        .unscrubbed_property("host.machine-hash", machine_hash)
        .property("host.docker-container", host.docker)
}

fn run(job: Job) -> ExitCode {
    let id = uuid::Uuid::new_v4().to_string();
    let started = SystemTime::now();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(job.work_ms));
    let result = match &job.fail {
        Some(msg) => Err(msg.clone()),
        None => Ok(()),
    };
    match &result {
        Ok(()) => println!(
            "job {id}: updated {}/{} ({})",
            job.owner, job.project, job.package_manager
        ),
        Err(e) => eprintln!("job {id}: failed: {e}"),
    }

    // Telemetry after the job: recorded at once, sent with a bound on the wait,
    // and whatever happens to it, the job's result stands.
    let spool = spool();
    spool.track(usage_event(
        &job,
        &id,
        started,
        t.elapsed(),
        result.as_ref().err().map(String::as_str),
    ));
    let _ = spool.flush_blocking(FlushOptions::with_deadline(Duration::from_secs(2)));

    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    // Validation only: no telemetry is recorded or sent.
    match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(_) => {
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jobrunner: error: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    eventspool::detached_flush_hook();
    match Cli::parse() {
        Cli::Run(job) => run(job),
        Cli::Validate { config } => validate(&config),
        Cli::Telemetry(cmd) => cmd.execute(&spool()),
    }
}
