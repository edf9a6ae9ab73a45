//! `cargo bench --bench spool`: eventspool against its baselines, measured side by
//! side in one run, printed as one table. Figures are medians of repetitions.
//!
//! `SPOOL_BENCH_QUICK=1` shrinks every size for a smoke run.
//!
//! `cargo bench --bench spool -- invocation` prints what a host feels on each
//! invocation (issue 14), every process figure beside its baseline, interleaved run by
//! run so a busy machine slows both alike: `spool track` warm, first ever and opted
//! out beside `true` and an empty Rust binary (the floor: exec and dynamic linking);
//! the devtool example's `dev` with telemetry on beside off, warm and on its first
//! run (build it first: `cargo build --release --example devtool`). Each process row
//! gives the median wall time and, in brackets, the median CPU time (user + system),
//! which load disturbs less. `SPOOL_BENCH_BEFORE=DIR` adds the same rows for the
//! `spool` and `devtool` binaries in DIR (an earlier build), in the same run.
//! `-- issue14` runs every row the issue names (invocation, cold, warm, flush,
//! memory, footprint); `footprint` runs `benches/footprint.sh` (clean builds: slow).
// A benchmark that cannot set up should stop loudly: unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use eventspool::{Catalog, DeclaredEvent, DeclaredProperty, Event, Spool};

fn quick() -> bool {
    std::env::var_os("SPOOL_BENCH_QUICK").is_some()
}

fn scale(n: usize) -> usize {
    if quick() { (n / 20).max(10) } else { n }
}

/// An event that serializes to about 400 bytes, like a typical usage event.
fn event(i: usize) -> Event {
    Event::new("job_finished")
        .property("command", "build --release")
        .property("provider", "github")
        .property("duration_ms", 1234 + i as u64)
        .property("success", i % 7 != 0)
}

fn line_400() -> String {
    let mut s = "x".repeat(399);
    s.push('\n');
    s
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Row(String, String, String);

/// `p50 … p99 …` of sorted samples.
fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "p50 {}  p99 {}",
        us(percentile(sorted, 0.5)),
        us(percentile(sorted, 0.99))
    )
}

fn per_op(n: usize, mut op: impl FnMut(usize)) -> (Vec<Duration>, Duration) {
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i);
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    (samples, total)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn bench_raw_append(rows: &mut Vec<Row>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("raw.log")).unwrap();
    let line = line_400();
    let n = scale(50_000);
    let (s, total) = per_op(n, |_| f.write_all(line.as_bytes()).unwrap());
    let r = rate(n, total);
    rows.push(Row(
        "raw append (write, no fsync)".into(),
        p50_p99(&s),
        format!("{r:.0} events/s"),
    ));
    r
}

fn bench_naive_sqlite(rows: &mut Vec<Row>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("naive.db")).unwrap();
    conn.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        .unwrap();
    let line = line_400();
    let n = scale(1_000);
    let (s, total) = per_op(n, |_| {
        conn.execute("INSERT INTO events (payload) VALUES (?1)", [&line])
            .unwrap();
    });
    let r = rate(n, total);
    rows.push(Row(
        "naive SQLite (rollback journal, sync FULL)".into(),
        p50_p99(&s),
        format!("{r:.0} events/s"),
    ));
    r
}

fn bench_queue_file(rows: &mut Vec<Row>, sync: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut qf = queue_file::QueueFile::open(dir.path().join("q.qf")).unwrap();
    qf.set_sync_writes(sync);
    let line = line_400();
    let n = if sync { scale(1_000) } else { scale(50_000) };
    let (s, total) = per_op(n, |_| qf.add(line.as_bytes()).unwrap());
    let r = rate(n, total);
    let what = if sync { "default sync" } else { "sync off" };
    rows.push(Row(
        format!("queue-file add(), {what}"),
        p50_p99(&s),
        format!("{r:.0} events/s"),
    ));
    r
}

/// In a fresh child process: the first `track()` on an existing queue, timed from
/// before the builder to after the insert (open + schema check + insert).
fn cold_child(dir: &str) {
    let t = Instant::now();
    let spool = Spool::builder("bench").dir(dir).build();
    spool.track(event(0));
    let took = t.elapsed();
    assert_eq!(spool.failures(), 0);
    println!("{}", took.as_nanos());
}

