//! The catalog fingerprint: what a user consented to, as a set of entries, and the
//! rule that says whether a newer catalog discloses more (a material change).
//!
//! The catalog builds it ([`Fingerprint::from_entries`]); consent stores it in
//! `config.json` beside the decision and compares it with the current one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The set of declared `event.property: type` entries, with each event's category,
/// each `enum` value and each `max_length`.
///
/// Entries are plain strings, so `config.json` shows a user what they agreed to:
/// - `job_finished: usage` (an event and its category);
/// - `job_finished.duration: integer` (a property and its type);
/// - `job_finished.trigger: enum user` (one per `enum` value);
/// - `job_finished.error.message: max_length 1000` (a property's length limit).
///
/// ```
/// use eventspool::Fingerprint;
/// let old = Fingerprint::from_entries(["run: usage", "run.ok: bool"]);
/// let new = Fingerprint::from_entries(["run: usage", "run.ok: bool", "run.ms: integer"]);
/// assert_eq!(new.additions(&old), vec!["run.ms: integer".to_string()]);
/// assert!(old.additions(&new).is_empty()); // a removal is not material
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint {
    entries: BTreeSet<String>,
}

const MAX_LENGTH: &str = ": max_length ";

impl Fingerprint {
    /// A fingerprint of exactly these entries (in the forms listed on the type).
    pub fn from_entries<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            entries: entries.into_iter().map(Into::into).collect(),
        }
    }

    /// The entries, sorted.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(String::as_str)
    }

    /// True if and only if there are no entries (no catalog).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What this fingerprint discloses beyond `since` (the one the user last saw):
    /// every entry missing from `since`, except that a `max_length` counts only when
    /// it grew, or was dropped (unlimited) from a property `since` limited. Empty
    /// means no material change: removals and rewordings never count.
    pub fn additions(&self, since: &Fingerprint) -> Vec<String> {
        let limits = |f: &Fingerprint| -> BTreeMap<String, u64> {
            f.entries
                .iter()
                .filter_map(|e| {
                    let (key, n) = e.split_once(MAX_LENGTH)?;
                    Some((key.to_string(), n.trim().parse().ok()?))
                })
                .collect()
        };
        let (now, before) = (limits(self), limits(since));
        let mut out: Vec<String> = self
            .entries
            .iter()
            .filter(|e| !since.entries.contains(*e))
            .filter(|e| match e.split_once(MAX_LENGTH) {
                // A limit on a property `since` had without one is a narrowing.
                Some((key, _)) => before.get(key).is_some_and(|old| now[key] > *old),
                None => true,
            })
            .cloned()
            .collect();
        // A limit lifted from a property still declared: it may now carry more.
        for key in before.keys() {
            let still_declared = self
                .entries
                .iter()
                .any(|e| e.split_once(": ").is_some_and(|(k, _)| k == key));
            if still_declared && !now.contains_key(key) {
                out.push(format!("{key}: unlimited length"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(e: &[&str]) -> Fingerprint {
        Fingerprint::from_entries(e.iter().copied())
    }

    #[test]
    fn a_new_event_property_type_category_or_enum_value_is_material() {
        let old = fp(&["a: usage", "a.x: string", "a.t: enum u"]);
        for added in [
            "b: usage",
            "a.y: bool",
            "a.x: integer",
            "a: error",
            "a.t: enum s",
        ] {
            let mut new = old.clone();
            new.entries.insert(added.to_string());
            assert_eq!(new.additions(&old), vec![added.to_string()], "{added}");
        }
    }

    #[test]
    fn removals_and_a_smaller_or_new_max_length_are_not_material() {
        let old = fp(&[
            "a: usage",
            "a.x: string",
            "a.x: max_length 100",
            "a.y: bool",
        ]);
        assert!(
            fp(&["a: usage", "a.x: string", "a.x: max_length 50"])
                .additions(&old)
                .is_empty()
        );
        let unlimited = fp(&["a: usage", "a.x: string", "a.y: bool"]);
        assert!(
            fp(&["a: usage", "a.x: string", "a.x: max_length 9", "a.y: bool"])
                .additions(&unlimited)
                .is_empty()
        );
        // A removed property takes its limit with it: nothing new is disclosed.
        assert!(fp(&["a: usage", "a.y: bool"]).additions(&old).is_empty());
    }

    #[test]
    fn a_larger_or_lifted_max_length_is_material() {
        let old = fp(&["a: usage", "a.x: string", "a.x: max_length 100"]);
        assert_eq!(
            fp(&["a: usage", "a.x: string", "a.x: max_length 200"]).additions(&old),
            vec!["a.x: max_length 200".to_string()]
        );
        assert_eq!(
            fp(&["a: usage", "a.x: string"]).additions(&old),
            vec!["a.x: unlimited length".to_string()]
        );
    }

    #[test]
    fn serialises_as_a_sorted_list_of_strings() {
        let f = fp(&["b: usage", "a: error"]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"["a: error","b: usage"]"#
        );
        assert_eq!(
            serde_json::from_str::<Fingerprint>(r#"["b: usage","a: error"]"#).unwrap(),
            f
        );
    }
}
