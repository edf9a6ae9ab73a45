//! What a host in another language needs from `spool`: many events in one call
//! (`track --stdin`, one transaction), one session and tool across calls, JSON from
//! every command that prints, and a detached flush that starts only when one is due.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{TestServer, queued, spool, temp, wait_exited};

fn payload(q: &Value) -> Value {
    q["payload"].clone()
}

#[test]
fn track_stdin_records_every_line_in_one_transaction_and_prints_one_id_per_line() {
    let (_t, dir) = temp();
    let lines: String = (0..100)
        .map(|i| format!("{{\"event\":\"step\",\"properties\":{{\"i\":{i},\"ok\":true}}}}\n"))
        .collect();
    let out = spool(&dir).args(["track", "--stdin"]).input(lines).ok();
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 100);
    let q = queued(&dir);
    assert_eq!(
        q.iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    for (i, e) in q.iter().enumerate() {
        assert_eq!(payload(e)["properties"]["i"], i as u64);
    }
    // One call, one session.
    let sessions: std::collections::BTreeSet<String> = q
        .iter()
        .map(|e| payload(e)["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sessions.len(), 1);
    let json = spool(&dir)
        .args(["track", "--stdin", "--json"])
        .input("{\"event\":\"a\"}\n{\"event\":\"b\",\"properties\":null}\n")
        .ok();
    for line in json.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["id"].as_str().unwrap().len(), 36, "{line}");
    }
    assert_eq!(queued(&dir).len(), 102);
}

#[test]
fn a_bad_stdin_line_records_nothing_and_names_the_line() {
    let (_t, dir) = temp();
    spool(&dir).args(["track", "kept"]).ok();
    for (input, says) in [
        (
            "{\"event\":\"ok\"}\n{\"event\":\"bad name\"}\n",
            "stdin line 2",
        ),
        ("{\"event\":\"ok\"}\n\n{oops\n", "stdin line 3"),
        ("{\"event\":\"ok\",\"props\":{}}\n", "stdin line 1"),
        ("", "no events"),
    ] {
        let err = spool(&dir).args(["track", "--stdin"]).input(input).fails();
        assert!(err.contains(says), "{input:?}: {err}");
    }
    // Too large after the others were fine: none of them is recorded either.
    let big = format!(
        "{{\"event\":\"ok\"}}\n{{\"event\":\"big\",\"properties\":{{\"p\":\"{}\"}}}}\n",
        "x".repeat(40 * 1024)
    );
    let err = spool(&dir).args(["track", "--stdin"]).input(big).fails();
    assert!(err.contains("none was recorded"), "{err}");
    // More lines than the queue holds: refused, not evicting its own first lines.
    let five = "{\"event\":\"ok\"}\n".repeat(5);
    let err = spool(&dir)
        .env("SPOOL_MAX_EVENTS", "3")
        .args(["track", "--stdin"])
        .input(five)
        .fails();
    assert!(
        err.contains("max_events 3") && err.contains("none was recorded"),
        "{err}"
    );
    let q = queued(&dir);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["event"], "kept");
}

