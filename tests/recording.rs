//! Recording and inspecting through the `spool` binary.

use serde_json::Value;

use crate::util::{queued, spool, temp};

#[test]
fn track_list_show_clear_round_trip() {
    let (_t, dir) = temp();
    let id = spool(&dir)
        .args([
            "track",
            "cli_invoked",
            "-p",
            "command=build",
            "-p",
            "count:=3",
        ])
        .ok();
    let id = id.trim().to_string();
    spool(&dir)
        .args([
            "track",
            "job.finished",
            "--props",
            r#"{"success": true, "error.message": "x"}"#,
        ])
        .ok();

    let table = spool(&dir).args(["list"]).ok();
    assert!(
        table.contains("cli_invoked") && table.contains("job.finished") && table.contains(&id),
        "{table}"
    );

    let rows = queued(&dir);
    assert_eq!(rows.len(), 2);
    for field in ["id", "event", "created_at", "attempts", "payload"] {
        assert!(
            rows[0].get(field).is_some(),
            "missing {field} in {}",
            rows[0]
        );
    }
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["event"], "cli_invoked");
    assert_eq!(rows[0]["attempts"], 0);
    let payload = &rows[0]["payload"];
    assert_eq!(payload["id"], id.as_str());
    assert_eq!(payload["properties"]["command"], "build");
    assert_eq!(payload["properties"]["count"], 3);
    assert_eq!(rows[1]["payload"]["properties"]["error.message"], "x");
    for key in ["timestamp", "anonymous_id", "session_id", "context"] {
        assert!(payload.get(key).is_some(), "payload lacks {key}");
    }
    assert_eq!(
        rows[0]["payload"]["anonymous_id"],
        rows[1]["payload"]["anonymous_id"]
    );
    // The documented `Payload` type reads every stored payload and writes it back
    // byte for byte: the struct that serializes events cannot drift from it.
    let conn = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
    let mut st = conn.prepare("SELECT payload FROM events").unwrap();
    for stored in st.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let stored = stored.unwrap();
        let parsed: eventspool::Payload = serde_json::from_str(&stored).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), stored);
    }
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    // `show` prints the payload pretty, identical in content; a unique prefix works.
    let shown: Value = serde_json::from_str(&spool(&dir).args(["show", &id]).ok()).unwrap();
    assert_eq!(&shown, payload);
    let by_prefix: Value =
        serde_json::from_str(&spool(&dir).args(["show", &id[..20]]).ok()).unwrap();
    assert_eq!(&by_prefix, payload);

    assert_eq!(
        spool(&dir).args(["clear"]).ok().trim(),
        "Removed 2 queued events."
    );
    assert!(queued(&dir).is_empty());
    assert_eq!(
        spool(&dir).args(["list"]).ok().trim(),
        "The queue is empty."
    );
}

