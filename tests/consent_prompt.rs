//! The consent policy and prompt: `opt_in` records nothing until yes; `spool consent
//! ask` on a real pseudo-terminal asks once, Enter grants, `n`, EOF and Ctrl-C deny;
//! no terminal or CI means no question and no wait; `opt_out` shows the notice once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Pty, TestServer, files_in, spool, status, temp};

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// `spool consent ask` under `opt_in` (set as a host in another language does), on a pty.
fn ask_on_pty(dir: &std::path::Path) -> Pty {
    Pty::spawn(spool(dir).args(["consent", "ask"]).into_command())
}

fn opt_in(dir: &std::path::Path) {
    spool(dir)
        .args(["config", "set", "consent_policy", "opt_in"])
        .ok();
}

#[test]
fn opt_in_asks_once_on_stderr_and_enter_grants() {
    let (_t, dir) = temp();
    opt_in(&dir);
    assert_eq!(spool(&dir).args(["consent", "status"]).ok(), "undecided\n");
    let mut pty = ask_on_pty(&dir);
    let asked = pty.expect("[Y/n]", WAIT);
    assert!(asked.contains("anonymous usage statistics"), "{asked}");
    assert!(
        asked.contains("SPOOL_TELEMETRY=0"),
        "how to opt out: {asked}"
    );
    pty.send(b"\r");
    let (code, out) = pty.wait(WAIT);
    assert!(code.success(), "{out}");
    assert!(out.trim_end().ends_with("granted"), "{out}");
    let c = config(&dir);
    assert_eq!(c["telemetry"], true, "{c}");
    assert!(
        c["telemetry_decided_at"].as_str().unwrap().ends_with('Z'),
        "{c}"
    );
    assert!(c["telemetry_fingerprint"].is_array(), "{c}");

    // Asked once: the next run answers at once, without a question.
    let mut again = ask_on_pty(&dir);
    let (code, out) = again.wait(WAIT);
    assert!(code.success());
    assert!(!out.contains("[Y/n]"), "asked twice: {out}");
    assert_eq!(out.trim(), "granted");
    spool(&dir).args(["track", "e"]).ok();
    assert_eq!(crate::util::queued(&dir).len(), 1);
}

#[test]
fn n_eof_and_anything_else_deny_and_are_remembered() {
    for (typed, why) in [
        (&b"n\r"[..], "n"),
        (b"\x04", "EOF (^D)"),
        (b"maybe\r", "anything else"),
    ] {
        let (_t, dir) = temp();
        opt_in(&dir);
        let mut pty = ask_on_pty(&dir);
        pty.expect("[Y/n]", WAIT);
        pty.send(typed);
        let (code, out) = pty.wait(WAIT);
        assert!(code.success(), "{why}: {out}");
        assert!(out.trim_end().ends_with("denied"), "{why}: {out}");
        assert_eq!(config(&dir)["telemetry"], false, "{why}");
        let (_, again) = ask_on_pty(&dir).wait(WAIT);
        assert_eq!(again.trim(), "denied", "{why}: asked again");
        spool(&dir).args(["track", "e"]).ok();
        assert!(!dir.join("queue.db").exists(), "{why}: recorded");
    }
}

/// Ctrl-C at the question is a real SIGINT from the terminal driver: it must deny
/// (not kill the command before the answer is saved) and leave the terminal as it was.
#[test]
fn ctrl_c_denies_and_leaves_the_terminal_sane() {
    let (_t, dir) = temp();
    opt_in(&dir);
    let mut pty = ask_on_pty(&dir);
    pty.expect("[Y/n]", WAIT);
    assert!(pty.is_sane());
    pty.send(b"\x03");
    let (code, out) = pty.wait(WAIT);
    assert_eq!(
        code.code(),
        Some(0),
        "killed by the SIGINT? {code:?}: {out}"
    );
    assert!(out.trim_end().ends_with("denied"), "{out}");
    assert!(pty.is_sane(), "terminal mode changed");
    assert_eq!(config(&dir)["telemetry"], false);
}

