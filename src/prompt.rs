//! The consent prompt: asks once per catalog fingerprint under `opt_in`, shows the
//! first-use notice once per fingerprint under `opt_out`, and acts only for a person
//! at a terminal (stdin, stdout and stderr all terminals, not under CI).

use std::io::{IsTerminal, Write};

use crate::consent::{ConsentPolicy, Decision};
use crate::spool::Spool;

/// Returns true if and only if `answer` grants: empty (Enter), `y` or `yes`, any case.
/// `n`, anything else, EOF and Ctrl-C deny.
pub(crate) fn grants(answer: &crate::sys::Answer) -> bool {
    match answer {
        crate::sys::Answer::Line(l) => {
            matches!(l.trim().to_ascii_lowercase().as_str(), "" | "y" | "yes")
        }
        crate::sys::Answer::Eof | crate::sys::Answer::Interrupted => false,
    }
}

impl Spool {
    /// Asks the user for consent if that is due, and returns the decision in force.
    ///
    /// Acts only when stdin, stdout and stderr are all terminals and not under CI;
    /// otherwise it returns at once, asks nothing, writes nothing (to stderr or to
    /// disk) and decides nothing. An environment rule (`DO_NOT_TRACK`,
    /// `<APP>_TELEMETRY…`) is never asked over.
    ///
    /// Under [`ConsentPolicy::OptIn`], a user who has not answered for this catalog's
    /// fingerprint (never, or before the catalog added something) is asked once, on
    /// stderr, with a summary of what would be collected: Enter or `y`/`yes` grants;
    /// `n`, anything else, EOF and Ctrl-C deny. The answer is persisted like
    /// [`Spool::enable`] / [`Spool::disable`]. Under [`ConsentPolicy::OptOut`] it asks
    /// nothing: it shows the first-use notice once per fingerprint and reports the
    /// decision (granted, unless the user opted out).
    pub fn ask_consent(&self) -> Decision {
        let is_set = |k: &str| {
            self.inner
                .var(k)
                .is_some_and(|v| !v.is_empty() && !crate::consent::is_falsy(&v))
        };
        let interactive = !crate::context::in_ci(is_set)
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal()
            && crate::sys::in_foreground();
        if !interactive {
            return self.consent().decision;
        }
        self.ask_consent_interactive(&mut std::io::stderr())
    }

    fn ask_consent_interactive(&self, out: &mut dyn Write) -> Decision {
        let consent = self.consent();
        if consent.by_environment()
            || !matches!(consent.rule, "default" | "persisted" | "material_change")
        {
            return consent.decision;
        }
        if consent.policy == ConsentPolicy::OptOut {
            if consent.enabled {
                self.notice_once_to(&self.consent_summary(), true, out);
            }
            return consent.decision;
        }
        if consent.decision != Decision::Undecided {
            return consent.decision;
        }
        let mut text = self.consent_summary();
        if consent.rule == "material_change" {
            text.push_str(&format!(
                "\nWhat changed since you last answered: {}\n",
                consent.reason
            ));
        }
        let _ = write!(
            out,
            "{text}\nSend anonymous usage statistics for {}? [Y/n] ",
            self.app()
        );
        let _ = out.flush();
        let answer = crate::sys::read_answer();
        if !matches!(answer, crate::sys::Answer::Line(_)) {
            // The cursor is still after the question: end its line.
            let _ = writeln!(out);
        }
        let saved = if grants(&answer) {
            self.enable()
        } else {
            self.disable().map(|_| ())
        };
        if let Err(e) = saved {
            log::debug!("eventspool: the answer could not be saved: {e}");
        }
        let now = self.consent();
        let _ = match now.decision {
            Decision::Granted => writeln!(
                out,
                "Thank you: usage statistics are on. {}",
                self.opt_out_hint()
            ),
            _ => writeln!(out, "Usage statistics stay off; nothing is sent."),
        };
        now.decision
    }

