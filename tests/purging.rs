//! Purging means gone: after `clear` or `disable` returns, no byte of a purged event
//! is left in any file of the queue directory, and no event recorded by a writer
//! racing `disable` stays queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eventspool::{Event, Spool};

use crate::util::{queued, spool, temp};

/// Every file of `dir` (not following links) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        let n = bytes.windows(needle.len()).filter(|w| *w == needle).count();
        if n > 0 {
            hits.push(format!("{}: {n}", entry.file_name().to_string_lossy()));
        }
    }
    hits
}

/// Records 150 events carrying a marker, some delivered-and-deleted history, and a
/// file set aside as corrupt that also holds the marker: every place old bytes hide.
fn queue_with_marked_events(dir: &std::path::Path, marker: &str) -> Spool {
    let host = Spool::builder("spool").dir(dir).build();
    // Delivered and deleted first: their pages are free, not gone.
    for i in 0..100 {
        host.track(Event::new("sent").property("note", format!("{marker} sent {i}")));
    }
    let server = crate::util::TestServer::answering(200);
    spool(dir).args(["flush", "--endpoint", &server.url]).ok();
    assert_eq!(server.ids().len(), 100);
    for i in 0..150 {
        host.track(
            Event::new("marked")
                .property("note", format!("{marker} number {i}"))
                .property("padding", "x ".repeat(200)),
        );
    }
    std::fs::write(
        dir.join("queue.db.corrupt-1-1"),
        format!("old queue holding {marker}"),
    )
    .unwrap();
    assert_eq!(queued(dir).len(), 150);
    assert!(!files_containing(dir, marker.as_bytes()).is_empty());
    host
}

#[test]
fn disable_leaves_no_byte_of_a_purged_payload_on_disk() {
    let (_t, dir) = temp();
    let marker = "zqxmarkerdisable";
    let host = queue_with_marked_events(&dir, marker);
    let out = spool(&dir).args(["disable"]).ok();
    assert!(out.contains("purged 150"), "{out}");
    assert_eq!(
        files_containing(&dir, marker.as_bytes()),
        Vec::<String>::new(),
        "purged payload bytes remain"
    );
    // The recording host's open connection is still good, and sees the choice.
    host.track(Event::new("after"));
    assert!(queued(&dir).is_empty());
}

#[test]
fn clear_leaves_no_byte_of_a_purged_payload_and_keeps_recording() {
    let (_t, dir) = temp();
    let marker = "zqxmarkerclear";
    let host = queue_with_marked_events(&dir, marker);
    let out = spool(&dir).args(["clear"]).ok();
    assert!(out.contains("150"), "{out}");
    assert_eq!(
        files_containing(&dir, marker.as_bytes()),
        Vec::<String>::new(),
        "purged payload bytes remain"
    );
    // The host's connection keeps writing to the live queue.
    host.track(Event::new("after-clear").property("note", "kept"));
    let rows = queued(&dir);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["event"], "after-clear");
    assert_eq!(crate::util::quick_check(&dir), "ok");
}

