//! Privacy scrubbing of property keys and values before they are stored, and the
//! check that keeps secrets and personal data out of event names.
//!
//! The scrubber is deliberately greedy: a false positive costs a few characters of
//! telemetry, a false negative leaks a user's secret to someone else's server. It is
//! not blind, though: ordinary words, versions and identifiers that merely resemble a
//! secret are left alone, or the telemetry would be useless (see the case table in
//! the tests, which lists both directions).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{Captures, Regex};
use serde_json::{Map, Value};

/// The scrubber for the user this process runs as, built once per process (it looks
/// the user up in the account database): recording and name checks share it.
pub(crate) fn current_user() -> &'static Scrubber {
    static CURRENT_USER: LazyLock<Scrubber> = LazyLock::new(Scrubber::for_current_user);
    &CURRENT_USER
}

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
/// Webhook URLs whose path is the credential.
static WEBHOOK: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i-u)(hooks\.slack\.com/(?:services|workflows|triggers)/|discord(?:app)?\.com/api/webhooks/)[A-Za-z0-9/_\-]+",
    )
});
/// A whole PEM or PGP private-key block; an unterminated one runs to the end.
static PEM_PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?s-u)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?su:.)*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
    )
});
static AUTH_SCHEME: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i-u)\b(bearer|basic|token)([ \t]+)([A-Za-z0-9._~+/=\-]{6,})"));
/// The words that make a key secret when the key ends with one of them: `api_key`,
/// `GITHUB_TOKEN`, `db.password`, `X-Auth`, but not `token_count` or `max_tokens`.
macro_rules! secret_words {
    () => {
        r"(?:password|passwd|passphrase|passwords|pwd|secrets?|token|credentials?|auth|cookie|(?:api|access|private|secret|signing|encryption|master|ssh)[_\-]?key)"
    };
}
/// `key = value`, `key: value`, `"key": "value"`, `key='value'`, `\"key\":\"value\"`,
/// `key => value`: the key is kept, the value (its quotes kept) redacted.
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r#"(?i-u)\b([a-z0-9_.\-]*"#,
        secret_words!(),
        r#"[0-9]*)(\\?["']?[ \t]*(?::=|=>|[=:])[ \t]*)"#,
        r#"(\\?"(?u:[^"\r\n])*"|\\?'(?u:[^'\r\n])*'|\\?["']?(?u:[^ \t\r\n"'&,;])+)"#,
    ))
});
/// A command-line flag followed by its value: `--password x`, `--api-key x`.
static SECRET_FLAG: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r#"(?i-u)(--[a-z0-9_\-]*"#,
        secret_words!(),
        r#")([ \t]+)(?:"(?u:[^"\r\n])*"|'(?u:[^'\r\n])*'|(?u:[^ \t\r\n\-"'])(?u:[^ \t\r\n])*)"#,
    ))
});
/// A `Cookie:` or `Set-Cookie:` header: every cookie in it, to the end of the line.
static COOKIE_HEADER: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i-u)\b((?:set-)?cookie[ \t]*:[ \t]*)(?u:[^\r\n])+"));
static KNOWN_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?-u)(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}",
        r"|sk-[A-Za-z0-9_\-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"|xox[abposr]-[A-Za-z0-9\-]{10,}|xapp-[A-Za-z0-9\-]{10,}",
        r"|eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}",
        r"|gl(?:pat|dt|rt|ptt|soat|cbt|imt|ffct|oas|agent)-[A-Za-z0-9_\-]{20,}",
        r"|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_\-]{50,}|AIza[0-9A-Za-z_\-]{35}",
        r"|hf_[A-Za-z0-9]{30,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",
        r"|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})"
    ))
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?-u)[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
});
/// Internationalized addresses (`josé@exämple.de`); compiled only for non-ASCII text.
static EMAIL_UNICODE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"[\p{L}\p{M}\p{N}._%+\-]+@[\p{L}\p{M}\p{N}\-]+(?:\.[\p{L}\p{M}\p{N}\-]+)*\.[\p{L}\p{M}]{2,}",
    )
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u)\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"));
static IPV6_CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?-u)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%[A-Za-z0-9]+)?"));
static LONG_HEX: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u)\b[0-9a-fA-F]{32,}\b"));
/// Runs of both base64 alphabets (`+/` and `-_`); [`long_base64_ranges`] sorts them out.
static LONG_BASE64: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u)[A-Za-z0-9+/_\-]{32,}={0,2}"));

const URL_RULE: u16 = 1;
const AUTH_RULE: u16 = 1 << 1;
const SECRET_RULE: u16 = 1 << 2;
const TOKEN_RULE: u16 = 1 << 3;
const EMAIL_RULE: u16 = 1 << 4;
const PEM_RULE: u16 = 1 << 5;
const WEBHOOK_RULE: u16 = 1 << 6;
const COOKIE_RULE: u16 = 1 << 7;

/// The cheap tests before the patterns: one pass over the text finds which of these
/// occur (ASCII case-insensitively), and only the rules they belong to run.
const MARKERS: &[(&str, u16)] = &[
    ("://", URL_RULE),
    ("bearer", AUTH_RULE),
    ("basic", AUTH_RULE),
    ("token", AUTH_RULE | SECRET_RULE),
    ("password", SECRET_RULE),
    ("passwd", SECRET_RULE),
    ("passphrase", SECRET_RULE),
    ("pwd", SECRET_RULE),
    ("secret", SECRET_RULE),
    ("key", SECRET_RULE),
    ("credential", SECRET_RULE),
    ("auth", SECRET_RULE),
    ("cookie", SECRET_RULE | COOKIE_RULE),
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
    ("xapp-", TOKEN_RULE),
    ("eyj", TOKEN_RULE),
    ("glpat-", TOKEN_RULE),
    ("gldt-", TOKEN_RULE),
    ("glrt-", TOKEN_RULE),
    ("glptt-", TOKEN_RULE),
    ("glsoat-", TOKEN_RULE),
    ("glcbt-", TOKEN_RULE),
    ("glimt-", TOKEN_RULE),
    ("glffct-", TOKEN_RULE),
    ("gloas-", TOKEN_RULE),
    ("glagent-", TOKEN_RULE),
    ("npm_", TOKEN_RULE),
    ("pypi-", TOKEN_RULE),
    ("aiza", TOKEN_RULE),
    ("hf_", TOKEN_RULE),
    ("k_live_", TOKEN_RULE),
    ("k_test_", TOKEN_RULE),
    ("shpat_", TOKEN_RULE),
    ("shpca_", TOKEN_RULE),
    ("shppa_", TOKEN_RULE),
    ("shpss_", TOKEN_RULE),
    ("@", EMAIL_RULE),
    ("private key", PEM_RULE),
    ("hooks.slack.com", WEBHOOK_RULE),
    ("/api/webhooks/", WEBHOOK_RULE),
];

