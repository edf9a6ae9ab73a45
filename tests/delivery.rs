//! Delivery to real loopback HTTP servers: batches, retries, drops, splitting,
//! timeouts, expiry, consent at flush time, endpoint checks.

use std::time::{Duration, Instant};

use crate::util::{
    Reply, TestServer, assert_delivered_once, fill, queued, refused_url, spool, status, temp,
};

fn flush(dir: &std::path::Path, url: &str) -> crate::util::SpoolCmd {
    spool(dir).args(["flush", "--endpoint", url])
}

#[test]
fn all_events_are_delivered_once_in_batches_and_the_queue_empties() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 250);
    let server = TestServer::answering(200);
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("sent 250, dropped 0, remaining 0"), "{out}");
    assert_delivered_once(&server, &ids);
    let sizes: Vec<usize> = server.requests().iter().map(|r| r.events().len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    for r in server.requests() {
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.body["sent_at"].is_string());
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "large bodies are gzipped"
        );
    }
    assert!(queued(&dir).is_empty());
    assert_eq!(status(&dir)["sent"], 250);
    // In queue order.
    let order: Vec<u64> = server
        .events()
        .iter()
        .map(|e| e["properties"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(order, (0..250).collect::<Vec<_>>());
}

#[test]
fn batch_size_one_sends_bare_events() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 5);
    let server = TestServer::answering(204);
    flush(&dir, &server.url).env("SPOOL_BATCH_SIZE", "1").ok();
    assert_eq!(server.requests().len(), 5);
    for r in server.requests() {
        assert!(
            r.body.get("batch").is_none(),
            "bare event expected: {}",
            r.body
        );
        assert!(r.body["id"].is_string() && r.body["event"] == "filled");
    }
    assert_delivered_once(&server, &ids);
}

#[test]
fn server_errors_keep_the_batch_count_the_attempt_and_stop_the_round() {
    for code in [500, 503] {
        let (_t, dir) = temp();
        fill(&dir, 250);
        let server = TestServer::answering(code);
        let out = flush(&dir, &server.url).ok();
        assert!(
            out.contains("sent 0") && out.contains("remaining 250") && out.contains("backing off"),
            "{out}"
        );
        assert_eq!(
            server.requests().len(),
            1,
            "{code}: the round stops at the first failure"
        );
        let rows = queued(&dir);
        assert_eq!(rows.len(), 250);
        assert!(
            rows[..100].iter().all(|r| r["attempts"] == 1),
            "the failed batch's attempts grow"
        );
        assert!(rows[100..].iter().all(|r| r["attempts"] == 0));
        // A second process a moment later honours the backoff stored in the queue.
        let out = flush(&dir, &server.url).ok();
        assert!(out.contains("backing off"), "{out}");
        assert_eq!(
            server.requests().len(),
            1,
            "{code}: second flush sent nothing"
        );
        assert_eq!(server.connections(), 1);
    }
}

#[test]
fn retry_after_seconds_is_honoured() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 3);
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::with_header(429, "Retry-After", "2")
        } else {
            Reply::status(200)
        }
    });
    flush(&dir, &server.url).ok();
    let first = server.requests()[0].at;
    // Keep trying; nothing may be sent before the server's 2 seconds.
    while server.requests().len() < 2 {
        assert!(first.elapsed() < Duration::from_secs(10), "never retried");
        flush(&dir, &server.url).ok();
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = server.requests()[1].at;
    assert!(
        second.duration_since(first) >= Duration::from_secs(2),
        "retried after {:?}",
        second.duration_since(first)
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.ids().len(), 6);
    assert!(queued(&dir).is_empty());
    assert_eq!(server.ids()[3..], ids[..]);
}

