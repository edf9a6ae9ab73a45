//! Consent: the opt-out rules from the design, decided before any disk or network access,
//! the policy that decides when nobody chose (`opt_out` or `opt_in`), and the
//! material-change rule that makes a "yes" given on an older catalog undecided again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::settings::SETTINGS_FILE;

/// What a spool does when the user has not decided: `opt_out` (the default) records
/// until the user says no; `opt_in` records nothing until the user says yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentPolicy {
    /// On unless the user opted out; the first-use notice tells them how.
    #[default]
    OptOut,
    /// Off until the user says yes (the prompt, or `spool enable`).
    OptIn,
}

impl ConsentPolicy {
    /// The name `config.json` and `spool config` use: `opt_out` or `opt_in`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentPolicy::OptOut => "opt_out",
            ConsentPolicy::OptIn => "opt_in",
        }
    }
}

impl fmt::Display for ConsentPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsentPolicy {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim() {
            "opt_out" => Ok(ConsentPolicy::OptOut),
            "opt_in" => Ok(ConsentPolicy::OptIn),
            other => Err(crate::error::Kind::Setting {
                name: "consent_policy".into(),
                value: other.into(),
                why: "expected opt_out or opt_in".into(),
            }
            .into()),
        }
    }
}

/// The answer `spool consent status` prints: `granted`, `denied` or `undecided`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Events may be recorded and sent.
    Granted,
    /// Nothing is recorded or sent, by a rule or by the user's choice.
    Denied,
    /// Under `opt_in`, nobody has said yes or no to this catalog yet: nothing is
    /// recorded, and the prompt will ask.
    Undecided,
}

impl Decision {
    /// `granted`, `denied` or `undecided`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Granted => "granted",
            Decision::Denied => "denied",
            Decision::Undecided => "undecided",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// `config.json`), `material_change` (under `opt_in`, a "yes" given on a catalog
    /// that has since added something), `unreadable_settings` (a `config.json` that
    /// cannot be read counts as off), `invalid_app_name` or `default` (the policy's
    /// default: on under `opt_out`, off under `opt_in`).
    pub rule: &'static str,
    /// The rule that decided, in words a user can act on, e.g.
    /// `DO_NOT_TRACK=1 is set` or `default (no opt-out found)`.
    pub reason: String,
    /// The policy in force when nobody decided.
    pub policy: ConsentPolicy,
    /// `granted`, `denied` or `undecided` (what `spool consent status` prints).
    pub decision: Decision,
}

impl Consent {
    /// Returns true if and only if an environment rule (1–3: `<APP>_TELEMETRY_DISABLED`,
    /// `DO_NOT_TRACK`, `<APP>_TELEMETRY`) decided: the persisted choice underneath is
    /// not in force for this environment.
    pub fn by_environment(&self) -> bool {
        matches!(self.rule, "env_disabled" | "do_not_track" | "env")
    }

    /// Returns true if and only if a pending deletion request may be sent under this
    /// decision: when telemetry is on, or off by the user's persisted choice or the
    /// policy, but never while an environment opt-out holds or the settings cannot be
    /// read.
    pub(crate) fn allows_deletion_request(&self) -> bool {
        self.enabled || matches!(self.rule, "persisted" | "default" | "material_change")
    }
}

/// What `config.json` says about consent, as the deciding code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Persisted {
    /// No choice recorded (no file, or no `telemetry` field).
    Undecided,
    /// The user chose: `"telemetry": true` or `false`.
    Chosen(bool),
    /// The user said yes, but on a fingerprint the current catalog adds these
    /// entries to: under `opt_in` that is undecided again; under `opt_out` still yes.
    Outdated(Vec<String>),
    /// The file exists but cannot be used; why, naming the file.
    Unreadable(String),
}

impl Persisted {
    /// The choice `telemetry` holds, judged against the catalog's fingerprint now: a
    /// yes given on a fingerprint that `current` adds to (see
    /// [`Fingerprint::additions`]) is [`Persisted::Outdated`]. A missing stored
    /// fingerprint counts as empty: the user agreed to no declared entry. A no stays
    /// a no whatever the catalog adds.
    pub(crate) fn judge(
        telemetry: Option<bool>,
        decided_on: Option<&Fingerprint>,
        current: &Fingerprint,
    ) -> Persisted {
        match telemetry {
            None => Persisted::Undecided,
            Some(false) => Persisted::Chosen(false),
            Some(true) => {
                let empty = Fingerprint::default();
                let added = current.additions(decided_on.unwrap_or(&empty));
                if added.is_empty() {
                    Persisted::Chosen(true)
                } else {
                    Persisted::Outdated(added)
                }
            }
        }
    }