/// The user-name finder is a contiguous NFA, not the DFA the builder would pick for
/// so few patterns: every process builds it (to check event names), and the DFA takes
/// several times longer to build for a search barely faster on short texts. The
/// marker finder keeps the builder's choice (a DFA): it is built only once a process
/// has looked through [`BYTES_BEFORE_BUILDING`] of text, that is in a long-running
/// host, where its faster search pays (an NFA cost `track` ~3,700 instructions more).
const USER_FINDER_KIND: Option<AhoCorasickKind> = Some(AhoCorasickKind::ContiguousNFA);

static MARKER_FINDER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(MARKERS.iter().map(|(m, _)| m))
        .expect("marker set is valid")
});

/// How many bytes of text are looked through marker by marker before the automaton is
/// built. Building it costs about 600,000 instructions (a fifth of a whole `spool
/// track` process); looking costs a few instructions a byte. A short-lived process
/// looks at a few hundred bytes (an event name, some property values) and never builds
/// it; a long-running host builds it once its first events are recorded.
const BYTES_BEFORE_BUILDING: u32 = 16 * 1024;

/// The longest text looked through marker by marker.
const SHORT_TEXT: usize = 256;

/// Which bytes start a marker (markers are lower-case ASCII): most positions of a text
/// are passed over after one table look-up.
const STARTS_A_MARKER: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < MARKERS.len() {
        t[MARKERS[i].0.as_bytes()[0] as usize] = true;
        i += 1;
    }
    t
};

/// Which rules could match `text`, as a set of `*_RULE` bits.
fn rules_for(text: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static LOOKED: AtomicU32 = AtomicU32::new(0);
    if text.len() <= SHORT_TEXT && LOOKED.load(Ordering::Relaxed) < BYTES_BEFORE_BUILDING {
        LOOKED.fetch_add(text.len() as u32, Ordering::Relaxed);
        return rules_for_short(text);
    }
    rules_for_automaton(text)
}

/// [`rules_for`] without the automaton: the text folded to lower case (ASCII only, as
/// the automaton matches), and at each position that starts a marker, every marker
/// compared there.
fn rules_for_short(text: &str) -> u16 {
    let mut buf = [0u8; SHORT_TEXT];
    let lower = &mut buf[..text.len()];
    lower.copy_from_slice(text.as_bytes());
    lower.make_ascii_lowercase();
    let lower: &[u8] = lower;
    let mut rules = 0;
    for (i, b) in lower.iter().enumerate() {
        if !STARTS_A_MARKER[*b as usize] {
            continue;
        }
        for (m, rule) in MARKERS {
            if lower[i..].starts_with(m.as_bytes()) {
                rules |= rule;
            }
        }
    }
    rules
}

/// [`rules_for`] with the automaton, built on first use.
fn rules_for_automaton(text: &str) -> u16 {
    MARKER_FINDER
        .find_overlapping_iter(text)
        .fold(0, |acc, m| acc | MARKERS[m.pattern().as_usize()].1)
}

/// User names that are also ordinary words (or the names of services, CI runners and
/// container images): scrubbing them wherever they occur would mangle ordinary text
/// (`USER=runner` on GitHub Actions, `root` in containers), so they are scrubbed only
/// where they name a home directory (`/home/runner/`, `/Users/admin`). Names shorter
/// than three characters and all-digit names (a uid without an account) are treated
/// the same way.
const COMMON_NAMES: &[&str] = &[
    "admin",
    "administrator",
    "app",
    "build",
    "builder",
    "buildkite-agent",
    "centos",
    "ci",
    "circleci",
    "codespace",
    "daemon",
    "data",
    "debian",
    "default",
    "deploy",
    "dev",
    "developer",
    "docker",
    "ec2-user",
    "fedora",
    "git",
    "gitlab-runner",
    "guest",
    "home",
    "jenkins",
    "local",
    "mysql",
    "node",
    "nobody",
    "nonexistent",
    "opc",
    "owner",
    "postgres",
    "postgresql",
    "root",
    "runner",
    "runneradmin",
    "server",
    "service",
    "system",
    "temp",
    "test",
    "tester",
    "tmp",
    "travis",
    "ubuntu",
    "user",
    "vagrant",
    "vscode",
    "web",
    "worker",
    "www",
    "www-data",
];

/// Returns true if and only if `name` is scrubbed only as a home directory's name,
/// not as a word: see [`COMMON_NAMES`].
fn is_common_name(name: &str) -> bool {
    name.chars().count() < 3
        || name.chars().all(|c| c.is_ascii_digit())
        || COMMON_NAMES.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// The user names a scrubber looks for, found in one pass.
#[derive(Debug, Clone)]
struct UserNames {
    finder: AhoCorasick,
    /// Per pattern: true if the name is scrubbed as a word anywhere, false if only as
    /// the directory under `home`/`Users`.
    anywhere: Vec<bool>,
}

impl UserNames {
    fn new(names: Vec<String>) -> Option<Self> {
        let mut seen = HashSet::new();
        let names: Vec<String> = names
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty() && !n.contains(['/', '\\']))
            .filter(|n| seen.insert(n.to_ascii_lowercase()))
            .collect();
        if names.is_empty() {
            return None;
        }
        let finder = AhoCorasick::builder()
            .kind(USER_FINDER_KIND)
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&names)
            .ok()?;
        let anywhere = names.iter().map(|n| !is_common_name(n)).collect();
        Some(UserNames { finder, anywhere })
    }

    fn scrub<'a>(&self, s: Cow<'a, str>) -> Cow<'a, str> {
        let mut out = String::new();
        let mut last = 0;
        for m in self.finder.find_iter(s.as_ref()) {
            let (start, end) = (m.start(), m.end());
            let ok = if self.anywhere[m.pattern().as_usize()] {
                is_whole_word(&s, start, end)
            } else {
                is_home_dir_name(&s, start, end)
            };
            if ok {
                out.push_str(&s[last..start]);
                out.push_str("<user>");
                last = end;
            }
        }
        if last == 0 {
            return s;
        }
        out.push_str(&s[last..]);
        Cow::Owned(out)
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Returns true if and only if `s[start..end]` is neither preceded nor followed by a
/// word character, as a regex `\b…\b` around a name of word characters would be.
fn is_whole_word(s: &str, start: usize, end: usize) -> bool {
    !s[..start].chars().next_back().is_some_and(is_word_char)
        && !s[end..].chars().next().is_some_and(is_word_char)
}

