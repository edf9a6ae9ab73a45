//! Shared test helpers: a builder around the `spool` binary, and a loopback HTTP
//! server that records what it receives and answers with real faults.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// Path of the `spool` binary under test.
pub fn spool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_spool")
}

/// A `spool` invocation with a clean environment: nothing from the machine (CI=true,
/// DO_NOT_TRACK, SPOOL_*) leaks in unless a test sets it.
pub struct Spool {
    cmd: Command,
}

/// A `spool` command against `dir`.
pub fn spool(dir: &Path) -> Spool {
    let mut cmd = clean_command(Path::new(spool_bin()));
    cmd.arg("--dir").arg(dir);
    Spool { cmd }
}

/// A `spool` command with no `--dir` and `HOME` set to `home`: its queue goes to the
/// app's config directory under that home, as on a user's machine.
pub fn spool_at_home(home: &Path) -> Spool {
    let mut cmd = clean_command(Path::new(spool_bin()));
    cmd.env("HOME", home);
    Spool { cmd }
}

/// Every file and directory under `root`, relative to it, sorted (links not followed).
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
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
    let path = target.join("examples").join(name);
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
    cmd.output().expect("runs")
}

impl Spool {
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

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn run(mut self) -> Output {
        self.cmd.output().expect("spool runs")
    }

    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spool starts")
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

    /// [`Spool::fails`], also asserting the exit code.
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

/// The queue as `spool list --json` sees it: one JSON object per event.
#[track_caller]
pub fn queued(dir: &Path) -> Vec<Value> {
    spool(dir)
        .args(["list", "--json"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("list --json line is JSON"))
        .collect()
}

/// Names of the entries in `dir` (empty if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Records `n` events in-process through the library, fast.
pub fn fill(dir: &Path, n: usize) -> Vec<String> {
    let spool = eventspool::Spool::builder("spool").dir(dir).build();
    let events = (0..n)
        .map(|i| eventspool::Event::new("filled").property("i", i as u64))
        .collect();
    spool
        .try_track_batch(events)
        .expect("fill")
        .into_iter()
        .map(|r| match r {
            eventspool::Recorded::Queued(id) => id,
            other => panic!("not queued: {other:?}"),
        })
        .collect()
}

/// What the test server does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer with this status, headers and body.
    Status(u16, Vec<(String, String)>, Vec<u8>),
    /// Read the request, then hold the connection without answering until the
    /// server is dropped (at most 60 s).
    Hang,
    /// Read the request, then reset the connection.
    Reset,
    /// Answer 200 with a body of this many bytes, streamed until the client stops reading.
    Huge(usize),
    /// Hold the request this long, then answer with this status.
    Delay(Duration, u16),
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, Vec::new(), Vec::new())
    }

    pub fn with_header(code: u16, k: &str, v: &str) -> Reply {
        Reply::Status(code, vec![(k.to_string(), v.to_string())], Vec::new())
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When its request line arrived.
    pub started: Instant,
    /// When it had been read whole.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped if it was sent with `Content-Encoding: gzip`; `null` when
    /// there was none.
    pub body: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The events in the body: the batch's, or the one bare event (none without a body).
    pub fn events(&self) -> Vec<Value> {
        match self.body.get("batch") {
            Some(Value::Array(a)) => a.clone(),
            _ if self.body.is_null() => Vec::new(),
            _ => vec![self.body.clone()],
        }
    }
}

type Handler = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// A real HTTP/1.1 server on 127.0.0.1, scripted per request.
pub struct TestServer {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    pub huge_bytes_written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handler: Arc<Mutex<Arc<Handler>>>,
}

