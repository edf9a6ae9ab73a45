//! Consent: the opt-out rules from the design, decided before any disk or network access.

use serde::Serialize;

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
/// ```
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
pub struct Consent {
    /// True if and only if events may be recorded and sent.
    pub enabled: bool,
    /// The rule that decided, in words a user can act on, e.g.
    /// `DO_NOT_TRACK=1 is set` or `default (no opt-out found)`.
    pub reason: String,
}

impl Consent {
    /// Decides consent for `app` from environment look-ups and the persisted choice.
    ///
    /// The rules, first match wins: `<APP>_TELEMETRY_DISABLED` truthy,
    /// `<APP>_TELEMETRY` falsy, `DO_NOT_TRACK` truthy, the persisted choice off.
    /// `persisted` is `None` when nothing is persisted; a settings file that
    /// cannot be read is passed as `Some(false)` by the caller, so a broken file
    /// never turns telemetry on against a user's choice.
    pub fn decide(
        app: &str,
        env: impl Fn(&str) -> Option<String>,
        persisted: Option<bool>,
    ) -> Self {
        let prefix = env_prefix(app);
        let disabled_var = format!("{prefix}_TELEMETRY_DISABLED");
        let telemetry_var = format!("{prefix}_TELEMETRY");
        let off = |reason: String| Consent {
            enabled: false,
            reason,
        };
        if let Some(v) = env(&disabled_var).filter(|v| is_truthy(v)) {
            return off(format!("{disabled_var}={v} is set"));
        }
        if let Some(v) = env(&telemetry_var).filter(|v| is_falsy(v)) {
            return off(format!("{telemetry_var}={v} is set"));
        }
        if let Some(v) = env("DO_NOT_TRACK").filter(|v| is_truthy(v)) {
            return off(format!("DO_NOT_TRACK={v} is set"));
        }
        match persisted {
            Some(false) => off("disabled by the persisted choice (`spool disable`)".into()),
            Some(true) => Consent {
                enabled: true,
                reason: "enabled by the persisted choice".into(),
            },
            None => Consent {
                enabled: true,
                reason: "default (no opt-out found)".into(),
            },
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
    let var = format!("{}_TELEMETRY_DEBUG", env_prefix(app));
    [var.as_str(), "SPOOL_DEBUG"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| is_truthy(&v)))
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
    }

    #[test]
    fn env_opt_out_beats_persisted_opt_in_and_reason_names_the_rule() {
        let c = decide(&[("DO_NOT_TRACK", "true")], Some(true));
        assert!(!c.enabled);
        assert_eq!(c.reason, "DO_NOT_TRACK=true is set");
        let c = decide(&[("MY_APP_TELEMETRY", "false")], None);
        assert_eq!(c.reason, "MY_APP_TELEMETRY=false is set");
    }
}