#[test]
fn retry_after_http_date_is_honoured() {
    let (_t, dir) = temp();
    fill(&dir, 2);
    let server = TestServer::start(|i, _| {
        if i == 0 {
            let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
            Reply::with_header(503, "Retry-After", &at)
        } else {
            Reply::status(200)
        }
    });
    flush(&dir, &server.url).ok();
    let not_before = status(&dir)["not_before"].as_str().unwrap().to_string();
    let until = humantime::parse_rfc3339(&not_before).unwrap();
    let wait = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    // An HTTP date has one-second resolution.
    assert!(
        wait > Duration::from_millis(1500) && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
    flush(&dir, &server.url).ok();
    assert_eq!(server.requests().len(), 1, "nothing sent before the date");
}

#[test]
fn garbage_and_huge_retry_after_values_are_handled() {
    // Garbage: falls back to the exponential backoff (first backoff 1s, jitter in [1/2, 1]).
    let (_t, dir) = temp();
    fill(&dir, 1);
    let server = TestServer::start(|_, _| Reply::with_header(429, "Retry-After", "soon, maybe"));
    let t0 = std::time::SystemTime::now();
    flush(&dir, &server.url).env("SPOOL_BACKOFF", "1s").ok();
    let until = humantime::parse_rfc3339(status(&dir)["not_before"].as_str().unwrap()).unwrap();
    let d = until.duration_since(t0).unwrap();
    // The upper bound allows for the flusher's start (slow under wine).
    assert!(
        d >= Duration::from_millis(490) && d <= Duration::from_millis(3000),
        "{d:?}"
    );

    // Huge: capped at 24 hours.
    let (_t2, dir2) = temp();
    fill(&dir2, 1);
    let server2 = TestServer::start(|_, _| {
        Reply::with_header(429, "Retry-After", "999999999999999999999999")
    });
    flush(&dir2, &server2.url).ok();
    let until = humantime::parse_rfc3339(status(&dir2)["not_before"].as_str().unwrap()).unwrap();
    let d = until.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        d > Duration::from_secs(23 * 3600) && d <= Duration::from_secs(24 * 3600),
        "{d:?}"
    );
    assert_eq!(queued(&dir2).len(), 1);
}

#[test]
fn client_errors_drop_the_batch() {
    let (_t, dir) = temp();
    fill(&dir, 150);
    let server = TestServer::answering(400);
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("dropped 150 (150 rejected)"), "{out}");
    assert!(queued(&dir).is_empty());
    assert_eq!(status(&dir)["dropped"]["rejected"], 150);
}

#[test]
fn payload_too_large_splits_until_delivered_and_drops_a_lone_event() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 100);
    // Accept at most 10 events a request.
    let server = TestServer::start(|_, r| {
        if r.events().len() > 10 {
            Reply::status(413)
        } else {
            Reply::status(200)
        }
    });
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("sent 100"), "{out}");
    let accepted: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.events().len() <= 10)
        .collect();
    let got: Vec<String> = accepted
        .iter()
        .flat_map(|r| r.events())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids, "every event once, in order");

    let (_t2, dir2) = temp();
    fill(&dir2, 1);
    let server2 = TestServer::answering(413);
    let out = flush(&dir2, &server2.url).ok();
    assert!(out.contains("1 too_large"), "{out}");
    assert!(queued(&dir2).is_empty());
}

#[test]
fn a_hanging_endpoint_is_bounded_by_the_request_timeout() {
    let (_t, dir) = temp();
    fill(&dir, 5);
    let server = TestServer::start(|_, _| Reply::Hang);
    let t = Instant::now();
    let out = flush(&dir, &server.url).env("SPOOL_TIMEOUT", "1s").ok();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(out.contains("backing off"), "{out}");
    assert_eq!(queued(&dir).len(), 5);
    assert!(queued(&dir).iter().all(|r| r["attempts"] == 1));
}

#[test]
fn the_overall_deadline_bounds_a_flush() {
    let (_t, dir) = temp();
    fill(&dir, 5);
    let server = TestServer::start(|_, _| Reply::Hang);
    let t = Instant::now();
    spool(&dir)
        .args(["flush", "--endpoint", &server.url, "--timeout", "500ms"])
        .ok();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(queued(&dir).len(), 5);
}

#[test]
fn reset_and_refused_connections_keep_events_and_return_quickly() {
    let server = TestServer::start(|_, _| Reply::Reset);
    for url in [server.url.clone(), refused_url()] {
        let (_t, dir) = temp();
        fill(&dir, 7);
        let t = Instant::now();
        let out = flush(&dir, &url).ok();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{url}: took {:?}",
            t.elapsed()
        );
        assert!(
            out.contains("remaining 7") && out.contains("backing off"),
            "{url}: {out}"
        );
        assert!(queued(&dir).iter().all(|r| r["attempts"] == 1));
    }
    assert!(server.connections() >= 1);
}

