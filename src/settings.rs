//! The app's persisted settings: a small human-readable `config.json` beside the queue.
//!
//! It holds the consent choice, the anonymous id, and what the host configured
//! (endpoint, tool, limits), so that `spool` run later by hand acts exactly as the
//! host did. It is always replaced atomically (temp file + rename), so a reader never
//! sees half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Kind, Result};
use crate::limits::Limits;

/// File name of the settings inside the queue directory.
pub const SETTINGS_FILE: &str = "config.json";

/// The largest `config.json` read. Ours is a few hundred bytes; anything much larger
/// is not ours, and reading it would cost every host invocation.
pub const MAX_SETTINGS_BYTES: u64 = 64 * 1024;

/// Reads `path` if it is a regular file of at most `max` bytes; `Ok(None)` if it does
/// not exist. Opened without blocking, and checked on the open descriptor, so a FIFO
/// (which would block the host forever) or a link to a device such as `/dev/zero`
/// (which never ends) is refused before a byte is read.
pub(crate) fn read_small_regular_file(
    path: &Path,
    max: u64,
) -> std::result::Result<Option<String>, String> {
    use std::io::Read;
    // On Windows the file is unopenable for an instant while a writer replaces it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(250);
    let opened = loop {
        match open_nonblocking(path) {
            Err(e) if busy_on_windows(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            other => break other,
        }
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read ({e})")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!(
            "is {} bytes, over the {max}-byte limit for a settings file",
            meta.len()
        ));
    }
    let mut text = String::new();
    // `take`: the file may grow between the check and the read.
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if text.len() as u64 > max {
        return Err(format!("is over the {max}-byte limit for a settings file"));
    }
    Ok(Some(text))
}

/// Returns true if and only if `e` is Windows saying a file is in use by another
/// process for a moment (a sharing violation, or access denied to a file being
/// replaced or deleted); never on other platforms.
pub(crate) fn busy_on_windows(e: &std::io::Error) -> bool {
    // ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION
    cfg!(windows) && matches!(e.raw_os_error(), Some(5 | 32))
}

/// Opens `path` for reading without waiting for a writer: opening a FIFO that way
/// returns at once instead of blocking until someone opens the other end.
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<fs::File> {
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    // FILE_FLAG_BACKUP_SEMANTICS: Windows opens a directory only with it (a directory
    // in place of the queue file is set aside through this handle).
    #[cfg(windows)]
    std::os::windows::fs::OpenOptionsExt::custom_flags(&mut opts, 0x0200_0000);
    opts.open(path)
}

