//! Choosing a destination: set in code and persisted, so `spool flush` by hand sends
//! where the host does; the user's `spool config set` wins over the host's code until
//! unset; flags and variables override one flush; `spool status` names it without
//! giving a key away; bad input is one line and a non-zero exit.

use std::path::Path;
use std::sync::Arc;

use eventspool::{DestinationConfig, DestinationKind, Event, FlushOptions, Limits, Spool};
use serde_json::Value;

use crate::util::{Reply, TestServer, fill, spool, temp};

/// A library host in `dir` that reads no variable of this process.
fn host(
    dir: &Path,
    configure: impl FnOnce(eventspool::SpoolBuilder) -> eventspool::SpoolBuilder,
) -> Spool {
    configure(Spool::builder("desthost").dir(dir).env(Arc::new(|_| None))).build()
}

fn config_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn a_destination_set_in_code_is_persisted_and_spool_flush_by_hand_sends_there() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let h = host(&dir, |b| {
        b.destination(DestinationConfig::native(&server.url).header("X-Tenant", "acme"))
    });
    h.try_track(Event::new("built")).unwrap();
    let d = &config_json(&dir)["destination"];
    assert_eq!(d["kind"], "native");
    assert_eq!(d["endpoint"], server.url.as_str());
    assert_eq!(d["headers"]["x-tenant"], "acme");
    // No endpoint and no destination given to `spool` itself.
    let out = spool(&dir).args(["flush"]).ok();
    assert!(out.contains("sent 1"), "{out}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("x-tenant"), Some("acme"));
}

#[test]
fn the_users_destination_wins_over_the_hosts_code_until_unset() {
    let (_t, dir) = temp();
    let hosts = TestServer::answering(200);
    let users = TestServer::answering(200);
    let run_host = || {
        let h = host(&dir, |b| b.endpoint(&hosts.url));
        h.try_track(Event::new("ran")).unwrap();
        h
    };
    run_host();
    spool(&dir)
        .args(["config", "set", "endpoint", &users.url])
        .ok();
    // The host runs again with its own endpoint in code: the user's stays.
    let h = run_host();
    assert_eq!(
        config_json(&dir)["destination"]["endpoint"],
        users.url.as_str()
    );
    assert_eq!(h.endpoint().as_deref(), Some(users.url.as_str()));
    let r = h.flush_blocking(FlushOptions::default()).unwrap();
    assert_eq!(
        (r.sent, users.requests().len(), hosts.requests().len()),
        (2, 1, 0)
    );
    let status = spool(&dir).args(["status"]).ok();
    assert!(status.contains("set by you"), "{status}");

    // Given back: the host's code writes its own again on its next run.
    spool(&dir).args(["config", "unset", "destination"]).ok();
    let h = run_host();
    assert_eq!(
        config_json(&dir)["destination"]["endpoint"],
        hosts.url.as_str()
    );
    assert_eq!(h.flush_blocking(FlushOptions::default()).unwrap().sent, 1);
    assert_eq!(hosts.requests().len(), 1);
}

