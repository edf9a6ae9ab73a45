//! The queue file: caps, permissions, recovery from corruption, concurrent writers.

use std::collections::HashSet;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

use crate::util::{files_in, queued, spool, status, temp};

#[test]
fn caps_drop_the_oldest_and_count_them() {
    let (_t, dir) = temp();
    for i in 0..8 {
        spool(&dir)
            .args(["track", "e", "-p", &format!("i={i}")])
            .env("SPOOL_MAX_EVENTS", "5")
            .ok();
    }
    let kept: Vec<String> = queued(&dir)
        .iter()
        .map(|r| {
            r["payload"]["properties"]["i"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kept, ["3", "4", "5", "6", "7"]);
    assert_eq!(status(&dir)["dropped"]["cap"], 3);

    // The byte cap: each event is about 450 bytes, so 2 KiB holds four.
    let (_t2, dir2) = temp();
    for i in 0..6 {
        spool(&dir2)
            .args(["track", "e", "-p", &format!("i={i}")])
            .env("SPOOL_MAX_BYTES", "2KiB")
            .ok();
    }
    let s = status(&dir2);
    assert!(s["bytes"].as_u64().unwrap() <= 2048, "{s}");
    let kept = queued(&dir2);
    assert_eq!(kept.last().unwrap()["payload"]["properties"]["i"], "5");
    assert_eq!(kept.len() as u64 + s["dropped"]["cap"].as_u64().unwrap(), 6);
}

#[cfg(unix)] // umask and POSIX modes
#[test]
fn permissions_are_private_under_umask_000() {
    let (_t, dir) = temp();
    let script = format!(
        "umask 000; exec '{}' --dir '{}' track e",
        crate::util::spool_bin(),
        dir.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env_remove("DO_NOT_TRACK")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for f in files_in(&dir) {
        assert_eq!(mode(&dir.join(&f)), 0o600, "{f}");
    }
    assert!(files_in(&dir).contains(&"queue.db".to_string()));
    assert!(files_in(&dir).contains(&"config.json".to_string()));
}

#[test]
fn corrupt_queue_files_are_set_aside_and_a_fresh_queue_started() {
    let random: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("text", b"this is not a database, just a note\n".repeat(200)),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        let (_t, dir) = temp();
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("queue.db"), &bytes).unwrap();
        spool(&dir).args(["track", "after"]).ok();
        assert_eq!(queued(&dir).len(), 1, "{what}");
        let aside: Vec<String> = files_in(&dir)
            .into_iter()
            .filter(|f| f.starts_with("queue.db.corrupt-"))
            .collect();
        if bytes.is_empty() {
            // SQLite treats an empty file as an empty database: nothing to keep.
            assert!(aside.is_empty(), "{what}: {aside:?}");
        } else {
            assert_eq!(aside.len(), 1, "{what}: {:?}", files_in(&dir));
            assert_eq!(
                std::fs::read(dir.join(&aside[0])).unwrap(),
                bytes,
                "{what}: the original is kept intact"
            );
        }
    }
}

#[test]
fn a_database_of_another_application_is_set_aside_not_used() {
    let (_t, dir) = temp();
    std::fs::create_dir_all(&dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(conn);
    spool(&dir).args(["track", "e"]).ok();
    assert_eq!(queued(&dir).len(), 1);
    let aside: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|f| {
            f.starts_with("queue.db.corrupt-") && !f.ends_with("-wal") && !f.ends_with("-shm")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    let old = rusqlite::Connection::open(dir.join(&aside[0])).unwrap();
    let body: String = old
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "mine");
}

#[test]
fn eight_processes_tracking_at_once_lose_nothing() {
    let (_t, dir) = temp();
    let lanes: Vec<_> = (0..8)
        .map(|lane| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..100 {
                    let track = || {
                        spool(&dir)
                            .args([
                                "track",
                                "concurrent",
                                "-p",
                                &format!("lane={lane}"),
                                "-p",
                                &format!("i={i}"),
                            ])
                            .run()
                    };
                    // `spool track` waits 500 ms for another's write lock, then says so
                    // and records nothing (as documented): a slow disk's checkpoint can
                    // hold it longer. Such a refusal is retried, like the child writers'.
                    let mut out = track();
                    for _ in 0..20 {
                        if out.status.success()
                            || !String::from_utf8_lossy(&out.stderr).contains("database is locked")
                        {
                            break;
                        }
                        out = track();
                    }
                    assert!(
                        out.status.success(),
                        "lane {lane} #{i}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    ids.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
                }
                ids
            })
        })
        .collect();
    let printed: Vec<String> = lanes.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let rows = queued(&dir);
    assert_eq!(rows.len(), 800);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 800, "ids are distinct");
    assert_eq!(
        ids,
        printed.iter().map(String::as_str).collect(),
        "every printed id is queued"
    );
    let anon: HashSet<&str> = rows
        .iter()
        .map(|r| r["payload"]["anonymous_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        anon.len(),
        1,
        "one anonymous id per install, even when created concurrently"
    );
}

#[cfg(unix)] // symbolic links need a privilege on Windows
#[test]
fn symlinked_queue_directory_is_refused() {
    let (t, dir) = temp();
    let real = t.path().join("elsewhere");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, &dir).unwrap();
    let line = spool(&dir).args(["clear"]).fails();
    assert!(line.contains("symbolic link"), "{line}");
    // The host path swallows it and writes nothing through the link.
    let host = eventspool::Spool::builder("spool").dir(&dir).build();
    host.track(eventspool::Event::new("e"));
    assert_eq!(host.failures(), 1);
    assert!(files_in(&real).is_empty(), "{:?}", files_in(&real));
}
