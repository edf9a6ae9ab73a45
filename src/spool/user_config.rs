//! The user's settings by name, as `spool config get/set/unset KEY [VALUE]` reads and
//! writes them: the destination's fields and the limits. What the user sets here the
//! host's code no longer replaces: a destination is marked `set_by_user`, a limit is
//! kept under `user_limits`, applied over the host's limits (the environment still
//! wins over both).

use std::fmt;
use std::str::FromStr;

use super::Spool;
use crate::destination::{DestinationConfig, DestinationKind, check_header};
use crate::error::{Kind, Result};
use crate::limits::Limits;
use crate::settings::Settings;

/// The limits by the name `spool config` knows them, with the variable that
/// overrides each.
pub(crate) const LIMIT_KEYS: [(&str, &str); 9] = [
    ("max_events", "SPOOL_MAX_EVENTS"),
    ("max_bytes", "SPOOL_MAX_BYTES"),
    ("max_event_bytes", "SPOOL_MAX_EVENT_BYTES"),
    ("max_age", "SPOOL_MAX_AGE"),
    ("max_attempts", "SPOOL_MAX_ATTEMPTS"),
    ("batch_size", "SPOOL_BATCH_SIZE"),
    ("backoff", "SPOOL_BACKOFF"),
    ("timeout", "SPOOL_TIMEOUT"),
    ("flush_interval", "SPOOL_FLUSH_INTERVAL"),
];

/// A key `spool config` knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigKey {
    /// The destination's kind (`native`, `posthog`, `segment`, `otlp`).
    Destination,
    /// The destination's endpoint.
    Endpoint,
    /// The destination's API key.
    ApiKey,
    /// One extra request header, `header.NAME`.
    Header(String),
    /// OTLP's body encoding, `http/protobuf` or `http/json`.
    Protocol,
    /// Body compression, `gzip` or `none`.
    Compression,
    /// The catalog file the `spool` command reads for this app (checked when set,
    /// kept as an absolute path).
    Catalog,
    /// The consent policy, `opt_out` or `opt_in`.
    ConsentPolicy,
    /// Whether an opt-out queues a deletion request, `true` or `false`.
    DeletionRequest,
    /// A limit by name (`max_events`, `batch_size`, `max_age`, …), with the
    /// variable that overrides it.
    Limit {
        /// Its name in `config.json`'s `user_limits`.
        key: &'static str,
        /// Its environment variable, whose parser it shares.
        var: &'static str,
    },
}

impl FromStr for ConfigKey {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "destination" => ConfigKey::Destination,
            "endpoint" => ConfigKey::Endpoint,
            "api_key" => ConfigKey::ApiKey,
            "protocol" => ConfigKey::Protocol,
            "compression" => ConfigKey::Compression,
            "catalog" => ConfigKey::Catalog,
            "consent_policy" => ConfigKey::ConsentPolicy,
            "deletion_request" => ConfigKey::DeletionRequest,
            _ => {
                if let Some(name) = s.strip_prefix("header.").filter(|n| !n.is_empty()) {
                    return Ok(ConfigKey::Header(name.to_ascii_lowercase()));
                }
                match LIMIT_KEYS.iter().find(|(k, _)| *k == s) {
                    Some((key, var)) => ConfigKey::Limit { key, var },
                    None => {
                        let limits: Vec<&str> = LIMIT_KEYS.iter().map(|(k, _)| *k).collect();
                        return Err(Kind::Setting {
                            name: "config key".into(),
                            value: s.into(),
                            why: format!(
                                "unknown; expected destination, endpoint, api_key, header.NAME, protocol, compression, catalog, consent_policy, deletion_request, or a limit ({})",
                                limits.join(", ")
                            ),
                        }
                        .into());
                    }
                }
            }
        })
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigKey::Destination => f.write_str("destination"),
            ConfigKey::Endpoint => f.write_str("endpoint"),
            ConfigKey::ApiKey => f.write_str("api_key"),
            ConfigKey::Header(n) => write!(f, "header.{n}"),
            ConfigKey::Protocol => f.write_str("protocol"),
            ConfigKey::Compression => f.write_str("compression"),
            ConfigKey::Catalog => f.write_str("catalog"),
            ConfigKey::ConsentPolicy => f.write_str("consent_policy"),
            ConfigKey::DeletionRequest => f.write_str("deletion_request"),
            ConfigKey::Limit { key, .. } => f.write_str(key),
        }
    }
}

/// One limit of `limits` written as `spool config set` takes it.
fn limit_text(l: &Limits, key: &str) -> String {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    match key {
        "max_events" => l.max_events.to_string(),
        "max_bytes" => l.max_bytes.to_string(),
        "max_event_bytes" => l.max_event_bytes.to_string(),
        "max_age" => d(l.max_age),
        "max_attempts" => l.max_attempts.to_string(),
        "batch_size" => l.batch_size.to_string(),
        "backoff" => d(l.first_backoff),
        "timeout" => d(l.request_timeout),
        "flush_interval" => d(l.flush_interval),
        _ => String::new(),
    }
}