#[test]
fn a_huge_response_body_is_not_read_past_the_cap() {
    let (_t, dir) = temp();
    fill(&dir, 3);
    let server = TestServer::start(|_, _| Reply::Huge(20 * 1024 * 1024));
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("sent 3"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let written = server
        .huge_bytes_written
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        written < 20 * 1024 * 1024,
        "the client read the whole 20 MB"
    );
}

#[test]
fn expiry_by_age_drops_silently_without_a_connection() {
    let (_t, dir) = temp();
    fill(&dir, 4);
    std::thread::sleep(Duration::from_millis(1100));
    let server = TestServer::answering(200);
    let out = flush(&dir, &server.url).env("SPOOL_MAX_AGE", "1s").ok();
    assert!(out.contains("4 age"), "{out}");
    assert_eq!(server.connections(), 0);
    assert_eq!(status(&dir)["dropped"]["age"], 4);
}

#[test]
fn expiry_by_attempts_drops_after_the_last_failure() {
    let (_t, dir) = temp();
    fill(&dir, 2);
    let server = TestServer::answering(500);
    for _ in 0..2 {
        flush(&dir, &server.url)
            .env("SPOOL_BACKOFF", "1ms")
            .env("SPOOL_MAX_ATTEMPTS", "2")
            .ok();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.requests().len(), 2);
    // The second failure was the last allowed attempt: dropped at once, counted.
    assert!(queued(&dir).is_empty());
    assert_eq!(status(&dir)["dropped"]["attempts"], 2);
    flush(&dir, &server.url).env("SPOOL_MAX_ATTEMPTS", "2").ok();
    assert_eq!(server.requests().len(), 2, "no third attempt");

    // A limit lowered after the failures: the spent events are dropped unsent.
    let (_t2, dir2) = temp();
    fill(&dir2, 3);
    flush(&dir2, &server.url).env("SPOOL_BACKOFF", "1ms").ok();
    std::thread::sleep(Duration::from_millis(20));
    let out = flush(&dir2, &server.url)
        .env("SPOOL_MAX_ATTEMPTS", "1")
        .ok();
    assert!(out.contains("3 attempts"), "{out}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn opt_out_at_flush_time_makes_no_connection() {
    let server = TestServer::answering(200);
    for (var, value) in [
        ("SPOOL_TELEMETRY_DISABLED", "1"),
        ("SPOOL_TELEMETRY", "false"),
        ("DO_NOT_TRACK", "1"),
    ] {
        let (_t, dir) = temp();
        fill(&dir, 3);
        let out = flush(&dir, &server.url).env(var, value).ok();
        assert!(
            out.contains("Telemetry is disabled") && out.contains(var),
            "{out}"
        );
        assert_eq!(queued(&dir).len(), 3, "queue untouched");
    }
    // The persisted choice: events recorded by a host before the user ran `disable`
    // in another terminal.
    let (_t, dir) = temp();
    fill(&dir, 3);
    // As a user would, by editing config.json (a host cannot write the choice).
    let path = dir.join("config.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    settings["telemetry"] = false.into();
    std::fs::write(&path, settings.to_string()).unwrap();
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("Telemetry is disabled"), "{out}");
    assert_eq!(queued(&dir).len(), 3);
    assert_eq!(server.connections(), 0);
}

#[test]
fn refused_endpoints_are_clear_errors_before_any_connection() {
    let (_t, dir) = temp();
    fill(&dir, 2);
    let before = queued(&dir);
    for (url, want) in [
        ("http://example.com/collect", "only allowed to loopback"),
        ("http://10.1.2.3:8080/e", "only allowed to loopback"),
        ("not a url", "invalid endpoint"),
        ("ftp://127.0.0.1/e", "unsupported scheme"),
        ("https://", "invalid endpoint"),
    ] {
        let line = flush(&dir, url).fails();
        assert!(line.contains(want), "{url}: {line}");
        assert_eq!(queued(&dir), before);
    }
    let line = spool(&dir).args(["flush"]).fails();
    assert!(line.contains("no endpoint configured"), "{line}");
    let line = spool(&dir)
        .args(["flush"])
        .env("SPOOL_ENDPOINT", "http://example.com/")
        .fails();
    assert!(line.contains("only allowed to loopback"), "{line}");
}

#[test]
fn endpoint_comes_from_flag_then_env_then_persisted_setting() {
    let (_t, dir) = temp();
    let persisted = TestServer::answering(200);
    let env = TestServer::answering(200);
    let flag = TestServer::answering(200);
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .endpoint(&persisted.url)
        .build();
    host.track(eventspool::Event::new("a"));
    spool(&dir).args(["flush"]).ok();
    assert_eq!(persisted.ids().len(), 1);
    fill(&dir, 1);
    spool(&dir)
        .args(["flush"])
        .env("SPOOL_ENDPOINT", &env.url)
        .ok();
    assert_eq!(env.ids().len(), 1);
    fill(&dir, 1);
    spool(&dir)
        .args(["flush", "--endpoint", &flag.url])
        .env("SPOOL_ENDPOINT", &env.url)
        .ok();
    assert_eq!(
        (flag.ids().len(), env.ids().len(), persisted.ids().len()),
        (1, 1, 1)
    );
}

#[test]
fn a_redirect_to_another_scheme_is_not_followed() {
    let (_t, dir) = temp();
    fill(&dir, 1);
    let server = TestServer::start(|_, _| {
        Reply::with_header(307, "Location", "https://127.0.0.1:1/elsewhere")
    });
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("remaining 1"), "{out}");
    assert_eq!(server.requests().len(), 1);
}

