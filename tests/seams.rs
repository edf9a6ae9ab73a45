//! The library's seams: the async flush leaves its caller's executor free while
//! SQLite waits; an injected clock and environment drive consent, precedence,
//! backoff and expiry in-process, without sleeping.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventspool::{Event, FlushEnd, FlushOptions, Limits, Spool};

use crate::util::{Reply, TestServer, fill, temp};

#[test]
fn async_flush_leaves_a_current_thread_runtime_free_while_the_queue_is_locked() {
    let (_t, dir) = temp();
    fill(&dir, 5);
    let server = TestServer::start(|_, _| Reply::status(200));
    // Another connection holds the write lock for a second: the flush's lease must
    // wait for it.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let db = dir.join("queue.db");
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        ready_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        conn.execute_batch("COMMIT").unwrap();
    });
    ready_rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spool = Spool::builder("spool")
        .dir(&dir)
        .endpoint(&server.url)
        .build();
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    let (report, took, ticked) = rt.block_on(async move {
        let ticker = tokio::spawn(async move {
            // A sleep per tick, not an interval: an interval would make up for
            // missed ticks in a burst once the executor is free again.
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::SeqCst);
        let started = Instant::now();
        let report = spool
            .flush(FlushOptions::with_deadline(Duration::from_secs(20)))
            .await
            .unwrap();
        let took = started.elapsed();
        ticker.abort();
        (report, took, ticks.load(Ordering::SeqCst) - before)
    });
    holder.join().unwrap();
    assert_eq!(report.sent, 5, "{report:?}");
    assert!(
        took >= Duration::from_millis(800),
        "the flush did not wait for the lock: {took:?}"
    );
    // Blocking the only thread on the lock would have let the ticker run ~0 times.
    assert!(
        ticked >= 50,
        "the executor was blocked: {ticked} ticks in {took:?}"
    );
}

/// A clock only the test moves.
fn fake_clock(start_ms: i64) -> (Arc<AtomicI64>, eventspool::SpoolBuilder) {
    let now = Arc::new(AtomicI64::new(start_ms));
    let c = now.clone();
    let builder = Spool::builder("seam-host").clock(Arc::new(move || c.load(Ordering::SeqCst)));
    (now, builder)
}

/// What `SpoolBuilder::env` takes.
type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// An environment of exactly these variables, the process's own untouched.
fn env_of(vars: &[(&str, &str)]) -> Env {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |k| vars.get(k).cloned())
}

const MINUTE_MS: i64 = 60_000;

