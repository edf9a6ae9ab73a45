//! One flusher at a time: the lease under SIGKILL and concurrency; the background
//! flusher's bounded close; the detached child's bounded life.

use std::time::{Duration, Instant};

use crate::util::{
    Reply, TestServer, assert_delivered_once, detached_pid, fill, queued, spool, temp, wait_exited,
};

#[test]
fn sigkill_mid_request_lets_the_next_flush_take_over_at_once() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 300);
    let server = TestServer::start(|_, _| Reply::Hang);
    let mut child = spool(&dir)
        .args(["flush", "--endpoint", &server.url])
        .spawn();
    server.wait_for_requests(1, Duration::from_secs(10));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    server.set_handler(|_, _| Reply::status(200));
    let t = Instant::now();
    let out = spool(&dir).args(["flush", "--endpoint", &server.url]).ok();
    assert!(
        !out.contains("Another flush"),
        "the dead holder's lease was not taken over: {out}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(queued(&dir).is_empty(), "{out}");
    // The held batch was never acknowledged, so it is sent again: at most one batch twice.
    let got = server.ids();
    let unique: std::collections::HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), 300);
    assert!(
        got.len() - unique.len() <= 100,
        "{} duplicates",
        got.len() - unique.len()
    );
    assert!(ids.iter().all(|id| unique.contains(id)));
}

#[test]
fn two_flush_processes_at_once_deliver_every_event_once() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 600);
    let server = TestServer::start(|_, _| {
        std::thread::sleep(Duration::from_millis(30));
        Reply::status(200)
    });
    let a = spool(&dir)
        .args(["flush", "--endpoint", &server.url])
        .env("SPOOL_BATCH_SIZE", "50")
        .spawn();
    let b = spool(&dir)
        .args(["flush", "--endpoint", &server.url])
        .env("SPOOL_BATCH_SIZE", "50")
        .spawn();
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One of them may have found the lease taken; finish with a third.
    spool(&dir).args(["flush", "--endpoint", &server.url]).ok();
    assert_delivered_once(&server, &ids);
    assert!(queued(&dir).is_empty());
}

/// A spool sending to `server` with five events queued, and its background flusher
/// (every 50 ms) once the server has the first request.
fn five_queued_and_one_request_in_flight(
    dir: &std::path::Path,
    server: &TestServer,
) -> (eventspool::Spool, eventspool::BackgroundFlusher) {
    let spool = eventspool::Spool::builder("spool")
        .dir(dir)
        .endpoint(&server.url)
        .build();
    for i in 0..5 {
        spool.track(eventspool::Event::new("bg").property("i", i));
    }
    let flusher = spool.start_background_flusher(Duration::from_millis(50));
    server.wait_for_requests(1, Duration::from_secs(10));
    (spool, flusher)
}

#[test]
fn background_close_returns_within_its_limit_when_the_endpoint_hangs() {
    let (_t, dir) = temp();
    let server = TestServer::start(|_, _| Reply::Hang);
    let (spool, flusher) = five_queued_and_one_request_in_flight(&dir, &server);
    let t = Instant::now();
    flusher.close(Duration::from_millis(500));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "close took {took:?}");
    assert_eq!(spool.list(10).unwrap().len(), 5, "nothing lost");
}

/// Closing while a request is in flight lets that flush finish within the close's
/// timeout: the batch the endpoint already has is deleted, not sent again by the last
/// flush (it used to be abandoned mid-request and sent twice).
#[test]
fn closing_mid_request_lets_the_flush_finish_and_sends_nothing_twice() {
    let (_t, dir) = temp();
    let server = TestServer::start(|n, _| {
        if n == 0 {
            Reply::Delay(Duration::from_millis(1500), 200)
        } else {
            Reply::status(200)
        }
    });
    let (spool, flusher) = five_queued_and_one_request_in_flight(&dir, &server);
    assert!(flusher.close(Duration::from_secs(10)));
    assert!(spool.list(10).unwrap().is_empty(), "delivered and deleted");
    assert_eq!(server.requests().len(), 1, "sent once");
    assert_eq!(server.ids().len(), 5);
}