#[test]
fn list_limit_shows_the_oldest_first() {
    let (_t, dir) = temp();
    crate::util::fill(&dir, 10);
    let rows: Vec<Value> = spool(&dir)
        .args(["list", "--json", "--limit", "3"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let is: Vec<u64> = rows
        .iter()
        .map(|r| r["payload"]["properties"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, [0, 1, 2]);
}

#[test]
fn stored_payload_is_byte_for_byte_what_list_json_shows() {
    let (_t, dir) = temp();
    let id = spool(&dir).args(["track", "e", "-p", "k=v"]).ok();
    let line = spool(&dir).args(["list", "--json"]).ok();
    let conn = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
    let stored: String = conn
        .query_row("SELECT payload FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(
        line.contains(&format!("\"payload\":{stored}")),
        "{line}\n{stored}"
    );
    assert!(stored.contains(id.trim()));
}

/// Each bad input: a non-zero exit, one line naming the problem, the queue unchanged.
#[test]
fn bad_input_is_one_line_error_and_loses_nothing() {
    let bad_name = crate::util::not_unicode("bad", "name");
    let (_t, dir) = temp();
    crate::util::fill(&dir, 3);
    let before = queued(&dir);
    let big = format!("big={}", "y".repeat(40 * 1024));
    // (arguments, environment, what the error line must say)
    type Case<'a> = (Vec<&'a std::ffi::OsStr>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["track".as_ref(), "bad name".as_ref()],
            vec![],
            "invalid event name",
        ),
        (
            vec!["track".as_ref(), "".as_ref()],
            vec![],
            "invalid event name",
        ),
        (
            vec![
                "track".as_ref(),
                "e".as_ref(),
                "--props".as_ref(),
                "{nope".as_ref(),
            ],
            vec![],
            "--props is not valid JSON",
        ),
        (
            vec![
                "track".as_ref(),
                "e".as_ref(),
                "--props".as_ref(),
                "[1,2]".as_ref(),
            ],
            vec![],
            "expected a JSON object",
        ),
        (
            vec![
                "track".as_ref(),
                "e".as_ref(),
                "-p".as_ref(),
                "novalue".as_ref(),
            ],
            vec![],
            "-p expects key=value",
        ),
        (
            vec!["track".as_ref(), "e".as_ref(), "-p".as_ref(), big.as_ref()],
            vec![],
            "over the 32768-byte limit",
        ),
        (
            vec!["track".as_ref(), "e".as_ref(), "--frobnicate".as_ref()],
            vec![],
            "unexpected argument '--frobnicate'",
        ),
        (
            vec!["show".as_ref(), "0000-no-such-id".as_ref()],
            vec![],
            "no queued event with id",
        ),
        (
            vec!["track".as_ref(), "e".as_ref()],
            vec![("SPOOL_MAX_EVENTS", "lots")],
            "SPOOL_MAX_EVENTS",
        ),
        (
            vec!["track".as_ref(), "e".as_ref()],
            vec![("SPOOL_MAX_AGE", "forever")],
            "SPOOL_MAX_AGE",
        ),
        (
            vec!["track".as_ref(), bad_name.as_os_str()],
            vec![],
            "invalid UTF-8",
        ),
        (
            vec!["frobnicate".as_ref()],
            vec![],
            "unrecognized subcommand",
        ),
    ];
    for (args, env, want) in cases {
        let mut cmd = spool(&dir).args(&args);
        for (k, v) in &env {
            cmd = cmd.env(k, v);
        }
        let line = cmd.fails();
        assert!(line.contains(want), "{args:?}: {line}");
        assert_eq!(queued(&dir), before, "{args:?} changed the queue");
    }
}

/// An end-to-end canary: personal data in properties never reaches the queue file.
#[test]
fn personal_data_never_reaches_the_stored_payload() {
    let (_t, dir) = temp();
    let home = crate::util::real_home();
    // On Windows the home also in another case and with `/` (Windows opens both);
    // elsewhere that would be another directory, so the same spelling.
    let other_spelling = if cfg!(windows) {
        home.to_uppercase().replace('\\', "/")
    } else {
        home.clone()
    };
    let canaries = [
        format!("alt=open {other_spelling}/projects/x failed"),
        format!("path={home}/projects/secret-plan/main.rs"),
        "email=failed for jane.doe@example.org".to_string(),
        "token=auth with ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789".to_string(),
        "ip=connect 203.0.113.77:443 refused".to_string(),
        "url=GET https://api.example.com/v1?api_key=hunter2hunter2 failed".to_string(),
        "auth=Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"
            .to_string(),
    ];
    let mut args = vec!["track".to_string(), "canary".to_string()];
    for c in &canaries {
        args.push("-p".into());
        args.push(c.clone());
    }
    spool(&dir).args(&args).ok();
    let payload = queued(&dir)[0]["payload"].to_string();
    let mut raw = std::fs::read(dir.join("queue.db")).unwrap();
    raw.extend(std::fs::read(dir.join("queue.db-wal")).unwrap_or_default());
    let raw = String::from_utf8_lossy(&raw);
    // Stored as JSON: a `\` of a Windows path is `\\` there.
    let escaped = |s: String| {
        serde_json::to_string(&s)
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    for secret in [
        escaped(format!("{home}/projects")),
        format!("{other_spelling}/projects"),
        "jane.doe@example.org".into(),
        "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789".into(),
        "203.0.113.77".into(),
        "hunter2hunter2".into(),
        "eyJhbGciOiJIUzI1NiJ9".into(),
    ] {
        assert!(!payload.contains(&secret), "{secret} leaked into {payload}");
        assert!(
            !raw.contains(&secret),
            "{secret} leaked into the queue file"
        );
    }
    assert!(
        payload.contains("~/projects/secret-plan/main.rs"),
        "{payload}"
    );
    assert!(
        payload.contains("https://api.example.com/v1?<redacted>"),
        "{payload}"
    );
}

#[test]
fn unscrubbed_property_is_kept_only_when_the_host_says_so() {
    let (_t, dir) = temp();
    let spool_lib = eventspool::Spool::builder("spool").dir(&dir).build();
    spool_lib.track(
        eventspool::Event::new("e")
            .property("scrubbed", "mail me at a@example.com")
            .unscrubbed_property("raw", "support@example.com"),
    );
    let props = &queued(&dir)[0]["payload"]["properties"];
    assert_eq!(props["scrubbed"], "mail me at <email>");
    assert_eq!(props["raw"], "support@example.com");
}

/// Issue 9: keys were never scrubbed, so a path, an address or an e-mail used as a
/// property key (top-level or nested) reached the queue file verbatim.
#[cfg(unix)]
// fakes the home directory through HOME, which Windows does not read (its profile is a known folder)
#[test]
fn property_keys_and_nested_keys_are_scrubbed() {
    let (t, dir) = temp();
    let home = t.path().join("home").join("alice");
    std::fs::create_dir_all(&home).unwrap();
    let home_str = home.to_str().unwrap();
    let props = serde_json::json!({
        format!("{home_str}/secret/main.rs"): 1,
        "alice.smith@example.com": "x",
        "bob.jones@example.com": "y",
        "nested": {"10.1.2.3": {"carol.white@example.com": true}, "count": 2},
        "plain": "kept",
    });
    spool(&dir)
        .env("HOME", &home)
        .args(["track", "canary", "--props", &props.to_string()])
        .ok();
    let stored = &queued(&dir)[0]["payload"]["properties"];
    assert_eq!(stored["~/secret/main.rs"], 1, "{stored}");
    // Both e-mail keys become `<email>`: the second gets a suffix, neither is lost.
    assert_eq!(stored["<email>"], "x", "{stored}");
    assert_eq!(stored["<email>#2"], "y", "{stored}");
    assert_eq!(stored["nested"]["<ip>"]["<email>"], true, "{stored}");
    assert_eq!(stored["nested"]["count"], 2, "{stored}");
    assert_eq!(stored["plain"], "kept", "{stored}");
    let mut raw = std::fs::read(dir.join("queue.db")).unwrap();
    raw.extend(std::fs::read(dir.join("queue.db-wal")).unwrap_or_default());
    let raw = String::from_utf8_lossy(&raw);
    for secret in [
        home_str,
        "alice.smith@example.com",
        "bob.jones@example.com",
        "10.1.2.3",
        "carol.white@example.com",
    ] {
        assert!(!raw.contains(secret), "{secret} leaked into the queue file");
    }
}

/// Issue 9: event names are sent unscrubbed, and one holding a token, an address or
/// the user's name was stored and sent as it was. Now it is refused with one line that
/// does not repeat the secret, and nothing is queued.
#[cfg(unix)]
// fakes the home directory through HOME, which Windows does not read (its profile is a known folder)
#[test]
fn event_name_holding_a_secret_is_refused() {
    let (t, dir) = temp();
    let home = t.path().join("zoe-quill");
    std::fs::create_dir_all(&home).unwrap();
    for (name, secret) in [
        (
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "16C7e42F292c6912E7710c838347Ae178B4a",
        ),
        ("deploy_AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("connect.10.1.2.3", "10.1.2.3"),
        ("login:zoe-quill", "zoe-quill"),
    ] {
        let out = spool(&dir).env("HOME", &home).args(["track", name]).run();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let line = spool(&dir).env("HOME", &home).args(["track", name]).fails();
        assert!(line.contains("refused"), "{name}: {line}");
        assert!(
            !line.contains(secret),
            "{name}: the error repeats it: {line}"
        );
    }
    spool(&dir)
        .env("HOME", &home)
        .args(["track", "deploy_finished"])
        .ok();
    let events: Vec<Value> = queued(&dir)
        .iter()
        .map(|r| r["payload"]["event"].clone())
        .collect();
    assert_eq!(events, ["deploy_finished"], "a refused name was queued");
}

/// Issue 9: user names were scrubbed only when USER, LOGNAME or USERNAME was set, and
/// cron, systemd services and containers often set none. Now the home directory's
/// name and the account database's name count too.
#[cfg(unix)] // the account database (id, getpwuid) and HOME
#[test]
fn user_name_is_scrubbed_without_user_env() {
    let (t, dir) = temp();
    let home = t.path().join("zoe-quill");
    std::fs::create_dir_all(&home).unwrap();
    let account = crate::util::account_name();
    spool(&dir)
        .env_remove("USER")
        .env("HOME", &home)
        .args([
            "track",
            "e",
            "-p",
            "owner=job of zoe-quill failed",
            "-p",
            &format!("elsewhere=/Users/{account}/notes"),
        ])
        .ok();
    let props = &queued(&dir)[0]["payload"]["properties"];
    assert_eq!(props["owner"], "job of <user> failed", "{props}");
    assert_eq!(props["elsewhere"], "/Users/<user>/notes", "{props}");
}
