//! Privacy scrubbing of property values before they are stored.
//!
//! The scrubber is deliberately greedy: a false positive costs a few characters of
//! telemetry, a false negative leaks a user's secret to someone else's server.

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex};
use serde_json::Value;

/// Longest error-message property kept, in characters.
pub const MAX_ERROR_CHARS: usize = 1000;

fn re(pattern: &str) -> Regex {
    // The patterns are literals covered by the unit tests below, so this cannot fail
    // at run time for a host.
    Regex::new(pattern).expect("scrubber pattern is valid")
}

// Patterns are ASCII-only (`(?-u)`) wherever that keeps their meaning: they compile
// an order of magnitude faster, which matters in a short-lived CLI process. Each is
// compiled on first use, and only when the cheap byte test before it passes.
static URL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?-u:\b)((?i-u:[a-z][a-z0-9+.\-]*)://)([^ \t\r\n/?#@]*@)?([^ \t\r\n/?#]*)([^ \t\r\n?#]*)(\?[^ \t\r\n#]*)?(#[^ \t\r\n]*)?",
    )
});
static AUTH_SCHEME: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i-u)\b(bearer|basic|token)([ \t]+)[A-Za-z0-9._~+/=\-]{6,}"));
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i-u:\b([a-z0-9_\-]*(?:password|passwd|secret|api[_\-]?key|access[_\-]?key|token|credential)[a-z0-9_\-]*)([ \t]*[=:][ \t]*)("?))[^ \t\r\n"&,;']+"#,
    )
});
static KNOWN_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}",
        r"|sk-[A-Za-z0-9_\-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
        r"|eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,})"
    ))
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?-u)[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u)\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"));
static IPV6_CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?-u)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%[A-Za-z0-9]+)?"));
static LONG_HEX: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u)\b[0-9a-fA-F]{32,}\b"));
static LONG_BASE64: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u)[A-Za-z0-9+_\-]{32,}={0,2}"));

/// The cheap tests before the patterns: one pass over the text finds which of these
/// occur (ASCII case-insensitively), and only the rules they belong to run.
const MARKERS: [(&str, u8); 21] = [
    ("://", URL_RULE),
    ("bearer", AUTH_RULE),
    ("basic", AUTH_RULE),
    ("token", AUTH_RULE | SECRET_RULE),
    ("password", SECRET_RULE),
    ("passwd", SECRET_RULE),
    ("secret", SECRET_RULE),
    ("key", SECRET_RULE),
    ("credential", SECRET_RULE),
    ("ghp_", TOKEN_RULE),
    ("gho_", TOKEN_RULE),
    ("ghu_", TOKEN_RULE),
    ("ghs_", TOKEN_RULE),
    ("ghr_", TOKEN_RULE),
    ("github_pat_", TOKEN_RULE),
    ("sk-", TOKEN_RULE),
    ("akia", TOKEN_RULE),
    ("asia", TOKEN_RULE),
    ("xox", TOKEN_RULE),
    ("eyj", TOKEN_RULE),
    ("@", EMAIL_RULE),
];
const URL_RULE: u8 = 1;
const AUTH_RULE: u8 = 2;
const SECRET_RULE: u8 = 4;
const TOKEN_RULE: u8 = 8;
const EMAIL_RULE: u8 = 16;

static MARKER_FINDER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(MARKERS.iter().map(|(m, _)| m))
        .expect("marker set is valid")
});

/// Which rules could match `text`, as a set of `*_RULE` bits.
fn rules_for(text: &str) -> u8 {
    MARKER_FINDER
        .find_overlapping_iter(text)
        .fold(0, |acc, m| acc | MARKERS[m.pattern().as_usize()].1)
}

/// Removes personal data and secrets from strings: the home directory and user name,
/// e-mail and IP addresses, URL query strings, fragments and userinfo, bearer tokens,
/// secret assignments and secret-looking keys.
///
/// ```
/// let s = eventspool::Scrubber::new(Some("/home/ada"), Some("ada"));
/// assert_eq!(
///     s.scrub("open /home/ada/x.toml for ada@example.com"),
///     "open ~/x.toml for <email>"
/// );
/// assert_eq!(s.scrub("version 1.2.3"), "version 1.2.3");
/// ```
#[derive(Debug, Clone)]
pub struct Scrubber {
    home: Option<String>,
    /// The user-name pattern and the lower-case name that must occur for it to apply.
    user: Option<(Regex, String)>,
}