/// The floor under a cold `track()`: in a fresh process, rusqlite alone opens an
/// existing WAL database (no eventspool: no settings, no context, no checks) and
/// inserts one row, timed like [`cold_child`].
fn sqlite_child(path: &str) {
    let t = Instant::now();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
    conn.execute("INSERT INTO events (payload) VALUES (?1)", [&line_400()])
        .unwrap();
    let took = t.elapsed();
    drop(conn);
    println!("{}", took.as_nanos());
}

fn bench_cold_track(rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    Spool::builder("bench").dir(&d).build().track(event(0));
    let exe = std::env::current_exe().unwrap();
    let runs = scale(200).max(20);
    let times: Vec<Duration> = (0..runs)
        .map(|_| {
            let out = std::process::Command::new(&exe)
                .args(["--cold-child", &d])
                .env_remove("DO_NOT_TRACK")
                .output()
                .unwrap();
            let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            Duration::from_nanos(ns)
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    rows.push(Row(
        "eventspool cold: fresh process, first track()".into(),
        p50_p99(&sorted),
        "open + schema check + insert on an existing queue; target p50 ≤ 500 µs".into(),
    ));
    // The floor, interleaved with nothing else: the same fresh process, rusqlite only.
    let db = dir.path().join("floor.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
        )
        .unwrap();
    }
    let db = db.to_str().unwrap().to_string();
    let mut floor: Vec<Duration> = (0..runs)
        .map(|_| {
            let out = std::process::Command::new(&exe)
                .args(["--sqlite-child", &db])
                .output()
                .unwrap();
            let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            Duration::from_nanos(ns)
        })
        .collect();
    floor.sort();
    rows.push(Row(
        "floor: fresh process, rusqlite open + one insert".into(),
        p50_p99(&floor),
        "an existing WAL database, nothing else (no eventspool)".into(),
    ));
}

/// A spool in `dir` whose caps never evict what a benchmark records (persisted, so a
/// `spool` process run on the same directory keeps them too).
fn roomy_spool(app: &str, dir: &std::path::Path) -> Spool {
    let limits = eventspool::Limits {
        max_events: 10_000_000,
        max_bytes: 1 << 34,
        ..Default::default()
    };
    Spool::builder(app).dir(dir).limits(limits).build()
}

fn bench_warm_track(rows: &mut Vec<Row>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let spool = roomy_spool("bench", dir.path());
    for i in 0..1000 {
        spool.track(event(i));
    }
    let n = scale(20_000);
    let (s, total) = per_op(n, |i| spool.track(event(i)));
    assert_eq!(spool.failures(), 0);
    let size = spool.list(1).unwrap()[0].bytes;
    let r = rate(n, total);
    rows.push(Row(
        format!("eventspool track(), warm ({size}-byte events)"),
        p50_p99(&s),
        format!("{r:.0} events/s"),
    ));
    r
}

/// An event of 30 properties of every declared type (strings, integers, numbers,
/// booleans, enums, string lists, dotted names), and the catalog that declares them.
fn wide_event(i: usize) -> Event {
    let mut e = Event::new("session");
    for k in 0..30 {
        let name = if k % 5 == 4 {
            format!("host.f{k}")
        } else {
            format!("f{k}")
        };
        e = match k % 6 {
            0 => e.property(name, "nextjs"),
            1 => e.property(name, (i + k) as u64),
            2 => e.property(name, 0.5),
            3 => e.property(name, i % 2 == 0),
            4 => e.property(name, if i % 2 == 0 { "clean" } else { "signal" }),
            _ => e.property(name, vec!["prisma", "pg"]),
        };
    }
    e
}

fn wide_catalog(app: &str) -> Catalog {
    let mut event = DeclaredEvent::usage("session", "The session summary.");
    for k in 0..30 {
        let name = if k % 5 == 4 {
            format!("host.f{k}")
        } else {
            format!("f{k}")
        };
        event = event.property(match k % 6 {
            0 => DeclaredProperty::string(name, "p").max_length(100),
            1 => DeclaredProperty::integer(name, "p"),
            2 => DeclaredProperty::number(name, "p"),
            3 => DeclaredProperty::bool(name, "p"),
            4 => DeclaredProperty::one_of(name, ["clean", "error", "signal"], "p"),
            _ => DeclaredProperty::string_list(name, "p"),
        });
    }
    Catalog::new(app).event(event)
}

/// `track()` of the same 30-property event with and without a catalog that declares
/// it: spools on the same queue file, called in turn (the order rotating), so all see
/// the same disk, file and WAL. A second spool without a catalog is the control: what
/// it "adds" is the measurement's own bias. Two identical spools differ by a µs or two
/// at p50 (which one checkpoints, where their memory lies), as much as the catalog's
/// whole cost; so the run is cut into rounds of three fresh spools, each round giving
/// the catalog to another of the three places in creation order, and the times of
/// each role are pooled. Besides p50/p99 of each role, the added cost is the median of
/// the differences between calls made one after the other, which cancels the disk's
/// drift. Then the same on opted-out spools: the catalog is asked before consent, so
/// there it is all they do besides the consent check.
fn bench_catalog(rows: &mut Vec<Row>) {
    let limits = eventspool::Limits {
        max_events: 10_000_000,
        max_bytes: 1 << 34,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    type Env = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;
    let on: Env = std::sync::Arc::new(|_: &str| None);
    let off: Env =
        std::sync::Arc::new(|k: &str| (k == "BENCH_TELEMETRY").then(|| "false".to_string()));
    const ROUNDS: usize = 6;
    for (env, what) in [
        (on, "track()"),
        (off, "track(), opted out (the check alone)"),
    ] {
        let build = |catalog: bool| {
            let b = Spool::builder("bench")
                .dir(dir.path())
                .limits(limits.clone())
                .env(env.clone());
            if catalog {
                b.catalog(wide_catalog("bench")).try_build().unwrap()
            } else {
                b.build()
            }
        };
        let n = scale(24_000) / ROUNDS;
        // By role: [without, without (control), with].
        let mut times: [Vec<Duration>; 3] = Default::default();
        for round in 0..ROUNDS {
            // Creation order by place; the role each place plays rotates per round.
            let roles = [round % 3, (round + 1) % 3, (round + 2) % 3];
            let mut spools: Vec<(usize, Spool)> =
                roles.iter().map(|&r| (r, build(r == 2))).collect();
            spools.sort_by_key(|(r, _)| *r);
            let spools: Vec<Spool> = spools.into_iter().map(|(_, s)| s).collect();
            for i in 0..500 {
                for s in &spools {
                    s.track(wide_event(i));
                }
            }
            for i in 0..n {
                let mut events: Vec<Option<Event>> = (0..3).map(|_| Some(wide_event(i))).collect();
                for k in 0..3 {
                    let which = (i + k) % 3;
                    let e = events[which].take().unwrap();
                    let t = Instant::now();
                    spools[which].track(e);
                    times[which].push(t.elapsed());
                }
            }
            assert_eq!(spools.iter().map(Spool::failures).sum::<u64>(), 0);
        }
        let paired = |x: usize| {
            let mut d: Vec<f64> = times[x]
                .iter()
                .zip(&times[0])
                .map(|(a, b)| a.as_secs_f64() - b.as_secs_f64())
                .collect();
            d.sort_by(f64::total_cmp);
            d[d.len() / 2] * 1e6
        };
        let (control, added) = (paired(1), paired(2));
        let sorted: Vec<Vec<Duration>> = times
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.sort();
                t
            })
            .collect();
        let p50 = |x: usize| percentile(&sorted[x], 0.5).as_secs_f64() * 1e6;
        let p99 = |x: usize| percentile(&sorted[x], 0.99).as_secs_f64() * 1e6;
        rows.push(Row(
            format!("catalog: {what}, 30 properties, no catalog"),
            p50_p99(&sorted[0]),
            format!(
                "control (a second spool without one): {:+.1} µs at p50, paired {control:+.1} µs",
                p50(1) - p50(0)
            ),
        ));
        rows.push(Row(
            format!("catalog: {what}, 30 properties, 30-property catalog"),
            p50_p99(&sorted[2]),
            format!(
                "added: p50 {:+.1} µs, p99 {:+.1} µs, paired median {added:+.1} µs (target: at most 2 µs at p50)",
                p50(2) - p50(0),
                p99(2) - p99(0)
            ),
        ));
    }
    let spool = Spool::builder("bench").dir(dir.path()).build();
    assert!(
        spool.list(10).unwrap().len() == 10,
        "the spools recorded their events"
    );
}