/// Applies the user's limits (`user_limits`, written by `spool config set`) over
/// `limits`; a value that no longer parses is skipped with a debug line.
pub(crate) fn with_user_limits(limits: Limits, settings: Option<&Settings>) -> Limits {
    let Some(user) = settings.map(|s| &s.user_limits).filter(|u| !u.is_empty()) else {
        return limits;
    };
    limits.with_env_lenient(|var| {
        let (key, _) = LIMIT_KEYS.iter().find(|(_, v)| *v == var)?;
        user.get(*key).cloned()
    })
}

impl Spool {
    /// The value `config.json` holds for `key` (what `spool config get` prints), or
    /// `None` if it holds none. The destination's fields are those of the destination
    /// in force ([`Spool::destination`]).
    pub fn config_get(&self, key: &str) -> Result<Option<String>> {
        let key: ConfigKey = key.parse()?;
        let d = self.destination();
        Ok(match key {
            ConfigKey::Destination => Some(d.kind.to_string()),
            ConfigKey::Endpoint => d.endpoint,
            ConfigKey::ApiKey => d.api_key,
            ConfigKey::Header(n) => d.headers.get(&n).cloned(),
            ConfigKey::Protocol => d.protocol.map(|p| match p {
                crate::OtlpProtocol::Protobuf => "http/protobuf".to_string(),
                crate::OtlpProtocol::Json => "http/json".to_string(),
            }),
            ConfigKey::Compression => d.compression.map(|c| match c {
                crate::Compression::Gzip => "gzip".to_string(),
                crate::Compression::None => "none".to_string(),
            }),
            ConfigKey::Catalog => self.settings().and_then(|s| s.catalog),
            ConfigKey::ConsentPolicy => self
                .settings()
                .and_then(|s| s.consent_policy)
                .map(|p| p.to_string()),
            ConfigKey::DeletionRequest => self
                .settings()
                .and_then(|s| s.deletion_request)
                .map(|on| on.to_string()),
            ConfigKey::Limit { key, .. } => {
                let settings = self.settings();
                let user = settings
                    .as_ref()
                    .and_then(|s| s.user_limits.get(key).cloned());
                // Else the host's own value, as persisted from its code or `set --host`.
                user.or_else(|| settings.and_then(|s| s.limits).map(|l| limit_text(&l, key)))
            }
        })
    }

    /// Sets `key` to `value` in `config.json`, checked first: an invalid value is an
    /// error and changes nothing. A destination field makes the whole destination
    /// the user's: the host's code no longer replaces it.
    pub fn config_set(&self, key: &str, value: &str) -> Result<()> {
        self.set_config(key, value, false).map(|_| ())
    }

    /// Sets `key` as the host's own default, for a host in another language that has
    /// no builder to say it in code (`spool config set --host`): what the user set
    /// stays in force. Returns false when the user's setting stands in its place.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let spool = eventspool::Spool::builder("mytool").dir(dir.path()).build();
    /// assert!(spool.config_set_for_host("endpoint", "https://t.example.com/e").unwrap());
    /// spool.config_set("endpoint", "https://mine.example.com/e").unwrap();
    /// assert!(!spool.config_set_for_host("endpoint", "https://t.example.com/e").unwrap());
    /// ```
    pub fn config_set_for_host(&self, key: &str, value: &str) -> Result<bool> {
        self.set_config(key, value, true)
    }