#[test]
fn status_names_the_destination_and_never_prints_a_whole_key() {
    let (_t, dir) = temp();
    let key = "phc_3f9a1c2b7d8e4f60a1b2c3d4e5f60718";
    spool(&dir)
        .args(["config", "set", "destination", "posthog"])
        .ok();
    spool(&dir).args(["config", "set", "api_key", key]).ok();
    spool(&dir)
        .args(["config", "set", "header.x-proxy-auth", "s3cr3t-proxy-token"])
        .ok();
    let text = spool(&dir).args(["status"]).ok();
    assert!(text.contains("destination: posthog"), "{text}");
    assert!(text.contains("https://us.i.posthog.com"), "{text}");
    assert!(text.contains("phc_…"), "{text}");
    assert!(text.contains("x-proxy-auth"), "{text}");
    let json = spool(&dir).args(["status", "--json"]).ok();
    for shown in [&text, &json] {
        assert!(
            !shown.contains(key) && !shown.contains(&key[4..12]),
            "{shown}"
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["destination"]["kind"], "posthog");
    assert_eq!(
        v["destination"]["api_key"],
        format!("phc_… ({} chars)", key.len())
    );
    // The user's own `config get` gives the key back, for scripts.
    assert_eq!(
        spool(&dir).args(["config", "get", "api_key"]).ok().trim(),
        key
    );
    assert_eq!(
        spool(&dir)
            .args(["config", "get", "destination"])
            .ok()
            .trim(),
        "posthog"
    );
}

#[test]
fn flags_and_variables_override_the_persisted_destination_for_one_flush() {
    let (_t, dir) = temp();
    let persisted = TestServer::answering(200);
    let other = TestServer::answering(200);
    fill(&dir, 3);
    spool(&dir)
        .args(["config", "set", "endpoint", &persisted.url])
        .ok();
    let before = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let out = spool(&dir)
        .args([
            "flush",
            "--endpoint",
            &other.url,
            "--header",
            "Authorization=Bearer t0k",
        ])
        .ok();
    assert!(out.contains("sent 3"), "{out}");
    assert_eq!(
        other.requests()[0].header("authorization"),
        Some("Bearer t0k")
    );
    fill(&dir, 1);
    let out = spool(&dir)
        .env("SPOOL_ENDPOINT", &other.url)
        .args(["flush"])
        .ok();
    assert!(out.contains("sent 1"), "{out}");
    assert_eq!((persisted.requests().len(), other.requests().len()), (0, 2));
    // One flush's choice is not persisted.
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        before
    );
}

#[test]
fn a_detached_flush_sends_with_the_flags_its_parent_was_given() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    fill(&dir, 2);
    let out = spool(&dir)
        .args([
            "flush",
            "--detach",
            "--endpoint",
            &server.url,
            "--header",
            "x-run=42",
        ])
        .ok();
    assert!(out.contains("background"), "{out}");
    server.wait_for_requests(1, std::time::Duration::from_secs(20));
    assert_eq!(server.requests()[0].header("x-run"), Some("42"));
}

