//! A dev tool with the journey-and-session design: journey events at milestones
//! (`cli_invoked`, `setup_completed`, `first_request`, `dashboard_viewed`,
//! `cli_uninstall`), each with its key fields, and one `session` summary of 32 fields
//! when `dev` ends: cleanly, on an error, or on Ctrl-C / SIGTERM. Sending is handed to
//! a detached child, so the tool exits at once and network failures never show.
//!
//! ```sh
//! cargo run --example devtool -- setup
//! cargo run --example devtool -- dev --requests 5 --errors 1 --open-dashboard
//! cargo run --example devtool -- dev --forever            # until Ctrl-C: exit_reason "signal"
//! cargo run --example devtool -- dev --fail-after 2       # a crash: exit_reason "error"
//! cargo run --example devtool -- telemetry schema         # every field and why
//! DEVTOOL_TELEMETRY=false cargo run --example devtool -- dev     # opted out
//! ```
//!
//! The project it "serves" is the current directory: `package.json`, `node_modules`
//! and the lock files there give the framework, adapters and package manager. Only
//! names from the fixed lists below are ever sent, never the project's own names or
//! paths. The requests are simulated, with fixed durations and routes.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser};
use eventspool::{Catalog, Context, Event, Spool};
use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};

/// `println!` that ignores a closed pipe (`devtool dev | head -1`): it cannot panic,
/// so the session summary is still recorded.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

const APP: &str = "devtool";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What devtool declares it sends: the journey events with their key fields, the 32
/// session fields, what it never collects, with the purpose of each field. The Node
/// and Python dev tools pass the same file to `spool --catalog`.
const CATALOG: &str = include_str!("catalogs/devtool.json");

/// Frameworks by package name, most specific first: the first one found is the
/// project's framework.
const FRAMEWORKS: [(&str, &str); 8] = [
    ("next", "nextjs"),
    ("nuxt", "nuxt"),
    ("@remix-run/node", "remix"),
    ("@sveltejs/kit", "sveltekit"),
    ("astro", "astro"),
    ("fastify", "fastify"),
    ("hono", "hono"),
    ("express", "express"),
];

/// Database and HTTP client packages devtool instruments (its adapters).
const ADAPTERS: [&str; 6] = ["prisma", "drizzle-orm", "pg", "mysql2", "mongoose", "axios"];

/// The simulated requests cycle through these: durations in ms and routes. Routes
/// only count endpoints; they are never sent.
const DURATIONS_MS: [u64; 7] = [45, 120, 230, 80, 1450, 60, 310];
const ROUTES: [&str; 5] = ["/", "/api/users", "/api/posts", "/login", "/api/health"];
/// The route whose handler runs a query per row: an N+1 insight when queries run.
const N_PLUS_ONE_ROUTE: usize = 2;

#[derive(Parser)]
#[command(name = "devtool", version, about = "A development server")]
enum Cli {
    /// Set up the project in the current directory (detects framework and adapters)
    Setup,
    /// Run the development server (simulated: serves some requests, then stops)
    Dev(Dev),
    /// Remove devtool from this project (simulated: reports, touches nothing)
    Uninstall {
        /// Keep devtool's recorded data
        #[arg(long)]
        keep_data: bool,
    },
    /// See, send or switch off the usage statistics devtool keeps
    #[command(subcommand)]
    Telemetry(eventspool::cli::TelemetryCommand),
}

#[derive(Args)]
struct Dev {
    /// Requests to serve
    #[arg(long, default_value_t = 3)]
    requests: u64,
    /// How many of them fail (the app answers 500)
    #[arg(long, default_value_t = 0)]
    errors: u64,
    /// Open the dashboard (after half of the requests)
    #[arg(long)]
    open_dashboard: bool,
    /// Ask the dashboard to explain an insight
    #[arg(long, requires = "open_dashboard")]
    explain: bool,
    /// Port to listen on
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Crash (exit 1) after serving this many requests
    #[arg(long, value_name = "N")]
    fail_after: Option<u64>,
    /// After the requests, keep running this long (e.g. `30s`), or until a signal
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    serve_for: Option<Duration>,
    /// After the requests, keep running until Ctrl-C or SIGTERM
    #[arg(long, conflicts_with = "serve_for")]
    forever: bool,
    /// The command that starts your app (default: the package's `dev` script)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn spool() -> Spool {
    let builder = Spool::builder(APP)
        .tool(APP, VERSION)
        .endpoint("https://telemetry.devtool.example/v1/events");
    // Recording refuses anything the catalog does not declare, and `telemetry
    // schema` prints it as the page to publish. (The tests check it is valid.)
    match Catalog::from_json(CATALOG) {
        Ok(catalog) => builder.catalog(catalog).build(),
        Err(_) => builder.build(),
    }
}