/// Returns true if and only if `s[start..end]` is a whole path component right under
/// a `home` or `Users` directory: `/home/runner/x`, `C:\Users\admin`, `/Users/ci`.
fn is_home_dir_name(s: &str, start: usize, end: usize) -> bool {
    let before = &s[..start];
    // One separator or several (`C:\\Users\\ada` in a JSON string).
    let parent = before.trim_end_matches(['/', '\\']);
    if parent.len() == before.len() {
        return false;
    }
    let parent = parent.rsplit(['/', '\\']).next().unwrap_or(parent);
    (parent.eq_ignore_ascii_case("home") || parent.eq_ignore_ascii_case("users"))
        && !s[end..]
            .chars()
            .next()
            .is_some_and(|c| is_word_char(c) || c == '-' || c == '.')
}

/// Removes personal data and secrets from strings: the home directory and user name,
/// e-mail and IP addresses, URL query strings, fragments and userinfo, webhook paths,
/// bearer tokens, cookies, secret assignments and flags, private-key blocks and
/// secret-looking keys.
///
/// ```text
/// let s = eventspool::Scrubber::new(Some("/home/ada"), Some("ada"));
/// assert_eq!(
///     s.scrub("open /home/ada/x.toml for ada@example.com"),
///     "open ~/x.toml for <email>"
/// );
/// assert_eq!(s.scrub("version 1.2.3.4"), "version 1.2.3.4");
/// ```
#[derive(Debug, Clone)]
pub struct Scrubber {
    home: Option<String>,
    /// For a Windows home (`C:\Users\ada`, `\\server\home\ada`): a pattern that
    /// matches it in any case and with `\`, `/` or a JSON-escaped `\\` between
    /// components, as Windows itself resolves all of them to the same directory.
    windows_home: Option<Regex>,
    users: Option<UserNames>,
}

/// Returns true if and only if `home` is a Windows path: a drive letter or a UNC prefix.
fn is_windows_path(home: &str) -> bool {
    let b = home.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') || home.starts_with(r"\\")
}

/// The pattern [`Scrubber`] uses for a Windows home directory.
fn windows_home_pattern(home: &str) -> Option<Regex> {
    let parts: Vec<String> = home
        .split(['\\', '/'])
        .filter(|p| !p.is_empty())
        .map(regex::escape)
        .collect();
    if parts.is_empty() {
        return None;
    }
    let sep = r"[\\/]+";
    let lead = if home.starts_with(['\\', '/']) {
        sep
    } else {
        ""
    };
    Regex::new(&format!("(?i){lead}{}", parts.join(sep))).ok()
}

impl Scrubber {
    /// A scrubber for the given home directory and user name; either may be absent.
    /// The home directory's last component counts as a user name too.
    ///
    /// A user name that is a common word (`runner`, `root`, `admin`, `ubuntu`, …),
    /// shorter than three characters, or all digits is scrubbed only where it names a
    /// home directory (`/home/runner/`, `/Users/ci`); any other name wherever it
    /// occurs as a word.
    #[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
    pub fn new(home: Option<&str>, user: Option<&str>) -> Self {
        Self::with_user_names(home, user.map(str::to_string).into_iter().collect())
    }

    fn with_user_names(home: Option<&str>, mut names: Vec<String>) -> Self {
        let home = home
            .map(|h| h.trim_end_matches(['/', '\\']).to_string())
            .filter(|h| h.len() > 1);
        if let Some(last) = home.as_deref().and_then(|h| h.rsplit(['/', '\\']).next()) {
            names.push(last.to_string());
        }
        let windows_home = home
            .as_deref()
            .filter(|h| is_windows_path(h))
            .and_then(windows_home_pattern);
        Scrubber {
            home,
            windows_home,
            users: UserNames::new(names),
        }
    }

    /// A scrubber for the current user: the home directory (`HOME`), the user names in
    /// `USER`, `LOGNAME` and `USERNAME`, or if none is set (cron, systemd services,
    /// containers) the account database's name for this process's user, and the home
    /// directory's last component.
    pub fn for_current_user() -> Self {
        let home =
            directories::BaseDirs::new().map(|b| b.home_dir().to_string_lossy().into_owned());
        let mut names: Vec<String> = ["USER", "LOGNAME", "USERNAME"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
            .collect();
        if names.is_empty() {
            names.extend(account_name());
        }
        Self::with_user_names(home.as_deref(), names)
    }

    /// Returns `text` with every personal or secret-looking part replaced by a marker
    /// (`~`, `<user>`, `<email>`, `<ip>`, `<redacted>`, `<secret>`).
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut s = Cow::Borrowed(text);
        if let Some(re) = &self.windows_home {
            s = replace_windows_home(s, re);
        } else if let Some(home) = &self.home {
            if s.contains(home.as_str()) {
                s = Cow::Owned(replace_path_prefix(&s, home));
            }
        }
        let rules = rules_for(text);
        if rules & PEM_RULE != 0 {
            s = apply(s, &PEM_PRIVATE_KEY, |_| Some("<secret>".into()));
        }
        if rules & URL_RULE != 0 {
            s = apply(s, &URL, |c| {
                let mut out = format!("{}{}{}", &c[1], &c[3], &c[4]);
                if c.get(5).is_some() {
                    out.push_str("?<redacted>");
                }
                if c.get(6).is_some() {
                    out.push_str("#<redacted>");
                }
                Some(out)
            });
        }
        if rules & WEBHOOK_RULE != 0 {
            s = apply(s, &WEBHOOK, |c| Some(format!("{}<secret>", &c[1])));
        }
        if rules & AUTH_RULE != 0 {
            s = apply(s, &AUTH_SCHEME, |c| {
                looks_like_credential(&c[3]).then(|| format!("{}{}<redacted>", &c[1], &c[2]))
            });
        }
        if rules & COOKIE_RULE != 0 && text.contains(':') {
            s = apply(s, &COOKIE_HEADER, |c| Some(format!("{}<redacted>", &c[1])));
        }
        if rules & SECRET_RULE != 0 {
            if text.contains(['=', ':']) {
                s = apply(s, &SECRET_ASSIGNMENT, |c| {
                    Some(format!(
                        "{}{}{}",
                        &c[1],
                        &c[2],
                        redact_keeping_quotes(&c[3])
                    ))
                });
            }
            if text.contains("--") {
                s = apply(s, &SECRET_FLAG, |c| {
                    Some(format!("{}{}<redacted>", &c[1], &c[2]))
                });
            }
        }
        self.scrub_identifying(s, text, rules)
    }