impl Scrubber {
    /// A scrubber for the given home directory and user name; either may be absent.
    pub fn new(home: Option<&str>, user: Option<&str>) -> Self {
        let home = home
            .map(|h| h.trim_end_matches('/').to_string())
            .filter(|h| h.len() > 1);
        // Very short names would match ordinary words; they are left to the home rule.
        let user = user.filter(|u| u.chars().count() >= 3).and_then(|u| {
            let re = Regex::new(&format!(r"(?i)\b{}\b", regex::escape(u))).ok()?;
            Some((re, u.to_ascii_lowercase()))
        });
        Scrubber { home, user }
    }

    /// A scrubber for the current user (`HOME`, `USER`/`LOGNAME`/`USERNAME`).
    pub fn for_current_user() -> Self {
        let home =
            directories::BaseDirs::new().map(|b| b.home_dir().to_string_lossy().into_owned());
        let user = ["USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|k| std::env::var(k).ok());
        Self::new(home.as_deref(), user.as_deref())
    }

    /// Returns `text` with every personal or secret-looking part replaced by a marker
    /// (`~`, `<user>`, `<email>`, `<ip>`, `<redacted>`, `<secret>`).
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut s = Cow::Borrowed(text);
        if let Some(home) = &self.home {
            if s.contains(home.as_str()) {
                s = Cow::Owned(replace_path_prefix(&s, home));
            }
        }
        let rules = rules_for(text);
        if rules & URL_RULE != 0 {
            s = apply(s, &URL, |c| {
                let mut out = format!("{}{}{}", &c[1], &c[3], &c[4]);
                if c.get(5).is_some() {
                    out.push_str("?<redacted>");
                }
                if c.get(6).is_some() {
                    out.push_str("#<redacted>");
                }
                out
            });
        }
        if rules & AUTH_RULE != 0 {
            s = apply(s, &AUTH_SCHEME, |c| format!("{}{}<redacted>", &c[1], &c[2]));
        }
        if rules & SECRET_RULE != 0 && (text.contains('=') || text.contains(':')) {
            s = apply(s, &SECRET_ASSIGNMENT, |c| {
                format!("{}{}{}<redacted>", &c[1], &c[2], &c[3])
            });
        }
        if rules & TOKEN_RULE != 0 {
            s = apply(s, &KNOWN_TOKEN, |_| "<secret>".into());
        }
        if rules & EMAIL_RULE != 0 {
            s = apply(s, &EMAIL, |_| "<email>".into());
        }
        if text.bytes().filter(|b| *b == b'.').count() >= 3 {
            s = apply_checked(s, &IPV4, looks_like_ipv4, "<ip>");
        }
        if text.bytes().filter(|b| *b == b':').count() >= 2 {
            s = apply_checked(s, &IPV6_CANDIDATE, looks_like_ipv6, "<ip>");
        }
        if has_long_run(&s) {
            s = apply(s, &LONG_HEX, |_| "<redacted>".into());
            s = apply_checked(s, &LONG_BASE64, looks_like_base64_secret, "<redacted>");
        }
        if let Some((user, name)) = &self.user {
            if text.to_ascii_lowercase().contains(name.as_str()) {
                s = apply(s, user, |_| "<user>".into());
            }
        }
        s
    }

    /// Scrubs every string inside `value`, recursing into arrays and objects, and
    /// truncates error-message strings (see [`is_error_key`]) to [`MAX_ERROR_CHARS`].
    pub fn scrub_value(&self, key: &str, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.scrub(s) {
                    *s = clean;
                }
                if is_error_key(key) {
                    truncate_chars(s, MAX_ERROR_CHARS);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(key, v)),
            Value::Object(map) => map.iter_mut().for_each(|(k, v)| self.scrub_value(k, v)),
            _ => {}
        }
    }
}

