//! The deletion request: with `deletion_request` on, an opt-out by the user's choice
//! queues one `deletion_request` naming the anonymous ids, the one thing an
//! opted-out spool sends; then the anonymous id and the machine hash change. With it
//! off (the default), an opted-out spool still sends nothing and writes only its choice.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Reply, TestServer, files_in, queued, spool, status, temp};

fn config(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn flush(dir: &std::path::Path, url: &str) -> crate::util::SpoolCmd {
    spool(dir).args(["flush", "--endpoint", url])
}

/// A spool with deletion requests on and two events recorded; returns the
/// anonymous id and machine hash those events carried.
fn recorded_with_deletion_on(dir: &std::path::Path) -> (String, String) {
    spool(dir)
        .args(["config", "set", "deletion_request", "true"])
        .ok();
    spool(dir).args(["track", "one"]).ok();
    spool(dir).args(["track", "two"]).ok();
    let rows = queued(dir);
    assert_eq!(rows.len(), 2);
    let p = &rows[0]["payload"];
    (
        p["anonymous_id"].as_str().unwrap().to_string(),
        p["context"]["machine_hash"].as_str().unwrap().to_string(),
    )
}

/// The queued deletion requests, as their payloads.
fn pending(dir: &std::path::Path) -> Vec<Value> {
    queued(dir)
        .iter()
        .filter(|r| r["event"] == "deletion_request")
        .map(|r| r["payload"].clone())
        .collect()
}

#[test]
fn disable_sends_one_deletion_request_exactly_once_then_the_ids_change() {
    let (_t, dir) = temp();
    let (anon, hash) = recorded_with_deletion_on(&dir);
    let out = spool(&dir).args(["disable"]).ok();
    assert!(out.contains("purged 2"), "{out}");
    // Listed like any event, and the only thing left.
    let rows = queued(&dir);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["event"], "deletion_request");
    let request = rows[0]["payload"].clone();
    let mut keys: Vec<&String> = request.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["anonymous_ids", "event", "id", "timestamp"],
        "no context, no properties"
    );
    assert_eq!(request["anonymous_ids"], serde_json::json!([anon]));
    let table = spool(&dir).args(["list"]).ok();
    assert!(table.contains("deletion_request"), "{table}");

    let server = TestServer::answering(200);
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("sent 1"), "{out}");
    let got = server.events();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], request, "sent exactly as queued");
    // Delivered once: nothing more is sent, and the spool is back to sending nothing.
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("Telemetry is disabled"), "{out}");
    assert_eq!(server.requests().len(), 1);
    assert!(queued(&dir).is_empty());
    let c = config(&dir);
    assert!(c.get("deletion_request_pending").is_none(), "{c}");

    // A new anonymous id, and a machine hash keyed with a new salt.
    assert_ne!(c["anonymous_id"], anon.as_str());
    assert!(c["machine_salt"].is_string(), "{c}");
    spool(&dir).args(["enable"]).ok();
    spool(&dir).args(["track", "later"]).ok();
    let later = queued(&dir)[0]["payload"].clone();
    assert_ne!(later["anonymous_id"], anon.as_str());
    assert_ne!(later["context"]["machine_hash"], hash.as_str());
}

/// Retried like any event: a 5xx backs it off, and a later process (a restart)
/// delivers it.
#[test]
fn a_failed_first_send_is_retried_by_the_next_process() {
    let (_t, dir) = temp();
    recorded_with_deletion_on(&dir);
    spool(&dir).args(["disable"]).ok();
    let id = pending(&dir)[0]["id"].as_str().unwrap().to_string();
    let server = TestServer::start(|i, _| Reply::status(if i == 0 { 503 } else { 200 }));
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("HTTP 503"), "{out}");
    let rows = queued(&dir);
    assert_eq!((rows.len(), rows[0]["attempts"].as_u64()), (1, Some(1)));
    // A new process, past the backoff.
    let out = flush(&dir, &server.url).args(["--force"]).ok();
    assert!(out.contains("sent 1"), "{out}");
    assert_eq!(server.ids(), [id.clone(), id]);
    assert_eq!(server.requests().len(), 2);
    assert!(queued(&dir).is_empty());
    flush(&dir, &server.url).args(["--force"]).ok();
    assert_eq!(server.requests().len(), 2, "sent again after delivery");
}