fn bench_batch_track(rows: &mut Vec<Row>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let spool = roomy_spool("bench", dir.path());
    spool.track(event(0));
    let batches = scale(200);
    let mut times = Vec::new();
    for b in 0..batches {
        let events: Vec<Event> = (0..100).map(|i| event(b * 100 + i)).collect();
        let t = Instant::now();
        spool.track_batch(events);
        times.push(t.elapsed());
    }
    assert_eq!(spool.failures(), 0);
    let per_batch = median(times);
    let r = 100.0 / per_batch.as_secs_f64();
    rows.push(Row(
        "eventspool track_batch(), 100 a call".into(),
        format!("{} a batch", us(per_batch)),
        format!("{r:.0} events/s"),
    ));
    r
}

fn wall(cmd: &mut std::process::Command) -> Duration {
    let t = Instant::now();
    let st = cmd.status().unwrap();
    assert!(st.success());
    t.elapsed()
}

fn bench_cli_track(rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let spool = env!("CARGO_BIN_EXE_spool");
    let runs = scale(200).max(20);
    let track = || {
        let mut c = std::process::Command::new(spool);
        c.args(["--dir"])
            .arg(dir.path())
            .args(["track", "bench", "-p", "command=build"])
            .stdout(std::process::Stdio::null())
            .env_remove("DO_NOT_TRACK");
        c
    };
    wall(&mut track());
    let spool_t = median((0..runs).map(|_| wall(&mut track())).collect());
    let true_t = median(
        (0..runs)
            .map(|_| wall(&mut std::process::Command::new("true")))
            .collect(),
    );
    rows.push(Row(
        "`spool track` process, median wall".into(),
        ms(spool_t),
        format!(
            "`true`: {} (spool costs {} more)",
            ms(true_t),
            ms(spool_t.saturating_sub(true_t))
        ),
    ));
}