#[test]
fn nothing_recorded_while_disable_runs_stays_queued() {
    let (_t, dir) = temp();
    Spool::builder("spool")
        .dir(&dir)
        .build()
        .track(Event::new("first"));
    // Four long-running hosts, each its own spool (own connection, own settings
    // cache), recording as fast as they can while `spool disable` runs; each starts
    // afresh every 20 events, as a new process would (its first event syncs the
    // settings file). And two loops of `spool track` processes beside them.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers: Vec<_> = (0..4)
        .map(|w| {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let host = Spool::builder("spool").dir(&dir).build();
                    for _ in 0..20 {
                        host.track(Event::new("racing").property("writer", w));
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    writers.extend((0..2).map(|_| {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = spool(&dir).args(["track", "racing-process"]).run();
                n += 1;
            }
            n
        })
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!queued(&dir).is_empty(), "the writers are recording");
    spool(&dir).args(["disable"]).ok();
    let returned = Instant::now();
    // Whatever the writers do from now on, nothing stays queued: checked repeatedly
    // for longer than a host's settings cache lives.
    let mut seen = Vec::new();
    while returned.elapsed() < Duration::from_millis(800) {
        seen.push(queued(&dir).len());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let attempts: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(attempts > 100, "the writers ran ({attempts} events)");
    assert!(
        seen.iter().all(|&n| n == 0),
        "events stayed queued after disable returned: {seen:?}"
    );
    assert!(queued(&dir).is_empty());
}

/// Another process's connection with a read transaction open: no checkpoint can pass
/// its snapshot, so the WAL cannot be truncated until it is dropped.
fn reader_pinning_the_wal(dir: &std::path::Path) -> rusqlite::Connection {
    let reader = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    reader
}

/// Tracks every 300 ms for 4 s, as a busy host would; returns how many were queued.
fn tick_for_four_seconds(host: &Spool) -> usize {
    let mut recorded = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        if matches!(
            host.try_track(Event::new("tick")),
            Ok(eventspool::Recorded::Queued(_))
        ) {
            recorded += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    recorded
}

#[cfg(unix)] // breaks the queue with a symbolic link (a privilege on Windows)
#[test]
fn recording_resumes_after_a_storage_failure_while_the_host_keeps_tracking() {
    let (_t, dir) = temp();
    std::fs::create_dir_all(&dir).unwrap();
    // Break the queue file: a symbolic link is refused, so every write fails.
    let elsewhere = dir.join("elsewhere.db");
    std::fs::write(&elsewhere, b"").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("queue.db")).unwrap();
    let host = Spool::builder("spool").dir(&dir).build();
    assert!(host.try_track(Event::new("broken")).is_err());
    // Repair it, and keep tracking every 300 ms, as a busy host would.
    std::fs::remove_file(dir.join("queue.db")).unwrap();
    let recorded = tick_for_four_seconds(&host);
    assert!(
        recorded >= 8,
        "only {recorded} of ~13 events recorded after the repair"
    );
}

#[test]
fn recording_resumes_after_a_full_wal_while_the_host_keeps_tracking() {
    let (_t, dir) = temp();
    let limits = eventspool::Limits {
        max_events: 1000,
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let host = Spool::builder("spool").dir(&dir).limits(limits).build();
    host.track(Event::new("first"));
    let reader = reader_pinning_the_wal(&dir);
    // Record until the pinned WAL is full and events are refused.
    let big = "y ".repeat(1500);
    let mut refused = false;
    for _ in 0..20_000 {
        if host
            .try_track(Event::new("fill").property("pad", big.as_str()))
            .is_err()
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "the WAL never filled");
    drop(reader);
    let recorded = tick_for_four_seconds(&host);
    assert!(
        recorded >= 8,
        "only {recorded} of ~13 events recorded once the reader left"
    );
}

#[test]
fn a_purge_that_another_connection_blocks_says_so_and_completes_when_run_again() {
    let (_t, dir) = temp();
    let marker = "zqxmarkerpinned";
    let _host = queue_with_marked_events(&dir, marker);
    // Another process's connection holds a read transaction: the WAL cannot be
    // truncated past its snapshot, so old pages would stay in it.
    let reader = reader_pinning_the_wal(&dir);
    let line = spool(&dir).args(["clear"]).fails_with(1);
    assert!(line.contains("holds it open"), "{line}");
    assert!(
        queued(&dir).is_empty(),
        "the events are gone from the queue"
    );
    drop(reader);
    spool(&dir).args(["clear"]).ok();
    assert_eq!(
        files_containing(&dir, marker.as_bytes()),
        Vec::<String>::new(),
        "purged payload bytes remain"
    );
}

#[test]
fn a_slow_purge_never_holds_up_the_same_hosts_track() {
    let (_t, dir) = temp();
    let host = Spool::builder("spool").dir(&dir).build();
    host.track(Event::new("first"));
    // A reader pins the WAL, so the purge waits its full time for the truncation.
    let reader = reader_pinning_the_wal(&dir);
    let purging = {
        let host = host.clone();
        std::thread::spawn(move || host.clear())
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        host.track(Event::new("meanwhile").property("i", i));
        slowest = slowest.max(t.elapsed());
    }
    assert!(!purging.is_finished(), "the purge was still waiting");
    assert!(
        slowest < Duration::from_millis(500),
        "track waited {slowest:?}"
    );
    drop(reader);
    let _ = purging.join().unwrap();
}