/// A host with its own SIGINT handler: the prompt takes Ctrl-C as "no" while it asks,
/// and the host's handler is back afterwards.
#[test]
fn a_hosts_own_sigint_handler_survives_the_prompt() {
    let (_t, dir) = temp();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = crate::util::clean_command(&exe);
    cmd.args([
        "--exact",
        "consent_prompt::prompt_host_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("EVENTSPOOL_TEST_PROMPT_DIR", &dir);
    let mut pty = Pty::spawn(cmd);
    pty.expect("[Y/n]", WAIT);
    pty.send(b"\x03");
    let (code, out) = pty.wait(WAIT);
    assert!(code.success(), "{out}");
    assert!(out.contains("DECISION denied"), "{out}");
    assert!(out.contains("HOST HANDLER RAN true"), "{out}");
}

/// Not a test: the host run on a pty by `a_hosts_own_sigint_handler_survives_the_prompt`.
#[test]
#[ignore = "entry point run on a pty"]
fn prompt_host_entry() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(dir) = std::env::var_os("EVENTSPOOL_TEST_PROMPT_DIR") else {
        return;
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone()).unwrap();
    let spool = eventspool::Spool::builder("hostapp")
        .dir(std::path::PathBuf::from(dir))
        .consent_policy(eventspool::ConsentPolicy::OptIn)
        .build();
    let decision = spool.ask_consent();
    println!("DECISION {decision}");
    assert!(
        !interrupted.load(Ordering::SeqCst),
        "the prompt's Ctrl-C reached the host's handler"
    );
    signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
    let t0 = Instant::now();
    while !interrupted.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("HOST HANDLER RAN {}", interrupted.load(Ordering::SeqCst));
}

/// A script's stdin (a pipe that never closes) with the output on a terminal: no
/// question, no wait, nothing on stderr, nothing decided or written.
#[test]
fn a_non_terminal_stdin_never_asks_and_never_blocks() {
    let (_t, dir) = temp();
    opt_in(&dir);
    let before = std::fs::read(dir.join("config.json")).unwrap();
    let t0 = Instant::now();
    let mut pty = Pty::spawn_with_stdin(
        spool(&dir).args(["consent", "ask"]).into_command(),
        Some(Stdio::piped()),
    );
    let (code, out) = pty.wait(Duration::from_secs(10));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        t0.elapsed()
    );
    assert!(code.success());
    assert_eq!(out, "undecided\r\n", "only the decision, on stdout");
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), before);

    // Every stream a pipe (a host capturing the output) is the same.
    let out = spool(&dir).args(["consent", "ask"]).run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "undecided\n");
    assert!(out.stderr.is_empty());
}

#[test]
fn under_ci_it_never_asks() {
    for ci in ["true", "1"] {
        let (_t, dir) = temp();
        opt_in(&dir);
        let mut pty = Pty::spawn(
            spool(&dir)
                .args(["consent", "ask"])
                .env("CI", ci)
                .into_command(),
        );
        let (code, out) = pty.wait(Duration::from_secs(10));
        assert!(code.success());
        assert_eq!(out, "undecided\r\n", "CI={ci}");
        assert!(config(&dir).get("telemetry").is_none());
    }
}

#[test]
fn under_opt_out_it_asks_nothing_and_shows_the_notice_once() {
    let (_t, dir) = temp();
    let (code, out) = ask_on_pty(&dir).wait(WAIT);
    assert!(code.success());
    assert!(!out.contains("[Y/n]"), "{out}");
    assert!(out.contains("collects anonymous usage statistics"), "{out}");
    assert!(out.trim_end().ends_with("granted"), "{out}");
    // Shown once; no decision was recorded for the user.
    let (_, again) = ask_on_pty(&dir).wait(WAIT);
    assert_eq!(again.trim(), "granted");
    let c = config(&dir);
    assert!(c.get("telemetry").is_none(), "{c}");
    assert_eq!(c["notice_shown"], true);
}