/// Posts `body` to `addr` with a raw HTTP/1.1 request; returns the response text.
fn post(addr: &str, body: &[u8], gzip: bool) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let enc = if gzip {
        "content-encoding: gzip\r\n"
    } else {
        ""
    };
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{enc}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn spool_serve_saves_each_event_once_and_accepts_both_shapes_and_gzip() {
    use std::io::BufRead;
    let (t, dir) = temp();
    let out_file = t.path().join("received.jsonl");
    let mut server = std::process::Command::new(crate::util::spool_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--out"])
        .arg(&out_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect(&first)
        .to_string();

    let ids = fill(&dir, 120);
    let out = flush(&dir, &format!("http://{addr}/v1/events")).ok();
    assert!(out.contains("sent 120"), "{out}");
    let saved = std::fs::read_to_string(&out_file).unwrap();
    let saved_ids: Vec<String> = saved
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(saved_ids, ids);

    // A resent event is acknowledged but not saved twice; a gzipped batch works.
    let again = format!(r#"{{"id":"{}","event":"filled"}}"#, ids[0]);
    assert!(post(&addr, again.as_bytes(), false).contains(r#""duplicates":1"#));
    let batch =
        br#"{"batch":[{"id":"new-1","event":"x"},{"id":"new-2","event":"y"}],"sent_at":"t"}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, batch).unwrap();
    let resp = post(&addr, &gz.finish().unwrap(), true);
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains(r#""accepted":2"#),
        "{resp}"
    );
    assert!(post(&addr, b"not json", false).starts_with("HTTP/1.1 400"));
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap().lines().count(),
        122
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

// Issue 9, items 4-9: redirects, deadlines under a silent resolver, deadline cuts,
// clamped times, reasons, --force, consent before every request.

/// Runs SQL on the queue file directly, as a queue written under another clock would be.
fn sql(dir: &std::path::Path, statements: &str) {
    let conn = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
    conn.execute_batch(statements).unwrap();
}

fn set_state(key: &str, value: i64) -> String {
    format!(
        "INSERT INTO state (key, value) VALUES ('{key}', '{value}')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value;"
    )
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Regression: a 301/302/303 was followed as a GET without the body, and that GET's
/// 200 counted as delivered: the batch was deleted unsent.
#[test]
fn see_other_redirect_is_retryable_not_delivered() {
    for code in [301, 302, 303] {
        let (_t, dir) = temp();
        fill(&dir, 3);
        let server = TestServer::start(move |_, r| {
            if r.method == "POST" {
                Reply::with_header(code, "Location", "/moved")
            } else {
                Reply::status(200)
            }
        });
        let out = flush(&dir, &server.url).ok();
        let seen: Vec<(String, String)> = server
            .requests()
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect();
        assert_eq!(
            seen,
            [("POST".to_string(), "/v1/events".to_string())],
            "{code}: not followed"
        );
        assert!(out.contains(&format!("HTTP {code}")), "{code}: {out}");
        let rows = queued(&dir);
        assert_eq!(rows.len(), 3, "{code}: nothing counts as delivered");
        assert!(
            rows.iter().all(|r| r["attempts"] == 1),
            "{code}: a retryable failure"
        );
    }
}

/// Regression: a 307 to plain `http://` on a host that is not loopback was followed,
/// bypassing the https-only rule. 0.0.0.0 reaches this machine but is not a loopback
/// host, so the endpoint rule refuses it.
#[test]
fn redirect_to_plain_http_is_not_followed() {
    let (_t, dir) = temp();
    fill(&dir, 2);
    let server = TestServer::answering(200);
    let port = server
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let target = format!("http://0.0.0.0:{port}/v1/elsewhere");
    assert!(eventspool::fuzzing::check_endpoint(&target).is_err());
    server.set_handler(move |_, r| {
        if r.path == "/v1/events" {
            Reply::with_header(307, "Location", &target)
        } else {
            Reply::status(200)
        }
    });
    let out = flush(&dir, &server.url).ok();
    assert_eq!(server.requests().len(), 1, "the redirect was followed");
    assert!(out.contains("redirect not followed"), "{out}");
    assert!(out.contains("only allowed to loopback"), "{out}");
    assert_eq!(queued(&dir).len(), 2);
}

/// 307/308 keep the POST and its body; a fourth hop is not followed (it used to be,
/// up to five).
#[test]
fn temporary_redirects_keep_the_post_and_stop_after_three_hops() {
    for (hops, delivered) in [(3, true), (4, false)] {
        let (_t, dir) = temp();
        let ids = fill(&dir, 2);
        let server = TestServer::start(move |_, r| {
            let n: usize = r
                .path
                .strip_prefix("/hop")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if n < hops {
                let code = if n % 2 == 0 { 307 } else { 308 };
                Reply::with_header(code, "Location", &format!("/hop{}", n + 1))
            } else {
                Reply::status(200)
            }
        });
        let out = flush(&dir, &server.url).ok();
        let reqs = server.requests();
        assert_eq!(reqs.len(), 4, "{hops} hops: {out}");
        assert!(
            reqs.iter()
                .all(|r| r.method == "POST" && r.events().len() == 2),
            "every hop re-sends the POST with its body"
        );
        if delivered {
            assert!(out.contains("sent 2"), "{out}");
            assert!(queued(&dir).is_empty());
            assert_eq!(reqs[3].path, "/hop3");
            let got: Vec<String> = reqs[3]
                .events()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, ids);
        } else {
            assert!(out.contains("more than 3 redirects"), "{out}");
            assert_eq!(queued(&dir).len(), 2);
        }
    }
}

/// Regression: with a resolver that never answers, `spool flush --timeout 1s` took
/// 10 s: the lookup ran on the runtime's blocking pool, and dropping the runtime
/// waited for it. The request cut by the deadline is not counted as a failure.
#[cfg(target_os = "linux")] // network and mount namespaces (unshare): a resolver that never answers
#[test]
fn flush_deadline_holds_while_dns_hangs() {
    let (_t, dir) = temp();
    fill(&dir, 2);
    let d = dir.to_str().unwrap();
    let (out, took) = crate::util::with_silent_dns(
        std::path::Path::new(crate::util::spool_bin()),
        &[
            "--dir",
            d,
            "flush",
            "--timeout",
            "1s",
            "--endpoint",
            "https://telemetry.invalid.example/",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(4), "took {took:?}: {stdout}");
    assert!(stdout.contains("deadline"), "{stdout}");
    let rows = queued(&dir);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["attempts"] == 0), "{rows:?}");
}

/// Regression: a host awaiting `flush()` in its own runtime was held at exit (the
/// runtime's drop) for the resolver's whole timeout, and a background flusher's
/// `close` reported that it had not finished in time.
#[cfg(target_os = "linux")] // network and mount namespaces (unshare): a resolver that never answers
#[test]
fn host_runtime_and_close_hold_while_dns_hangs() {
    let (_t, dir) = temp();
    let exe = std::env::current_exe().unwrap();
    for entry in ["host_runtime", "close"] {
        let (out, took) = crate::util::with_silent_dns(
            &exe,
            &[
                "--exact",
                "delivery::silent_dns_host_entry",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ],
            &[
                ("EVENTSPOOL_TEST_HOST_DIR", dir.to_str().unwrap()),
                ("EVENTSPOOL_TEST_HOST_DO", entry),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("DONE"), "{entry}: {stdout}");
        assert!(took < Duration::from_secs(6), "{entry}: took {took:?}");
        if entry == "close" {
            assert!(stdout.contains("CLOSED true"), "{stdout}");
        }
    }
}

/// Not a test: a host run inside [`crate::util::with_silent_dns`] by
/// `host_runtime_and_close_hold_while_dns_hangs`.
#[cfg(target_os = "linux")] // network and mount namespaces (unshare): a resolver that never answers
#[test]
#[ignore = "entry point run inside with_silent_dns"]
fn silent_dns_host_entry() {
    let (Some(dir), Ok(what)) = (
        std::env::var_os("EVENTSPOOL_TEST_HOST_DIR"),
        std::env::var("EVENTSPOOL_TEST_HOST_DO"),
    ) else {
        return;
    };
    let spool = eventspool::Spool::builder("spool")
        .dir(std::path::PathBuf::from(dir))
        .endpoint("https://telemetry.invalid.example/")
        .build();
    spool.track(eventspool::Event::new("hosted"));
    if what == "close" {
        let flusher = spool.start_background_flusher(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        let closed = flusher.close(Duration::from_secs(2));
        println!("CLOSED {closed}");
    } else {
        // As a `#[tokio::main]` host would: its runtime ends when main does.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(spool.flush(eventspool::FlushOptions::with_deadline(
            Duration::from_secs(1),
        )));
        drop(rt);
        println!("FLUSHED {:?}", r.map(|r| r.end));
    }
    println!("DONE");
}

/// Regression: a batch cut off by the flush's own `--timeout` was counted as a failed
/// attempt and backed off, so the next flush sent nothing for ~10 s.
#[test]
fn deadline_cut_batch_is_not_backed_off() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 3);
    let server = TestServer::start(|_, _| Reply::Hang);
    let out = spool(&dir)
        .args(["flush", "--endpoint", &server.url, "--timeout", "1s"])
        .ok();
    assert!(out.contains("deadline"), "{out}");
    assert!(!out.contains("backing off"), "{out}");
    let rows = queued(&dir);
    assert!(
        rows.iter()
            .all(|r| r["attempts"] == 0
                && (r["next_attempt_at"].is_null() || r["next_attempt_at"] == 0)),
        "{rows:?}"
    );
    assert!(status(&dir)["not_before"].is_null());
    server.set_handler(|_, _| Reply::status(200));
    let out = flush(&dir, &server.url).ok();
    assert!(
        out.contains("sent 3"),
        "the next flush sends at once: {out}"
    );
    let last = server.requests().last().unwrap().clone();
    let got: Vec<String> = last
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);
}

/// Regression: a backoff stored while the clock was 20 days fast blocked delivery
/// for 20 days after the clock was fixed. It is pulled back to the cap (here 1 s).
#[test]
fn backoff_from_fast_clock_is_clamped() {
    let (_t, dir) = temp();
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .limits(eventspool::Limits {
            max_backoff: Duration::from_secs(1),
            retry_after_cap: Duration::from_secs(1),
            ..Default::default()
        })
        .build();
    for _ in 0..3 {
        host.try_track(eventspool::Event::new("fast")).unwrap();
    }
    let later = eventspool::fuzzing::now_ms() + 20 * DAY_MS;
    sql(
        &dir,
        &format!(
            "UPDATE events SET attempts = 1, next_attempt_at = {later}; {}",
            set_state("not_before", later)
        ),
    );
    let server = TestServer::answering(200);
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("backing off"), "{out}");
    let until = humantime::parse_rfc3339(status(&dir)["not_before"].as_str().unwrap()).unwrap();
    let ahead = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(ahead <= Duration::from_secs(2), "still {ahead:?} ahead");
    std::thread::sleep(ahead + Duration::from_millis(200));
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("sent 3, dropped 0, remaining 0"), "{out}");
}