/// What devtool learns about the project in the current directory.
#[derive(Clone, Default)]
struct Project {
    has_package_json: bool,
    has_node_modules: bool,
    /// `false` when `package.json` exists but cannot be read as JSON.
    setup_succeeded: bool,
    framework: &'static str,
    candidates: Vec<&'static str>,
    adapters: Vec<&'static str>,
    /// Adapters in `package.json` that are not installed, so cannot be instrumented.
    adapters_failed: Vec<&'static str>,
    package_manager: &'static str,
    /// Whether `.mcp.json` (devtool's MCP server entry) is there to remove.
    has_mcp_config: bool,
}

impl Project {
    /// Looks at `dir`: reads `package.json` and checks which files exist, nothing more.
    fn detect(dir: &Path) -> Project {
        let package = std::fs::read_to_string(dir.join("package.json")).ok();
        let parsed = package
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok());
        let has_dep = |name: &str| {
            parsed.as_ref().is_some_and(|p| {
                ["dependencies", "devDependencies"]
                    .iter()
                    .any(|k| p[k].get(name).is_some())
            })
        };
        let frameworks: Vec<_> = FRAMEWORKS.iter().filter(|(p, _)| has_dep(p)).collect();
        let adapters: Vec<&'static str> = ADAPTERS.into_iter().filter(|a| has_dep(a)).collect();
        let installed = |pkg: &str| dir.join("node_modules").join(pkg).is_dir();
        let lock = |f: &str| dir.join(f).is_file();
        let declared = parsed.as_ref().and_then(|p| p["packageManager"].as_str());
        let package_manager = if lock("pnpm-lock.yaml") {
            "pnpm"
        } else if lock("yarn.lock") {
            "yarn"
        } else if lock("bun.lockb") || lock("bun.lock") {
            "bun"
        } else if lock("package-lock.json") {
            "npm"
        } else {
            // `"packageManager": "pnpm@9.1.0"`: only a known name is sent.
            ["pnpm", "yarn", "bun", "npm"]
                .into_iter()
                .find(|pm| declared.is_some_and(|d| d.split('@').next() == Some(*pm)))
                .unwrap_or("unknown")
        };
        Project {
            has_package_json: package.is_some(),
            has_node_modules: dir.join("node_modules").is_dir(),
            setup_succeeded: package.is_none() || parsed.is_some(),
            framework: frameworks.first().map_or("unknown", |(_, f)| f),
            candidates: frameworks
                .iter()
                .map(|(p, _)| *p)
                .chain(adapters.iter().copied())
                .collect(),
            adapters_failed: adapters.iter().copied().filter(|a| !installed(a)).collect(),
            adapters,
            package_manager,
            has_mcp_config: dir.join(".mcp.json").is_file(),
        }
    }

    /// Adapters devtool could instrument.
    fn working_adapters(&self) -> usize {
        self.adapters.len() - self.adapters_failed.len()
    }
}

fn cli_invoked(command: &str, p: &Project) -> Event {
    Event::new("cli_invoked")
        .property("command", command)
        .property("has_package_json", p.has_package_json)
        .property("cwd_has_node_modules", p.has_node_modules)
}

fn setup_completed(p: &Project, setup_ms: u64) -> Event {
    Event::new("setup_completed")
        .property("framework", p.framework)
        .property("framework_detection_candidates", p.candidates.clone())
        .property("adapters_detected", p.adapters.clone())
        .property("adapters_failed", p.adapters_failed.clone())
        .property("setup_duration_ms", setup_ms)
}