#[test]
fn clear_keeps_it_and_an_environment_opt_out_holds_it() {
    let (_t, dir) = temp();
    recorded_with_deletion_on(&dir);
    spool(&dir).args(["disable"]).ok();
    let out = spool(&dir).args(["clear"]).ok();
    assert!(out.contains("Removed 0"), "{out}");
    assert!(out.contains("Kept the pending deletion request"), "{out}");
    assert_eq!(pending(&dir).len(), 1, "clear removed the deletion request");

    let server = TestServer::answering(200);
    for (var, value) in [
        ("DO_NOT_TRACK", "1"),
        ("SPOOL_TELEMETRY_DISABLED", "1"),
        ("SPOOL_TELEMETRY", "0"),
    ] {
        let out = flush(&dir, &server.url).env(var, value).ok();
        assert!(out.contains("Telemetry is disabled"), "{var}: {out}");
        let out = spool(&dir)
            .args(["flush", "--detach", "--endpoint", &server.url])
            .env(var, value)
            .ok();
        assert!(out.contains("telemetry is off"), "{var}: {out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.connections(),
        0,
        "sent while an environment opt-out held"
    );
    assert_eq!(pending(&dir).len(), 1);
    // Once the variable is gone, a detached flush sends it (it is always due).
    spool(&dir)
        .args(["flush", "--detach", "--endpoint", &server.url])
        .ok();
    let got = server.wait_for_events(&["deletion_request"], Duration::from_secs(20));
    assert_eq!(got.len(), 1);
}

/// At most one pending: a second opt-out before delivery adds its id to it. An
/// opt-out while already off does nothing.
#[test]
fn at_most_one_is_pending_and_it_gathers_every_id() {
    let (_t, dir) = temp();
    let (first, _) = recorded_with_deletion_on(&dir);
    spool(&dir).args(["disable"]).ok();
    let old_id = pending(&dir)[0]["id"].clone();
    spool(&dir).args(["disable"]).ok();
    assert_eq!(
        pending(&dir)[0]["anonymous_ids"],
        serde_json::json!([first])
    );
    assert_eq!(
        pending(&dir)[0]["id"],
        old_id,
        "a second disable changed it"
    );

    spool(&dir).args(["enable"]).ok();
    spool(&dir).args(["track", "again"]).ok();
    let second = config(&dir)["anonymous_id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    spool(&dir).args(["disable"]).ok();
    let all = pending(&dir);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["anonymous_ids"], serde_json::json!([first, second]));
    assert_ne!(
        all[0]["id"], old_id,
        "a receiver that has the first must take this one"
    );
    assert_eq!(queued(&dir).len(), 1);
}

#[test]
fn an_environment_opt_out_never_creates_one() {
    let (_t, dir) = temp();
    recorded_with_deletion_on(&dir);
    let server = TestServer::answering(200);
    for cmd in [&["status"][..], &["track", "e"], &["list"], &["clear"]] {
        spool(&dir).args(cmd).env("DO_NOT_TRACK", "1").ok();
    }
    flush(&dir, &server.url).env("DO_NOT_TRACK", "1").ok();
    assert!(pending(&dir).is_empty());
    assert_eq!(server.connections(), 0);
    assert!(config(&dir).get("deletion_request_pending").is_none());
}

/// The default: `deletion_request` off. An opted-out spool makes no request and
/// writes nothing but its choice.
#[test]
fn with_deletion_request_off_an_opted_out_spool_sends_nothing() {
    let (_t, dir) = temp();
    spool(&dir).args(["track", "one"]).ok();
    let anon = config(&dir)["anonymous_id"].clone();
    spool(&dir).args(["disable"]).ok();
    assert!(queued(&dir).is_empty());
    let server = TestServer::answering(200);
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("Telemetry is disabled"), "{out}");
    let out = spool(&dir)
        .args(["flush", "--detach", "--endpoint", &server.url])
        .ok();
    assert!(out.contains("telemetry is off"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.connections(), 0);
    assert_eq!(
        config(&dir)["anonymous_id"],
        anon,
        "the id changes only with a request"
    );

    let (_t2, fresh) = temp();
    spool(&fresh).args(["disable"]).ok();
    flush(&fresh, &server.url).ok();
    spool(&fresh).args(["track", "e"]).ok();
    assert_eq!(files_in(&fresh), ["config.json"]);
}

/// The library's `disable`, with the host's choice in code: persisted, so `spool`
/// by hand does the same.
#[test]
fn a_hosts_disable_queues_it_and_spool_by_hand_agrees() {
    let (_t, dir) = temp();
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .deletion_request(true)
        .env(std::sync::Arc::new(|_| None))
        .build();
    host.track(eventspool::Event::new("hosted"));
    let anon = config(&dir)["anonymous_id"].as_str().unwrap().to_string();
    assert_eq!(config(&dir)["deletion_request"], true);
    assert_eq!(status(&dir)["deletion_request"], true);
    assert_eq!(host.disable().unwrap(), 1);
    assert_eq!(pending(&dir)[0]["anonymous_ids"], serde_json::json!([anon]));
    // A host cannot record the reserved name.
    let err = eventspool::Spool::builder("spool")
        .dir(&dir)
        .build()
        .try_track(eventspool::Event::new("deletion_request"))
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    let line = spool(&dir).args(["track", "deletion_request"]).fails();
    assert!(line.contains("reserved"), "{line}");
}

/// For a vendor destination it is an event named `deletion_request` with the ids
/// in its properties, from the first id.
#[test]
fn a_vendor_destination_gets_it_as_an_event_with_the_ids_in_properties() {
    for (kind, id_field) in [("posthog", "distinct_id"), ("segment", "anonymousId")] {
        let (_t, dir) = temp();
        let (anon, _) = recorded_with_deletion_on(&dir);
        spool(&dir).args(["disable"]).ok();
        let server = TestServer::answering(200);
        let out = spool(&dir)
            .args([
                "flush",
                "--destination",
                kind,
                "--endpoint",
                &server.origin(),
            ])
            .args(["--api-key", "test_key"])
            .ok();
        assert!(out.contains("sent 1"), "{kind}: {out}");
        let body = &server.requests()[0].body;
        let event = &body["batch"][0];
        assert_eq!(event["event"], "deletion_request", "{kind}: {body}");
        assert_eq!(event[id_field], anon.as_str(), "{kind}: {body}");
        assert_eq!(
            event["properties"]["anonymous_ids"],
            serde_json::json!([anon]),
            "{kind}: {body}"
        );
    }
}

/// For OTLP it is one log record named `deletion_request` whose attributes carry the ids.
#[test]
fn otlp_gets_it_as_a_log_record_with_the_ids_as_an_attribute() {
    let (_t, dir) = temp();
    let (anon, _) = recorded_with_deletion_on(&dir);
    spool(&dir).args(["disable"]).ok();
    let server = TestServer::answering(200);
    for (k, v) in [
        ("destination", "otlp"),
        ("endpoint", server.origin().as_str()),
        ("protocol", "http/json"),
    ] {
        spool(&dir).args(["config", "set", k, v]).ok();
    }
    let out = spool(&dir).args(["flush"]).ok();
    assert!(out.contains("sent 1"), "{out}");
    let body = &server.requests()[0].body;
    let record = &body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert_eq!(record["eventName"], "deletion_request", "{body}");
    let ids = record["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "anonymous_ids")
        .unwrap_or_else(|| panic!("no anonymous_ids attribute: {body}"));
    assert!(ids.to_string().contains(&anon), "{ids}");
}

/// A long-running host's background flusher, started while telemetry is off, still
/// sends the request its user's opt-out queued, and nothing else.
#[test]
fn a_background_flusher_sends_it_while_telemetry_is_off() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .endpoint(&server.url)
        .deletion_request(true)
        .env(std::sync::Arc::new(|_| None))
        .build();
    host.track(eventspool::Event::new("hosted"));
    host.disable().unwrap();
    host.track(eventspool::Event::new("after"));
    let flusher = host.start_background_flusher(Duration::from_millis(100));
    let got = server.wait_for_events(&["deletion_request"], Duration::from_secs(20));
    assert!(flusher.close(Duration::from_secs(5)));
    assert_eq!(got.len(), 1);
    let names: Vec<Value> = server.events().iter().map(|e| e["event"].clone()).collect();
    assert_eq!(names, ["deletion_request"]);
    // Delivered: `config.json` no longer marks one pending.
    assert!(config(&dir).get("deletion_request_pending").is_none());
}

#[test]
fn the_queue_caps_never_evict_a_pending_deletion_request() {
    let (_t, dir) = temp();
    let (anon, _) = recorded_with_deletion_on(&dir);
    spool(&dir).args(["disable"]).ok();
    assert_eq!(pending(&dir).len(), 1);
    // Re-enabled before it was delivered; then more events than the cap allows.
    spool(&dir).args(["enable"]).ok();
    for name in ["a", "b", "c", "d"] {
        spool(&dir)
            .env("SPOOL_MAX_EVENTS", "2")
            .args(["track", name])
            .ok();
    }
    let requests = pending(&dir);
    assert_eq!(requests.len(), 1, "evicted: {:?}", queued(&dir));
    assert_eq!(requests[0]["anonymous_ids"], serde_json::json!([anon]));
}

#[test]
fn an_opt_out_that_failed_on_a_busy_queue_is_completed_by_the_next() {
    let (_t, dir) = temp();
    let (anon, _) = recorded_with_deletion_on(&dir);
    {
        // Another process holds the queue's write lock past the purge's wait.
        let mut conn = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let out = spool(&dir).args(["disable"]).run();
        assert!(!out.status.success(), "disable succeeded under a held lock");
        tx.rollback().unwrap();
    }
    assert_eq!(config(&dir)["telemetry"], false);
    // Running it again completes it: the request is queued and the id replaced.
    spool(&dir).args(["disable"]).ok();
    let requests = pending(&dir);
    assert_eq!(requests.len(), 1, "{:?}", queued(&dir));
    assert_eq!(requests[0]["anonymous_ids"], serde_json::json!([anon]));
    let c = config(&dir);
    assert_ne!(c["anonymous_id"], anon.as_str());
    assert!(c.get("deletion_request_for").is_none(), "{c}");
    // And a third opt-out, now complete, does nothing.
    spool(&dir).args(["disable"]).ok();
    assert_eq!(pending(&dir)[0]["id"], requests[0]["id"]);
}