    /// The rules that also apply to event names: known tokens, e-mail and IP
    /// addresses, long hex and base64 runs, user names. `text` is the original input,
    /// whose byte counts gate the patterns.
    fn scrub_identifying<'a>(&self, mut s: Cow<'a, str>, text: &str, rules: u16) -> Cow<'a, str> {
        if rules & TOKEN_RULE != 0 {
            s = replace_found(s, &KNOWN_TOKEN, known_token_range, "<secret>");
        }
        if rules & EMAIL_RULE != 0 {
            s = apply(s, &EMAIL, |_| Some("<email>".into()));
            if !s.is_ascii() {
                s = apply(s, &EMAIL_UNICODE, |_| Some("<email>".into()));
            }
        }
        if text.bytes().filter(|b| *b == b'.').count() >= 3 {
            s = replace_found(s, &IPV4, ipv4_range, "<ip>");
        }
        if text.bytes().filter(|b| *b == b':').count() >= 2 {
            s = replace_found(s, &IPV6_CANDIDATE, ipv6_range, "<ip>");
        }
        if has_long_run(&s) {
            s = apply(s, &LONG_HEX, |_| Some("<redacted>".into()));
            s = replace_long_base64(s);
        }
        if let Some(users) = &self.users {
            s = users.scrub(s);
        }
        s
    }

    /// Returns what an event name holds that must not be sent (a token, an address, a
    /// long hex or base64 run, the user's name) and the name with it replaced, or
    /// `None` if the name is clean. Names are sent unscrubbed, so such a name is
    /// refused rather than mangled.
    pub(crate) fn name_leak(&self, name: &str) -> Option<(&'static str, String)> {
        let rules = rules_for(name);
        let scrubbed = self.scrub_identifying(Cow::Borrowed(name), name, rules);
        if scrubbed == name {
            return None;
        }
        let what = if scrubbed.contains("<secret>") {
            "a secret token"
        } else if scrubbed.contains("<ip>") {
            "an IP address"
        } else if scrubbed.contains("<email>") {
            "an e-mail address"
        } else if scrubbed.contains("<user>") {
            "the user's name"
        } else {
            "a long hex or base64 string (a key or secret)"
        };
        Some((what, scrubbed.into_owned()))
    }

    /// Scrubs every string inside `value`, keys of nested objects included, recursing
    /// into arrays and objects, and truncates error-message strings (see
    /// [`is_error_key`]) to [`MAX_ERROR_CHARS`].
    pub fn scrub_value(&self, key: &str, value: &mut Value) {
        self.scrub_value_changed(key, value);
    }

    /// [`Scrubber::scrub_value`], returning true if and only if it changed a string
    /// (a cut error message counts) or a key.
    fn scrub_value_changed(&self, key: &str, value: &mut Value) -> bool {
        match value {
            Value::String(s) => self.scrub_string_changed(s, is_error_key(key)),
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |c, v| self.scrub_value_changed(key, v) | c),
            Value::Object(map) => self.scrub_properties_changed(map, |_| false),
            _ => false,
        }
    }

    /// Scrubs a string (cutting it as an error message if `error_key`), returning
    /// true if and only if that changed it.
    fn scrub_string_changed(&self, s: &mut String, error_key: bool) -> bool {
        let mut changed = false;
        if let Cow::Owned(clean) = self.scrub(s) {
            changed = clean != *s;
            *s = clean;
        }
        if error_key {
            let before = s.len();
            truncate_chars(s, MAX_ERROR_CHARS);
            changed |= s.len() != before;
        }
        changed
    }

    /// The value of a declared `string` or `string_list` property, scrubbed (a string,
    /// or each string of a list; anything else is left), returning true if and only
    /// if that changed it. `error_key`: the property's name is an error message's.
    pub(crate) fn scrub_declared(&self, value: &mut Value, error_key: bool) -> bool {
        match value {
            Value::String(s) => self.scrub_string_changed(s, error_key),
            Value::Array(items) => items.iter_mut().fold(false, |c, v| match v {
                Value::String(s) => self.scrub_string_changed(s, error_key) | c,
                _ => c,
            }),
            _ => false,
        }
    }

    /// Scrubs an object's keys and values, except the entries `is_raw` names, which
    /// are kept exactly as given, key and value (a host's explicit
    /// `Event::unscrubbed_property`).
    ///
    /// A key the scrubber changes is replaced by its scrubbed form. If that form is
    /// already taken (two e-mail addresses both become `<email>`), it gets the first
    /// free suffix `#2`, `#3`, … in the object's order, so no value is lost and the
    /// result is deterministic; keys the scrubber leaves alone keep their names.
    pub fn scrub_properties(&self, map: &mut Map<String, Value>, is_raw: impl Fn(&str) -> bool) {
        self.scrub_properties_changed(map, is_raw);
    }

    /// [`Scrubber::scrub_properties_changed`] for an object whose keys, nested ones
    /// too, are all a catalog's declared names (an event the catalog accepted): the
    /// values are scrubbed and the keys kept, as the catalog's own text. Returns true
    /// if and only if it changed a value.
    /// Not generic in `is_raw`, as it recurses.
    pub(crate) fn scrub_values_changed(
        &self,
        map: &mut Map<String, Value>,
        is_raw: &dyn Fn(&str) -> bool,
    ) -> bool {
        let mut changed = false;
        for (k, v) in map.iter_mut() {
            if is_raw(k) {
                continue;
            }
            changed |= match v {
                Value::Object(inner) => self.scrub_values_changed(inner, &|_| false),
                other => self.scrub_value_changed(k, other),
            };
        }
        changed
    }

    /// [`Scrubber::scrub_properties`], returning true if and only if it changed a key
    /// or a value (the catalog cuts strings to their `max_length` only then, or when
    /// one was long to begin with).
    pub(crate) fn scrub_properties_changed(
        &self,
        map: &mut Map<String, Value>,
        is_raw: impl Fn(&str) -> bool,
    ) -> bool {
        let needs_rename = map
            .keys()
            .any(|k| !is_raw(k) && matches!(self.scrub(k), Cow::Owned(c) if c != *k));
        if needs_rename {
            let unchanged: HashSet<String> = map
                .keys()
                .filter(|k| is_raw(k) || self.scrub(k) == k.as_str())
                .cloned()
                .collect();
            let old = std::mem::take(map);
            for (k, v) in old {
                if unchanged.contains(&k) {
                    map.insert(k, v);
                    continue;
                }
                let base = self.scrub(&k).into_owned();
                let mut name = base.clone();
                let mut n = 2;
                while unchanged.contains(&name) || map.contains_key(&name) {
                    name = format!("{base}#{n}");
                    n += 1;
                }
                map.insert(name, v);
            }
        }
        let mut changed = needs_rename;
        for (k, v) in map.iter_mut() {
            if !is_raw(k) {
                changed |= self.scrub_value_changed(k, v);
            }
        }
        changed
    }
}

/// The account database's name for this process's effective user, if it has one.
fn account_name() -> Option<String> {
    crate::sys::account_name()
}

/// Returns true if and only if a property key names an error message, whose value is
/// truncated: the key's last segment (split on `.`, `_`, `-`, `:`) is `error`, `err`,
/// `message`, `msg`, `reason`, `stack`, `backtrace` or `stacktrace` (any case). So
/// `error.message` and `exit_reason` are, `error_count` is not.
pub fn is_error_key(key: &str) -> bool {
    const WORDS: [&str; 8] = [
        "error",
        "err",
        "message",
        "msg",
        "reason",
        "stack",
        "backtrace",
        "stacktrace",
    ];
    // Compared in place, not lowercased into a new string: this runs for every
    // string value recorded.
    key.rsplit(['.', '_', '-', ':'])
        .next()
        .is_some_and(|seg| WORDS.iter().any(|w| seg.eq_ignore_ascii_case(w)))
}