fn first_request(port: u16, ttfr_ms: u64) -> Event {
    Event::new("first_request")
        .property("port", port)
        .property("time_to_first_request_ms", ttfr_ms)
}

fn dashboard_viewed(ttd_ms: u64, requests_so_far: u64) -> Event {
    Event::new("dashboard_viewed")
        .property("time_to_dashboard_ms", ttd_ms)
        .property("request_count_at_open", requests_so_far)
}

fn cli_uninstall(p: &Project, data_removed: bool) -> Event {
    Event::new("cli_uninstall")
        .property("instrumentation_removed", true)
        .property("package_removed", p.has_package_json)
        .property("mcp_removed", p.has_mcp_config)
        .property("data_removed", data_removed)
}

/// Everything the `session` summary reports.
#[derive(Default)]
struct Session {
    node_version: Option<String>,
    os: String,
    arch: String,
    project: Project,
    custom_command: bool,
    first_session: bool,
    requests: u64,
    errors: u64,
    queries: u64,
    fetches: u64,
    insights: u64,
    findings: u64,
    insight_types: Vec<&'static str>,
    rules_triggered: Vec<&'static str>,
    endpoints: u64,
    total_duration_ms: u64,
    slowest_ms: Option<u64>,
    tabs_viewed: Vec<&'static str>,
    dashboard_opened: bool,
    explain_used: bool,
    duration: Duration,
    setup_ms: u64,
    ttfr_ms: Option<u64>,
    ttd_ms: Option<u64>,
    exit_reason: &'static str,
}

impl Session {
    /// Serves simulated request number `i` (from 0), counting what it shows.
    fn serve(&mut self, i: u64) {
        let n = i as usize;
        let took = DURATIONS_MS[n % DURATIONS_MS.len()];
        let route = n % ROUTES.len();
        let queries = if self.project.working_adapters() > 0 {
            2
        } else {
            0
        };
        self.requests += 1;
        self.total_duration_ms += took;
        self.slowest_ms = self.slowest_ms.max(Some(took));
        // The routes are visited in turn, so the distinct ones so far:
        self.endpoints = self.requests.min(ROUTES.len() as u64);
        self.queries += queries;
        self.fetches += i % 2;
        if route == N_PLUS_ONE_ROUTE && queries > 0 {
            self.insight("n1");
        }
        if took > 1000 {
            self.insight("slow");
        }
    }

    fn fail(&mut self) {
        // The app's 500 page shows its stack trace: a security finding.
        self.errors += 1;
        self.findings += 1;
        add_once(&mut self.rules_triggered, "stack-trace-leak");
    }

    fn insight(&mut self, kind: &'static str) {
        self.insights += 1;
        add_once(&mut self.insight_types, kind);
    }

    fn open_dashboard(&mut self, ms: u64, explain: bool) {
        self.dashboard_opened = true;
        self.ttd_ms = Some(ms);
        self.explain_used = explain;
        self.tabs_viewed.push("requests");
        if self.queries > 0 {
            self.tabs_viewed.push("queries");
        }
        if self.insights > 0 || explain {
            self.tabs_viewed.push("insights");
        }
    }
}

fn add_once(list: &mut Vec<&'static str>, item: &'static str) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The range the slowest request falls in, as the published buckets name it.
fn bucket(ms: u64) -> &'static str {
    match ms {
        0..100 => "0-100ms",
        100..500 => "100-500ms",
        500..1000 => "500-1000ms",
        1000..2000 => "1000-2000ms",
        _ => "2000ms+",
    }
}