    fn set_config(&self, key: &str, value: &str, for_host: bool) -> Result<bool> {
        let key: ConfigKey = key.parse()?;
        let value = value.trim();
        let settings = self.settings();
        let mut d = self.destination();
        match &key {
            ConfigKey::Catalog => {
                // Checked now, so a typo is refused here rather than failing every
                // later `spool track`; absolute, so it holds from any directory.
                let path = std::path::absolute(value).map_err(|e| Kind::Setting {
                    name: "catalog".into(),
                    value: value.into(),
                    why: e.to_string(),
                })?;
                let catalog = crate::Catalog::from_file(&path)?;
                super::enforce::check_catalog_app(&catalog, self.app())?;
                let path = path.to_string_lossy().into_owned();
                self.update_settings(|s| s.catalog = Some(path))?;
                return Ok(true);
            }
            ConfigKey::ConsentPolicy => {
                let policy: crate::ConsentPolicy = value.parse()?;
                self.update_settings(|s| s.consent_policy = Some(policy))?;
                return Ok(true);
            }
            ConfigKey::DeletionRequest => {
                let on = if crate::consent::is_truthy(value) {
                    true
                } else if crate::consent::is_falsy(value) {
                    false
                } else {
                    return Err(Kind::Setting {
                        name: "deletion_request".into(),
                        value: value.into(),
                        why: "expected true or false".into(),
                    }
                    .into());
                };
                self.update_settings(|s| s.deletion_request = Some(on))?;
                return Ok(true);
            }
            ConfigKey::Limit { key, var } => {
                // The same parser as the variable's, so both accept the same text.
                let host_limits = settings
                    .as_ref()
                    .and_then(|s| s.limits.clone())
                    .unwrap_or_default();
                let with = host_limits
                    .with_env(|v| (v == *var).then(|| value.to_string()))
                    .map_err(|e| Kind::Setting {
                        name: key.to_string(),
                        value: value.into(),
                        why: e.to_string(),
                    })?;
                let user_has = settings.is_some_and(|s| s.user_limits.contains_key(*key));
                self.update_settings(|s| {
                    if for_host {
                        s.limits = Some(with);
                    } else {
                        s.user_limits.insert(key.to_string(), value.to_string());
                    }
                })?;
                return Ok(!(for_host && user_has));
            }
            ConfigKey::Destination => {
                let kind: DestinationKind = value.parse()?;
                if kind != d.kind {
                    d = DestinationConfig::new(kind);
                }
            }
            ConfigKey::Endpoint => {
                crate::delivery::check_endpoint(value)?;
                d.endpoint = Some(value.to_string());
            }
            ConfigKey::ApiKey => d.api_key = Some(value.to_string()),
            ConfigKey::Header(n) => {
                check_header(n, value)?;
                d.headers.insert(n.clone(), value.to_string());
            }
            ConfigKey::Protocol => {
                if d.kind != DestinationKind::Otlp {
                    return Err(Kind::Destination(format!(
                        "protocol applies only to the otlp destination, and this one is {}",
                        d.kind
                    ))
                    .into());
                }
                d.protocol = Some(value.parse()?);
            }
            ConfigKey::Compression => d.compression = Some(value.parse()?),
        }
        if for_host && d.set_by_user {
            // The user's destination stands and the host's default is not kept: a
            // host sets it again at each start, so after `unset destination` its next
            // start puts it back.
            return Ok(false);
        }
        // The destination as it would be sent, checked now, so a value that cannot
        // work together with the others (a key for a kind that takes none) is refused
        // instead of breaking every later flush. A vendor kind still waiting for its
        // key is fine: that is the next `set`.
        let mut probe = d.clone();
        if probe.kind.needs_api_key() && probe.api_key.is_none() {
            probe.api_key = Some("pending".into());
        }
        crate::destination::resolve(probe, &Default::default())?;
        d.set_by_user = !for_host;
        self.update_settings(|s| {
            s.destination = Some(d);
            s.endpoint = None;
        })?;
        Ok(true)
    }

    /// Removes `key` from `config.json`; returns false if it held none. Unsetting
    /// `destination` gives the destination back to the host's code.
    pub fn config_unset(&self, key: &str) -> Result<bool> {
        let key: ConfigKey = key.parse()?;
        if self.config_get(&key.to_string())?.is_none() && key != ConfigKey::Destination {
            return Ok(false);
        }
        let user_destination = self
            .settings()
            .and_then(|s| s.destination)
            .is_some_and(|d| d.set_by_user);
        if key == ConfigKey::Destination && !user_destination {
            return Ok(false);
        }
        let mut d = self.destination();
        self.update_settings(|s| match key {
            ConfigKey::Catalog => s.catalog = None,
            ConfigKey::Limit { key, .. } => {
                s.user_limits.remove(key);
            }
            ConfigKey::ConsentPolicy => s.consent_policy = None,
            ConfigKey::DeletionRequest => s.deletion_request = None,
            ConfigKey::Destination => s.destination = None,
            other => {
                match other {
                    ConfigKey::Endpoint => d.endpoint = None,
                    ConfigKey::ApiKey => d.api_key = None,
                    ConfigKey::Header(n) => {
                        d.headers.remove(&n);
                    }
                    ConfigKey::Protocol => d.protocol = None,
                    ConfigKey::Compression => d.compression = None,
                    ConfigKey::Destination
                    | ConfigKey::Limit { .. }
                    | ConfigKey::Catalog
                    | ConfigKey::ConsentPolicy
                    | ConfigKey::DeletionRequest => {}
                }
                d.set_by_user = true;
                s.destination = Some(d);
                s.endpoint = None;
            }
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_alike() {
        for k in [
            "destination",
            "endpoint",
            "api_key",
            "header.authorization",
            "protocol",
            "compression",
            "catalog",
            "consent_policy",
            "deletion_request",
            "max_age",
            "batch_size",
        ] {
            assert_eq!(k.parse::<ConfigKey>().unwrap().to_string(), k);
        }
        let e = "colour".parse::<ConfigKey>().unwrap_err().to_string();
        assert!(e.contains("unknown") && e.contains("batch_size"), "{e}");
        assert!("header.".parse::<ConfigKey>().is_err());
    }

    #[test]
    fn user_limits_apply_over_the_hosts_and_skip_what_no_longer_parses() {
        let mut s = Settings::default();
        s.user_limits.insert("batch_size".into(), "7".into());
        s.user_limits
            .insert("max_age".into(), "not a duration".into());
        let l = with_user_limits(Limits::default(), Some(&s));
        assert_eq!(l.batch_size, 7);
        assert_eq!(l.max_age, Limits::default().max_age);
    }
}