#[test]
fn an_environment_rule_is_never_asked_over() {
    let (_t, dir) = temp();
    opt_in(&dir);
    for (var, value, want) in [
        ("DO_NOT_TRACK", "1", "denied"),
        ("SPOOL_TELEMETRY", "0", "denied"),
        ("SPOOL_TELEMETRY", "1", "granted"),
    ] {
        let mut pty = Pty::spawn(
            spool(&dir)
                .args(["consent", "ask"])
                .env(var, value)
                .into_command(),
        );
        let (_, out) = pty.wait(WAIT);
        assert_eq!(out.trim(), want, "{var}={value}");
    }
    assert!(config(&dir).get("telemetry").is_none());
}

/// Under `opt_in`, before a yes: no file, no request, no detached flusher.
#[test]
fn opt_in_records_and_sends_nothing_until_yes() {
    let (t, dir) = temp();
    let server = TestServer::answering(200);
    let host = eventspool::Spool::builder("spool")
        .dir(&dir)
        .endpoint(&server.url)
        .consent_policy(eventspool::ConsentPolicy::OptIn)
        .env(std::sync::Arc::new(|_| None))
        .build();
    assert_eq!(host.consent().decision, eventspool::Decision::Undecided);
    host.track(eventspool::Event::new("early"));
    let report = host
        .flush_blocking(eventspool::FlushOptions::default())
        .unwrap();
    assert!(
        matches!(report.end, eventspool::FlushEnd::Disabled { .. }),
        "{report:?}"
    );
    assert!(matches!(
        host.flush_detached(Duration::from_secs(5)),
        Ok(eventspool::Detached::Skipped(
            eventspool::Skipped::Disabled(_)
        ))
    ));
    assert!(!dir.exists(), "created {:?}", files_in(&dir));
    assert_eq!(files_in(t.path()), Vec::<String>::new());
    assert_eq!(server.connections(), 0);

    host.enable().unwrap();
    host.track(eventspool::Event::new("after_yes"));
    assert_eq!(host.list(10).unwrap().len(), 1);
    // The host's policy is kept beside the decision, so `spool` by hand agrees.
    assert_eq!(config(&dir)["consent_policy"], "opt_in");

    // The same for a host in another language: `spool track` under the persisted policy.
    let (_t2, other) = temp();
    opt_in(&other);
    spool(&other).args(["track", "e"]).ok();
    assert_eq!(files_in(&other), ["config.json"]);
    let s = status(&other);
    assert_eq!(
        (s["decision"].as_str(), s["policy"].as_str()),
        (Some("undecided"), Some("opt_in"))
    );
    assert_eq!(s["enabled"], false);
}

#[test]
fn consent_status_json_names_the_rule_and_the_settings_round_trip() {
    let (_t, dir) = temp();
    let v: Value =
        serde_json::from_str(&spool(&dir).args(["consent", "status", "--json"]).ok()).unwrap();
    assert_eq!(
        (
            v["decision"].as_str(),
            v["rule"].as_str(),
            v["policy"].as_str()
        ),
        (Some("granted"), Some("default"), Some("opt_out"))
    );
    assert!(!dir.exists(), "status wrote");
    spool(&dir)
        .args(["config", "set", "consent_policy", "opt_in"])
        .ok();
    assert_eq!(
        spool(&dir).args(["config", "get", "consent_policy"]).ok(),
        "opt_in\n"
    );
    let line = spool(&dir)
        .args(["config", "set", "consent_policy", "maybe"])
        .fails();
    assert!(line.contains("opt_out or opt_in"), "{line}");
    spool(&dir)
        .args(["config", "set", "deletion_request", "true"])
        .ok();
    assert_eq!(
        spool(&dir).args(["config", "get", "deletion_request"]).ok(),
        "true\n"
    );
    let text = spool(&dir).args(["status"]).ok();
    assert!(
        text.contains("consent:    undecided (policy opt_in; deletion request on opt-out: on)"),
        "{text}"
    );
    spool(&dir).args(["config", "unset", "consent_policy"]).ok();
    assert_eq!(spool(&dir).args(["consent", "status"]).ok(), "granted\n");
}