/// A loopback sink that reads each body and answers 200, nothing more, so both
/// clients are measured against the same cheap server.
fn start_sink() -> (String, tokio::runtime::Runtime) {
    use http_body_util::{BodyExt, Full};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    rt.spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rt)
}

fn filled_dir(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spool = roomy_spool("spool", dir.path());
    for chunk in 0..n.div_ceil(1000) {
        let events = (0..1000.min(n - chunk * 1000))
            .map(|i| event(chunk * 1000 + i))
            .collect();
        spool.try_track_batch(events).unwrap();
    }
    dir
}

/// Runs a command to completion and returns its output and its peak RSS in KiB, read
/// from `/proc/PID/status` (`VmHWM`, which starts afresh at exec; the rusage of
/// children would count the pages a forked child shares with this large process).
fn run_with_peak_rss(cmd: &mut std::process::Command) -> (std::process::Output, u64) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            {
                peak = peak.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (child.wait_with_output().unwrap(), peak)
}

fn spool_cmd(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_spool"));
    c.arg("--dir")
        .arg(dir)
        .env("SPOOL_MAX_EVENTS", "10000000")
        .env("SPOOL_MAX_BYTES", "16GiB")
        .env_remove("DO_NOT_TRACK");
    c
}

fn bench_list(rows: &mut Vec<Row>, dir: &std::path::Path, n: usize) {
    let runs = scale(100).max(20);
    let list = median(
        (0..runs)
            .map(|_| {
                wall(
                    spool_cmd(dir)
                        .args(["list", "--limit", "50"])
                        .stdout(std::process::Stdio::null()),
                )
            })
            .collect(),
    );
    let status = median(
        (0..runs)
            .map(|_| {
                wall(
                    spool_cmd(dir)
                        .args(["status"])
                        .stdout(std::process::Stdio::null()),
                )
            })
            .collect(),
    );
    rows.push(Row(
        format!("`spool list --limit 50`, {n} queued"),
        ms(list),
        format!("`spool status`: {}", ms(status)),
    ));
}

