//! The first-use notice a host shows once per install.

use std::io::{IsTerminal, Write};

use crate::spool::Spool;

impl Spool {
    /// Prints `text` to stderr once per install (and again when the catalog adds to
    /// what it was last shown for), and returns true if it did.
    ///
    /// Never when telemetry is off, in debug mode or under CI, and never unless both
    /// stdout and stderr are terminals: a host whose output is being parsed (JSON on
    /// stdout) or logged gets no surprise text. Remembered in `config.json`
    /// (`"notice_shown": true`); not shown at all if that cannot be saved.
    pub fn notice_once(&self, text: &str) -> bool {
        let ci = crate::context::in_ci(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        let interactive = !ci && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        self.notice_once_to(text, interactive, &mut std::io::stderr())
    }

    /// [`Spool::notice_once`] with the terminal (and CI) check's answer and the output
    /// given: `interactive` false means no notice.
    pub fn notice_once_to(&self, text: &str, interactive: bool, out: &mut dyn Write) -> bool {
        if !interactive || !self.consent().enabled || crate::consent::debug_mode(self.app()) {
            return false;
        }
        // Once per fingerprint: shown again only when the catalog adds to what the
        // notice was last shown for (a removal or a rewording is no reason).
        let current = self.catalog_fingerprint();
        let due = |s: &crate::Settings| {
            let empty = crate::Fingerprint::default();
            !s.notice_shown
                || !current
                    .additions(s.notice_fingerprint.as_ref().unwrap_or(&empty))
                    .is_empty()
        };
        if !self.settings().as_ref().is_none_or(due) {
            return false;
        }
        let stored = current.clone();
        if self
            .update_settings(|s| {
                s.notice_shown = true;
                s.notice_fingerprint = Some(stored);
            })
            .is_err()
        {
            return false;
        }
        writeln!(out, "{text}").is_ok()
    }
}
