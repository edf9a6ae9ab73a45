//! A property test: random sequences of operations drive the real queue (SQLite file,
//! real flushes to a loopback server) and a plain in-memory model; after every step
//! the queue, its attempt counts and what the server received must agree with the
//! model. Failing seeds are kept under `proptest-regressions/`. Time is the spool's
//! injected clock: backoff and expiry pass by advancing it, never by sleeping.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use eventspool::{Event, FlushOptions, Limits, Recorded, Spool};
use proptest::prelude::*;

use crate::util::{Reply, TestServer};

const BATCH: usize = 3;
const MAX_ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
enum Op {
    /// Record this many events in one call.
    Track(usize),
    /// Flush with the endpoint answering 200.
    FlushOk,
    /// Flush with the endpoint answering 503.
    FlushFail,
    /// Close the spool and open it again, as a new process would.
    Reopen,
    /// `clear`.
    Clear,
    /// Flush with a max age every queued event is past: all dropped, none sent.
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..6usize).prop_map(Op::Track),
        2 => Just(Op::FlushOk),
        3 => Just(Op::FlushFail),
        1 => Just(Op::Reopen),
        1 => Just(Op::Clear),
        1 => Just(Op::Expire),
    ]
}

fn limits() -> Limits {
    Limits {
        batch_size: BATCH as u32,
        max_attempts: MAX_ATTEMPTS,
        // Real backoffs: the clock is advanced past them, no test waits for them.
        first_backoff: BACKOFF,
        max_backoff: BACKOFF,
        ..Limits::default()
    }
}

#[derive(Default, Debug)]
struct Model {
    queue: VecDeque<(String, u32)>,
    delivered: Vec<String>,
}

/// A clock only the test moves, shared by every spool of one case.
#[derive(Clone)]
struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    fn new() -> Self {
        FakeClock(Arc::new(AtomicI64::new(eventspool::fuzzing::now_ms())))
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

fn open(dir: &std::path::Path, url: &str, limits: Limits, clock: &FakeClock) -> Spool {
    let c = clock.0.clone();
    Spool::builder("spool")
        .dir(dir)
        .endpoint(url)
        .limits(limits)
        .clock(Arc::new(move || c.load(Ordering::SeqCst)))
        .build()
}

fn flush(spool: &Spool, clock: &FakeClock) {
    // Let the backoff of an earlier failure pass, on the spool's clock.
    clock.advance(BACKOFF + Duration::from_secs(1));
    spool
        .flush_blocking(FlushOptions::with_deadline(Duration::from_secs(10)))
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("EVENTSPOOL_LONG_TESTS").is_some() { 256 } else { 24 },
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "proptest-regressions/model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_queue_agrees_with_a_simple_model(ops in prop::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        // Ids the server acknowledged with a 2xx, in order.
        let acked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let a = acked.clone();
        let server = TestServer::start(move |_, req| {
            if f.load(Ordering::SeqCst) {
                return Reply::status(503);
            }
            a.lock().unwrap().extend(req.events().iter().map(|e| e["id"].as_str().unwrap().to_string()));
            Reply::status(200)
        });
        let clock = FakeClock::new();
        let mut spool = open(dir.path(), &server.url, limits(), &clock);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Track(n) => {
                    let events = (0..n).map(|i| Event::new("model").property("i", i as u64)).collect();
                    for r in spool.try_track_batch(events).unwrap() {
                        let Recorded::Queued(id) = r else { panic!("not queued: {r:?}") };
                        model.queue.push_back((id, 0));
                    }
                }
                Op::FlushOk => {
                    failing.store(false, Ordering::SeqCst);
                    flush(&spool, &clock);
                    model.delivered.extend(model.queue.drain(..).map(|(id, _)| id));
                }
                Op::FlushFail => {
                    failing.store(true, Ordering::SeqCst);
                    flush(&spool, &clock);
                    // The first batch fails once; the round stops; a batch that used
                    // its last attempt is dropped.
                    let n = model.queue.len().min(BATCH);
                    for e in model.queue.iter_mut().take(n) {
                        e.1 += 1;
                    }
                    model.queue.retain(|(_, attempts)| *attempts < MAX_ATTEMPTS);
                }
                Op::Reopen => {
                    drop(spool);
                    spool = open(dir.path(), &server.url, limits(), &clock);
                }
                Op::Clear => {
                    prop_assert_eq!(spool.clear().unwrap(), model.queue.len() as u64);
                    model.queue.clear();
                }
                Op::Expire => {
                    clock.advance(Duration::from_millis(5));
                    let old = open(dir.path(), &server.url, Limits { max_age: Duration::from_millis(1), ..limits() }, &clock);
                    flush(&old, &clock);
                    model.queue.clear();
                }
            }
            let queued: Vec<(String, u32)> = spool.list(10_000).unwrap().into_iter().map(|q| (q.id, q.attempts)).collect();
            prop_assert_eq!(&queued, &model.queue.iter().cloned().collect::<Vec<_>>(), "after {:?}", op);
            prop_assert_eq!(acked.lock().unwrap().clone(), model.delivered.clone(), "delivered, after {:?}", op);
            let status = spool.status().unwrap();
            prop_assert_eq!(status.queue.events, model.queue.len() as u64);
        }
    }
}