/// The contents of `config.json`, read-only to hosts: the file is written only by the
/// user's choices, the library's own bookkeeping and [`crate::Spool::set_host_value`].
/// Unknown fields are kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// The consent choice: `false` after `spool disable`; absent until the user
    /// decided.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub telemetry: Option<bool>,
    /// When the user decided (`telemetry`), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub telemetry_decided_at: Option<String>,
    /// The catalog fingerprint the user decided on: a later catalog that adds to it
    /// asks an opt-in user again.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub telemetry_fingerprint: Option<crate::Fingerprint>,
    /// What a spool does when nobody decided: `opt_out` or `opt_in`, as the host
    /// configured it (in code, or `spool config set consent_policy`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consent_policy: Option<crate::ConsentPolicy>,
    /// Whether an opt-out sends one deletion request for the data already sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletion_request: Option<bool>,
    /// True while a deletion request may wait in the queue: the one thing an
    /// opted-out spool still sends, looked for only when this is set.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub deletion_request_pending: bool,
    /// The anonymous id an opt-out's deletion request is still to be queued for (and
    /// the id replaced): set with the opt-out, cleared once both are done, so an
    /// opt-out that failed half-way (a busy queue) is completed by the next one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletion_request_for: Option<String>,
    /// The install's random salt (hex) in the machine hash's key, set when a
    /// deletion request re-keys it, so later data cannot be joined to earlier data.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine_salt: Option<String>,
    /// Random per install; sent with every event.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anonymous_id: Option<String>,
    /// Where events are sent: the host's choice in code, or the user's
    /// (`spool config set`), which the host's code then leaves alone.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination: Option<crate::DestinationConfig>,
    /// The collection endpoint as versions before destinations kept it; read when
    /// there is no `destination`, and moved into it on the next write.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub endpoint: Option<String>,
    /// `name@version` of the host tool.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool: Option<String>,
    /// Limits the host configured in code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limits: Option<Limits>,
    /// Limits the user set by name (`spool config set batch_size 50`), as written;
    /// applied over the host's, below the environment's.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub user_limits: std::collections::BTreeMap<String, String>,
    /// The catalog file the `spool` command reads for this app (`spool config set
    /// catalog FILE`), as an absolute path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub catalog: Option<String>,
    /// True once the host's first-use notice has been shown.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub notice_shown: bool,
    /// The catalog fingerprint the notice was last shown for: shown again when the
    /// catalog adds to it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notice_fingerprint: Option<crate::Fingerprint>,
    /// Small state the host keeps for itself ([`crate::Spool::set_host_value`]).
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub host: Map<String, Value>,
    /// Fields this version does not know, preserved on rewrite.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Settings {
    /// Path of the settings file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(SETTINGS_FILE)
    }

    /// Reads the settings in `dir`; `Ok(None)` if there is no file yet. A file that is
    /// not a JSON object of the expected shape, not a regular file, or larger than
    /// `MAX_SETTINGS_BYTES` (64 KiB) is an error naming the file.
    pub fn load(dir: &Path) -> Result<Option<Settings>> {
        let path = Self::path(dir);
        let text = match read_small_regular_file(&path, MAX_SETTINGS_BYTES) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(why) => return Err(Kind::SettingsFile { path, why }.into()),
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|why| Kind::SettingsFile { path, why }.into())
    }

    /// [`Settings::load`], after checking that `dir` (if it exists) is a directory of
    /// this user's and not a link: settings in a directory that is not one are not
    /// usable either, and the error says why rather than "disabled by your choice".
    pub(crate) fn load_checked(dir: &Path) -> Result<Option<Settings>> {
        if fs::symlink_metadata(dir).is_ok() {
            crate::queue::check_dir(dir)?;
        }
        Self::load(dir)
    }

    /// Changes the settings in `dir` with `f`, read and written under an exclusive
    /// lock on the directory, so two writers never lose each other's change (a host
    /// saving its endpoint can never put back a choice `spool disable` just replaced).
    /// Writes only if `f` changed something. Returns the settings now in the file and
    /// the file's metadata as this call left it (`None` if there is still no file).
    pub(crate) fn update(
        dir: &Path,
        f: impl FnOnce(&mut Settings),
    ) -> Result<(Settings, Option<fs::Metadata>)> {
        let _lock = DirLock::exclusive(dir)?;
        let current = Self::load(dir)?;
        let mut next = current.clone().unwrap_or_default();
        f(&mut next);
        if current.as_ref() != Some(&next) {
            next.write(dir)?;
        }
        // Under the lock, nobody else's write can come between the rename and this.
        let meta = fs::metadata(Self::path(dir)).ok();
        Ok((next, meta))
    }

    /// Parses the text of a settings file.
    pub fn parse(text: &str) -> std::result::Result<Settings, String> {
        serde_json::from_str(text).map_err(|e| format!("not valid settings JSON ({e})"))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| Kind::SettingsFile {
            path: path.clone(),
            why: e.to_string(),
        })?;
        text.push('\n');
        // NamedTempFile is created 0600 in the same directory, so the rename is atomic
        // and the file is never readable by others, whatever the umask.
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        tmp.write_all(text.as_bytes())
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(tmp.path(), e))?;
        // Windows refuses to replace a file another process has open at that moment
        // (a reader of the settings): that lasts only as long as the read, so retry.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match tmp.persist(&path) {
                Ok(_) => return Ok(()),
                Err(e) if busy_on_windows(&e.error) && std::time::Instant::now() < deadline => {
                    tmp = e.file;
                    std::thread::sleep(std::time::Duration::from_millis(2 + fastrand::u64(..8)));
                }
                Err(e) => return Err(Error::io(path, e.error)),
            }
        }
    }
}

