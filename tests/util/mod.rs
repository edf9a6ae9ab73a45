//! Shared test helpers, one file per concern:
//! - `cli`: the `spool` command builder ([`SpoolCmd`]) and clean commands for the example hosts
//! - `server`: [`TestServer`], a loopback HTTP server with real faults
//! - `children`: child writer processes, limits on a child, a silent resolver, and
//!   [`exited`], the one process-liveness check
//! - `counterparts`: the real collector and SDKs the destination tests compare with
//! - `pty`: [`Pty`], a child on a real pseudo-terminal (the consent prompt)
//!
//! Here: temp dirs and small views of a queue directory.

mod children;
mod cli;
#[cfg(unix)]
mod counterparts;
#[cfg(unix)]
mod pty;
mod server;

pub use children::*;
pub use cli::*;
#[cfg(unix)]
pub use counterparts::*;
#[cfg(unix)]
pub use pty::*;
pub use server::*;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// This user's real home directory as the platform names it (`HOME` on Unix,
/// `USERPROFILE` on Windows, where the library asks the known-folder API, which agrees).
pub fn real_home() -> String {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var(var).unwrap_or_else(|_| "/root".into())
}

/// `prefix`, one code unit that is not valid Unicode (a 0xFF byte on Unix, an unpaired
/// surrogate on Windows), then `suffix`: an argument no `str` can hold.
pub fn not_unicode(prefix: &str, suffix: &str) -> std::ffi::OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.push(0xff);
        bytes.extend_from_slice(suffix.as_bytes());
        std::ffi::OsString::from_vec(bytes)
    }
    #[cfg(windows)]
    {
        use std::os::windows::ffi::OsStringExt;
        let mut wide: Vec<u16> = prefix.encode_utf16().collect();
        wide.push(0xD800);
        wide.extend(suffix.encode_utf16());
        std::ffi::OsString::from_wide(&wide)
    }
}

/// The identity of the file at `path`: device and inode on Unix, volume serial number
/// and file index on Windows.
pub fn file_identity(path: &Path) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).expect("file exists");
        (meta.dev(), meta.ino())
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsRawHandle;
        use windows_sys::Win32::Storage::FileSystem::{
            BY_HANDLE_FILE_INFORMATION, GetFileInformationByHandle,
        };
        let file = std::fs::File::open(path).expect("file exists");
        // SAFETY: the handle is open for the call; the struct is ours to fill.
        unsafe {
            let mut info: BY_HANDLE_FILE_INFORMATION = std::mem::zeroed();
            assert_ne!(
                GetFileInformationByHandle(file.as_raw_handle(), &mut info),
                0
            );
            let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
            (u64::from(info.dwVolumeSerialNumber), index)
        }
    }
}

/// Every file and directory under `root`, relative to it, sorted (links not followed).
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            // `/` between components on every platform, so listings compare as one.
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The queue as `spool list --json` sees it: one JSON object per event.
#[track_caller]
pub fn queued(dir: &Path) -> Vec<Value> {
    spool(dir)
        .args(["list", "--json"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("list --json line is JSON"))
        .collect()
}

/// Names of the entries in `dir` (empty if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Records `n` events in-process through the library, fast.
pub fn fill(dir: &Path, n: usize) -> Vec<String> {
    let spool = eventspool::Spool::builder("spool").dir(dir).build();
    let events = (0..n)
        .map(|i| eventspool::Event::new("filled").property("i", i as u64))
        .collect();
    spool
        .try_track_batch(events)
        .expect("fill")
        .into_iter()
        .map(|r| match r {
            eventspool::Recorded::Queued(id) => id,
            other => panic!("not queued: {other:?}"),
        })
        .collect()
}

#[cfg(unix)]
/// The account database's name for the user running the tests (`id -un`).
pub fn account_name() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id runs");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A fresh temp dir and the queue directory inside it (not yet created).
pub fn temp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let q = t.path().join("queue");
    (t, q)
}

/// `spool status --json` as a value.
#[track_caller]
pub fn status(dir: &Path) -> Value {
    serde_json::from_str(&spool(dir).args(["status", "--json"]).ok()).expect("status JSON")
}

/// Every id in the queue file, read directly with SQLite, oldest first.
pub fn ids_in_queue_file(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("queue.db")).expect("open queue");
    let mut st = conn
        .prepare("SELECT id FROM events ORDER BY seq")
        .expect("prepare");
    st.query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// `PRAGMA quick_check` of the queue file.
/// The pid holding the flush lease of the queue in `dir`, if any.
pub fn lease_holder(dir: &Path) -> Option<u32> {
    let conn = rusqlite::Connection::open(dir.join("queue.db")).ok()?;
    conn.query_row("SELECT pid FROM lease", [], |r| r.get(0))
        .ok()
}

pub fn quick_check(dir: &Path) -> String {
    let conn = rusqlite::Connection::open(dir.join("queue.db")).expect("open queue");
    conn.query_row("PRAGMA quick_check", [], |r| r.get(0))
        .expect("quick_check")
}
