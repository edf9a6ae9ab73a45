//! What a host pays on each invocation, as syscalls: the first run's fsyncs, an
//! opt-out that touches no file, one queue connection per host invocation. Counted
//! with `strace`, which these tests need (each says so and passes without it, as
//! on a machine where it cannot trace); the opt-out test also stands without it.

use std::path::Path;
use std::process::Command;

use crate::util::{clean_command, example_bin, files_in, spool, spool_bin, temp};

/// `strace`, if this machine has it and may trace its children.
fn strace() -> Option<&'static str> {
    let ok = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("strace is missing or may not trace here: syscall counts not checked");
    }
    ok.then_some("strace")
}

/// Runs `cmd` under `strace -f -e trace=SET`, returning the traced lines.
fn traced(cmd: &Command, set: &str) -> Vec<String> {
    traced_reading(cmd, set, None)
}

/// [`traced`], with `stdin` (a file) as the command's standard input.
fn traced_reading(cmd: &Command, set: &str, stdin: Option<std::fs::File>) -> Vec<String> {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("trace");
    let mut s = Command::new("strace");
    s.args(["-f", "-qq", "-e", &format!("trace={set}"), "-o"])
        .arg(&log)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(stdin.map_or_else(std::process::Stdio::null, Into::into));
    if let Some(d) = cmd.get_current_dir() {
        s.current_dir(d);
    }
    let out = s.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn track(dir: &Path) -> Command {
    let mut c = clean_command(Path::new(spool_bin()));
    c.arg("--dir").arg(dir).args(["track", "e", "-p", "k=v"]);
    c
}

/// The first `spool track` ever creates the directory, `config.json` and the queue:
/// one fsync (the settings file, which holds the anonymous id), where creating the
/// queue cost seven more (turning the empty file into a WAL database, and the schema's
/// commit at `synchronous = FULL`). A warm run pays none.
#[test]
fn the_first_run_pays_one_fsync_and_a_warm_run_none() {
    if strace().is_none() {
        return;
    }
    let (_t, dir) = temp();
    let fsyncs = |lines: Vec<String>| {
        lines
            .iter()
            .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
            .count()
    };
    let first = traced(&track(&dir), "fsync,fdatasync");
    assert_eq!(fsyncs(first.clone()), 1, "{first:#?}");
    let warm = traced(&track(&dir), "fsync,fdatasync");
    assert_eq!(fsyncs(warm.clone()), 0, "{warm:#?}");
    // The queue made that way is whole: WAL mode, both events in it.
    let conn = rusqlite::Connection::open(dir.join("queue.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

/// An opt-out in the environment decides before anything is read: `spool track` with
/// DO_NOT_TRACK=1 records nothing and succeeds even when the directory holds a
/// settings "file" that cannot be read (it used to read it first, and fail), and it
/// makes no syscall naming the directory at all: plain, with `--json`, with `--stdin`
/// (whose size check would read the limits), and with a catalog that refuses the
/// event, named by `--catalog` (no catalog is read or asked: nothing is recorded).
#[test]
fn an_environment_opt_out_reads_nothing() {
    let (_t, dir) = temp();
    std::fs::create_dir_all(dir.join("config.json")).unwrap();
    let catalog = dir.join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"app": "spool", "events": {"other": {"description": "d", "category": "usage"}}}"#,
    )
    .unwrap();
    let lines = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(lines.path(), "{\"event\": \"e\"}\n{\"event\": \"f\"}\n").unwrap();
    let stdin = || Some(std::fs::File::open(lines.path()).unwrap());
    let variants: [(&[&str], bool); 4] = [
        (&["track", "e", "-p", "k=v"], false),
        (&["track", "e", "--json"], false),
        (&["track", "--stdin"], true),
        (
            &["--catalog", catalog.to_str().unwrap(), "track", "e"],
            false,
        ),
    ];
    for (args, reads_stdin) in variants {
        let mut c = spool(&dir)
            .args(args.iter().copied())
            .env("DO_NOT_TRACK", "1");
        if reads_stdin {
            c = c.input(std::fs::read(lines.path()).unwrap());
        }
        let out = c.run();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args.contains(&"--json") {
            assert!(String::from_utf8_lossy(&out.stdout).contains("\"recorded\":false"));
        } else {
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        assert_eq!(files_in(&dir), ["catalog.json", "config.json"], "{args:?}");
        if strace().is_none() {
            continue;
        }
        let mut cmd = clean_command(Path::new(spool_bin()));
        cmd.arg("--dir")
            .arg(&dir)
            .args(args)
            .env("DO_NOT_TRACK", "1");
        let lines = traced_reading(&cmd, "%file,%desc", stdin().filter(|_| reads_stdin));
        let dir_text = dir.to_string_lossy().to_string();
        // Its own command line names the directory, of course.
        let touching: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(&dir_text) && !l.contains("execve("))
            .collect();
        assert!(touching.is_empty(), "{args:?}: {touching:#?}");
    }
}

/// A host invocation that records and then asks for a detached flush if one is due
/// (the devtool example's `dev`) opens the queue once: the due check reads the counts
/// on the connection recording used, instead of opening (and parsing the schema of) a
/// second one.
#[test]
fn a_host_invocation_opens_the_queue_once() {
    if strace().is_none() {
        return;
    }
    let (_t, dir) = temp();
    let project = tempfile::tempdir().unwrap();
    let devtool = example_bin("devtool");
    let dev = || {
        let mut c = clean_command(&devtool);
        c.args(["dev", "--requests", "1"])
            .current_dir(project.path())
            .env("DEVTOOL_TELEMETRY_DIR", &dir)
            // Loopback and closed: nothing is due anyway, so nothing is sent.
            .env("DEVTOOL_TELEMETRY_ENDPOINT", "http://127.0.0.1:9/");
        c
    };
    let first = dev().output().unwrap();
    assert!(first.status.success());
    let lines = traced(&dev(), "openat");
    let queue = dir.join("queue.db").to_string_lossy().to_string();
    let opens: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("\"{queue}\"")) && l.contains("O_RDWR"))
        .collect();
    assert_eq!(opens.len(), 1, "{opens:#?}");
}