/// A catalog file for app `spool`: event `run` with `ok: bool`, `ms: integer` (its
/// purpose and description as given), plus the `extra` properties.
/// A catalog declaring `ms`, the same with `ms` removed and its purpose worded
/// `removed_wording`, and one that adds `depth`.
fn three_versions(
    dir: &std::path::Path,
    removed_wording: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    (
        catalog_file(
            dir,
            "v1.json",
            "ended",
            r#", "ms": {"type": "integer", "purpose": "How long"}"#,
        ),
        catalog_file(dir, "removed.json", removed_wording, ""),
        catalog_file(
            dir,
            "grown.json",
            "ended",
            r#", "ms": {"type": "integer", "purpose": "How long"}, "depth": {"type": "integer", "purpose": "How deep"}"#,
        ),
    )
}

fn catalog_file(
    dir: &std::path::Path,
    name: &str,
    wording: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = format!(
        r#"{{"app": "spool", "never_collected": ["Source code"], "events": {{
            "run": {{"description": "A run {wording}.", "category": "usage", "expires": "never",
              "properties": {{
                "ok": {{"type": "bool", "purpose": "Whether it worked {wording}"}}{extra}
              }}}}}}}}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Material change: an addition to the catalog asks an opt-in user again, and until
/// they answer nothing is recorded, not even an event the old catalog declared; a
/// removal or a reworded purpose asks nothing.
#[test]
fn a_fingerprint_addition_asks_again_and_a_removal_does_not() {
    let (t, dir) = temp();
    opt_in(&dir);
    let (v1, removed, grown) = three_versions(t.path(), "finished (reworded)");
    let ask = |catalog: &std::path::Path| {
        Pty::spawn(
            spool(&dir)
                .args(["consent", "ask"])
                .env("SPOOL_CATALOG", catalog)
                .into_command(),
        )
    };
    let mut pty = ask(&v1);
    let asked = pty.expect("[Y/n]", WAIT);
    assert!(asked.contains("run (usage): A run ended."), "{asked}");
    assert!(asked.contains("ok (bool), ms (integer)"), "{asked}");
    assert!(asked.contains("Never collected:"), "{asked}");
    pty.send(b"y\r");
    assert!(pty.wait(WAIT).1.trim_end().ends_with("granted"));
    let stored = config(&dir)["telemetry_fingerprint"].clone();
    assert!(
        stored
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "run.ms: integer"),
        "{stored}"
    );

    // A removal and a rewording: no question, still granted, still recording.
    let (_, out) = ask(&removed).wait(WAIT);
    assert_eq!(out.trim(), "granted", "asked again for a removal: {out}");
    spool(&dir)
        .args([
            "--catalog",
            removed.to_str().unwrap(),
            "track",
            "run",
            "--props",
            r#"{"ok":true}"#,
        ])
        .ok();
    assert_eq!(crate::util::queued(&dir).len(), 1);

    // An addition: undecided, and nothing recorded until the answer.
    let grown_s = grown.to_str().unwrap();
    assert_eq!(
        spool(&dir)
            .args(["--catalog", grown_s, "consent", "status"])
            .ok(),
        "undecided\n"
    );
    spool(&dir)
        .args([
            "--catalog",
            grown_s,
            "track",
            "run",
            "--props",
            r#"{"ok":true}"#,
        ])
        .ok();
    assert_eq!(
        crate::util::queued(&dir).len(),
        1,
        "recorded before the answer"
    );
    let mut pty = ask(&grown);
    let asked = pty.expect("[Y/n]", WAIT);
    assert!(
        asked.contains("run.depth: integer"),
        "what changed: {asked}"
    );
    pty.send(b"\r");
    assert!(pty.wait(WAIT).1.trim_end().ends_with("granted"));
    let stored = config(&dir)["telemetry_fingerprint"].clone();
    assert!(
        stored
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "run.depth: integer"),
        "the stored fingerprint was not replaced: {stored}"
    );
    spool(&dir)
        .args([
            "--catalog",
            grown_s,
            "track",
            "run",
            "--props",
            r#"{"depth":3}"#,
        ])
        .ok();
    assert_eq!(crate::util::queued(&dir).len(), 2);
    let (_, out) = ask(&grown).wait(WAIT);
    assert_eq!(out.trim(), "granted", "asked twice for one fingerprint");
}