/// Regression: events stamped in the future (recorded under a fast clock) never
/// expired. They age from the moment a flush first sees them.
#[test]
fn future_stamped_events_still_expire() {
    let (_t, dir) = temp();
    fill(&dir, 2);
    let future = eventspool::fuzzing::now_ms() + 365 * DAY_MS;
    sql(&dir, &format!("UPDATE events SET created_at = {future}"));
    let server = TestServer::answering(503);
    let first = flush(&dir, &server.url)
        .env("SPOOL_MAX_AGE", "1s")
        .env("SPOOL_BACKOFF", "1ms")
        .ok();
    assert!(first.contains("remaining 2"), "{first}");
    assert_eq!(server.requests().len(), 1);
    std::thread::sleep(Duration::from_millis(1300));
    let out = flush(&dir, &server.url)
        .env("SPOOL_MAX_AGE", "1s")
        .env("SPOOL_BACKOFF", "1ms")
        .ok();
    assert!(
        out.contains("2 age") && out.contains("remaining 0"),
        "{out}"
    );
    assert_eq!(server.requests().len(), 1, "expired, not sent again");
}

/// Regression: a clock a year fast wiped the queue as too old. A jump past the max
/// age since the queue's last flush does not count as the events' age.
#[test]
fn a_clock_jump_past_max_age_does_not_wipe_the_queue() {
    let (_t, dir) = temp();
    let ids = fill(&dir, 3);
    // As if this queue was last flushed a year ago by its clock, and the clock is now
    // a year fast.
    let year_ago = eventspool::fuzzing::now_ms() - 365 * DAY_MS;
    sql(
        &dir,
        &format!(
            "UPDATE events SET created_at = {year_ago}; {}",
            set_state("clock_seen", year_ago)
        ),
    );
    let server = TestServer::answering(200);
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("sent 3, dropped 0"), "{out}");
    assert_delivered_once(&server, &ids);
}