#[test]
fn background_flusher_delivers_and_close_flushes_the_rest() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let spool = eventspool::Spool::builder("spool")
        .dir(&dir)
        .endpoint(&server.url)
        .build();
    let flusher = spool.start_background_flusher(Duration::from_secs(3600));
    spool.track(eventspool::Event::new("late"));
    assert!(flusher.close(Duration::from_secs(5)));
    assert!(spool.list(10).unwrap().is_empty());
    assert_eq!(server.ids().len(), 1);
}

#[test]
fn detached_child_ends_within_its_lifetime_when_the_endpoint_hangs() {
    let (_t, dir) = temp();
    fill(&dir, 5);
    let server = TestServer::start(|_, _| Reply::Hang);
    let t = Instant::now();
    let out = spool(&dir)
        .args([
            "flush",
            "--detach",
            "--timeout",
            "1s",
            "--endpoint",
            &server.url,
        ])
        .ok();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the parent waited: {:?}",
        t.elapsed()
    );
    let pid = detached_pid(&out);
    server.wait_for_requests(1, Duration::from_secs(5));
    wait_exited(pid, t, Duration::from_secs(6));
    assert_eq!(queued(&dir).len(), 5, "events stay queued after the hang");
}

#[test]
fn detached_flush_delivers_and_spawns_nothing_when_disabled_or_empty() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 20);
    let server = TestServer::answering(200);
    let out = spool(&dir)
        .args(["flush", "--detach", "--endpoint", &server.url])
        .env("DO_NOT_TRACK", "1")
        .ok();
    assert!(
        out.contains("Not flushing in the background: telemetry is off"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.connections(), 0);

    let out = spool(&dir)
        .args(["flush", "--detach", "--endpoint", &server.url])
        .ok();
    assert!(out.contains("pid"), "{out}");
    let t = Instant::now();
    while !queued(&dir).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "detached child did not deliver"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_delivered_once(&server, &ids);
    let out = spool(&dir)
        .args(["flush", "--detach", "--endpoint", &server.url])
        .ok();
    assert!(out.contains("the queue is empty"), "empty queue: {out}");
}

/// Starts `spool flush` stopped at a pause point, waits until it is there, kills it.
fn kill_flush_at(dir: &std::path::Path, url: &str, point: &str) {
    use std::io::BufRead;
    let mut child = spool(dir)
        .args(["flush", "--endpoint", url])
        .env("EVENTSPOOL_TEST_PAUSE", point)
        .spawn();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("paused at {point}")), "{line}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn sigkill_before_the_request_loses_nothing_and_sends_nothing_twice() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 250);
    let server = TestServer::answering(200);
    kill_flush_at(&dir, &server.url, "before_request");
    assert_eq!(server.requests().len(), 0);
    let out = spool(&dir).args(["flush", "--endpoint", &server.url]).ok();
    assert!(
        out.contains("sent 250"),
        "the lease of the killed flusher was not taken over: {out}"
    );
    assert_delivered_once(&server, &ids);
}

#[test]
fn sigkill_after_the_2xx_before_the_delete_resends_that_batch_once() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 250);
    let server = TestServer::answering(200);
    kill_flush_at(&dir, &server.url, "after_response");
    assert_eq!(server.ids().len(), 100, "the first batch was acknowledged");
    assert_eq!(queued(&dir).len(), 250, "but not deleted");
    let out = spool(&dir).args(["flush", "--endpoint", &server.url]).ok();
    assert!(out.contains("sent 250"), "{out}");
    let got = server.ids();
    let unique: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), 250);
    assert!(ids.iter().all(|id| unique.contains(id)));
    assert_eq!(
        got.len() - unique.len(),
        100,
        "exactly the one batch is sent twice"
    );
    assert!(queued(&dir).is_empty());
}
