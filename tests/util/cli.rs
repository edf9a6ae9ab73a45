//! The `spool` binary and the example hosts as commands with a clean environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The arguments of one `job_runner` job (`examples/job_runner.rs`).
pub const JOB: [&str; 7] = [
    "run",
    "--owner",
    "acme",
    "--project",
    "web",
    "--package-manager",
    "cargo",
];

/// The job runner's published table (`../shared/reference`): every field of its one
/// event and its JSON type (`a|b`: either), for every job-runner host's tests.
pub const JOB_FIELDS: [(&str, &str); 17] = [
    ("tool", "string"),
    ("trigger", "string"),
    ("provider", "string"),
    ("owner", "string"),
    ("project", "string"),
    ("package-manager", "string"),
    ("multi-ecosystem-update", "boolean"),
    ("id", "string"),
    ("started", "string"),
    ("duration", "number"),
    ("success", "boolean"),
    ("error.message", "string|null"),
    ("host.platform", "string"),
    ("host.release", "string"),
    ("host.arch", "string"),
    ("host.machine-hash", "string"),
    ("host.docker-container", "boolean"),
];

/// Path of the `spool` binary under test.
pub fn spool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_spool")
}

/// A `spool` invocation with a clean environment: nothing from the machine (CI=true,
/// DO_NOT_TRACK, SPOOL_*) leaks in unless a test sets it.
pub struct SpoolCmd {
    cmd: Command,
    /// Written to the command's stdin, if set (`spool track --stdin`).
    input: Option<Vec<u8>>,
}

/// A `spool` command against `dir`.
pub fn spool(dir: &Path) -> SpoolCmd {
    let mut cmd = clean_command(Path::new(spool_bin()));
    cmd.arg("--dir").arg(dir);
    SpoolCmd { cmd, input: None }
}

/// A `spool` command with no `--dir` and `HOME` set to `home`: its queue goes to the
/// app's config directory under that home, as on a user's machine.
pub fn spool_at_home(home: &Path) -> SpoolCmd {
    let mut cmd = clean_command(Path::new(spool_bin()));
    cmd.env("HOME", home);
    SpoolCmd { cmd, input: None }
}

/// A command with only PATH, HOME, USER and LANG from this environment.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for keep in ["PATH", "HOME", "USER", "LANG"] {
        if let Ok(v) = std::env::var(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Path of an example binary (`cargo test` builds the examples beside the tests).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.parent().and_then(Path::parent).expect("target dir");
    let path = target
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not built: run `cargo test` (it builds the examples)",
        path.display()
    );
    path
}

/// Runs `program` with a clean environment plus `env`, returning its output.
pub fn run_clean(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = clean_command(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_of(&mut cmd)
}

impl SpoolCmd {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    #[cfg_attr(windows, allow(dead_code))] // used by the Unix-only destination tests
    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// Feeds `data` to the command's stdin.
    pub fn input(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.input = Some(data.into());
        self
    }

    pub fn run(mut self) -> Output {
        let Some(data) = self.input.take() else {
            return output_of(&mut self.cmd);
        };
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = retrying_start(|| self.cmd.spawn()).expect("spool starts");
        let mut stdin = child.stdin.take().expect("stdin");
        // Written from a thread: a child that fails early must not block us on a full pipe.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &data);
        });
        let out = child.wait_with_output().expect("spool runs");
        let _ = writer.join();
        out
    }

    /// The command itself, for running it somewhere else (on a [`super::Pty`]).
    #[cfg(unix)]
    pub fn into_command(self) -> Command {
        self.cmd
    }

    pub fn spawn(mut self) -> std::process::Child {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        retrying_start(|| self.cmd.spawn()).expect("spool starts")
    }

    /// Runs, asserts exit 0, returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        let out = self.run();
        assert!(
            out.status.success(),
            "spool failed: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// [`SpoolCmd::fails`], also asserting the exit code.
    #[track_caller]
    pub fn fails_with(self, code: i32) -> String {
        let out = self.run();
        assert_eq!(
            out.status.code(),
            Some(code),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        one_line_failure(out)
    }

    /// Runs, asserts a non-zero exit with exactly one line on stderr naming the
    /// problem (no panic, no backtrace); returns that line.
    #[track_caller]
    pub fn fails(self) -> String {
        one_line_failure(self.run())
    }
}

#[track_caller]
fn one_line_failure(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(out.status.code(), None, "killed by a signal: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "panic: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "want one line, got: {stderr:?}"
    );
    assert!(stderr.starts_with("spool: error: "), "{stderr}");
    stderr.trim_end().to_string()
}

/// The pid in `spool flush --detach`'s line, `Flushing in the background (pid N).`.
#[track_caller]
pub fn detached_pid(stdout: &str) -> u32 {
    stdout
        .trim()
        .trim_start_matches("Flushing in the background (pid ")
        .trim_end_matches(").")
        .parse()
        .expect(stdout)
}

/// `cmd.output()`, through [`retrying_start`].
fn output_of(cmd: &mut Command) -> Output {
    retrying_start(|| cmd.output()).expect("spool runs")
}

/// Runs `start` (a `spawn` or an `output`) again when it failed to start the process
/// with ERROR_INTERNAL_ERROR (1359): under wine that happens when many processes start
/// and die at once, wine's own limit, not the code under test. Elsewhere, and for any
/// other error, the first result is returned.
pub fn retrying_start<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 0;
    loop {
        match start() {
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(1359) && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}