    /// Returns true if and only if, ignoring the environment, telemetry was on under
    /// `policy`: what an opt-out must find for a deletion request to make sense.
    pub(crate) fn was_on(&self, policy: ConsentPolicy) -> bool {
        match self {
            Persisted::Chosen(on) => *on,
            Persisted::Outdated(_) => true,
            Persisted::Undecided => policy == ConsentPolicy::OptOut,
            Persisted::Unreadable(_) => false,
        }
    }
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
        Self::decide_under(app, env, persisted, ConsentPolicy::OptOut)
    }

    /// [`Consent::decide_with`] under `policy`: rule 5, the default when nobody
    /// decided, is on under `opt_out` and off (undecided) under `opt_in`.
    pub(crate) fn decide_under(
        app: &str,
        env: impl Fn(&str) -> Option<String>,
        persisted: &Persisted,
        policy: ConsentPolicy,
    ) -> Self {
        Self::decide_named(&EnvNames::new(app), env, persisted, policy)
    }

    /// [`Consent::decide_under`] with the app's variable names already worked out.
    pub(crate) fn decide_named(
        names: &EnvNames,
        env: impl Fn(&str) -> Option<String>,
        persisted: &Persisted,
        policy: ConsentPolicy,
    ) -> Self {
        let disabled_var = &names.disabled;
        let telemetry_var = &names.telemetry;
        let decided = |enabled: bool, rule: &'static str, reason: String| Consent {
            enabled,
            rule,
            reason,
            policy,
            decision: if enabled {
                Decision::Granted
            } else if matches!(rule, "default" | "material_change") {
                Decision::Undecided
            } else {
                Decision::Denied
            },
        };
        // What the user chose underneath an environment rule, so `status` shows both.
        let underneath = match persisted {
            Persisted::Chosen(true) => "; the persisted choice is on",
            Persisted::Outdated(_) if policy == ConsentPolicy::OptOut => {
                "; the persisted choice is on"
            }
            Persisted::Outdated(_) => {
                "; the persisted choice predates a change to what is collected"
            }
            Persisted::Chosen(false) => "; the persisted choice is off",
            _ => "",
        };
        if let Some(v) = env(disabled_var).filter(|v| is_truthy(v)) {
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
        if let Some(v) = env(telemetry_var) {
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
            // Under opt_out a material change only shows the notice again.
            Persisted::Outdated(_) if policy == ConsentPolicy::OptOut => decided(
                true,
                "persisted",
                format!("enabled by the persisted choice (\"telemetry\": true in {SETTINGS_FILE})"),
            ),
            Persisted::Outdated(added) => decided(
                false,
                "material_change",
                format!(
                    "off until you answer again: what is collected grew since you said yes ({})",
                    added.join(", ")
                ),
            ),
            Persisted::Unreadable(why) => decided(
                false,
                "unreadable_settings",
                format!("off because the settings cannot be read: {why}"),
            ),
            Persisted::Undecided if policy == ConsentPolicy::OptIn => decided(
                false,
                "default",
                "off until you say yes (opt-in: nobody has answered yet)".into(),
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
    debug_named(&EnvNames::new(app), env)
}

/// [`debug_mode_with`] with the app's variable names already worked out.
pub(crate) fn debug_named(names: &EnvNames, env: impl Fn(&str) -> Option<String>) -> bool {
    [names.debug.as_str(), "SPOOL_DEBUG"]
        .iter()
        .any(|k| env(k).is_some_and(|v| is_truthy(&v)))
}

/// The names of an app's own variables (`<APP>_TELEMETRY_DISABLED`,
/// `<APP>_TELEMETRY`, `<APP>_TELEMETRY_DEBUG`), worked out once per spool: recording
/// asks them for every event.
#[derive(Debug, Clone)]
pub(crate) struct EnvNames {
    /// `<APP>_TELEMETRY_DISABLED`.
    pub(crate) disabled: String,
    /// `<APP>_TELEMETRY`.
    pub(crate) telemetry: String,
    /// `<APP>_TELEMETRY_DEBUG`.
    pub(crate) debug: String,
}

impl EnvNames {
    /// The names for `app` (see [`env_prefix`]).
    pub(crate) fn new(app: &str) -> EnvNames {
        let p = env_prefix(app);
        EnvNames {
            disabled: format!("{p}_TELEMETRY_DISABLED"),
            telemetry: format!("{p}_TELEMETRY"),
            debug: format!("{p}_TELEMETRY_DEBUG"),
        }
    }
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

    fn under(vars: &[(&str, &str)], persisted: &Persisted, policy: ConsentPolicy) -> Consent {
        Consent::decide_under(
            "my-app",
            |k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            },
            persisted,
            policy,
        )
    }

    #[test]
    fn opt_in_is_undecided_until_a_choice_and_the_environment_still_comes_first() {
        use ConsentPolicy::*;
        let c = under(&[], &Persisted::Undecided, OptIn);
        assert!(!c.enabled);
        assert_eq!((c.rule, c.decision), ("default", Decision::Undecided));
        let c = under(&[], &Persisted::Undecided, OptOut);
        assert_eq!((c.enabled, c.decision), (true, Decision::Granted));
        assert_eq!(
            under(&[], &Persisted::Chosen(true), OptIn).decision,
            Decision::Granted
        );
        assert_eq!(
            under(&[], &Persisted::Chosen(false), OptIn).decision,
            Decision::Denied
        );
        // Rule 3 turns it on for that environment, over the opt-in default too ...
        let c = under(&[("MY_APP_TELEMETRY", "1")], &Persisted::Undecided, OptIn);
        assert_eq!((c.enabled, c.rule), (true, "env"));
        // ... and rules 1-2 win over a yes.
        let c = under(&[("DO_NOT_TRACK", "1")], &Persisted::Chosen(true), OptIn);
        assert_eq!((c.decision, c.rule), (Decision::Denied, "do_not_track"));
        assert!(c.by_environment() && !c.allows_deletion_request());
    }

    #[test]
    fn a_yes_on_an_older_fingerprint_is_undecided_under_opt_in_only() {
        let old = Fingerprint::from_entries(["run: usage", "run.ok: bool"]);
        let grown = Fingerprint::from_entries(["run: usage", "run.ok: bool", "run.ms: integer"]);
        let shrunk = Fingerprint::from_entries(["run: usage"]);
        let p = Persisted::judge(Some(true), Some(&old), &grown);
        assert_eq!(p, Persisted::Outdated(vec!["run.ms: integer".into()]));
        let c = under(&[], &p, ConsentPolicy::OptIn);
        assert_eq!(
            (c.enabled, c.rule, c.decision),
            (false, "material_change", Decision::Undecided)
        );
        assert!(c.reason.contains("run.ms: integer"), "{}", c.reason);
        assert!(under(&[], &p, ConsentPolicy::OptOut).enabled);
        // A removal is no change; a no stays a no.
        assert_eq!(
            Persisted::judge(Some(true), Some(&old), &shrunk),
            Persisted::Chosen(true)
        );
        assert_eq!(
            Persisted::judge(Some(false), Some(&old), &grown),
            Persisted::Chosen(false)
        );
        // Without a stored fingerprint, every declared entry is new.
        assert!(matches!(
            Persisted::judge(Some(true), None, &old),
            Persisted::Outdated(_)
        ));
        assert_eq!(
            Persisted::judge(Some(true), None, &Fingerprint::default()),
            Persisted::Chosen(true)
        );
    }

    #[test]
    fn an_opt_out_follows_a_yes_or_the_opt_out_default_only() {
        use ConsentPolicy::*;
        assert!(Persisted::Undecided.was_on(OptOut));
        assert!(!Persisted::Undecided.was_on(OptIn));
        assert!(Persisted::Chosen(true).was_on(OptIn));
        assert!(Persisted::Outdated(vec![]).was_on(OptIn));
        assert!(!Persisted::Chosen(false).was_on(OptOut));
        assert!(!Persisted::Unreadable("x".into()).was_on(OptOut));
    }

    #[test]
    fn policies_parse_and_print_alike() {
        for p in [ConsentPolicy::OptOut, ConsentPolicy::OptIn] {
            assert_eq!(p.as_str().parse::<ConsentPolicy>().unwrap(), p);
        }
        assert!("opt-in".parse::<ConsentPolicy>().is_err());
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