impl TestServer {
    /// Starts a server; `handler` gets the request's index (0-based) and the request.
    pub fn start(
        handler: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/events", listener.local_addr().expect("addr"));
        let server = TestServer {
            url,
            received: Arc::default(),
            connections: Arc::default(),
            huge_bytes_written: Arc::default(),
            stop: Arc::default(),
            handler: Arc::new(Mutex::new(Arc::new(handler))),
        };
        let (received, connections, stop, handler, huge) = (
            server.received.clone(),
            server.connections.clone(),
            server.stop.clone(),
            server.handler.clone(),
            server.huge_bytes_written.clone(),
        );
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let (received, stop, handler, huge) = (
                            received.clone(),
                            stop.clone(),
                            handler.clone(),
                            huge.clone(),
                        );
                        std::thread::spawn(move || {
                            serve_conn(stream, received, stop, handler, huge)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        server
    }

    /// A server that answers every request with `code`.
    pub fn answering(code: u16) -> TestServer {
        TestServer::start(move |_, _| Reply::status(code))
    }

    /// Changes the script from now on.
    pub fn set_handler(&self, handler: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every event received, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests().iter().flat_map(Received::events).collect()
    }

    /// Ids of every event received, with repeats.
    pub fn ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_string())
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived, or panics after `within`.
    #[track_caller]
    pub fn wait_for_requests(&self, n: usize, within: Duration) {
        let t = Instant::now();
        while self.received.lock().unwrap().len() < n {
            assert!(
                t.elapsed() < within,
                "only {} of {n} requests arrived",
                self.received.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Asserts every id in `want` was received exactly once.
#[track_caller]
pub fn assert_delivered_once(server: &TestServer, want: &[String]) {
    let got = server.ids();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "duplicates delivered");
    let want_set: HashSet<&String> = want.iter().collect();
    assert_eq!(unique, want_set, "delivered set differs from queued set");
}

fn serve_conn(
    stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    handler: Arc<Mutex<Arc<Handler>>>,
    huge: Arc<AtomicU64>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let started = Instant::now();
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0; len];
        if reader.read_exact(&mut raw).is_err() {
            return;
        }
        let gz = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("content-encoding") && v.eq_ignore_ascii_case("gzip")
        });
        if gz {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
            raw = out;
        }
        let body: Value = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).expect("request body is JSON")
        };
        let req = Received {
            started,
            at: Instant::now(),
            method,
            path,
            headers,
            body,
        };
        let index = {
            let mut r = received.lock().unwrap();
            r.push(req.clone());
            r.len() - 1
        };
        let h = handler.lock().unwrap().clone();
        match h(index, &req) {
            Reply::Status(code, hdrs, body) => {
                let mut resp = format!("HTTP/1.1 {code} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in hdrs {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                if stream
                    .write_all(resp.as_bytes())
                    .and_then(|_| stream.write_all(&body))
                    .is_err()
                {
                    return;
                }
            }
            Reply::Hang => {
                let t = Instant::now();
                while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Delay(d, code) => {
                std::thread::sleep(d);
                let resp = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                if stream.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Reset => {
                reset(&stream);
                return;
            }
            Reply::Huge(n) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes());
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                while sent < n {
                    match stream.write(&chunk[..chunk.len().min(n - sent)]) {
                        Ok(k) if k > 0 => {
                            sent += k;
                            huge.store(sent as u64, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0).
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A loopback port with nothing listening on it.
pub fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1/events")
}

/// The account database's name for the user running the tests (`id -un`).
pub fn account_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A fresh temp dir and the queue directory inside it (not yet created).
pub fn temp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let q = t.path().join("queue");
    (t, q)
}

/// `spool status --json` as a value.
#[track_caller]
pub fn status(dir: &Path) -> Value {
    serde_json::from_str(&spool(dir).args(["status", "--json"]).ok()).expect("status JSON")
}

/// Whether the process `pid` (not necessarily our child) is gone or a zombie.
pub fn exited(pid: u32) -> bool {
    // SAFETY: signal 0 only probes for existence.
    let gone = unsafe { libc::kill(pid as i32, 0) } != 0;
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    gone || zombie
}

/// Set in a child started by [`child_writer`]: the queue directory it writes to.
const CHILD_DIR: &str = "EVENTSPOOL_TEST_WRITER_DIR";

/// Starts a child process (this test binary, re-run on [`child_writer_entry`]) that
/// records events into `dir` as fast as it can and prints `ID <id>` on stdout after
/// each `track` returns, until it has written `max` events or is killed.
pub fn child_writer(dir: &Path, max: usize) -> std::process::Child {
    let mut cmd = child_command(dir);
    cmd.env("EVENTSPOOL_TEST_WRITER_MAX", max.to_string())
        .env("SPOOL_MAX_EVENTS", "10000000")
        .env("SPOOL_MAX_BYTES", "1GiB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.spawn().expect("child writer starts")
}

/// A child writer that records `n` events fire-and-forget (`track`) and prints
/// `FAILURES <count>` at the end; optionally with its file size limit (RLIMIT_FSIZE)
/// at `fsize` bytes, as on a full disk, and as another user (`uid`, when root).
pub fn child_writer_fire(dir: &Path, n: usize, fsize: Option<u64>, uid: Option<u32>) -> Output {
    let mut cmd = child_command(dir);
    cmd.env("EVENTSPOOL_TEST_WRITER_MAX", n.to_string())
        .env("EVENTSPOOL_TEST_WRITER_FIRE", "1");
    limit_child(&mut cmd, fsize, uid);
    cmd.output().expect("child runs")
}

/// Sets a child's file size limit and its user. SIGXFSZ is set to its default action,
/// as in a host that never thought about it: a write past the limit kills the child
/// unless eventspool keeps it from doing so.
pub fn limit_child(cmd: &mut Command, fsize: Option<u64>, uid: Option<u32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fsize) = fsize {
                let lim = libc::rlimit {
                    rlim_cur: fsize,
                    rlim_max: fsize,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
}

/// This test binary, re-run on [`child_writer_entry`] to write into `dir`.
fn child_command(dir: &Path) -> Command {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = clean_command(&exe);
    cmd.args([
        "--exact",
        "util::child_writer_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir);
    cmd
}

/// The ids a child writer printed, in order.
pub fn printed_ids(out: &[u8]) -> Vec<String> {
    // libtest may print `test … ... ` before the first line, without a newline.
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.rsplit_once("ID "))
        .map(|(_, id)| id.to_string())
        .collect()
}

/// Not a test: the entry point of [`child_writer`] processes, which run it with
/// `--ignored`. Ignored in the normal test run.
#[test]
#[ignore = "the entry point of child-writer processes, run by util::child_writer"]
fn child_writer_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let max: usize = std::env::var("EVENTSPOOL_TEST_WRITER_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let spool = eventspool::Spool::builder("spool")
        .dir(PathBuf::from(dir))
        .build();
    let mut out = std::io::stdout().lock();
    if std::env::var_os("EVENTSPOOL_TEST_WRITER_FIRE").is_some() {
        for i in 0..max {
            let pad = "p".repeat(800);
            spool.track(
                eventspool::Event::new("written")
                    .property("i", i as u64)
                    .property("pad", pad),
            );
        }
        writeln!(out, "FAILURES {}", spool.failures()).expect("stdout");
        return;
    }
    for i in 0..max {
        let t = std::time::Instant::now();
        match spool.try_track(eventspool::Event::new("written").property("i", i as u64)) {
            Ok(eventspool::Recorded::Queued(id)) => {
                writeln!(out, "ID {id}").expect("stdout");
                out.flush().expect("stdout");
            }
            other => {
                writeln!(out, "ERR after {:?} at event {i}: {other:?}", t.elapsed())
                    .expect("stdout");
                std::process::exit(3);
            }
        }
    }
}

/// Every id in the queue file, read directly with SQLite, oldest first.
pub fn ids_in_queue_file(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("queue.db")).expect("open queue");
    let mut st = conn
        .prepare("SELECT id FROM events ORDER BY seq")
        .expect("prepare");
    st.query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// `PRAGMA quick_check` of the queue file.
pub fn quick_check(dir: &Path) -> String {
    let conn = rusqlite::Connection::open(dir.join("queue.db")).expect("open queue");
    conn.query_row("PRAGMA quick_check", [], |r| r.get(0))
        .expect("quick_check")
}

/// Set in the child started by [`with_silent_dns`]: the command to run, as JSON.
const SILENT_DNS_CMD: &str = "EVENTSPOOL_TEST_SILENT_DNS_CMD";
/// Set in that child: the resolv.conf to mount over /etc/resolv.conf.
const SILENT_DNS_CONF: &str = "EVENTSPOOL_TEST_SILENT_DNS_CONF";

/// Runs `program args` where the system resolver never answers: in new mount and
/// network namespaces (`unshare`, as root) with `lo` up, a UDP socket on
/// 127.0.0.1:53 that reads nothing, and a resolv.conf naming it with
/// `timeout:5 attempts:2`, so a lookup hangs for 10 s or more as on a broken network.
/// `env` is added to the command's clean environment. Returns its output and how
/// long it took.
pub fn with_silent_dns(program: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let conf = tempfile::NamedTempFile::new().expect("temp resolv.conf");
    std::fs::write(
        conf.path(),
        "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n",
    )
    .expect("write resolv.conf");
    let mut argv = vec![program.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let spec = serde_json::json!({ "argv": argv, "env": env });
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = clean_command(Path::new("unshare"));
    cmd.args(["--mount", "--net"])
        .arg(&exe)
        .args([
            "--exact",
            "util::silent_dns_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SILENT_DNS_CMD, spec.to_string())
        .env(SILENT_DNS_CONF, conf.path());
    let t = Instant::now();
    let out = cmd
        .output()
        .expect("unshare(1) from util-linux runs (these tests need root, as CI has)");
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("SILENT_DNS_SETUP_FAILED") && !stderr.contains("unshare failed"),
        "could not set up a silent resolver (needs root and unshare): {stderr}"
    );
    (out, took)
}

/// Not a test: the entry point of [`with_silent_dns`], run inside the new
/// namespaces with `--ignored`. Ignored in the normal test run.
#[test]
#[ignore = "the entry point of with_silent_dns, run inside unshare"]
fn silent_dns_entry() {
    let (Some(spec), Some(conf)) = (
        std::env::var_os(SILENT_DNS_CMD),
        std::env::var_os(SILENT_DNS_CONF),
    ) else {
        return;
    };
    let setup = || -> std::io::Result<std::net::UdpSocket> {
        loopback_up()?;
        let src = std::ffi::CString::new(conf.as_encoded_bytes()).expect("path");
        let dst = c"/etc/resolv.conf";
        // SAFETY: valid NUL-terminated paths; a bind mount in our own mount namespace.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Bound and never read: queries are accepted and never answered.
        std::net::UdpSocket::bind("127.0.0.1:53")
    };
    let _socket = match setup() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SILENT_DNS_SETUP_FAILED: {e}");
            std::process::exit(2);
        }
    };
    let spec: Value = serde_json::from_str(&spec.to_string_lossy()).expect("spec");
    let argv: Vec<String> = spec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .collect();
    let mut cmd = clean_command(Path::new(&argv[0]));
    cmd.args(&argv[1..]);
    for pair in spec["env"].as_array().expect("env") {
        cmd.env(
            pair[0].as_str().expect("key"),
            pair[1].as_str().expect("value"),
        );
    }
    let out = cmd.output().expect("command runs");
    std::io::stdout().write_all(&out.stdout).expect("stdout");
    std::io::stderr().write_all(&out.stderr).expect("stderr");
    std::process::exit(out.status.code().unwrap_or(1));
}

/// Brings the loopback interface of this (new) network namespace up.
fn loopback_up() -> std::io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 24],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 24],
    };
    for (d, s) in req.name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: an ioctl on a socket we own, with a buffer the size of struct ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req) == 0
        };
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if !ok {
            return Err(err);
        }
    }
    Ok(())
}