#[test]
fn bad_destination_input_is_one_line_and_a_nonzero_exit_and_keeps_the_queue() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    let ids = fill(&dir, 2);
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["flush", "--destination", "kafka"],
            vec![],
            "unknown destination",
        ),
        (
            vec!["flush"],
            vec![("SPOOL_DESTINATION", "kafka")],
            "unknown destination",
        ),
        (
            vec!["flush", "--endpoint", &server.url, "--header", "novalue"],
            vec![],
            "NAME=VALUE",
        ),
        (
            vec!["flush", "--endpoint", &server.url, "--header", "bad name=1"],
            vec![],
            "header name",
        ),
        (
            vec![
                "flush",
                "--destination",
                "posthog",
                "--endpoint",
                &server.url,
            ],
            vec![],
            "needs an API key",
        ),
        (
            vec!["flush", "--destination", "otlp", "--api-key", "k"],
            vec![],
            "takes no API key",
        ),
        (
            vec!["config", "set", "endpoint", "http://collector.example.com"],
            vec![],
            "loopback",
        ),
        (
            vec!["config", "set", "protocol", "http/json"],
            vec![],
            "only to the otlp",
        ),
        (
            vec!["config", "set", "max_age", "forever"],
            vec![],
            "max_age",
        ),
        (
            vec!["config", "set", "destination", "kafka"],
            vec![],
            "unknown destination",
        ),
        (vec!["config", "get", "colour"], vec![], "unknown"),
        (vec!["config", "get", "api_key"], vec![], "not set"),
        (vec!["config", "unset", "batch_size"], vec![], "not set"),
        // A combination that could never send is refused when set, not at every flush.
        (
            vec!["config", "set", "api_key", "k_1234"],
            vec![],
            "takes no API key",
        ),
    ];
    for (args, env, says) in cases {
        let mut cmd = spool(&dir).args(&args);
        for (k, v) in &env {
            cmd = cmd.env(k, v);
        }
        let err = cmd.fails();
        assert!(err.contains(says), "{args:?} {env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(server.requests().is_empty());
    assert_eq!(crate::util::queued(&dir).len(), ids.len());
    assert!(!dir.join("config.json").exists() || config_json(&dir).get("destination").is_none());
}

#[test]
fn limits_set_by_name_apply_and_survive_the_hosts_code() {
    let (_t, dir) = temp();
    let server = TestServer::start(|_, _| Reply::status(200));
    spool(&dir).args(["config", "set", "batch_size", "2"]).ok();
    assert_eq!(
        spool(&dir)
            .args(["config", "get", "batch_size"])
            .ok()
            .trim(),
        "2"
    );
    // A host whose code sets every limit, batch size 100 among them.
    let h = host(&dir, |b| b.endpoint(&server.url).limits(Limits::default()));
    for i in 0..5 {
        h.try_track(Event::new("step").property("i", i)).unwrap();
    }
    assert_eq!(h.limits().batch_size, 2);
    assert_eq!(h.flush_blocking(FlushOptions::default()).unwrap().sent, 5);
    assert_eq!(server.requests().len(), 3);
    spool(&dir).args(["config", "unset", "batch_size"]).ok();
    let h = host(&dir, |b| b.endpoint(&server.url).limits(Limits::default()));
    assert_eq!(h.limits().batch_size, Limits::default().batch_size);
}

#[test]
fn a_kind_chosen_by_name_starts_from_its_own_defaults() {
    let (_t, dir) = temp();
    spool(&dir)
        .args([
            "config",
            "set",
            "endpoint",
            "https://collector.example.com/in",
        ])
        .ok();
    spool(&dir)
        .args(["config", "set", "destination", "segment"])
        .ok();
    let d = &config_json(&dir)["destination"];
    assert_eq!(d["kind"], "segment");
    assert!(d.get("endpoint").is_none(), "{d}");
    let s: Value = serde_json::from_str(&spool(&dir).args(["status", "--json"]).ok()).unwrap();
    assert_eq!(s["endpoint"], "https://api.segment.io");
    assert_eq!(
        "otlp"
            .parse::<DestinationKind>()
            .unwrap()
            .default_endpoint(),
        Some("http://localhost:4318")
    );
}

#[test]
fn a_host_in_another_language_sets_defaults_that_never_override_the_user() {
    let (_t, dir) = temp();
    let hosts = TestServer::answering(200);
    let users = TestServer::answering(200);
    // What a Node or Python host runs on each start, in place of a builder.
    let host_sets = || {
        spool(&dir)
            .args(["config", "set", "--host", "endpoint", &hosts.url])
            .ok();
        spool(&dir)
            .args(["config", "set", "--host", "batch_size", "1"])
            .ok();
    };
    host_sets();
    assert_eq!(
        spool(&dir)
            .args(["config", "get", "batch_size"])
            .ok()
            .trim(),
        "1"
    );
    fill(&dir, 2);
    assert!(spool(&dir).args(["flush"]).ok().contains("sent 2"));
    assert_eq!(hosts.requests().len(), 2, "batch size 1: one request each");
    assert!(
        config_json(&dir)["destination"]
            .get("set_by_user")
            .is_none()
    );
    // The user chooses; the host's next start leaves it alone.
    spool(&dir)
        .args(["config", "set", "endpoint", &users.url])
        .ok();
    spool(&dir).args(["config", "set", "batch_size", "5"]).ok();
    host_sets();
    fill(&dir, 3);
    assert!(spool(&dir).args(["flush"]).ok().contains("sent 3"));
    assert_eq!((hosts.requests().len(), users.requests().len()), (2, 1));
    let err = spool(&dir)
        .args([
            "config",
            "set",
            "--host",
            "endpoint",
            "http://remote.example.com",
        ])
        .fails();
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn flags_and_variables_combine_field_by_field() {
    let (_t, dir) = temp();
    let server = TestServer::answering(200);
    fill(&dir, 2);
    // The key from the variable, the kind and endpoint from the flags.
    let out = spool(&dir)
        .env("SPOOL_API_KEY", "phc_from_the_environment_0123")
        .args([
            "flush",
            "--destination",
            "posthog",
            "--endpoint",
            &server.origin(),
        ])
        .ok();
    assert!(out.contains("sent 2"), "{out}");
    let r = &server.requests()[0];
    assert_eq!(r.path, "/batch/");
    assert_eq!(r.body["api_key"], "phc_from_the_environment_0123");
    // The endpoint from the variable, the kind from the flag.
    fill(&dir, 1);
    let out = spool(&dir)
        .env("SPOOL_ENDPOINT", server.origin())
        .args(["flush", "--destination", "otlp"])
        .ok();
    assert!(out.contains("sent 1"), "{out}");
    assert_eq!(server.requests()[1].path, "/v1/logs");
}

#[test]
fn no_secret_reaches_an_error_line_or_status() {
    let (_t, dir) = temp();
    fill(&dir, 1);
    // curl's syntax instead of NAME=VALUE: the token must not be echoed.
    for arg in [
        "Authorization: Bearer sk-live-51Habc",
        "Authorization: Bearer sk-live-51Habc==",
    ] {
        let err = spool(&dir)
            .args([
                "flush",
                "--endpoint",
                "http://127.0.0.1:9/",
                "--header",
                arg,
            ])
            .fails();
        assert!(
            err.to_lowercase().contains("authorization") && !err.contains("sk-live"),
            "{err}"
        );
    }
    // A credential misplaced among the destination's fields is not shown either.
    let path = dir.join("config.json");
    let mut v = config_json(&dir);
    v["destination"] = serde_json::json!({
        "kind": "native", "endpoint": "http://127.0.0.1:9/", "authorization": "Bearer sk-live-51Habc"
    });
    std::fs::write(&path, v.to_string()).unwrap();
    for args in [vec!["status"], vec!["status", "--json"]] {
        let out = spool(&dir).args(&args).ok();
        assert!(!out.contains("sk-live"), "{args:?}: {out}");
    }
    let d = DestinationConfig::posthog("phc_abcdefghijklmnopqrstuvwxyz").header("x-k", "s3cr3t");
    let shown = format!("{d:?}");
    assert!(
        !shown.contains("ghijkl") && !shown.contains("s3cr3t"),
        "{shown}"
    );
}

#[test]
fn a_library_host_ignores_the_spool_commands_variables() {
    let (_t, dir) = temp();
    let vars: std::collections::HashMap<&str, &str> = [
        ("SPOOL_DESTINATION", "posthog"),
        ("SPOOL_API_KEY", "phc_not_for_hosts"),
        ("SPOOL_ENDPOINT", "https://elsewhere.example.com"),
        ("SPOOL_SESSION_ID", "0193a5c2-7d1e-7cc4-9f3a-1b2c3d4e5f60"),
        ("SPOOL_TOOL", "other@9.9.9"),
    ]
    .into_iter()
    .collect();
    let h = Spool::builder("desthost")
        .dir(&dir)
        .endpoint("https://telemetry.example.com/e")
        .env(Arc::new(move |k| vars.get(k).map(|v| v.to_string())))
        .build();
    assert_eq!(h.destination().kind, DestinationKind::Native);
    assert_eq!(
        h.endpoint().as_deref(),
        Some("https://telemetry.example.com/e")
    );
    h.try_track(Event::new("ran")).unwrap();
    let p = &crate::util::queued(&dir)[0]["payload"];
    assert_ne!(p["session_id"], "0193a5c2-7d1e-7cc4-9f3a-1b2c3d4e5f60");
    assert!(p["context"].get("tool").is_none(), "{p}");
}
