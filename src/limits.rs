//! Limits and their defaults, with the environment overrides from the design.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The bounds on the queue and on delivery. Every field has the design's default;
/// a host sets them in code, they are persisted beside the queue, and each can be
/// overridden by its environment variable (see [`Limits::with_env`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Most events the queue holds; past it the oldest are dropped. `SPOOL_MAX_EVENTS`.
    pub max_events: u64,
    /// Most payload bytes the queue holds; past it the oldest are dropped. `SPOOL_MAX_BYTES`.
    pub max_bytes: u64,
    /// Largest serialized event accepted. `SPOOL_MAX_EVENT_BYTES`.
    pub max_event_bytes: u64,
    /// Events older than this are dropped unsent. `SPOOL_MAX_AGE`.
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
    /// Events whose batch failed this many times are dropped. `SPOOL_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Events per request; 1 sends each event as a bare JSON object. `SPOOL_BATCH_SIZE`.
    pub batch_size: u32,
    /// First retry delay, doubled per attempt up to [`Limits::max_backoff`]. `SPOOL_BACKOFF`.
    #[serde(with = "humantime_serde_compat")]
    pub first_backoff: Duration,
    /// Upper bound of the exponential backoff.
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// Upper bound on a server's `Retry-After`.
    #[serde(with = "humantime_serde_compat")]
    pub retry_after_cap: Duration,
    /// TCP/TLS connect timeout.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Whole-request timeout. `SPOOL_TIMEOUT`.
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// "Flush if due": a queue whose oldest event is older than this is due even
    /// with less than a batch in it; zero makes any queued event due.
    /// `SPOOL_FLUSH_INTERVAL`.
    #[serde(with = "humantime_serde_compat")]
    pub flush_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: 10_000,
            max_bytes: 10 * 1024 * 1024,
            max_event_bytes: 32 * 1024,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_attempts: 10,
            batch_size: 100,
            first_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            retry_after_cap: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            flush_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// The environment variables that override limits, in the order they are applied.
pub const LIMIT_ENV_VARS: [&str; 9] = [
    "SPOOL_MAX_EVENTS",
    "SPOOL_MAX_BYTES",
    "SPOOL_MAX_EVENT_BYTES",
    "SPOOL_MAX_AGE",
    "SPOOL_MAX_ATTEMPTS",
    "SPOOL_BATCH_SIZE",
    "SPOOL_BACKOFF",
    "SPOOL_TIMEOUT",
    "SPOOL_FLUSH_INTERVAL",
];

