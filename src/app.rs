//! Whose telemetry: app names, and the environment and directory that belong to an app.
//!
//! An app name becomes a directory name and part of environment variable names, so it
//! is checked before it is used for either: a name like `..` or `/etc` must never
//! steer where files are written.

use std::path::PathBuf;

use crate::consent::env_prefix;
use crate::error::{Kind, Result};

/// Longest app name accepted, in characters.
pub const MAX_APP_NAME_LEN: usize = 64;

/// Returns an error unless `name` is 1–64 characters of `A-Z a-z 0-9 . _ -` starting
/// with a letter or a digit.
///
/// ```
/// assert!(eventspool::validate_app_name("my-tool.cli_2").is_ok());
/// for bad in ["", "..", "../evil", "/abs/path", ".hidden", "a b"] {
///     assert!(eventspool::validate_app_name(bad).is_err());
/// }
/// ```
pub fn validate_app_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_APP_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("it must start with a letter or a digit")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("only A-Z a-z 0-9 . _ - are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(Kind::AppName {
            name: name.chars().take(80).collect(),
            why,
        }
        .into()),
        None => Ok(()),
    }
}

/// The local config directory of `app`, or `None` when there is no usable home
/// directory: `~/.config/<app>` on Linux, `~/Library/Application Support/<app>` on
/// macOS, `%LOCALAPPDATA%\<app>\config` on Windows (the local profile: the roaming
/// one, `%APPDATA%`, is copied between the machines of a domain, and a queue of one
/// machine's telemetry belongs to that machine). A relative `HOME` is not usable: it
/// would put the queue under whatever directory the host happens to run in.
pub fn default_dir(app: &str) -> Option<PathBuf> {
    validate_app_name(app).ok()?;
    let dirs = directories::ProjectDirs::from("", "", app)?;
    let dir = dirs.config_local_dir();
    dir.is_absolute().then(|| dir.to_path_buf())
}

/// The environment variable a library host reads for `setting`:
/// `<APP>_TELEMETRY_<SETTING>`, e.g. `MY_TOOL_TELEMETRY_DIR` for `my-tool`.
pub(crate) fn host_var(app: &str, setting: &str) -> String {
    format!("{}_TELEMETRY_{setting}", env_prefix(app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for good in [
            "spool",
            "a",
            "0tool",
            "my-tool",
            "my.tool_2",
            &"x".repeat(64),
        ] {
            assert!(validate_app_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../evil",
            "/abs/path",
            "a/b",
            "a\\b",
            "-flag",
            "_x",
            ".x",
            "a b",
            "naïve",
            "a\0b",
            &"x".repeat(65),
        ] {
            assert!(validate_app_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_vars_use_the_env_prefix() {
        assert_eq!(host_var("my-tool", "DIR"), "MY_TOOL_TELEMETRY_DIR");
        assert_eq!(
            host_var("devtool", "ENDPOINT"),
            "DEVTOOL_TELEMETRY_ENDPOINT"
        );
    }

    /// Regression: on Windows the queue landed in the roaming profile (`%APPDATA%`).
    #[test]
    fn the_default_dir_is_in_the_local_profile() {
        let dir = default_dir("mytool").expect("a home directory");
        assert!(dir.is_absolute(), "{}", dir.display());
        let base = directories::BaseDirs::new().expect("a home directory");
        assert!(
            dir.starts_with(base.config_local_dir()),
            "{} is not under {}",
            dir.display(),
            base.config_local_dir().display()
        );
        if cfg!(windows) {
            assert!(
                !dir.starts_with(base.config_dir()),
                "{} is in the roaming profile",
                dir.display()
            );
        }
    }

    #[test]
    fn invalid_app_has_no_default_dir() {
        assert_eq!(default_dir(".."), None);
        assert_eq!(default_dir(""), None);
    }
}