/// The `session` summary: exactly the 32 fields of [`SESSION_FIELDS`], in that order.
/// Measures with nothing to measure (no request, no dashboard) are `null`.
fn session_event(s: &Session) -> Event {
    let p = &s.project;
    Event::new("session")
        // The reference page's field names are the contract its receivers query by,
        // so the tool's version keeps the reference's name.
        .property("brakit_version", VERSION)
        .property("node_version", s.node_version.clone())
        .property("os", s.os.as_str())
        .property("arch", s.arch.as_str())
        .property("sdk", "rust")
        .property("framework", p.framework)
        .property("package_manager", p.package_manager)
        .property("is_custom_command", s.custom_command)
        .property("first_session", s.first_session)
        .property("adapters_detected", p.adapters.clone())
        .property("adapters_failed", p.adapters_failed.clone())
        .property("framework_detection_candidates", p.candidates.clone())
        .property("request_count", s.requests)
        .property("error_count", s.errors)
        .property("query_count", s.queries)
        .property("fetch_count", s.fetches)
        .property("insight_count", s.insights)
        .property("finding_count", s.findings)
        .property("insight_types", s.insight_types.clone())
        .property("rules_triggered", s.rules_triggered.clone())
        .property("endpoint_count", s.endpoints)
        .property(
            "avg_duration_ms",
            (s.requests > 0).then(|| s.total_duration_ms / s.requests),
        )
        .property("slowest_endpoint_bucket", s.slowest_ms.map(bucket))
        .property("tabs_viewed", s.tabs_viewed.clone())
        .property("dashboard_opened", s.dashboard_opened)
        .property("explain_used", s.explain_used)
        .property("session_duration_s", s.duration.as_secs())
        .property("setup_succeeded", p.setup_succeeded)
        .property("setup_duration_ms", s.setup_ms)
        .property("time_to_first_request_ms", s.ttfr_ms)
        .property("time_to_dashboard_ms", s.ttd_ms)
        .property("exit_reason", s.exit_reason)
}

/// The Node.js that would run the app, from `node --version` (e.g. `v20.11.0`):
/// `None` without a `node` on PATH, with output of another shape, or after a second.
fn node_version() -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = Command::new("node")
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(Duration::from_secs(1)).ok()?.ok()?;
    let version = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let numbers: Vec<&str> = version.strip_prefix('v')?.split('.').collect();
    let shaped = numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (out.status.success() && shaped).then_some(version)
}

/// Reads a number devtool keeps in its telemetry settings (beside the anonymous id).
fn remembered(spool: &Spool, key: &str) -> Option<u64> {
    spool.host_value(key).as_ref().and_then(Value::as_u64)
}

fn remember(spool: &Spool, key: &str, value: u64) {
    let _ = spool.set_host_value(key, value);
}

/// Catches SIGINT and SIGTERM: the first one is stored in the returned cell for the
/// serving loop to see; a second one ends the process at once, the usual escape
/// hatch when shutting down takes too long.
fn catch_signals() -> Arc<AtomicUsize> {
    let caught = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees `stopping` as the previous signal left it.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stopping.clone());
        let _ = signal_hook::flag::register(sig, stopping.clone());
        let _ = signal_hook::flag::register_usize(sig, caught.clone(), sig as usize);
    }
    caught
}

