//! Consent: the opt-out rules from the design, decided before any disk or network access.

use serde::Serialize;

use crate::settings::SETTINGS_FILE;

/// Returns true if and only if `value` is one of `1`, `true`, `yes`, `on` (any case,
/// surrounding blanks ignored).
pub fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Returns true if and only if `value` is one of `0`, `false`, `no`, `off` (any case,
/// surrounding blanks ignored).
pub fn is_falsy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// The prefix of an app's environment variables: the app name upper-cased with every
/// non-alphanumeric character replaced by `_`.
///
/// ```text
/// assert_eq!(eventspool::env_prefix("my-tool.v2"), "MY_TOOL_V2");
/// ```
pub fn env_prefix(app: &str) -> String {
    app.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether telemetry is on, and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Consent {
    /// True if and only if events may be recorded and sent.
    pub enabled: bool,
    /// Which rule decided, for machines: `env_disabled` (`<APP>_TELEMETRY_DISABLED`),
    /// `do_not_track`, `env` (`<APP>_TELEMETRY`), `persisted` (the user's choice in
    /// `config.json`), `unreadable_settings` (a `config.json` that cannot be read
    /// counts as off) or `default`.
    pub rule: &'static str,
    /// The rule that decided, in words a user can act on, e.g.
    /// `DO_NOT_TRACK=1 is set` or `default (no opt-out found)`.
    pub reason: String,
}

/// What `config.json` says about consent, as the deciding code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Persisted {
    /// No choice recorded (no file, or no `telemetry` field).
    Undecided,
    /// The user chose: `"telemetry": true` or `false`.
    Chosen(bool),
    /// The file exists but cannot be used; why, naming the file.
    Unreadable(String),
}

impl Consent {
    /// Decides consent for `app` from environment look-ups and the persisted choice.
    ///
    /// The rules, first match wins: `<APP>_TELEMETRY_DISABLED` truthy → off;
    /// `DO_NOT_TRACK` truthy → off; `<APP>_TELEMETRY` falsy → off, truthy → on (over
    /// the persisted choice, for that environment); the persisted choice; else on.
    /// `persisted` is `None` when nothing is persisted.
    ///
    /// ```
    /// use eventspool::Consent;
    /// let env = |k: &str| (k == "MY_APP_TELEMETRY").then(|| "false".to_string());
    /// let c = Consent::decide("my-app", env, Some(true));
    /// assert!(!c.enabled);
    /// assert_eq!(c.rule, "env");
    /// ```
    pub fn decide(
        app: &str,
        env: impl Fn(&str) -> Option<String>,
        persisted: Option<bool>,
    ) -> Self {
        let persisted = persisted.map_or(Persisted::Undecided, Persisted::Chosen);
        Self::decide_with(app, env, &persisted)
    }

    pub(crate) fn decide_with(
        app: &str,
        env: impl Fn(&str) -> Option<String>,
        persisted: &Persisted,
    ) -> Self {
        let prefix = env_prefix(app);
        let disabled_var = format!("{prefix}_TELEMETRY_DISABLED");
        let telemetry_var = format!("{prefix}_TELEMETRY");
        let decided = |enabled: bool, rule: &'static str, reason: String| Consent {
            enabled,
            rule,
            reason,
        };
        // What the user chose underneath an environment rule, so `status` shows both.
        let underneath = match persisted {
            Persisted::Chosen(true) => "; the persisted choice is on",
            Persisted::Chosen(false) => "; the persisted choice is off",
            _ => "",
        };
        if let Some(v) = env(&disabled_var).filter(|v| is_truthy(v)) {
            return decided(
                false,
                "env_disabled",
                format!("{disabled_var}={v} is set{underneath}"),
            );
        }
        if let Some(v) = env("DO_NOT_TRACK").filter(|v| is_truthy(v)) {
            return decided(
                false,
                "do_not_track",
                format!("DO_NOT_TRACK={v} is set{underneath}"),
            );
        }
        if let Some(v) = env(&telemetry_var) {
            if is_falsy(&v) || is_truthy(&v) {
                return decided(
                    is_truthy(&v),
                    "env",
                    format!("{telemetry_var}={v} is set for this environment{underneath}"),
                );
            }
        }
        match persisted {
            Persisted::Chosen(false) => decided(
                false,
                "persisted",
                format!(
                    "disabled by the persisted choice (\"telemetry\": false in {SETTINGS_FILE})"
                ),
            ),
            Persisted::Chosen(true) => decided(
                true,
                "persisted",
                format!("enabled by the persisted choice (\"telemetry\": true in {SETTINGS_FILE})"),
            ),
            Persisted::Unreadable(why) => decided(
                false,
                "unreadable_settings",
                format!("off because the settings cannot be read: {why}"),
            ),
            Persisted::Undecided => decided(true, "default", "default (no opt-out found)".into()),
        }
    }

    /// [`Consent::decide`] with the process environment.
    pub fn from_env(app: &str, persisted: Option<bool>) -> Self {
        Self::decide(app, |k| std::env::var(k).ok(), persisted)
    }
}