/// Returns true if and only if a property key names an error message, whose value is
/// truncated: the key's last segment (split on `.`, `_`, `-`, `:`) is `error`, `err`,
/// `message`, `msg`, `reason`, `stack`, `backtrace` or `stacktrace` (any case). So
/// `error.message` and `exit_reason` are, `error_count` is not.
pub fn is_error_key(key: &str) -> bool {
    key.rsplit(['.', '_', '-', ':']).next().is_some_and(|seg| {
        matches!(
            seg.to_ascii_lowercase().as_str(),
            "error" | "err" | "message" | "msg" | "reason" | "stack" | "backtrace" | "stacktrace"
        )
    })
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((idx, _)) = s.char_indices().nth(max) {
        s.truncate(idx);
    }
}

fn replace_path_prefix(s: &str, home: &str) -> String {
    // Only whole path components: `/home/ada` must not turn `/home/adam` into `~m`.
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(home) {
        let after = &rest[pos + home.len()..];
        out.push_str(&rest[..pos]);
        if after
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '-' && c != '.')
        {
            out.push('~');
        } else {
            out.push_str(home);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn apply<'a>(s: Cow<'a, str>, re: &Regex, f: impl Fn(&Captures) -> String) -> Cow<'a, str> {
    if !re.is_match(&s) {
        return s;
    }
    Cow::Owned(re.replace_all(&s, |c: &Captures| f(c)).into_owned())
}