#[test]
fn session_id_and_tool_carry_across_calls() {
    let (_t, dir) = temp();
    let session = "0193a5c2-7d1e-7cc4-9f3a-1b2c3d4e5f60";
    spool(&dir)
        .args([
            "track",
            "first",
            "--session-id",
            session,
            "--tool",
            "@acme/cli@1.2.0",
        ])
        .ok();
    spool(&dir)
        .env("SPOOL_SESSION_ID", session.to_uppercase())
        .env("SPOOL_TOOL", "@acme/cli@1.2.0")
        .args(["track", "second"])
        .ok();
    spool(&dir).args(["track", "third"]).ok();
    spool(&dir).args(["track", "fourth"]).ok();
    let p: Vec<Value> = queued(&dir).iter().map(payload).collect();
    for e in &p[..2] {
        assert_eq!(e["session_id"], session);
        assert_eq!(e["context"]["tool"], "@acme/cli@1.2.0");
    }
    // Without one, each call is its own session, a UUIDv7.
    assert_ne!(p[2]["session_id"], p[3]["session_id"]);
    for e in &p[2..] {
        let id = uuid::Uuid::parse_str(e["session_id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }
    for (args, says) in [
        (vec!["track", "x", "--session-id", "my-session"], "UUID"),
        (vec!["track", "x", "--tool", "acme"], "NAME@VERSION"),
        (vec!["track", "x", "--tool", "acme@"], "NAME@VERSION"),
    ] {
        let err = spool(&dir).args(&args).fails();
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(queued(&dir).len(), 4);
}

#[test]
fn every_command_that_prints_can_print_json() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let track = spool(&dir).args(["track", "a", "--json"]).ok();
    let id = serde_json::from_str::<Value>(&track).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let runs: Vec<Vec<&str>> = vec![
        vec!["list", "--json"],
        vec!["show", &id, "--json"],
        vec!["status", "--json"],
        vec!["schema", "--json"],
        vec!["config", "get", "endpoint", "--json"],
        vec!["flush", "--endpoint", &server.url, "--json"],
        vec!["clear", "--json"],
        vec!["enable", "--json"],
        vec!["disable", "--json"],
        vec!["track", "b", "--json"],
    ];
    let mut seen = Vec::new();
    for args in runs {
        let out = spool(&dir).args(&args).ok();
        assert!(!out.trim().is_empty(), "{args:?} printed nothing");
        // One JSON document per line (`schema --json` prints one, indented).
        for v in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
            let v = v.unwrap_or_else(|e| panic!("{args:?}: {out:?} is not JSON: {e}"));
            seen.push((args[0].to_string(), v));
        }
    }
    let get = |cmd: &str| &seen.iter().find(|(c, _)| c == cmd).unwrap().1;
    assert_eq!(get("show")["id"], id.as_str());
    assert_eq!(get("flush")["sent"], 1);
    assert_eq!(get("clear")["removed"], 0);
    assert_eq!(get("disable")["enabled"], false);
    // Opted out: the JSON says so instead of printing nothing.
    let last = &seen.last().unwrap().1;
    assert_eq!(last["recorded"], false);
    assert!(
        last["reason"].as_str().unwrap().contains("disable"),
        "{last}"
    );
}

#[test]
fn a_flush_if_due_starts_only_when_a_batch_is_queued_or_the_oldest_is_old() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let detach = |env: &[(&str, &str)]| {
        let mut cmd = spool(&dir).args([
            "flush",
            "--detach",
            "--if-due",
            "--json",
            "--endpoint",
            &server.url,
        ]);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        serde_json::from_str::<Value>(&cmd.ok()).unwrap()
    };
    assert_eq!(detach(&[])["skipped"], "empty");
    spool(&dir).args(["track", "one"]).ok();
    let v = detach(&[]);
    assert_eq!(
        (v["detached"].as_bool(), v["skipped"].as_str()),
        (Some(false), Some("not_due"))
    );
    // A batch queued: due.
    let v = detach(&[("SPOOL_BATCH_SIZE", "1")]);
    assert_eq!(v["detached"], true, "{v}");
    wait_exited(
        v["pid"].as_u64().unwrap() as u32,
        Instant::now(),
        Duration::from_secs(30),
    );
    assert_eq!(server.ids().len(), 1);
    // The oldest older than the flush interval: due.
    spool(&dir).args(["track", "two"]).ok();
    std::thread::sleep(Duration::from_millis(50));
    let v = detach(&[("SPOOL_FLUSH_INTERVAL", "10ms")]);
    assert_eq!(v["detached"], true, "{v}");
    wait_exited(
        v["pid"].as_u64().unwrap() as u32,
        Instant::now(),
        Duration::from_secs(30),
    );
    assert_eq!(server.ids().len(), 2);
    // Due, but backing off after a failure: nothing starts.
    let failing = TestServer::answering(503);
    spool(&dir).args(["track", "three"]).ok();
    spool(&dir).args(["flush", "--endpoint", &failing.url]).ok();
    let v = detach(&[("SPOOL_BATCH_SIZE", "1")]);
    assert_eq!(v["skipped"], "backing_off", "{v}");
    // Without --detach it is a usage error.
    let err = spool(&dir).args(["flush", "--if-due"]).fails_with(2);
    assert!(err.contains("--detach"), "{err}");
}

#[test]
fn an_unscrubbed_property_keeps_a_hash_the_scrubber_would_redact() {
    let (_t, dir) = temp();
    let hash = "427f93cafd9cc19be6eec03e590c9c6cdf9f688a5eaf21fa8d72351e2b15fd05";
    spool(&dir)
        .args(["track", "job", "-p", &format!("p={hash}")])
        .args(["-u", &format!("u={hash}"), "-u", "n:=3"])
        .ok();
    let line = format!(
        "{{\"event\":\"job\",\"properties\":{{\"p\":\"{hash}\"}},\"unscrubbed\":{{\"u\":\"{hash}\"}}}}\n"
    );
    spool(&dir).args(["track", "--stdin"]).input(line).ok();
    let q = queued(&dir);
    for e in &q {
        let props = &payload(e)["properties"];
        assert_eq!(props["p"], "<redacted>", "{props}");
        assert_eq!(props["u"], hash, "{props}");
    }
    assert_eq!(payload(&q[0])["properties"]["n"], 3);
    let err = spool(&dir).args(["track", "x", "-u", "novalue"]).fails();
    assert!(err.contains("key=value"), "{err}");
}