/// Cuts `s` to at most `max` characters, the ellipsis included: a string that was cut
/// ends in `…`, so a reader sees it was. Error messages and a catalog's `max_length`
/// are cut this way.
pub(crate) fn truncate_chars(s: &mut String, max: usize) {
    // No more bytes than `max` is no more characters: most strings stop here.
    if s.len() <= max {
        return;
    }
    if s.char_indices().nth(max).is_some() {
        let keep = max.saturating_sub(1);
        let idx = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
        s.truncate(idx);
        if max > 0 {
            s.push('…');
        }
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

/// Replaces each whole-component match of a Windows home pattern with `~`
/// (`C:\Users\ada` must not turn `C:\Users\adam` into `~m`).
fn replace_windows_home<'a>(s: Cow<'a, str>, re: &Regex) -> Cow<'a, str> {
    let mut out = String::new();
    let mut last = 0;
    for m in re.find_iter(&s) {
        let whole = s[m.end()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '-' && c != '.');
        if whole {
            out.push_str(&s[last..m.start()]);
            out.push('~');
            last = m.end();
        }
    }
    if last == 0 {
        return s;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Replaces each match of `re` for which `f` returns a replacement; borrowed text
/// stays borrowed when nothing is replaced.
fn apply<'a>(s: Cow<'a, str>, re: &Regex, f: impl Fn(&Captures) -> Option<String>) -> Cow<'a, str> {
    let mut out = String::new();
    let mut last = 0;
    let mut changed = false;
    for c in re.captures_iter(&s) {
        let Some(m) = c.get(0) else { continue };
        if let Some(r) = f(&c) {
            out.push_str(&s[last..m.start()]);
            out.push_str(&r);
            last = m.end();
            changed = true;
        }
    }
    if !changed {
        return s;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Replaces, for each match of `re`, the range `range(text, start, end)` returns (a
/// part of the match) with `marker`; `None` keeps the match.
fn replace_found<'a>(
    s: Cow<'a, str>,
    re: &Regex,
    range: fn(&str, usize, usize) -> Option<(usize, usize)>,
    marker: &str,
) -> Cow<'a, str> {
    let mut out = String::new();
    let mut last = 0;
    let mut changed = false;
    for m in re.find_iter(&s) {
        if let Some((start, end)) = range(&s, m.start(), m.end()) {
            out.push_str(&s[last..start]);
            out.push_str(marker);
            last = end;
            changed = true;
        }
    }
    if !changed {
        return s;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// `"x"` → `"<redacted>"`, `\"x\"` → `\"<redacted>\"`, `'x` → `'<redacted>`, `x` →
/// `<redacted>`: the quotes stay so the text around keeps its shape.
fn redact_keeping_quotes(value: &str) -> String {
    let open_len = match value.as_bytes() {
        [b'\\', b'"' | b'\'', ..] => 2,
        [b'"' | b'\'', ..] => 1,
        _ => 0,
    };
    let open = &value[..open_len];
    let close = match open.chars().last() {
        Some(q) if value.len() > open_len && value.ends_with(q) => {
            if open_len == 2 && value[..value.len() - 1].ends_with('\\') {
                open
            } else {
                &open[open_len - 1..]
            }
        }
        _ => "",
    };
    format!("{open}<redacted>{close}")
}

/// Returns true if and only if the word after `Bearer`, `Basic` or `Token` looks like
/// a credential rather than prose (`basic configuration`, `token expired`): it holds
/// a digit, one of `+/=_~`, a `.` inside it, mixed case, or is 20 characters or more.
fn looks_like_credential(word: &str) -> bool {
    let word = word.trim_end_matches(['.', '-']);
    word.len() >= 20
        || word
            .bytes()
            .any(|b| b.is_ascii_digit() || b"+/=_~.".contains(&b))
        || (word.bytes().skip(1).any(|b| b.is_ascii_uppercase())
            && word.bytes().any(|b| b.is_ascii_lowercase()))
}

/// A known token is one only at the start of a word, where `_`, `-` and `.` start a
/// word too (`deploy_ghp_…`); an `sk-` token must hold a digit, so `sk-learn-…`
/// names are left alone.
fn known_token_range(s: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    if s[..start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric())
    {
        return None;
    }
    let token = &s[start..end];
    if token.starts_with("sk-") && !token.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((start, end))
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

/// A dotted quad is an IPv4 address when it is one in canonical form (four octets of
/// 0–255 without leading zeros: `01.02.03.04` and `300.1.2.3` are not), stands on its
/// own (no digit, `digit.` or `.digit` glued to either end: `1.2.3.4.5` is a version,
/// but `host_10.1.2.3`, `conn.10.1.2.3` and `ip=10.1.2.3` are addresses), and is not
/// in a version context:
/// right after `v` (`v1.2.3.4`) or after a version word such as `version`,
/// `release` or `build` and separators (`version 1.2.3.4`, `release-1.2.3.4`).
fn ipv4_range(s: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let before = &s[..start];
    let after = &s[end..];
    let glued_before = before.strip_suffix('.').unwrap_or(before);
    if glued_before.ends_with(|c: char| c.is_ascii_digit())
        || after.starts_with(|c: char| c.is_ascii_digit())
        || (after.starts_with('.') && after[1..].starts_with(|d: char| d.is_ascii_digit()))
        || in_version_context(before)
    {
        return None;
    }
    s[start..end].parse::<Ipv4Addr>().ok()?;
    Some((start, end))
}

fn in_version_context(before: &str) -> bool {
    let trimmed = before.trim_end_matches([' ', '\t', ':', '=', '_', '-']);
    let word_start = trimmed
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_ascii_alphabetic())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &trimmed[word_start..];
    // `v` counts only glued to the number: `v1.2.3.4`, not `v 1.2.3.4`.
    (word.eq_ignore_ascii_case("v") && trimmed.len() == before.len())
        || [
            "version", "ver", "release", "rel", "build", "rev", "revision", "firmware", "fw",
            "kernel", "update", "patch",
        ]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// An IPv6 candidate is an address when it parses as one, holds a digit and either
/// `::` or three colons, and is not glued to letters or digits. A single colon at
/// either end belongs to the text around it (`addr:2001:db8::1`, `…::1: refused`).
fn ipv6_range(s: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let (mut a, mut b) = (start, end);
    if s[a..b].starts_with(':') && !s[a..b].starts_with("::") {
        a += 1;
    }
    if s[a..b].ends_with(':') && !s[a..b].ends_with("::") {
        b -= 1;
    }
    if a >= b
        || s[..a]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
        || s[b..].chars().next().is_some_and(char::is_alphanumeric)
    {
        return None;
    }
    let cand = &s[a..b];
    let addr = cand.split('%').next().unwrap_or(cand);
    // `a::b` style paths parse as addresses too; a digit is demanded, and word
    // boundaries are checked above.
    (addr.parse::<Ipv6Addr>().is_ok()
        && addr.chars().any(|c| c.is_ascii_digit())
        && (addr.matches(':').count() >= 3 || addr.contains("::")))
    .then_some((a, b))
}

fn replace_long_base64(s: Cow<'_, str>) -> Cow<'_, str> {
    let mut ranges = Vec::new();
    for m in LONG_BASE64.find_iter(&s) {
        long_base64_ranges(m.as_str(), m.start(), &mut ranges);
    }
    if ranges.is_empty() {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (start, end) in ranges {
        out.push_str(&s[last..start]);
        out.push_str("<redacted>");
        last = end;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// The parts of a run of base64 characters that look like a secret, as byte ranges
/// offset by `base`. A run with `/` is one value only if it uses the standard
/// alphabet alone (no `-` or `_`, which would make it a path) and does not start
/// with `/` (an absolute path); otherwise each `/`-separated piece is judged alone.
fn long_base64_ranges(run: &str, base: usize, out: &mut Vec<(usize, usize)>) {
    let whole = !run.contains('/') || (!run.starts_with('/') && !run.contains(['-', '_']));
    if whole && looks_random(run) {
        out.push((base, base + run.len()));
        return;
    }
    if run.contains('/') {
        let mut offset = 0;
        for piece in run.split('/') {
            if piece.len() >= 32 && looks_random(piece) {
                out.push((base + offset, base + offset + piece.len()));
            }
            offset += piece.len() + 1;
        }
    }
}

/// Returns true if and only if a long run reads as random data rather than an
/// identifier: it mixes digits with upper and lower case, changes character class
/// (lower, upper, digit, symbol) at 40% of its positions or more, and runs of three or
/// more lower-case letters (words) cover less than 55% of it. Random base64 changes
/// class at about two positions in three and rarely has words;
/// `MyVeryLongComponentName2ForTheDashboardView` changes at 43% but is 65% words.
fn looks_random(run: &str) -> bool {
    let run = run.trim_end_matches('=');
    let bytes = run.as_bytes();
    if bytes.len() < 2
        || !bytes.iter().any(u8::is_ascii_digit)
        || !bytes.iter().any(u8::is_ascii_uppercase)
        || !bytes.iter().any(u8::is_ascii_lowercase)
    {
        return false;
    }
    let class = |b: u8| match b {
        b'a'..=b'z' => 0,
        b'A'..=b'Z' => 1,
        b'0'..=b'9' => 2,
        _ => 3,
    };
    let switches = bytes
        .windows(2)
        .filter(|w| class(w[0]) != class(w[1]))
        .count();
    let mut wordy = 0;
    let mut lower_run = 0;
    for &b in bytes.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_lowercase() {
            lower_run += 1;
        } else {
            if lower_run >= 3 {
                wordy += lower_run;
            }
            lower_run = 0;
        }
    }
    switches * 10 >= (bytes.len() - 1) * 4 && wordy * 100 < bytes.len() * 55
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(Some("/home/ada"), Some("ada"))
    }

    /// The marker-by-marker look a short-lived process uses finds exactly the rules
    /// the automaton finds: every marker alone, in any ASCII case, inside other text,
    /// overlapping, next to non-ASCII text, and texts holding none.
    #[test]
    fn short_texts_find_the_same_rules_without_the_automaton() {
        let mut texts: Vec<String> = vec![
            String::new(),
            "cli_invoked".into(),
            "build --release".into(),
            "Bearer abc.def".into(),
            "see https://x.example/a?token=1".into(),
            "pRiVaTe KeY".into(),
            "ghp_ghs_ghu_".into(),
            "tokenpasswordsecret".into(),
            "ünïcödé @ Größe sk-".into(),
            "hooks.slack.com/api/webhooks/".into(),
            "x".repeat(SHORT_TEXT),
        ];
        for (m, _) in MARKERS {
            texts.push(m.to_string());
            texts.push(m.to_ascii_uppercase());
            texts.push(format!("é{}é", m.to_ascii_uppercase()));
            texts.push(format!("a{m}b{m}"));
            // One byte short of the marker: no match.
            texts.push(m[..m.len() - 1].to_string());
        }
        for t in texts.iter().filter(|t| t.len() <= SHORT_TEXT) {
            assert_eq!(rules_for_short(t), rules_for_automaton(t), "{t:?}");
        }
        // Beyond a short text, `rules_for` asks the automaton.
        let long = format!("{}Bearer", "x".repeat(SHORT_TEXT));
        assert_eq!(rules_for(&long), AUTH_RULE);
    }

    const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yZ6D4kQ3Lz7HvS9uE8pU7KcYq5p2O3vXbM1R4sW0t8VjZ\n-----END RSA PRIVATE KEY-----";

    /// Personal data and secrets that must be replaced, and ordinary text that must
    /// come through untouched: the scrubber is judged in both directions.
    #[test]
    fn case_table() {
        let pem_in_text = format!("key: {PEM} trailing");
        let cases: &[(&str, &str)] = &[
            // home directory and user name
            ("/home/ada/src/app/main.rs", "~/src/app/main.rs"),
            ("cd /home/ada", "cd ~"),
            ("/home/adam/x", "/home/adam/x"),
            ("owner ada failed", "owner <user> failed"),
            ("Ada's files", "<user>'s files"),
            ("/Users/ada/Library", "/Users/<user>/Library"),
            ("ada_x and xada stay", "ada_x and xada stay"),
            // e-mail
            (
                "contact ada.lovelace+x@example.co.uk now",
                "contact <email> now",
            ),
            ("schreib josé.müller@exämple.de", "schreib <email>"),
            ("用户@例子.广告 ok", "<email> ok"),
            // IPs
            (
                "connect to 192.168.1.20:8080 failed",
                "connect to <ip>:8080 failed",
            ),
            ("peer 2001:db8::8a2e:370:7334 gone", "peer <ip> gone"),
            ("bind [::1]:80", "bind [<ip>]:80"),
            ("fe80::1%eth0 up", "<ip> up"),
            ("host_10.1.2.3 down", "host_<ip> down"),
            ("conn.10.1.2.3 down", "conn.<ip> down"),
            ("10.1.2.3.4.5.6.7", "10.1.2.3.4.5.6.7"),
            ("ip=10.1.2.3", "ip=<ip>"),
            ("addr:2001:db8::1 refused", "addr:<ip> refused"),
            ("peer 2001:db8::1: refused", "peer <ip>: refused"),
            ("host_2001:db8::1", "host_<ip>"),
            ("ssh root@10.0.0.7", "ssh root@<ip>"),
            // URLs and webhooks
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
            (
                "post https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/abcdefghijklmnopqrstuvwx failed",
                "post https://hooks.slack.com/services/<secret> failed",
            ),
            (
                "https://discord.com/api/webhooks/123456789012345678/AbCdEf-gh_ij",
                "https://discord.com/api/webhooks/<secret>",
            ),
            // auth headers, cookies
            (
                "Authorization: Bearer abc.def-ghi_jkl",
                "Authorization: Bearer <redacted>",
            ),
            (
                "Authorization: Basic dXNlcjpwYXNz",
                "Authorization: Basic <redacted>",
            ),
            ("Cookie: session=abc123; theme=dark", "Cookie: <redacted>"),
            (
                "Set-Cookie: sid=31d4d96e407aad42; Path=/; Secure",
                "Set-Cookie: <redacted>",
            ),
            // secret assignments: every quoting style
            ("password=hunter22 next", "password=<redacted> next"),
            (
                "GITHUB_TOKEN: \"s3cr3tvalue\"",
                "GITHUB_TOKEN: \"<redacted>\"",
            ),
            (
                r#"{"password": "hunter 2", "user": "x"}"#,
                r#"{"password": "<redacted>", "user": "x"}"#,
            ),
            (
                r#"{\"password\":\"hunter 2\",\"n\":1}"#,
                r#"{\"password\":\"<redacted>\",\"n\":1}"#,
            ),
            ("password='x y'", "password='<redacted>'"),
            ("password=\"truncat", "password=\"<redacted>"),
            ("pwd=hunter2", "pwd=<redacted>"),
            ("private_key=abc123", "private_key=<redacted>"),
            ("auth=abc123 ok", "auth=<redacted> ok"),
            ("X-Api-Key: abc123", "X-Api-Key: <redacted>"),
            ("apiKey: abc123", "apiKey: <redacted>"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG",
                "aws_secret_access_key = <redacted>",
            ),
            (":password => 'x'", ":password => '<redacted>'"),
            ("db.password2=x", "db.password2=<redacted>"),
            // command-line flags
            (
                "mysql --password hunter2 --verbose",
                "mysql --password <redacted> --verbose",
            ),
            ("tool --api-key abc123", "tool --api-key <redacted>"),
            ("tool --api-key=abc123", "tool --api-key=<redacted>"),
            ("login --token \"a b\" now", "login --token <redacted> now"),
            // known tokens
            (
                "token ghp_0123456789abcdefABCDEF0123456789abcd",
                "token <redacted>",
            ),
            (
                "using ghp_0123456789abcdefABCDEF0123456789abcd",
                "using <secret>",
            ),
            (
                "deploy_ghp_0123456789abcdefABCDEF0123456789abcd",
                "deploy_<secret>",
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
            ("gitlab glpat-xYz12AbCdEfGhIjKlMnO", "gitlab <secret>"),
            (
                "npm npm_abcdefghijklmnopqrstuvwxyz0123456789",
                "npm <secret>",
            ),
            ("stripe sk_live_abcdefghijklmnop1234", "stripe <secret>"),
            ("hf hf_abcdefghijklmnopqrstuvwxyzABCDEF", "hf <secret>"),
            (
                "google AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
                "google <secret>",
            ),
            ("slack xoxb-1234567890-abcdefghij", "slack <secret>"),
            // private keys
            (PEM, "<secret>"),
            (pem_in_text.as_str(), "key: <secret> trailing"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA (cut off",
                "<secret>",
            ),
            // long hex and base64
            (
                "sha 0123456789abcdef0123456789abcdef01234567",
                "sha <redacted>",
            ),
            (
                "blob aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldDEyMw==",
                "blob <redacted>",
            ),
            (
                "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end",
                "secret <redacted> end",
            ),
            (
                "got T+UBXq8CQ+XrzDDvtX4ej7W/i/FMTx3G7W1bwcD4 back",
                "got <redacted> back",
            ),
            (
                "/api/tokens/Xq8CQ_XrzDDvtX4ej7W3iuFMTx3G7W1bwcD4",
                "/api/tokens/<redacted>",
            ),
            // left alone
            ("version 1.2.3", "version 1.2.3"),
            ("version 1.2.3.4", "version 1.2.3.4"),
            ("über 10.1.2.3", "über <ip>"),
            ("Version: 10.0.1.2", "Version: 10.0.1.2"),
            ("release-1.2.3.4 out", "release-1.2.3.4 out"),
            ("v1.2.3.4 released", "v1.2.3.4 released"),
            ("build 10.0.19045.2965.1", "build 10.0.19045.2965.1"),
            ("octets 01.02.03.04", "octets 01.02.03.04"),
            ("not 300.1.2.3", "not 300.1.2.3"),
            ("id 7f3a9c", "id 7f3a9c"),
            (
                "job a1b2c3d4-e5f6-4789-abcd-0123456789ab done",
                "job a1b2c3d4-e5f6-4789-abcd-0123456789ab done",
            ),
            ("failed at std::fs::read", "failed at std::fs::read"),
            ("at 12:34:56 UTC", "at 12:34:56 UTC"),
            ("mac 00:1a:2b:3c:4d:5e", "mac 00:1a:2b:3c:4d:5e"),
            ("npm install done", "npm install done"),
            (
                "the_quick_brown_fox_jumps_over_the_lazy_dog",
                "the_quick_brown_fox_jumps_over_the_lazy_dog",
            ),
            ("token_count: 42", "token_count: 42"),
            (r#"{"max_tokens": 4096}"#, r#"{"max_tokens": 4096}"#),
            ("tool --max-tokens 4096", "tool --max-tokens 4096"),
            ("author=Grace Hopper", "author=Grace Hopper"),
            ("key: value", "key: value"),
            ("basic configuration loaded", "basic configuration loaded"),
            (
                "token expired, bearer unknown",
                "token expired, bearer unknown",
            ),
            ("sk-learn-pipeline-config-v", "sk-learn-pipeline-config-v"),
            ("TZ Asia/Tokyo", "TZ Asia/Tokyo"),
            (
                "MyVeryLongComponentName2ForTheDashboardView",
                "MyVeryLongComponentName2ForTheDashboardView",
            ),
            (
                "AbstractSingletonProxyFactoryBean2 getUserAccountSettingsForV2Endpoint",
                "AbstractSingletonProxyFactoryBean2 getUserAccountSettingsForV2Endpoint",
            ),
            (
                "src/components/DashboardView2/WidgetContainer/index.tsx",
                "src/components/DashboardView2/WidgetContainer/index.tsx",
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libLLVM-17.so.1",
                "/usr/lib/x86_64-linux-gnu/libLLVM-17.so.1",
            ),
            ("", ""),
        ];
        let s = scrubber();
        for (input, want) in cases {
            assert_eq!(s.scrub(input), *want, "input: {input:?}");
        }
    }

    /// Regression: a Windows home slipped through in another case or with the other
    /// separator (`C:/Users/ada`, `c:\USERS\ada`), and JSON-escaped (`C:\\Users\\ada`).
    #[test]
    fn a_windows_home_is_scrubbed_in_any_case_and_with_either_separator() {
        let s = Scrubber::new(Some(r"C:\Users\ada"), Some("ada"));
        for (input, want) in [
            (r"C:\Users\ada\AppData\x.toml", r"~\AppData\x.toml"),
            ("C:/Users/ada/src/main.rs", "~/src/main.rs"),
            (r"c:\USERS\ADA\x", r"~\x"),
            ("c:/users/Ada", "~"),
            (r#"{"path":"C:\\Users\\ada\\x"}"#, r#"{"path":"~\\x"}"#),
            (r"C:\Users\adam\x", r"C:\Users\adam\x"),
            (r"D:\Users\ada\x", r"D:\Users\<user>\x"),
            (r"open C:\Users\ada failed", "open ~ failed"),
        ] {
            assert_eq!(s.scrub(input), want, "{input}");
        }
        // A common-word account under Users, JSON-escaped: still the home directory's name.
        let s = Scrubber::new(Some(r"C:\Users\runner"), Some("runner"));
        assert_eq!(
            s.scrub(r#"{"p":"E:\\Users\\runner\\w"}"#),
            r#"{"p":"E:\\Users\\<user>\\w"}"#
        );
        // A Unix home stays exact: `/HOME/ada` is another directory there (its user
        // name part is still a user name).
        let s = Scrubber::new(Some("/home/ada"), None);
        assert_eq!(s.scrub("/HOME/ada/x"), "/HOME/<user>/x");
    }

    /// `USER=runner` on GitHub Actions, `root` in containers: a user name that is an
    /// ordinary word is scrubbed where it names a home directory, nowhere else.
    #[test]
    fn common_word_user_names_are_scrubbed_only_as_home_directories() {
        let s = Scrubber::new(Some("/home/runner"), Some("runner"));
        for (input, want) in [
            (
                "GitHub Actions runner failed",
                "GitHub Actions runner failed",
            ),
            ("/home/runner/work/app", "~/work/app"),
            ("/Users/runner/x", "/Users/<user>/x"),
            (r"C:\Users\runner\AppData", r"C:\Users\<user>\AppData"),
            (
                "/srv/runner/x and /home/runner-2/y",
                "/srv/runner/x and /home/runner-2/y",
            ),
        ] {
            assert_eq!(s.scrub(input), want, "input: {input:?}");
        }
        let node = Scrubber::new(Some("/home/node"), Some("node"));
        assert_eq!(
            node.scrub("spawn /usr/local/bin/node ENOENT"),
            "spawn /usr/local/bin/node ENOENT"
        );
        let short = Scrubber::new(None, Some("ci"));
        assert_eq!(short.scrub("ci job /home/ci/x"), "ci job /home/<user>/x");
    }

    /// Cron, systemd and containers often set no USER: the home directory's name is a
    /// user name too.
    #[test]
    fn home_directory_name_counts_as_a_user_name() {
        let s = Scrubber::new(Some("/home/zed"), None);
        assert_eq!(
            s.scrub("owner zed, dir /home/zed/x"),
            "owner <user>, dir ~/x"
        );
        let s = Scrubber::new(Some("/home/zed/"), Some("Zed.Q"));
        assert_eq!(s.scrub("zed.q and zed"), "<user> and <user>");
    }

    #[cfg(unix)]
    #[test]
    fn account_database_names_this_user() {
        let uid = crate::sys::euid();
        let name = account_name();
        if uid == 0 {
            assert_eq!(name.as_deref(), Some("root"));
        } else {
            assert!(name.is_none_or(|n| !n.is_empty()));
        }
    }

    #[test]
    fn clean_text_is_not_copied() {
        for clean in [
            "plain words 1.2.3",
            "token expired",
            "basic configuration",
            "version 1.2.3.4",
            "MyVeryLongComponentName2ForTheDashboardView",
        ] {
            assert!(
                matches!(scrubber().scrub(clean), Cow::Borrowed(_)),
                "{clean}"
            );
        }
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
    fn keys_are_scrubbed_top_level_and_nested_and_collisions_keep_both() {
        let s = scrubber();
        let mut props = serde_json::json!({
            "/home/ada/secret/main.rs": 1,
            "ada@example.com": "x",
            "bob@example.com": "y",
            "<email>": "literal",
            "nested": {"10.1.2.3": {"carol@example.com": true}, "ok": 2},
            "raw@example.com": "raw@example.com",
        });
        let Value::Object(map) = &mut props else {
            unreachable!()
        };
        s.scrub_properties(map, |k| k == "raw@example.com");
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "~/secret/main.rs",
                "<email>#2",
                "<email>#3",
                "<email>",
                "nested",
                "raw@example.com"
            ]
        );
        assert_eq!(map["<email>#2"], "x");
        assert_eq!(map["<email>#3"], "y");
        assert_eq!(map["<email>"], "literal");
        assert_eq!(map["nested"]["<ip>"]["<email>"], true);
        assert_eq!(map["nested"]["ok"], 2);
        assert_eq!(map["raw@example.com"], "raw@example.com");
    }

    #[test]
    fn event_names_holding_secrets_or_personal_data_are_found() {
        let s = scrubber();
        for (name, what) in [
            ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "a secret token"),
            ("deploy_AKIAIOSFODNN7EXAMPLE", "a secret token"),
            ("key.sk-abc123def456ghi789jk", "a secret token"),
            ("push-glpat-xYz12AbCdEfGhIjKlMnO", "a secret token"),
            ("conn_10.1.2.3", "an IP address"),
            ("ada.login", "the user's name"),
            (
                "id.0123456789abcdef0123456789abcdef",
                "a long hex or base64 string (a key or secret)",
            ),
        ] {
            let (found, shown) = s.name_leak(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(found, what, "{name}");
            assert!(shown.contains('<'), "{shown}");
        }
        for clean in [
            "cli_invoked",
            "job.finished",
            "ns:event-1",
            "token:refresh",
            "api_key:created",
            "auth:login",
            "v1.2.3.4",
            "ada_login",
            "MyVeryLongComponentName2ForTheDashboardView",
        ] {
            assert_eq!(s.name_leak(clean), None, "{clean}");
        }
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
        assert!(s.ends_with("é…"), "a cut string ends in the ellipsis");
        let mut exact = "é".repeat(MAX_ERROR_CHARS);
        truncate_chars(&mut exact, MAX_ERROR_CHARS);
        assert_eq!(
            exact,
            "é".repeat(MAX_ERROR_CHARS),
            "one that fits is left alone"
        );
    }
}