/// Sleeps up to `d` (`Duration::MAX`: for ever), waking early when a signal was
/// caught; returns the signal.
fn pause(d: Duration, caught: &AtomicUsize) -> Option<i32> {
    let until = Instant::now().checked_add(d);
    loop {
        let sig = caught.load(Ordering::SeqCst);
        if sig != 0 {
            return Some(sig as i32);
        }
        let left = until.map_or(Duration::MAX, |u| {
            u.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

fn main() -> ExitCode {
    eventspool::detached_flush_hook();
    let cli = Cli::parse();
    let spool = spool();
    if let Cli::Telemetry(cmd) = cli {
        return cmd.execute(&spool);
    }
    // Caught before anything else, so a Ctrl-C during start-up still gets a summary.
    let caught = matches!(cli, Cli::Dev(_)).then(catch_signals);
    // With telemetry off nothing below may write a file: every step checks.
    let on = spool.consent().enabled;
    if on {
        spool.notice_once(
            "devtool collects anonymous usage statistics (never code, paths or names).\n\
             See `devtool telemetry schema`; opt out with DEVTOOL_TELEMETRY=false or `devtool telemetry disable`.",
        );
    }
    let started = Instant::now();
    let cwd = std::env::current_dir().unwrap_or_default();
    let command = match &cli {
        Cli::Setup => "setup",
        Cli::Dev(_) => "dev",
        Cli::Uninstall { .. } => "uninstall",
        Cli::Telemetry(_) => "telemetry",
    };
    let project = Project::detect(&cwd);
    spool.track(cli_invoked(command, &project));

    let code = match cli {
        Cli::Setup => {
            spool.track(setup_completed(
                &project,
                started.elapsed().as_millis() as u64,
            ));
            say!("project set up (framework: {})", project.framework);
            ExitCode::SUCCESS
        }
        Cli::Dev(args) => dev(
            &spool,
            on,
            project,
            args,
            started,
            &caught.unwrap_or_default(),
        ),
        Cli::Uninstall { keep_data } => {
            spool.track(cli_uninstall(&project, !keep_data));
            say!("devtool removed");
            ExitCode::SUCCESS
        }
        Cli::Telemetry(_) => unreachable!("handled above"),
    };
    // Hand the sending to a detached child and exit now; failures are ignored.
    let _ = spool.flush_detached_if_due(eventspool::DEFAULT_DETACHED_LIFETIME);
    code
}

/// The dev server: initializes, serves, and records the session summary however it
/// ends (the caller flushes).
fn dev(
    spool: &Spool,
    on: bool,
    project: Project,
    args: Dev,
    started: Instant,
    caught: &AtomicUsize,
) -> ExitCode {
    let ms = |since: Instant| since.elapsed().as_millis() as u64;
    // Runtime initialization: what the summary reports about this machine.
    let host = Context::detect(APP, None);
    let mut s = Session {
        node_version: if on { node_version() } else { None },
        os: format!("{}-{}", host.os, host.os_release),
        arch: host.arch,
        custom_command: !args.command.is_empty(),
        first_session: on && remembered(spool, "devtool_sessions").unwrap_or(0) == 0,
        setup_ms: ms(started),
        project,
        exit_reason: "clean",
        ..Session::default()
    };
    spool.track(setup_completed(&s.project, s.setup_ms));
    say!("devtool: listening on port {}", args.port);

    let dashboard_at = args.open_dashboard.then_some(args.requests / 2);
    let mut signal = None;
    let mut crashed = false;
    // One pass more than there are requests, for a dashboard or crash after the last.
    for i in 0..=args.requests {
        if dashboard_at == Some(i) {
            let at = ms(started);
            s.open_dashboard(at, args.explain);
            spool.track(dashboard_viewed(at, s.requests));
        }
        if args.fail_after == Some(i) {
            crashed = true;
            break;
        }
        if i == args.requests {
            break;
        }
        signal = pause(Duration::from_millis(2), caught); // serving a request
        if signal.is_some() {
            break;
        }
        s.serve(i);
        if i < args.errors {
            s.fail();
        }
        if i == 0 {
            let at = ms(started);
            s.ttfr_ms = Some(at);
            // The journey event marks the first request ever, the summary this session's.
            if on && remembered(spool, "devtool_first_request_ms").is_none() {
                spool.track(first_request(args.port, at));
                remember(spool, "devtool_first_request_ms", at);
            }
        }
    }
    if !crashed && signal.is_none() {
        let idle = match (args.forever, args.serve_for) {
            (true, _) => Some(Duration::MAX),
            (false, Some(d)) => Some(d.saturating_sub(started.elapsed())),
            (false, None) => None,
        };
        if let Some(idle) = idle {
            say!("devtool: idle, Ctrl-C to stop");
            signal = pause(idle, caught);
        }
    }
    // A signal that came while nothing was waiting for one still ends the session.
    let signal = signal.or_else(|| pause(Duration::ZERO, caught));
    say!("served {} requests ({} failed)", s.requests, s.errors);

    s.exit_reason = match (signal, crashed) {
        (Some(_), _) => "signal",
        (None, true) => "error",
        (None, false) => "clean",
    };
    s.duration = started.elapsed();
    spool.track(session_event(&s));
    // Only `first_session` reads it, so it is written once: each write replaces
    // config.json with an fsync, which would cost every later session a millisecond.
    if on && s.first_session {
        remember(spool, "devtool_sessions", 1);
    }
    match (signal, crashed) {
        // The conventional status of a process ended by a signal: 128 + its number.
        (Some(sig), _) => ExitCode::from(128 + sig as u8),
        (None, true) => {
            eprintln!("devtool: error: the dev server crashed (simulated)");
            ExitCode::FAILURE
        }
        (None, false) => ExitCode::SUCCESS,
    }
}