/// "No" after a "yes" is an opt-out by choice: with deletion requests on, one is queued.
#[test]
fn no_to_a_grown_catalog_after_a_yes_purges_and_queues_a_deletion_request() {
    let (t, dir) = temp();
    opt_in(&dir);
    spool(&dir)
        .args(["config", "set", "deletion_request", "true"])
        .ok();
    let v1 = catalog_file(t.path(), "v1.json", "ended", "");
    let grown = catalog_file(
        t.path(),
        "grown.json",
        "ended",
        r#", "depth": {"type": "integer", "purpose": "How deep"}"#,
    );
    spool(&dir)
        .args(["--catalog", v1.to_str().unwrap(), "enable"])
        .ok();
    spool(&dir)
        .args([
            "--catalog",
            v1.to_str().unwrap(),
            "track",
            "run",
            "--props",
            r#"{"ok":true}"#,
        ])
        .ok();
    let anon = config(&dir)["anonymous_id"].clone();
    let mut pty = Pty::spawn(
        spool(&dir)
            .args(["consent", "ask"])
            .env("SPOOL_CATALOG", &grown)
            .into_command(),
    );
    pty.expect("[Y/n]", WAIT);
    pty.send(b"n\r");
    assert!(pty.wait(WAIT).1.trim_end().ends_with("denied"));
    let rows = crate::util::queued(&dir);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["event"], "deletion_request");
    assert_eq!(
        rows[0]["payload"]["anonymous_ids"],
        serde_json::json!([anon])
    );
}

/// Under `opt_out` the notice is shown once per fingerprint: again for an addition,
/// never for a removal.
#[test]
fn under_opt_out_the_notice_shows_again_for_an_addition_only() {
    let (t, dir) = temp();
    let (v1, removed, grown) = three_versions(t.path(), "ended");
    let ask = |catalog: &std::path::Path| {
        let mut pty = Pty::spawn(
            spool(&dir)
                .args(["consent", "ask"])
                .env("SPOOL_CATALOG", catalog)
                .into_command(),
        );
        let (code, out) = pty.wait(WAIT);
        assert!(code.success());
        assert!(out.trim_end().ends_with("granted"), "{out}");
        assert!(!out.contains("[Y/n]"), "asked under opt_out: {out}");
        out.contains("collects anonymous usage statistics")
    };
    assert!(ask(&v1), "no notice the first time");
    assert!(!ask(&v1), "shown twice");
    assert!(!ask(&removed), "shown for a removal");
    assert!(ask(&grown), "not shown for an addition");
    assert!(!ask(&grown));
    assert!(
        config(&dir).get("telemetry").is_none(),
        "the notice decided for the user"
    );
}

#[test]
fn a_background_job_on_the_terminal_never_asks_and_never_blocks() {
    let (_t, dir) = temp();
    opt_in(&dir);
    let before = std::fs::read(dir.join("config.json")).unwrap();
    // `tool &` from an interactive shell: every stream is the terminal, but the
    // terminal's foreground is the shell, so nobody would ever see or answer.
    let inner = spool(&dir).args(["consent", "ask"]).into_command();
    let mut sh = std::process::Command::new("bash");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.args(["-c", "set -m; \"$@\" & wait $!; echo \"exit=$?\"", "sh"])
        .arg(inner.get_program())
        .args(inner.get_args());
    let mut pty = Pty::spawn(sh);
    let (code, out) = pty.wait(Duration::from_secs(15));
    assert!(code.success(), "{out}");
    assert!(!out.contains("[Y/n]"), "asked a background job: {out}");
    assert!(
        out.contains("undecided\r\n") && out.contains("exit=0"),
        "{out}"
    );
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), before);
}