impl Limits {
    /// Applies the overrides found by `env`, failing on the first malformed value with
    /// an error naming the variable. Used by the `spool` CLI, where bad input is an error.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        for name in LIMIT_ENV_VARS {
            if let Some(value) = env(name) {
                self.apply(name, &value)?;
            }
        }
        Ok(self)
    }

    /// Like [`Limits::with_env`], but a malformed value keeps the current value and logs
    /// a debug line: a host must never fail because of a user's stray variable.
    pub fn with_env_lenient(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        for name in LIMIT_ENV_VARS {
            if let Some(value) = env(name) {
                if let Err(e) = self.apply(name, &value) {
                    log::debug!("eventspool: ignoring {e}");
                }
            }
        }
        self
    }

    fn apply(&mut self, name: &str, value: &str) -> Result<()> {
        match name {
            "SPOOL_MAX_EVENTS" => self.max_events = parse_count(name, value)?,
            "SPOOL_MAX_BYTES" => self.max_bytes = parse_size(name, value)?,
            "SPOOL_MAX_EVENT_BYTES" => self.max_event_bytes = parse_size(name, value)?,
            "SPOOL_MAX_AGE" => self.max_age = parse_duration(name, value)?,
            "SPOOL_MAX_ATTEMPTS" => self.max_attempts = parse_count_u32(name, value)?,
            "SPOOL_BATCH_SIZE" => self.batch_size = parse_count_u32(name, value)?,
            "SPOOL_BACKOFF" => self.first_backoff = parse_duration(name, value)?,
            "SPOOL_TIMEOUT" => self.request_timeout = parse_duration(name, value)?,
            // Zero is meaningful here: every queue with an event in it is due.
            "SPOOL_FLUSH_INTERVAL" => {
                self.flush_interval = match humantime::parse_duration(value.trim()) {
                    Ok(d) if d.is_zero() => d,
                    _ => parse_duration(name, value)?,
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Parses a positive whole number such as `10000` or `10_000`.
pub fn parse_count(name: &str, value: &str) -> Result<u64> {
    let digits: String = value.trim().chars().filter(|c| *c != '_').collect();
    match digits.parse::<u64>() {
        Ok(0) => Err(Error::setting(name, value, "must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(Error::setting(
            name,
            value,
            "expected a whole number such as 10000",
        )),
    }
}

fn parse_count_u32(name: &str, value: &str) -> Result<u32> {
    let n = parse_count(name, value)?;
    u32::try_from(n).map_err(|_| Error::setting(name, value, "too large"))
}

/// Parses a byte size: a whole number with an optional unit `B`, `K`/`KB`/`KiB`,
/// `M`/`MB`/`MiB`, `G`/`GB`/`GiB` (all binary multiples, any case).
///
/// ```text
/// assert_eq!(eventspool::parse_size("X", "32KiB").unwrap(), 32 * 1024);
/// assert_eq!(eventspool::parse_size("X", "10 mb").unwrap(), 10 * 1024 * 1024);
/// assert!(eventspool::parse_size("X", "ten").is_err());
/// ```
pub fn parse_size(name: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(Error::setting(
                name,
                value,
                "expected a size such as 10MiB or 32768",
            ));
        }
    };
    let n = parse_count(name, num)
        .map_err(|_| Error::setting(name, value, "expected a size such as 10MiB or 32768"))?;
    n.checked_mul(mult)
        .ok_or_else(|| Error::setting(name, value, "too large"))
}

/// Parses a duration written like `30d`, `10s`, `500ms` or `1h 30m`.
///
/// ```text
/// use std::time::Duration;
/// assert_eq!(eventspool::parse_duration("X", "500ms").unwrap(), Duration::from_millis(500));
/// assert!(eventspool::parse_duration("X", "soon").is_err());
/// ```
pub fn parse_duration(name: &str, value: &str) -> Result<Duration> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d.is_zero() => Err(Error::setting(name, value, "must be longer than zero")),
        Ok(d) => Ok(d),
        Err(_) => Err(Error::setting(
            name,
            value,
            "expected a duration such as 30d, 10s or 500ms",
        )),
    }
}

/// Serde glue so durations in `config.json` read like `"30days"`, as a person writes them.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_each_limit() {
        let vars = [
            ("SPOOL_MAX_EVENTS", "50"),
            ("SPOOL_MAX_BYTES", "1MiB"),
            ("SPOOL_MAX_EVENT_BYTES", "2k"),
            ("SPOOL_MAX_AGE", "7d"),
            ("SPOOL_MAX_ATTEMPTS", "3"),
            ("SPOOL_BATCH_SIZE", "1"),
            ("SPOOL_BACKOFF", "500ms"),
            ("SPOOL_TIMEOUT", "2s"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let l = Limits::default().with_env(env).unwrap();
        assert_eq!(l.max_events, 50);
        assert_eq!(l.max_bytes, 1 << 20);
        assert_eq!(l.max_event_bytes, 2048);
        assert_eq!(l.max_age, Duration::from_secs(7 * 86400));
        assert_eq!(l.max_attempts, 3);
        assert_eq!(l.batch_size, 1);
        assert_eq!(l.first_backoff, Duration::from_millis(500));
        assert_eq!(l.request_timeout, Duration::from_secs(2));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_variable_or_ignored_when_lenient() {
        for (k, v) in [
            ("SPOOL_MAX_EVENTS", "lots"),
            ("SPOOL_MAX_EVENTS", "0"),
            ("SPOOL_MAX_EVENTS", "-5"),
            ("SPOOL_MAX_BYTES", "10 parsecs"),
            ("SPOOL_MAX_BYTES", "99999999999999999999G"),
            ("SPOOL_MAX_AGE", "0s"),
            ("SPOOL_MAX_AGE", "forever"),
            ("SPOOL_MAX_ATTEMPTS", "9999999999"),
        ] {
            let env = |n: &str| (n == k).then(|| v.to_string());
            let err = Limits::default().with_env(env).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
            assert_eq!(Limits::default().with_env_lenient(env), Limits::default());
        }
    }

    #[test]
    fn limits_round_trip_through_json() {
        let l = Limits {
            max_age: Duration::from_secs(3600),
            ..Limits::default()
        };
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains("\"1h\""), "{json}");
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), l);
        assert_eq!(
            serde_json::from_str::<Limits>("{}").unwrap(),
            Limits::default()
        );
    }
}