fn bench_flush_memory(rows: &mut Vec<Row>, url: &str) {
    let n = scale(1_000_000);
    let dir = filled_dir(n);
    let t = Instant::now();
    let (out, rss) = run_with_peak_rss(spool_cmd(dir.path()).args([
        "flush",
        "--endpoint",
        url,
        "--timeout",
        "30m",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("sent {n},")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rows.push(Row(
        format!("peak RSS flushing {n} queued events"),
        format!("{:.1} MB", rss as f64 / 1024.0),
        format!("{:.0} events/s over the whole queue", rate(n, t.elapsed())),
    ));
}

fn bench_flush(rows: &mut Vec<Row>, url: &str, rt: &tokio::runtime::Runtime) {
    let n = scale(100_000);
    let dir = filled_dir(n);
    bench_list(rows, dir.path(), n);
    // The same bodies the flusher sends: batches of 100 payloads, gzipped.
    let bodies: Vec<Vec<u8>> = {
        let conn = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
        let mut st = conn
            .prepare("SELECT payload FROM events ORDER BY seq")
            .unwrap();
        let payloads: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        payloads
            .chunks(100)
            .map(|c| {
                let refs: Vec<&str> = c.iter().map(String::as_str).collect();
                let body = format!(
                    "{{\"batch\":[{}],\"sent_at\":\"2026-01-01T00:00:00.000Z\"}}",
                    refs.join(",")
                );
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(body.as_bytes()).unwrap();
                enc.finish().unwrap()
            })
            .collect()
    };
    let client = reqwest::Client::new();
    let t = Instant::now();
    rt.block_on(async {
        for b in &bodies {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(b.clone())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            let _ = r.bytes().await;
        }
    });
    let plain = rate(n, t.elapsed());

    let t = Instant::now();
    let (out, rss) = run_with_peak_rss(
        std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .arg("--dir")
            .arg(dir.path())
            .args(["flush", "--endpoint", url, "--timeout", "10m"])
            .env("SPOOL_MAX_EVENTS", "10000000")
            .env("SPOOL_MAX_BYTES", "16GiB")
            .env_remove("DO_NOT_TRACK"),
    );
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("sent {n},")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = rate(n, took);
    rows.push(Row(
        format!("flush {n} events @ batch 100 (`spool flush` process)"),
        format!("{ours:.0} events/s"),
        format!(
            "plain reqwest loop, same bodies: {plain:.0} events/s ({:.0}%)",
            100.0 * ours / plain
        ),
    ));
    rows.push(Row(
        format!("peak RSS of that flush ({n} queued)"),
        format!("{:.1} MB", rss as f64 / 1024.0),
        String::new(),
    ));
}

/// Flush throughput per destination: the same queue of `n` events flushed by the
/// `spool` process to the same loopback sink in each wire format, beside the native
/// format in the same run. The sink reads each body and answers 200, so what differs
/// is the mapping, encoding and compression each format costs.
fn bench_destinations(rows: &mut Vec<Row>, url: &str) {
    let n = scale(100_000);
    let kinds: [(&str, &[&str]); 5] = [
        ("native", &["--destination", "native"]),
        (
            "posthog",
            &["--destination", "posthog", "--api-key", "phc_bench"],
        ),
        (
            "segment",
            &["--destination", "segment", "--api-key", "wk_bench"],
        ),
        ("otlp protobuf", &["--destination", "otlp"]),
        ("otlp json", &[]),
    ];
    let mut native = None;
    for (name, args) in kinds {
        let dir = filled_dir(n);
        if args.is_empty() {
            // JSON on request, through the persisted destination.
            let cfg = format!(
                r#"{{"destination":{{"kind":"otlp","endpoint":"{url}","protocol":"http/json"}}}}"#
            );
            let path = dir.path().join("config.json");
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let extra: serde_json::Value = serde_json::from_str(&cfg).unwrap();
            v["destination"] = extra["destination"].clone();
            std::fs::write(&path, v.to_string()).unwrap();
        }
        let mut cmd = spool_cmd(dir.path());
        cmd.arg("flush").args(args).args(["--timeout", "10m"]);
        if !args.is_empty() {
            cmd.args(["--endpoint", url]);
        }
        let t = Instant::now();
        let out = cmd.output().unwrap();
        let took = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("sent {n},")),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = rate(n, took);
        let beside = match native {
            None => "the baseline".to_string(),
            Some(b) => format!("native: {b:.0} events/s ({:.0}%)", 100.0 * r / b),
        };
        native.get_or_insert(r);
        rows.push(Row(
            format!("flush {n} events → {name} (`spool flush` process)"),
            format!("{r:.0} events/s"),
            beside,
        ));
    }
}

/// Wall and CPU time (user + system) of one child process run to completion.
fn timed(cmd: &mut std::process::Command) -> (Duration, Duration) {
    #[cfg(unix)]
    fn children_cpu() -> Duration {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
    // The benchmark's figures are taken on Linux; elsewhere it still builds (CI
    // lints it for Windows), with no CPU time.
    #[cfg(not(unix))]
    fn children_cpu() -> Duration {
        Duration::ZERO
    }
    let cpu = children_cpu();
    let t = Instant::now();
    let st = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let wall = t.elapsed();
    assert!(st.success(), "{cmd:?}: {st}");
    (wall, children_cpu().saturating_sub(cpu))
}

/// A process figure: medians of wall and CPU time.
#[derive(Clone, Copy)]
struct Proc {
    wall: Duration,
    cpu: Duration,
}

impl Proc {
    fn show(self) -> String {
        format!("{} (cpu {})", ms(self.wall), ms(self.cpu))
    }
}

/// Makes the command one row times, afresh for each run.
type MakeCmd<'a> = Box<dyn FnMut() -> std::process::Command + 'a>;

/// Runs each command `runs` times, interleaved (a, b, c, a, b, c, …) so load hits all
/// alike. Returns the medians.
fn interleaved(runs: usize, cmds: &mut [(&str, MakeCmd<'_>)]) -> Vec<Proc> {
    let mut walls = vec![Vec::new(); cmds.len()];
    let mut cpus = vec![Vec::new(); cmds.len()];
    for _ in 0..runs {
        for (i, (_, make)) in cmds.iter_mut().enumerate() {
            let (w, c) = timed(&mut make());
            walls[i].push(w);
            cpus[i].push(c);
        }
    }
    walls
        .into_iter()
        .zip(cpus)
        .map(|(w, c)| Proc {
            wall: median(w),
            cpu: median(c),
        })
        .collect()
}

/// An empty Rust program built with rustc -O and stripped: exec and dynamic linking of
/// a Rust binary, the floor under any Rust CLI. `None` without rustc.
fn empty_rust_binary(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let src = dir.join("empty.rs");
    std::fs::write(&src, "fn main() {}\n").ok()?;
    let linked = dir.join("empty-rust-linked");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let ok = std::process::Command::new(rustc)
        .args(["-O", "-C", "strip=symbols", "-o"])
        .arg(&linked)
        .arg(&src)
        .status()
        .ok()?
        .success();
    // Timed from a copy, as the spool builds are (see `builds`).
    let out = dir.join("empty-rust");
    (ok && std::fs::copy(&linked, &out).is_ok()).then_some(out)
}

fn ratio(a: Proc, b: Proc) -> String {
    format!(
        "{:.2}× (cpu {:.2}×)",
        a.wall.as_secs_f64() / b.wall.as_secs_f64(),
        a.cpu.as_secs_f64() / b.cpu.as_secs_f64().max(1e-9)
    )
}

/// The `spool` binaries to compare: this build's, and `SPOOL_BENCH_BEFORE`'s.
///
/// Each is timed from a fresh copy: here a file the linker has just written execs about
/// 1 ms slower than a copy of it (page-cache state), which would bias this build's rows
/// against an earlier build's copied file.
fn builds(name: &str, this: std::path::PathBuf) -> Vec<(String, std::path::PathBuf)> {
    static COPIES: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let copies = COPIES.get_or_init(|| tempfile::tempdir().unwrap());
    let mut v = vec![(String::new(), this)];
    if let Some(before) = std::env::var_os("SPOOL_BENCH_BEFORE") {
        let p = std::path::Path::new(&before).join(name);
        if p.exists() {
            v.push((" [before]".to_string(), p));
        }
    }
    v.into_iter()
        .enumerate()
        .map(|(i, (tag, bin))| {
            let copy = copies.path().join(format!("{i}-{name}"));
            std::fs::copy(&bin, &copy).unwrap();
            (tag, copy)
        })
        .collect()
}

/// `spool track` as a script calls it: warm queue, first ever, opted out, each beside
/// `true` and an empty Rust binary, all interleaved in one run (with
/// `SPOOL_BENCH_BEFORE`, the earlier build's rows too).
fn bench_invocation_track(rows: &mut Vec<Row>) {
    let runs = scale(200).max(20);
    let tmp = tempfile::tempdir().unwrap();
    let floor = empty_rust_binary(tmp.path());
    let track = |bin: &std::path::Path, dir: &std::path::Path| {
        let mut c = std::process::Command::new(bin);
        c.arg("--dir")
            .arg(dir)
            .args(["track", "bench", "-p", "command=build"])
            .env_remove("DO_NOT_TRACK")
            .env_remove("SPOOL_TELEMETRY");
        c
    };
    let builds = builds("spool", env!("CARGO_BIN_EXE_spool").into());
    let mut cmds: Vec<(&str, MakeCmd)> =
        vec![("true", Box::new(|| std::process::Command::new("true")))];
    if let Some(f) = floor.clone() {
        cmds.push(("floor", Box::new(move || std::process::Command::new(&f))));
    }
    let fresh_root = tempfile::tempdir().unwrap();
    for (b, (_, bin)) in builds.iter().enumerate() {
        let warm = tmp.path().join(format!("warm{b}"));
        timed(&mut track(bin, &warm));
        let first_root = fresh_root.path().join(b.to_string());
        let mut n = 0;
        let warm2 = warm.clone();
        cmds.push(("warm", Box::new(move || track(bin, &warm))));
        cmds.push((
            "first",
            Box::new(move || {
                n += 1;
                track(bin, &first_root.join(n.to_string()))
            }),
        ));
        cmds.push((
            "off",
            Box::new(move || {
                let mut c = track(bin, &warm2);
                c.env("DO_NOT_TRACK", "1");
                c
            }),
        ));
    }
    let got = interleaved(runs, &mut cmds);
    let t = got[0];
    rows.push(Row(
        "`true` (the baseline of the rows below)".into(),
        t.show(),
        String::new(),
    ));
    let skip = if floor.is_some() {
        rows.push(Row(
            "empty Rust binary (rustc -O, stripped: the floor)".into(),
            got[1].show(),
            format!("{} `true`", ratio(got[1], t)),
        ));
        2
    } else {
        1
    };
    for (b, (tag, _)) in builds.iter().enumerate() {
        for (i, (label, target)) in [
            ("`spool track`, warm queue", "≤ 2×"),
            ("`spool track`, first ever (fresh dir)", "≤ 3×"),
            ("`spool track`, opted out (DO_NOT_TRACK=1)", "≤ 1.4×"),
        ]
        .into_iter()
        .enumerate()
        {
            let p = got[skip + 3 * b + i];
            rows.push(Row(
                format!("{label}{tag}"),
                p.show(),
                format!(
                    "{} `true`, target {target}; +{} wall",
                    ratio(p, t),
                    ms(p.wall.saturating_sub(t.wall))
                ),
            ));
        }
    }
}

/// The devtool example's `dev` with telemetry on beside off: warm (its queue and
/// settings exist, a detached flush when one is due, to a loopback sink) and on its
/// first run (a fresh directory each time), interleaved in one run. `node` is kept
/// off PATH: `dev` asks `node --version` only when telemetry is on, the host's own
/// collection (a process spawn, ~50 ms), not the library's.
fn bench_invocation_devtool(rows: &mut Vec<Row>, url: &str) {
    let runs = scale(60).max(20);
    let here = std::env::current_exe().unwrap();
    let this = here
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples").join("devtool"))
        .unwrap();
    if !this.exists() {
        rows.push(Row(
            "devtool `dev` rows".into(),
            "skipped".into(),
            "build it first: cargo build --release --example devtool".into(),
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let no_path = tmp.path().join("empty-path");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&no_path).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"dependencies":{"next":"14.0.0","prisma":"5.0.0"}}"#,
    )
    .unwrap();
    let builds = builds("devtool", this);
    let dev = |bin: &std::path::Path, dir: &std::path::Path, on: bool| {
        let mut c = std::process::Command::new(bin);
        c.arg("dev")
            .current_dir(&project)
            .env("PATH", &no_path)
            .env("DEVTOOL_TELEMETRY_DIR", dir)
            .env("DEVTOOL_TELEMETRY_ENDPOINT", url)
            .env_remove("DO_NOT_TRACK");
        if !on {
            c.env("DEVTOOL_TELEMETRY", "false");
        }
        c
    };
    let fresh_root = tempfile::tempdir().unwrap();
    let mut cmds: Vec<(&str, MakeCmd)> = Vec::new();
    for (b, (_, bin)) in builds.iter().enumerate() {
        let warm = tmp.path().join(format!("q{b}"));
        for _ in 0..3 {
            timed(&mut dev(bin, &warm, true));
        }
        let first_root = fresh_root.path().join(b.to_string());
        let mut n = 0;
        let warm2 = warm.clone();
        cmds.push(("off", Box::new(move || dev(bin, &warm, false))));
        cmds.push(("on", Box::new(move || dev(bin, &warm2, true))));
        cmds.push((
            "first",
            Box::new(move || {
                n += 1;
                dev(bin, &first_root.join(n.to_string()), true)
            }),
        ));
    }
    let got = interleaved(runs, &mut cmds);
    for (b, (tag, _)) in builds.iter().enumerate() {
        let off = got[3 * b];
        let share = |p: Proc| {
            format!(
                "telemetry's share {} (cpu {})",
                ms(p.wall.saturating_sub(off.wall)),
                ms(p.cpu.saturating_sub(off.cpu))
            )
        };
        rows.push(Row(
            format!("devtool `dev`, telemetry off{tag}"),
            off.show(),
            "the baseline of the two rows below".into(),
        ));
        rows.push(Row(
            format!("devtool `dev`, telemetry on, warm{tag}"),
            got[3 * b + 1].show(),
            format!("{}, target ≤ 1 ms", share(got[3 * b + 1])),
        ));
        rows.push(Row(
            format!("devtool `dev`, telemetry on, first run{tag}"),
            got[3 * b + 2].show(),
            format!("{}, target ≤ 2 ms", share(got[3 * b + 2])),
        ));
    }
}

/// `benches/footprint.sh`: what a minimal host adds with `default-features = false`.
fn bench_footprint(rows: &mut Vec<Row>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/footprint.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let before = rows.len();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 6 && ["lean", "default", "none"].contains(&f[0]) {
            let mb = |b: &str| format!("{:.2} MB", b.parse::<f64>().unwrap_or(0.0) / 1e6);
            rows.push(Row(
                format!("footprint: `{}` host, stripped", f[0]),
                mb(f[2]),
                format!(
                    "adds {} over no eventspool; {} crates; clean build {} s wall, {} s CPU{}",
                    mb(f[3]),
                    f[1],
                    f[4],
                    f[5],
                    if f[0] == "lean" {
                        "; target ≤ 4 MB"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    if rows.len() == before || !out.status.success() {
        eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too: stay quick there.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--cold-child") {
        cold_child(&args[i + 1]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--sqlite-child") {
        sqlite_child(&args[i + 1]);
        return;
    }
    // `cargo bench --bench spool -- warm cli` runs only the rows whose name matches.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // `issue14`: every row issue 14 names, in one table.
    const ISSUE14: &[&str] = &["invocation", "cold", "warm", "flush", "memory", "footprint"];
    let want = |name: &str| {
        only.is_empty()
            || only.iter().any(|o| name.contains(o.as_str()))
            || (only.iter().any(|o| o == "issue14") && ISSUE14.contains(&name))
    };
    let mut rows = Vec::new();
    let raw = want("raw").then(|| bench_raw_append(&mut rows));
    let naive = want("naive").then(|| bench_naive_sqlite(&mut rows));
    let qf_sync = want("queue-file").then(|| bench_queue_file(&mut rows, true));
    let _qf_nosync = want("queue-file").then(|| bench_queue_file(&mut rows, false));
    let warm = want("warm").then(|| bench_warm_track(&mut rows));
    let batch = want("batch").then(|| bench_batch_track(&mut rows));
    if want("catalog") {
        bench_catalog(&mut rows);
    }
    if want("cold") {
        bench_cold_track(&mut rows);
    }
    if want("cli") {
        bench_cli_track(&mut rows);
    }
    if want("invocation") {
        bench_invocation_track(&mut rows);
        let (url, _rt) = start_sink();
        bench_invocation_devtool(&mut rows, &url);
    }
    if want("flush") || want("list") || want("memory") {
        let (url, rt) = start_sink();
        if want("flush") || want("list") {
            bench_flush(&mut rows, &url, &rt);
        }
        if want("memory") {
            bench_flush_memory(&mut rows, &url);
        }
    }
    if want("destinations") {
        let (url, _rt) = start_sink();
        bench_destinations(&mut rows, &url);
    }
    // Only when asked for by name: three clean release builds take minutes.
    if !only.is_empty() && want("footprint") {
        bench_footprint(&mut rows);
    }
    if let Some(warm) = warm {
        let vs = |name: &str, base: Option<f64>| base.map(|b| format!("{:.1}× {name}", warm / b));
        let parts: Vec<String> = [
            vs("naive SQLite", naive),
            vs("queue-file (default sync)", qf_sync),
        ]
        .into_iter()
        .flatten()
        .collect();
        rows.push(Row(
            "ratio: warm track()".into(),
            parts.join(", "),
            String::new(),
        ));
    }
    if let (Some(raw), Some(batch)) = (raw, batch) {
        rows.push(Row(
            "ratio: raw append / batch".into(),
            format!("{:.1}×", raw / batch),
            String::new(),
        ));
    }

    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("\n{:<w0$}  {:<w1$}  beside", "row", "measured");
    println!("{}", "-".repeat(w0 + w1 + 40));
    for Row(a, b, c) in &rows {
        println!("{a:<w0$}  {b:<w1$}  {c}");
    }
}