/// Regression: `spool flush` printed the same "backing off" line for connection
/// refused, 503 and timeouts, and a 400 said "3 rejected" with no status.
#[test]
fn flush_says_why_it_stopped() {
    let hang = TestServer::start(|_, _| Reply::Hang);
    let s503 = TestServer::answering(503);
    let s429 = TestServer::start(|_, _| Reply::with_header(429, "Retry-After", "30"));
    let s400 = TestServer::answering(400);
    let cases = [
        (refused_url(), "connection refused"),
        (s503.url.clone(), "HTTP 503"),
        (s429.url.clone(), "HTTP 429 (Retry-After 30s)"),
        (hang.url.clone(), "timed out after 1s"),
        (s400.url.clone(), "HTTP 400: 3 events rejected"),
    ];
    for (url, why) in cases {
        let (_t, dir) = temp();
        fill(&dir, 3);
        let out = flush(&dir, &url).env("SPOOL_TIMEOUT", "1s").ok();
        assert!(out.contains(why), "{why}: {out}");
        let last = &status(&dir)["last_flush"];
        assert_eq!(last["reason"], why, "{last}");
        let text = spool(&dir).args(["status"]).ok();
        assert!(text.contains(why), "{text}");
        if why != "HTTP 400: 3 events rejected" {
            // The next flush, held back by the backoff, still says what it was.
            let again = flush(&dir, &url).ok();
            assert!(
                again.contains(&format!("backing off after {why}")),
                "{again}"
            );
        }
    }
}