/// Returns true if and only if debug mode is on for `app`: `<APP>_TELEMETRY_DEBUG` or
/// `SPOOL_DEBUG` is truthy. In debug mode events are printed to stderr, never queued.
pub fn debug_mode(app: &str) -> bool {
    debug_mode_with(app, |k| std::env::var(k).ok())
}

/// [`debug_mode`] with this environment lookup.
pub(crate) fn debug_mode_with(app: &str, env: impl Fn(&str) -> Option<String>) -> bool {
    let var = format!("{}_TELEMETRY_DEBUG", env_prefix(app));
    [var.as_str(), "SPOOL_DEBUG"]
        .iter()
        .any(|k| env(k).is_some_and(|v| is_truthy(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(vars: &[(&str, &str)], persisted: Option<bool>) -> Consent {
        Consent::decide(
            "my-app",
            |k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            },
            persisted,
        )
    }

    #[test]
    fn truthy_and_falsy_spellings() {
        for v in ["1", "true", "TRUE", "Yes", "on", " On "] {
            assert!(is_truthy(v), "{v}");
            assert!(!is_falsy(v), "{v}");
        }
        for v in ["0", "false", "False", "NO", "off"] {
            assert!(is_falsy(v), "{v}");
            assert!(!is_truthy(v), "{v}");
        }
        for v in ["", "2", "enabled", "disable"] {
            assert!(!is_truthy(v) && !is_falsy(v), "{v}");
        }
    }

    #[test]
    fn each_rule_decides() {
        assert!(decide(&[], None).enabled);
        assert!(!decide(&[("MY_APP_TELEMETRY_DISABLED", "yes")], None).enabled);
        assert!(decide(&[("MY_APP_TELEMETRY_DISABLED", "0")], None).enabled);
        assert!(!decide(&[("MY_APP_TELEMETRY", "off")], None).enabled);
        assert!(decide(&[("MY_APP_TELEMETRY", "1")], None).enabled);
        assert!(!decide(&[("DO_NOT_TRACK", "1")], None).enabled);
        assert!(decide(&[("DO_NOT_TRACK", "0")], None).enabled);
        assert!(!decide(&[], Some(false)).enabled);
        assert!(decide(&[], Some(true)).enabled);
        // <APP>_TELEMETRY truthy turns it on over a persisted "off", for that environment.
        let c = decide(&[("MY_APP_TELEMETRY", "true")], Some(false));
        assert!(c.enabled);
        assert_eq!(c.rule, "env");
        assert!(
            c.reason.contains("the persisted choice is off"),
            "{}",
            c.reason
        );
        // ... but never over the two opt-outs above it.
        let c = decide(&[("MY_APP_TELEMETRY", "1"), ("DO_NOT_TRACK", "1")], None);
        assert!(!c.enabled);
        assert_eq!(c.rule, "do_not_track");
    }

    #[test]
    fn unreadable_settings_are_off_and_say_why() {
        let c = Consent::decide_with(
            "my-app",
            |_| None,
            &Persisted::Unreadable("config.json is not a regular file".into()),
        );
        assert!(!c.enabled);
        assert_eq!(c.rule, "unreadable_settings");
        assert!(c.reason.contains("not a regular file"), "{}", c.reason);
        assert!(!c.reason.contains("spool disable"), "{}", c.reason);
    }

    #[test]
    fn env_opt_out_beats_persisted_opt_in_and_reason_names_the_rule() {
        let c = decide(&[("DO_NOT_TRACK", "true")], Some(true));
        assert!(!c.enabled);
        assert_eq!(
            c.reason,
            "DO_NOT_TRACK=true is set; the persisted choice is on"
        );
        let c = decide(&[("MY_APP_TELEMETRY", "false")], None);
        assert_eq!(
            c.reason,
            "MY_APP_TELEMETRY=false is set for this environment"
        );
    }
}