/// Replaces the matches of `re` that also pass `check(text, start, end)`.
fn apply_checked<'a>(
    s: Cow<'a, str>,
    re: &Regex,
    check: fn(&str, usize, usize) -> bool,
    marker: &str,
) -> Cow<'a, str> {
    let mut out = String::new();
    let mut last = 0;
    for m in re.find_iter(&s) {
        if check(&s, m.start(), m.end()) {
            out.push_str(&s[last..m.start()]);
            out.push_str(marker);
            last = m.end();
        }
    }
    if last == 0 {
        return s;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Returns true if and only if `s` has 32 or more word characters in a row, the
/// shortest run the long-hex and long-base64 rules look for.
fn has_long_run(s: &str) -> bool {
    let mut run = 0;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'_' | b'-' | b'/') {
            run += 1;
            if run >= 32 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn looks_like_ipv4(s: &str, start: usize, end: usize) -> bool {
    let before = s[..start].chars().next_back();
    let after = s[end..].chars().next();
    // `v1.2.3.4` and `1.2.3.4.5` are versions, not addresses.
    if before.is_some_and(|c| c == '.' || c == 'v' || c == 'V')
        || after.is_some_and(|c| c == '.' && s[end + 1..].starts_with(|d: char| d.is_ascii_digit()))
    {
        return false;
    }
    s[start..end].split('.').all(|o| o.parse::<u8>().is_ok())
}

fn looks_like_ipv6(s: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    if s[..start].chars().next_back().is_some_and(word) || s[end..].chars().next().is_some_and(word)
    {
        return false;
    }
    let cand = &s[start..end];
    let addr = cand.split('%').next().unwrap_or(cand);
    // `a::b` style paths parse as addresses too; a digit is demanded, and word boundaries are checked above.
    addr.parse::<Ipv6Addr>().is_ok()
        && addr.chars().any(|c| c.is_ascii_digit())
        && (addr.matches(':').count() >= 3 || addr.contains("::"))
}

fn looks_like_base64_secret(s: &str, start: usize, end: usize) -> bool {
    let run = &s[start..end];
    run.chars().any(|c| c.is_ascii_digit())
        && run.chars().any(|c| c.is_ascii_uppercase())
        && run.chars().any(|c| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(Some("/home/ada"), Some("ada"))
    }

    #[test]
    fn case_table() {
        let cases: &[(&str, &str)] = &[
            // home directory and user name
            ("/home/ada/src/app/main.rs", "~/src/app/main.rs"),
            ("cd /home/ada", "cd ~"),
            ("/home/adam/x", "/home/adam/x"),
            ("owner ada failed", "owner <user> failed"),
            ("Ada's files", "<user>'s files"),
            // e-mail
            (
                "contact ada.lovelace+x@example.co.uk now",
                "contact <email> now",
            ),
            // IPs
            (
                "connect to 192.168.1.20:8080 failed",
                "connect to <ip>:8080 failed",
            ),
            ("peer 2001:db8::8a2e:370:7334 gone", "peer <ip> gone"),
            ("bind [::1]:80", "bind [<ip>]:80"),
            ("fe80::1%eth0 up", "<ip> up"),
            // URLs
            (
                "GET https://api.example.com/v1/items?token=abc&x=1 failed",
                "GET https://api.example.com/v1/items?<redacted> failed",
            ),
            (
                "https://user:hunter2@git.example.com/repo.git",
                "https://git.example.com/repo.git",
            ),
            (
                "http://example.com/cb#access_token=xyz",
                "http://example.com/cb#<redacted>",
            ),
            // auth and secrets
            (
                "Authorization: Bearer abc.def-ghi_jkl",
                "Authorization: Bearer <redacted>",
            ),
            ("password=hunter22 next", "password=<redacted> next"),
            (
                "GITHUB_TOKEN: \"s3cr3tvalue\"",
                "GITHUB_TOKEN: \"<redacted>\"",
            ),
            (
                "token ghp_0123456789abcdefABCDEF0123456789abcd",
                "token <redacted>",
            ),
            (
                "using ghp_0123456789abcdefABCDEF0123456789abcd",
                "using <secret>",
            ),
            (
                "key github_pat_11ABCDEFG0123456789_abcdefghijk",
                "key <secret>",
            ),
            ("OPENAI sk-proj-abcdefghijklmnop1234", "OPENAI <secret>"),
            ("aws AKIAIOSFODNN7EXAMPLE here", "aws <secret> here"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-x",
                "jwt <secret>",
            ),
            (
                "sha 0123456789abcdef0123456789abcdef01234567",
                "sha <redacted>",
            ),
            (
                "blob aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldDEyMw==",
                "blob <redacted>",
            ),
            // left alone
            ("version 1.2.3", "version 1.2.3"),
            ("v1.2.3.4 released", "v1.2.3.4 released"),
            ("build 10.0.19045.2965.1", "build 10.0.19045.2965.1"),
            ("id 7f3a9c", "id 7f3a9c"),
            (
                "job a1b2c3d4-e5f6-4789-abcd-0123456789ab done",
                "job a1b2c3d4-e5f6-4789-abcd-0123456789ab done",
            ),
            ("failed at std::fs::read", "failed at std::fs::read"),
            ("at 12:34:56 UTC", "at 12:34:56 UTC"),
            ("npm install done", "npm install done"),
            (
                "the_quick_brown_fox_jumps_over_the_lazy_dog",
                "the_quick_brown_fox_jumps_over_the_lazy_dog",
            ),
            ("", ""),
        ];
        let s = scrubber();
        for (input, want) in cases {
            assert_eq!(s.scrub(input), *want, "input: {input:?}");
        }
    }

    #[test]
    fn clean_text_is_not_copied() {
        assert!(matches!(
            scrubber().scrub("plain words 1.2.3"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn values_are_scrubbed_recursively_and_errors_truncated() {
        let s = scrubber();
        let mut v = serde_json::json!({
            "paths": ["/home/ada/a", {"deep": "ada@example.com"}],
            "error.message": "x".repeat(5000),
            "count": 3,
        });
        s.scrub_value("", &mut v);
        assert_eq!(v["paths"][0], "~/a");
        assert_eq!(v["paths"][1]["deep"], "<email>");
        assert_eq!(
            v["error.message"].as_str().unwrap().chars().count(),
            MAX_ERROR_CHARS
        );
        assert_eq!(v["count"], 3);
    }

    #[test]
    fn error_keys() {
        for k in ["error", "error.message", "err_msg", "exit-reason", "Error"] {
            assert!(is_error_key(k), "{k}");
        }
        for k in [
            "errors_total",
            "error_count",
            "duration",
            "terror",
            "messages",
        ] {
            assert!(!is_error_key(k), "{k}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "é".repeat(1500);
        truncate_chars(&mut s, MAX_ERROR_CHARS);
        assert_eq!(s.chars().count(), MAX_ERROR_CHARS);
    }
}