/// `spool flush --force` sends despite a stored backoff, but never beside another
/// flusher that holds the lease.
#[test]
fn force_ignores_backoff_not_lease() {
    use std::io::BufRead;
    let (_t, dir) = temp();
    let ids = fill(&dir, 2);
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::with_header(503, "Retry-After", "3600")
        } else {
            Reply::status(200)
        }
    });
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("backing off"), "{out}");
    let out = flush(&dir, &server.url).ok();
    assert!(out.contains("--force"), "{out}");
    assert_eq!(server.requests().len(), 1);

    // A flusher holding the lease (stopped before its request) wins over --force.
    let mut holder = spool(&dir)
        .args(["flush", "--force", "--endpoint", &server.url])
        .env("EVENTSPOOL_TEST_PAUSE", "before_request")
        .spawn();
    let mut line = String::new();
    std::io::BufReader::new(holder.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("paused at before_request"), "{line}");
    let out = flush(&dir, &server.url).args(["--force"]).ok();
    assert!(out.contains("holds the queue"), "{out}");
    assert_eq!(server.requests().len(), 1);
    holder.kill().unwrap();
    holder.wait().unwrap();

    let out = flush(&dir, &server.url).args(["--force"]).ok();
    assert!(out.contains("sent 2, dropped 0, remaining 0"), "{out}");
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.ids()[2..], ids[..]);
}