    /// How to opt out later, with this app's real variable names.
    pub(crate) fn opt_out_hint(&self) -> String {
        let prefix = crate::consent::env_prefix(self.app());
        format!(
            "To opt out at any time: `spool --app {} disable`, or set {prefix}_TELEMETRY=0 or DO_NOT_TRACK=1.",
            self.app()
        )
    }

    /// What the prompt and the notice say is collected: generated from the catalog
    /// when there is one (each event and its fields, what is never collected, where
    /// it is sent), and in any case how to opt out later.
    pub(crate) fn consent_summary(&self) -> String {
        let lead = match self.policy() {
            ConsentPolicy::OptIn => "would like to collect",
            ConsentPolicy::OptOut => "collects",
        };
        let mut text = format!("{} {lead} anonymous usage statistics", self.app());
        let Some(catalog) = self.catalog() else {
            text.push_str(
                ": the events it records, with where it runs (tool version, OS, architecture, \
                 a hashed machine id, container and CI detection) and an anonymous install id.\n",
            );
            text.push_str(&self.opt_out_hint());
            text.push('\n');
            return text;
        };
        text.push_str(". What would be sent:\n");
        for e in &catalog.events {
            text.push_str(&format!(
                "  - {} ({}): {}\n",
                e.name,
                e.category.as_str(),
                e.description
            ));
            let fields: Vec<String> = e.properties.iter().map(describe_property).collect();
            if !fields.is_empty() {
                text.push_str(&format!("      {}\n", fields.join(", ")));
            }
        }
        text.push_str(
            "  With every event: tool version, OS and release, architecture, a hashed machine id, \
             container and CI detection, an anonymous install id.\n",
        );
        if !catalog.never_collected.is_empty() {
            text.push_str("Never collected:\n");
            for item in &catalog.never_collected {
                text.push_str(&format!("  - {item}\n"));
            }
        }
        if let Some(to) = &catalog.sent_to {
            text.push_str(&format!("Sent to: {to}\n"));
        }
        text.push_str(&self.opt_out_hint());
        text.push('\n');
        text
    }
}

/// One declared property in a few words: `trigger (user|service)`, `duration
/// (integer)`, `error.message (string, at most 1000 characters)`.
fn describe_property(p: &crate::DeclaredProperty) -> String {
    let kind = match &p.kind {
        crate::PropertyType::Enum(values) => values.join("|"),
        other => other.name().to_string(),
    };
    match p.max_length {
        Some(n) => format!("{} ({kind}, at most {n} characters)", p.name),
        None => format!("{} ({kind})", p.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Answer;

    #[test]
    fn the_summary_lists_each_event_its_fields_and_what_is_never_collected() {
        use crate::{Catalog, DeclaredEvent, DeclaredProperty};
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new("jr")
            .never_collected(["Source code"])
            .sent_to("https://t.example.com/usage")
            .event(
                DeclaredEvent::usage("job_finished", "A job finished.")
                    .property(DeclaredProperty::one_of(
                        "trigger",
                        ["user", "service"],
                        "Who",
                    ))
                    .property(DeclaredProperty::string("error.message", "Why").max_length(1000)),
            );
        let spool = Spool::builder("jr")
            .dir(dir.path())
            .catalog(catalog)
            .consent_policy(ConsentPolicy::OptIn)
            .build();
        let text = spool.consent_summary();
        for want in [
            "jr would like to collect anonymous usage statistics",
            "  - job_finished (usage): A job finished.",
            "trigger (user|service), error.message (string, at most 1000 characters)",
            "Never collected:\n  - Source code",
            "Sent to: https://t.example.com/usage",
            "JR_TELEMETRY=0",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
    }

    #[test]
    fn enter_and_yes_grant_everything_else_denies() {
        for yes in ["", "y", "Y", "yes", " YES "] {
            assert!(grants(&Answer::Line(yes.into())), "{yes:?}");
        }
        for no in ["n", "no", "nope", "sure", "1"] {
            assert!(!grants(&Answer::Line(no.into())), "{no:?}");
        }
        assert!(!grants(&Answer::Eof));
        assert!(!grants(&Answer::Interrupted));
    }
}
