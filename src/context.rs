//! The host context attached to every event: tool, OS, architecture, machine hash,
//! container and CI detection. Detected once per process.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Where an event was recorded. No field names a person or a machine directly: the
/// machine hash is a keyed hash of the hostname (see `machine_hash` for what that
/// does and does not protect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// `name@version` of the host tool, when the host said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool: Option<String>,
    /// Operating system family, e.g. `linux`, `macos`, `windows`.
    pub os: String,
    /// Kernel or OS release, e.g. `6.1.0-18-amd64`.
    pub os_release: String,
    /// CPU architecture, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// HMAC-SHA256 of the hostname keyed by the app name, lower-case hex.
    pub machine_hash: String,
    /// True if and only if the process runs inside a container (Docker, Podman, Kubernetes).
    pub docker: bool,
    /// True if and only if the process runs under a CI system.
    pub ci: bool,
}

impl Context {
    /// Detects the context of this process for `app`.
    pub fn detect(app: &str, tool: Option<String>) -> Self {
        Self::detect_salted(app, tool, None)
    }

    /// [`Context::detect`] with the install's machine salt (hex, from `config.json`)
    /// in the machine hash's key, once a deletion request re-keyed it.
    pub(crate) fn detect_salted(app: &str, tool: Option<String>, salt: Option<&str>) -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        Context {
            tool,
            os: std::env::consts::OS.to_string(),
            os_release: os_release(),
            arch: std::env::consts::ARCH.to_string(),
            machine_hash: match salt {
                None => machine_hash(app, &hostname),
                Some(salt) => salted_machine_hash(app, &hostname, Some(salt.as_bytes())),
            },
            docker: in_container(),
            ci: in_ci(|k| {
                std::env::var_os(k).is_some_and(|v| {
                    !v.is_empty() && !crate::consent::is_falsy(&v.to_string_lossy())
                })
            }),
        }
    }
}

/// HMAC-SHA256 of `hostname` keyed by `app`, as lower-case hex.
///
/// What it protects against: the hostname itself is never sent, and the same machine
/// hashes differently for different apps, so two receivers cannot join their data on
/// it without guessing. What it does not: the app name is public, so anyone holding a
/// hash can test candidate hostnames (`ada-laptop`, `DESKTOP-1A2B3C4`, a company's
/// naming scheme) and recognise a guessable one. It is a pseudonym for the machine,
/// not anonymity.
///
/// ```text
/// let h = eventspool::machine_hash("mytool", "build-box");
/// assert_eq!(h.len(), 64);
/// assert_ne!(h, eventspool::machine_hash("other", "build-box"));
/// ```
pub fn machine_hash(app: &str, hostname: &str) -> String {
    salted_machine_hash(app, hostname, None)
}

/// [`machine_hash`] with an install's secret `salt` in the key as well, which makes
/// guessing the hostname useless without the salt. `None` gives exactly the value of
/// [`machine_hash`], so events already sent keep matching.
pub(crate) fn salted_machine_hash(app: &str, hostname: &str, salt: Option<&[u8]>) -> String {
    // With a salt the key is HMAC(salt, app): still per app, and not computable
    // without the salt. (Appending the salt to the app name would not do: HMAC pads
    // keys with zero bytes, so `app` + `\0` and `app` would be the same key.)
    let key = match salt {
        None => app.as_bytes().to_vec(),
        Some(salt) => hmac_sha256(salt, app.as_bytes()).to_vec(),
    };
    hex::encode(hmac_sha256(&key, hostname.as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; fall back to a plain
    // digest of both rather than panic if the crate ever changed that.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().into()
        }
        Err(_) => {
            use sha2::Digest;
            let mut d = Sha256::new();
            d.update(key);
            d.update(b"\0");
            d.update(message);
            d.finalize().into()
        }
    }
}

fn os_release() -> String {
    crate::sys::os_release()
}

/// Docker, Podman and Kubernetes markers. Linux only: elsewhere these paths mean
/// nothing (a Windows or macOS host runs Linux containers in a VM, where this code does
/// not run), and a stray `/.dockerenv` on a Mac must not say "container".
fn in_container() -> bool {
    cfg!(target_os = "linux") && in_linux_container()
}

fn in_linux_container() -> bool {
    if std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
    {
        return true;
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return true;
    }
    std::fs::read_to_string("/proc/1/cgroup").is_ok_and(|s| {
        ["docker", "containerd", "kubepods", "libpod"]
            .iter()
            .any(|m| s.contains(m))
    })
}

/// Returns true if and only if one of the variables CI systems set is present.
pub(crate) fn in_ci(is_set: impl Fn(&str) -> bool) -> bool {
    [
        "CI",
        "CONTINUOUS_INTEGRATION",
        "BUILD_NUMBER",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "CIRCLECI",
        "TRAVIS",
        "BUILDKITE",
        "JENKINS_URL",
        "TF_BUILD",
        "TEAMCITY_VERSION",
        "BITBUCKET_BUILD_NUMBER",
        "CODEBUILD_BUILD_ID",
        "DRONE",
    ]
    .iter()
    .any(|k| is_set(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_hash_is_keyed_hex_and_stable() {
        let a = machine_hash("app", "host");
        assert_eq!(a, machine_hash("app", "host"));
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, machine_hash("app2", "host"));
        assert_ne!(a, machine_hash("app", "host2"));
        // RFC 4231-style check against an independent computation: HMAC(key="key", msg="The quick brown fox jumps over the lazy dog")
        assert_eq!(
            machine_hash("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn salt_changes_the_machine_hash_and_no_salt_keeps_the_wire_value() {
        let plain = machine_hash("app", "host");
        assert_eq!(salted_machine_hash("app", "host", None), plain);
        let salted = salted_machine_hash("app", "host", Some(b"install-salt"));
        assert_ne!(salted, plain);
        assert_eq!(salted.len(), 64);
        assert_eq!(
            salted,
            salted_machine_hash("app", "host", Some(b"install-salt"))
        );
        assert_ne!(
            salted,
            salted_machine_hash("app", "host", Some(b"other-salt"))
        );
        // An empty salt still differs from none.
        assert_ne!(salted_machine_hash("app", "host", Some(b"")), plain);
    }

    #[test]
    fn ci_detection() {
        assert!(in_ci(|k| k == "GITHUB_ACTIONS"));
        assert!(!in_ci(|_| false));
    }

    #[test]
    fn detect_fills_fields() {
        let c = Context::detect("app", Some("app@1.0.0".into()));
        assert_eq!(c.tool.as_deref(), Some("app@1.0.0"));
        assert!(!c.os.is_empty() && !c.arch.is_empty());
    }

    /// Regression: `os_release` was empty on Windows.
    #[test]
    fn os_release_is_the_platforms_version() {
        let r = os_release();
        assert!(!r.is_empty(), "no OS release");
        let numeric = |r: &str| {
            r.split('.').count() >= 2
                && r.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        if cfg!(windows) {
            // major.minor.build, e.g. 10.0.19045
            assert!(numeric(&r) && r.split('.').count() == 3, "{r}");
        } else if cfg!(target_os = "macos") {
            assert!(numeric(&r), "{r}");
        }
    }
}