/// Regression: flushers kept sending for seconds after `spool disable` returned:
/// consent was decided once per flush (from settings cached for up to 250 ms), and a
/// batch already in memory went on being split and sent after the purge.
#[test]
fn no_request_starts_after_disable_returns() {
    let (_t, dir) = temp();
    fill(&dir, 100);
    // Slow, and too large for anything but one event: the flusher keeps halving the
    // batch it holds in memory, one slow request after another.
    let server = TestServer::start(|_, r| {
        let code = if r.events().len() > 1 { 413 } else { 200 };
        Reply::Delay(Duration::from_millis(300), code)
    });
    let mut flusher = flush(&dir, &server.url).spawn();
    server.wait_for_requests(2, Duration::from_secs(20));
    spool(&dir).args(["disable"]).ok();
    let returned = Instant::now();
    let status = flusher.wait().unwrap();
    assert!(status.success());
    let late: Vec<Duration> = server
        .requests()
        .iter()
        .filter(|r| r.started > returned)
        .map(|r| r.started.duration_since(returned))
        .collect();
    assert!(
        late.is_empty(),
        "requests started after disable returned: {late:?}"
    );
    assert!(queued(&dir).is_empty(), "nothing stays queued");
}

/// Regression: a host that only uses "flush if due" (`--detach`) never started a
/// flush again after a backoff stored under a clock 20 days fast, so nothing pulled
/// it back. A backoff further ahead than its cap is not in force.
#[test]
fn detached_flush_is_not_stalled_by_a_backoff_from_a_fast_clock() {
    let (_t, dir) = temp();
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .limits(eventspool::Limits {
            max_backoff: Duration::from_secs(1),
            retry_after_cap: Duration::from_secs(1),
            ..Default::default()
        })
        .build();
    let ids: Vec<String> = (0..3)
        .map(
            |_| match host.try_track(eventspool::Event::new("fast")).unwrap() {
                eventspool::Recorded::Queued(id) => id,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    let later = eventspool::fuzzing::now_ms() + 20 * DAY_MS;
    sql(
        &dir,
        &format!(
            "UPDATE events SET attempts = 1, next_attempt_at = {later}; {}",
            set_state("not_before", later)
        ),
    );
    let server = TestServer::answering(200);
    let detach = || {
        spool(&dir)
            .args(["flush", "--detach", "--endpoint", &server.url])
            .ok()
    };
    let out = detach();
    assert!(out.contains("pid"), "no detached flush was started: {out}");
    let t = Instant::now();
    while !queued(&dir).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "detached flushes never delivered"
        );
        std::thread::sleep(Duration::from_millis(300));
        detach();
    }
    assert_delivered_once(&server, &ids);
}

/// A resolver that never answers is named as the reason, not as a bare timeout.
#[cfg(target_os = "linux")] // network and mount namespaces (unshare): a resolver that never answers
#[test]
fn a_silent_resolver_is_reported_as_dns() {
    let (_t, dir) = temp();
    fill(&dir, 1);
    let (out, took) = crate::util::with_silent_dns(
        std::path::Path::new(crate::util::spool_bin()),
        &[
            "--dir",
            dir.to_str().unwrap(),
            "flush",
            "--timeout",
            "30s",
            "--endpoint",
            "https://telemetry.invalid.example/",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DNS: no answer within 5s"), "{stdout}");
    assert!(took < Duration::from_secs(9), "took {took:?}");
    assert_eq!(
        status(&dir)["last_flush"]["reason"],
        "DNS: no answer within 5s"
    );
    assert!(queued(&dir).iter().all(|r| r["attempts"] == 1));
}
