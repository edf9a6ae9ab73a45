//! Whose telemetry and whose environment: app names are checked before they touch a
//! path, a library host honours only its own `<APP>_TELEMETRY_*` variables, and the
//! `SPOOL_*` variables configure the `spool` command alone.

use eventspool::{Event, Spool};

#[cfg(unix)]
use crate::util::{JOB, example_bin, refused_url, run_clean};
use crate::util::{TestServer, queued, spool, spool_at_home, temp, tree};

#[test]
fn invalid_app_names_are_refused_and_write_nothing_anywhere() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("a/b/home");
    std::fs::create_dir_all(&home).unwrap();
    let absolute = t.path().join("abs/path");
    let absolute = absolute.to_str().unwrap();
    for bad in ["../../evil", "..", ".", "", "a/b", ".hidden", absolute] {
        for cmd in [vec!["track", "e"], vec!["disable"], vec!["list"]] {
            let line = spool_at_home(&home)
                .args(["--app", bad])
                .args(&cmd)
                .fails_with(2);
            assert!(line.contains("invalid app name"), "{bad:?}: {line}");
        }
        let line = spool_at_home(&home)
            .env("SPOOL_APP", bad)
            .args(["track", "e"])
            .fails_with(2);
        assert!(line.contains("invalid app name"), "{bad:?}: {line}");
    }
    // Nothing was created: not under the home, not beside it, not at the absolute path.
    assert_eq!(tree(t.path()), ["a", "a/b", "a/b/home"]);

    // A library host with a bad name records nothing, writes nothing, and says why.
    let host = Spool::builder("../../evil").build();
    assert_eq!(host.dir(), None);
    let err = host.try_track(Event::new("e")).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("invalid app name"), "{err}");
    host.track(Event::new("e"));
    assert!(!host.consent().enabled);
    assert!(host.status().is_err() && host.disable().is_err());
}

#[cfg(unix)] // HOME: Windows finds the profile through the known-folder API, not a variable
#[test]
fn a_relative_home_never_puts_the_queue_under_the_working_directory() {
    let (_t, cwd) = temp();
    std::fs::create_dir_all(&cwd).unwrap();
    let out = crate::util::clean_command(std::path::Path::new(crate::util::spool_bin()))
        .env("HOME", "relative/home")
        .env_remove("XDG_CONFIG_HOME")
        .current_dir(&cwd)
        .args(["track", "e"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no home directory"), "{stderr}");
    assert_eq!(tree(&cwd), Vec::<String>::new());
}

#[cfg(unix)] // fakes the home directory through HOME, which Windows does not read
#[test]
fn spool_variables_never_move_or_redirect_a_library_host() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let spool_dir = t.path().join("spool-dir");
    let server = TestServer::answering(200);
    let refused = refused_url();
    // SPOOL_DIR and SPOOL_ENDPOINT set in the shell: the host ignores both. (Its own
    // endpoint variable points at a closed port, so nothing is delivered anywhere.)
    let out = run_clean(
        &example_bin("job_runner"),
        &JOB,
        &[
            ("HOME", home.to_str().unwrap()),
            ("SPOOL_DIR", spool_dir.to_str().unwrap()),
            ("SPOOL_ENDPOINT", &server.url),
            ("JOBRUNNER_TELEMETRY_ENDPOINT", &refused),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(!spool_dir.exists(), "SPOOL_DIR moved the host's queue");
    assert!(
        server.requests().is_empty(),
        "SPOOL_ENDPOINT redirected the host"
    );
    let own = home.join(".config/jobrunner");
    assert_eq!(
        queued(&own).len(),
        1,
        "queued in the app's own config directory"
    );

    // The host's own variable moves it.
    let elsewhere = t.path().join("jobrunner-queue");
    let out = run_clean(
        &example_bin("job_runner"),
        &JOB,
        &[
            ("HOME", home.to_str().unwrap()),
            ("JOBRUNNER_TELEMETRY_DIR", elsewhere.to_str().unwrap()),
            ("JOBRUNNER_TELEMETRY_ENDPOINT", &refused),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(queued(&elsewhere).len(), 1);
    assert_eq!(queued(&own).len(), 1, "the default queue is untouched");

    // `spool --app jobrunner` looks where the host does.
    let listed = spool_at_home(&home)
        .env("JOBRUNNER_TELEMETRY_DIR", &elsewhere)
        .args(["--app", "jobrunner", "list", "--json"])
        .ok();
    assert_eq!(listed.lines().count(), 1);
    // ... unless told otherwise with --dir.
    assert_eq!(
        spool(&own)
            .env("JOBRUNNER_TELEMETRY_DIR", &elsewhere)
            .args(["--app", "jobrunner", "list", "--json"])
            .ok()
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_detached_flush_drains_the_queue_it_was_asked_to_whatever_the_child_inherits() {
    let (_t, dir) = temp();
    let (_t2, other) = temp();
    crate::util::fill(&dir, 3);
    let other_ids = crate::util::fill(&other, 2);
    let server = TestServer::answering(200);
    // `spool --dir X flush --detach` while the shell also has the app's own variable
    // pointing at Y: the child must drain X, not Y.
    let out = spool(&dir)
        .env("SPOOL_TELEMETRY_DIR", &other)
        .args(["flush", "--detach", "--endpoint", &server.url])
        .ok();
    assert!(out.contains("pid"), "{out}");
    let t0 = std::time::Instant::now();
    while !queued(&dir).is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the detached child did not drain the queue it was given"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(server.ids().len(), 3);
    let still: Vec<String> = queued(&other)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(still, other_ids, "the other queue was not touched");
}