/// Modification time, size and inode of a file: enough to notice a rewrite (an
/// atomic replace always changes the inode) without reading it.
pub(crate) type Stamp = (std::time::SystemTime, u64, u64);

/// The [`Stamp`] of a file, `None` if it does not exist.
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    fs::metadata(path).ok().as_ref().map(stamp_of)
}

/// The [`Stamp`] of a file's metadata.
pub(crate) fn stamp_of(m: &fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let ino = 0;
    (
        m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
        m.len(),
        ino,
    )
}

/// An exclusive `flock` on the queue directory, held while settings are read and
/// rewritten; released when dropped. Only writers take it: readers see whole files
/// anyway, thanks to the atomic rename. On Windows, where a directory cannot be
/// locked, a named mutex for the directory's absolute path (case-folded, as Windows
/// paths are) does the same.
struct DirLock {
    #[cfg(unix)]
    _dir: fs::File,
    #[cfg(windows)]
    _mutex: crate::sys::NamedLock,
}

impl DirLock {
    fn exclusive(dir: &Path) -> Result<DirLock> {
        #[cfg(unix)]
        {
            let file = fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
            crate::sys::flock_exclusive(&file).map_err(|e| Error::io(dir, e))?;
            Ok(DirLock { _dir: file })
        }
        #[cfg(windows)]
        {
            use sha2::Digest;
            let abs = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
            let key = abs.to_string_lossy().to_lowercase();
            let key = key.trim_end_matches(['\\', '/']);
            let name = format!(
                "Local\\eventspool-settings-{}",
                hex::encode(sha2::Sha256::digest(key.as_bytes()))
            );
            let mutex = crate::sys::NamedLock::acquire(&name).map_err(|e| Error::io(dir, e))?;
            Ok(DirLock { _mutex: mutex })
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = dir;
            Ok(DirLock {})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_fields_and_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            Settings::path(dir.path()),
            r#"{"telemetry": false, "theme": "dark"}"#,
        )
        .unwrap();
        let s = Settings::load(dir.path()).unwrap().unwrap();
        assert_eq!(s.telemetry, Some(false));
        Settings::update(dir.path(), |s| s.anonymous_id = Some("abc".into())).unwrap();
        let text = fs::read_to_string(Settings::path(dir.path())).unwrap();
        assert!(text.contains("\"telemetry\": false"), "{text}");
        assert!(text.contains("\"theme\": \"dark\""), "{text}");
    }

    #[test]
    fn concurrent_updates_never_lose_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        // One writer flips the choice, another keeps saving the host's endpoint from
        // what it read: with a read-modify-write under the lock, both survive.
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        Settings::update(&path, |s| {
                            if w == 0 {
                                s.telemetry = Some(i % 2 == 1);
                            } else {
                                s.endpoint = Some(format!("https://e/{i}"));
                            }
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let s = Settings::load(&path).unwrap().unwrap();
        assert_eq!(s.telemetry, Some(true));
        assert_eq!(s.endpoint.as_deref(), Some("https://e/199"));
        // The first writer's id is the one everybody keeps.
        let (a, _) = Settings::update(&path, |s| {
            s.anonymous_id.get_or_insert_with(|| "a".into());
        })
        .unwrap();
        let (b, _) = Settings::update(&path, |s| {
            s.anonymous_id.get_or_insert_with(|| "b".into());
        })
        .unwrap();
        assert_eq!(
            (a.anonymous_id, b.anonymous_id),
            (Some("a".into()), Some("a".into()))
        );
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Settings::path(dir.path()), "{not json").unwrap();
        let err = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(
            Settings::load(tempfile::tempdir().unwrap().path())
                .unwrap()
                .is_none()
        );
    }
}