#[test]
fn backoff_and_expiry_follow_the_injected_clock() {
    let (_t, dir) = temp();
    // 2030-03-17: far from the real clock, so only the injected one can explain the
    // times below.
    let start = 1_900_000_000_000;
    let (clock, builder) = fake_clock(start);
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let server = TestServer::start(move |_, _| {
        Reply::status(if f.load(Ordering::SeqCst) { 503 } else { 200 })
    });
    let spool = builder
        .dir(&dir)
        .endpoint(&server.url)
        .env(env_of(&[]))
        .limits(Limits {
            first_backoff: Duration::from_secs(600),
            max_backoff: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
            ..Limits::default()
        })
        .build();
    let opts = || FlushOptions::with_deadline(Duration::from_secs(20));
    spool.try_track(Event::new("first")).unwrap();
    spool.try_track(Event::new("second")).unwrap();
    let failed = spool.flush_blocking(opts()).unwrap();
    assert_eq!(failed.retried, 2, "{failed:?}");
    let FlushEnd::BackingOff { until } = &failed.end else {
        panic!("{failed:?}")
    };
    // 10 minutes with jitter in [½, 1], from the injected now.
    let until_ms = humantime::parse_rfc3339(until)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (start + 5 * MINUTE_MS..=start + 10 * MINUTE_MS).contains(&until_ms),
        "{until}"
    );

    // Four minutes on: still backing off, nothing sent.
    failing.store(false, Ordering::SeqCst);
    clock.fetch_add(4 * MINUTE_MS, Ordering::SeqCst);
    let waiting = spool.flush_blocking(opts()).unwrap();
    assert!(
        matches!(waiting.end, FlushEnd::BackingOff { .. }),
        "{waiting:?}"
    );
    assert_eq!(server.requests().len(), 1);

    // Past the backoff: both go.
    clock.fetch_add(7 * MINUTE_MS, Ordering::SeqCst);
    let sent = spool.flush_blocking(opts()).unwrap();
    assert_eq!(
        (sent.sent, sent.end.clone()),
        (2, FlushEnd::Drained),
        "{sent:?}"
    );

    // An event past its max age on the injected clock is dropped unsent.
    spool.try_track(Event::new("stale")).unwrap();
    clock.fetch_add(61 * MINUTE_MS, Ordering::SeqCst);
    let expired = spool.flush_blocking(opts()).unwrap();
    assert_eq!(
        expired.dropped.get(&eventspool::DropReason::Age),
        Some(&1),
        "{expired:?}"
    );
    assert_eq!(expired.requests, 0);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn consent_precedence_with_an_injected_environment() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let build = |vars: &[(&str, &str)]| {
        Spool::builder("seam-host")
            .dir(&dir)
            .endpoint(&server.url)
            .env(env_of(vars))
            .build()
    };

    // The app's opt-out: nothing recorded, nothing written, no request.
    let off = build(&[("SEAM_HOST_TELEMETRY_DISABLED", "1")]);
    assert_eq!(off.consent().rule, "env_disabled");
    assert_eq!(
        off.try_track(Event::new("x")).unwrap(),
        eventspool::Recorded::Disabled
    );
    assert!(!dir.join("queue.db").exists());
    let report = off.flush_blocking(FlushOptions::default()).unwrap();
    assert!(
        matches!(report.end, FlushEnd::Disabled { .. }),
        "{report:?}"
    );
    assert!(server.requests().is_empty());

    // DO_NOT_TRACK, and the opt-out beats the app's own "on".
    let dnt = build(&[("DO_NOT_TRACK", "true")]);
    assert_eq!(dnt.consent().rule, "do_not_track");
    let both = build(&[
        ("SEAM_HOST_TELEMETRY_DISABLED", "yes"),
        ("SEAM_HOST_TELEMETRY", "1"),
    ]);
    assert!(!both.consent().enabled);

    // The user's persisted "off", overridden for this environment only.
    let plain = build(&[]);
    plain.disable().unwrap();
    assert_eq!(plain.consent().rule, "persisted");
    assert!(!plain.consent().enabled);
    let on_here = build(&[("SEAM_HOST_TELEMETRY", "1")]);
    assert_eq!(
        (on_here.consent().enabled, on_here.consent().rule),
        (true, "env")
    );
    assert!(matches!(
        on_here.try_track(Event::new("x")).unwrap(),
        eventspool::Recorded::Queued(_)
    ));

    // The user's directory, endpoint and limit variables beat the host's code.
    let elsewhere = dir.join("elsewhere");
    let moved = build(&[
        ("SEAM_HOST_TELEMETRY_DIR", elsewhere.to_str().unwrap()),
        ("SEAM_HOST_TELEMETRY_ENDPOINT", "https://user.example/e"),
        ("SPOOL_BATCH_SIZE", "7"),
    ]);
    assert_eq!(moved.dir(), Some(elsewhere.as_path()));
    assert_eq!(moved.endpoint().as_deref(), Some("https://user.example/e"));
    assert_eq!(moved.limits().batch_size, 7);
    // None of it leaked into the process environment.
    assert!(std::env::var_os("SEAM_HOST_TELEMETRY_DIR").is_none());
    assert_eq!(build(&[]).limits().batch_size, Limits::default().batch_size);
}

/// Each recording call reads its environment once, and afresh: a variable changed
/// between two calls is seen by the second, also after the first panicked inside the
/// host's environment lookup. Each variable is read once per call, however often
/// consent asks.
#[test]
fn each_call_reads_the_environment_once_and_the_next_call_afresh() {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    let (_t, dir) = temp();
    let vars: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let reads: Arc<Mutex<Vec<String>>> = Arc::default();
    let boom = Arc::new(AtomicBool::new(false));
    let env = {
        let (vars, reads, boom) = (vars.clone(), reads.clone(), boom.clone());
        Arc::new(move |k: &str| {
            if k == "SEAM_HOST_TELEMETRY" && boom.swap(false, Ordering::SeqCst) {
                panic!("the host's lookup fails");
            }
            reads.lock().unwrap().push(k.to_string());
            vars.lock().unwrap().get(k).cloned()
        })
    };
    let spool = Spool::builder("seam-host").dir(&dir).env(env).build();
    assert!(matches!(
        spool.try_track(Event::new("a")).unwrap(),
        eventspool::Recorded::Queued(_)
    ));
    let read = std::mem::take(&mut *reads.lock().unwrap());
    let mut once = read.clone();
    once.sort();
    once.dedup();
    assert_eq!(read.len(), once.len(), "each read once: {read:?}");
    assert!(read.iter().any(|k| k == "DO_NOT_TRACK"), "{read:?}");

    boom.store(true, Ordering::SeqCst);
    spool.track(Event::new("b"));
    assert_eq!(spool.failures(), 1, "the panic is caught and counted");
    vars.lock()
        .unwrap()
        .insert("DO_NOT_TRACK".into(), "1".into());
    assert_eq!(
        spool.try_track(Event::new("c")).unwrap(),
        eventspool::Recorded::Disabled,
        "the next call reads DO_NOT_TRACK afresh"
    );
}
