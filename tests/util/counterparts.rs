//! Real software nobody here wrote, for the destination tests: the virtualenv that
//! `.ci/counterparts` installs (rotel's OpenTelemetry collector, the official PostHog
//! and Segment SDKs), installed on first use when `.ci/run` has not done it already.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The counterparts' virtualenv; installs it if missing. Panics (failing the test)
/// if it cannot be installed: a destination test never passes without them.
pub fn venv() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/counterparts");
        let out = Command::new(script)
            .output()
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// The virtualenv's Python, with the SDKs importable.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// rotel's collector binary, shipped inside its wheel.
pub fn rotel_agent() -> PathBuf {
    let lib = venv().join("lib");
    std::fs::read_dir(&lib)
        .expect("the virtualenv's lib directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
        .expect("rotel-agent in the virtualenv")
}
