//! What recording asks of the catalog: is this event, with these values, declared?
//! And after scrubbing, which strings are cut to their `max_length`.
//!
//! The catalog is compiled once into hash lookups, so checking an event costs a few
//! lookups per property (the bench holds it to 2 µs at p50 for 30 properties).

/// A fast hash for short names: the keys are the host's own declared names, so the
/// flooding a random seed defends against is not a threat here.
type Map2<V> = std::collections::HashMap<String, V, foldhash::fast::FixedState>;
type Set = std::collections::HashSet<String, foldhash::fast::FixedState>;

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::date::day_of;
use super::{Catalog, Expiry, PropertyType};

/// Why the catalog refused an event. Never holds a value the host gave: the message
/// may be logged, and a refused value is exactly what must not leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) event: String,
    /// The property's dotted name; `None` when the event itself is refused.
    pub(crate) field: Option<String>,
    pub(crate) why: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}.{field}: {}", self.event, self.why),
            None => write!(f, "{}: {}", self.event, self.why),
        }
    }
}

/// What the check found of an event it accepts, for the scrubbing after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Some string of a property with a `max_length` may be over it even unscrubbed.
    pub(crate) long: bool,
    /// Every entry is a declared property by its flat name (no nested object), so
    /// [`EventRules::scrub_flat`] can scrub it by the declared types.
    pub(crate) flat: bool,
}

/// The catalog as recording uses it.
#[derive(Debug)]
pub(crate) struct Rules {
    app: String,
    events: Map2<EventRules>,
    /// Whether some event has an expiry date: only then is the clock asked.
    any_expiry: bool,
}

#[derive(Debug)]
pub(crate) struct EventRules {
    /// The first day (see `Date::day_number`) the event is refused on.
    expires_on: Option<(i64, String)>,
    /// The declared names one after another, in the declared order, then every
    /// `enum` value: hosts send their properties in that order, so each is found by
    /// comparing with the next one here, in a few cache lines, before any hashing
    /// (recording runs between disk writes that leave little in the cache).
    names: String,
    /// Each property, compact (24 bytes), in the declared order.
    declared: Vec<Slot>,
    /// The spans in `names` of the `enum` values, each enum's one after another.
    values: Vec<(u32, u32)>,
    /// Each property's type as declared, by position: only a refusal reads it.
    kinds: Vec<PropertyType>,
    /// Position in `declared` by name, for properties sent out of order.
    index: Map2<usize>,
    /// Every proper dotted prefix of a declared name (`host` for `host.platform`):
    /// an object under such a key holds nested declared values.
    prefixes: Set,
    /// The `enum`s: `(name, values)`.
    enums: Vec<(String, Vec<String>)>,
    /// The `enum`s whose values the scrubber would change: those are kept from it, so
    /// they are stored as declared. Worked out on first use (the scrubber knows this
    /// user's names only then); almost always empty, so asking costs nothing.
    raw: OnceLock<Vec<String>>,
    /// `(name, max_length)` of the properties that have one.
    cuts: Vec<(String, usize)>,
    /// Whether some property with a `max_length` has a dotted name: only then can a
    /// value to cut sit in a nested object.
    dotted_cuts: bool,
}

/// Where [`EventRules::cut_entry`] is in the declared order, and whether an entry
/// was an object (which may hold nested values to cut).
pub(crate) struct Cutter {
    cursor: usize,
    nested: bool,
}

/// One declared property, compiled: its name's span in `names`, its `max_length`
/// (`u32::MAX`: none), and its type, an `enum` as a span of `values`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u32,
    len: u32,
    kind: Kind,
    /// Whether the name is an error message's ([`crate::privacy::is_error_key`]),
    /// worked out once here instead of for every value.
    error_key: bool,
    max: u32,
    first_value: u32,
    value_count: u32,
}

/// [`PropertyType`] without the `enum`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Bool,
    Integer,
    Number,
    Enum,
    StringList,
}

impl Slot {
    fn max(&self) -> Option<usize> {
        (self.max != u32::MAX).then_some(self.max as usize)
    }
}

impl Rules {
    /// Compiles a validated catalog.
    pub(crate) fn new(catalog: &Catalog) -> Rules {
        let mut events = Map2::with_capacity_and_hasher(catalog.events.len(), Default::default());
        for e in &catalog.events {
            let mut rules = EventRules {
                expires_on: match e.expires {
                    Expiry::Never => None,
                    Expiry::On(d) => Some((d.day_number(), d.to_string())),
                },
                names: String::new(),
                declared: Vec::with_capacity(e.properties.len()),
                values: Vec::new(),
                kinds: Vec::with_capacity(e.properties.len()),
                index: Map2::with_capacity_and_hasher(e.properties.len(), Default::default()),
                prefixes: Set::default(),
                enums: Vec::new(),
                raw: OnceLock::new(),
                cuts: Vec::new(),
                dotted_cuts: false,
            };
            for p in &e.properties {
                for (i, _) in p.name.match_indices('.') {
                    rules.prefixes.insert(p.name[..i].to_string());
                }
                if let PropertyType::Enum(values) = &p.kind {
                    rules.enums.push((p.name.clone(), values.clone()));
                }
                let max = p
                    .max_length
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                if let Some(n) = max {
                    rules.cuts.push((p.name.clone(), n));
                    rules.dotted_cuts |= p.name.contains('.');
                }
                let start = rules.names.len() as u32;
                rules.names.push_str(&p.name);
                rules.index.insert(p.name.clone(), rules.declared.len());
                rules.declared.push(Slot {
                    start,
                    len: p.name.len() as u32,
                    error_key: crate::privacy::is_error_key(&p.name),
                    kind: match p.kind {
                        PropertyType::String => Kind::String,
                        PropertyType::Bool => Kind::Bool,
                        PropertyType::Integer => Kind::Integer,
                        PropertyType::Number => Kind::Number,
                        PropertyType::Enum(_) => Kind::Enum,
                        PropertyType::StringList => Kind::StringList,
                    },
                    // A limit past u32::MAX characters limits nothing.
                    max: max.map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX)),
                    first_value: 0,
                    value_count: 0,
                });
                rules.kinds.push(p.kind.clone());
            }
            // The enum values after all the names, so the names stay together.
            for (slot, kind) in rules.declared.iter_mut().zip(&rules.kinds) {
                if let PropertyType::Enum(values) = kind {
                    // A catalog file is at most 4 MiB; one built in code holding 4 GiB
                    // of names and values is beyond any host.
                    slot.first_value = u32::try_from(rules.values.len()).unwrap_or(u32::MAX);
                    slot.value_count = u32::try_from(values.len()).unwrap_or(u32::MAX);
                    for v in values {
                        let start = rules.names.len() as u32;
                        rules.names.push_str(v);
                        rules.values.push((start, v.len() as u32));
                    }
                }
            }
            events.insert(e.name.clone(), rules);
        }
        Rules {
            app: catalog.app.clone(),
            any_expiry: catalog.events.iter().any(|e| e.expires != Expiry::Never),
            events,
        }
    }

    /// Checks one event as the host gave it, at `now_ms` on the spool's clock.
    pub(crate) fn check(
        &self,
        event: &str,
        props: &Map<String, Value>,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        self.verdict(event, props, now_ms).map(|_| ())
    }

    /// Returns true if and only if some event has an expiry date, so checking needs
    /// the time.
    pub(crate) fn any_expiry(&self) -> bool {
        self.any_expiry
    }

    /// [`Rules::check`], saying too what the scrubbing after it needs to know (see
    /// [`Verdict`]): `long` is false only when every string of a property with a
    /// `max_length` is within it (in bytes, so in characters).
    pub(crate) fn verdict(
        &self,
        event: &str,
        props: &Map<String, Value>,
        now_ms: i64,
    ) -> Result<Verdict, Refusal> {
        // The usual event passes the tight loop; a refusal, or values nested under a
        // dotted prefix, take the full walk, which says why.
        if let Some(rules) = self.events.get(event) {
            let live = rules
                .expires_on
                .as_ref()
                .is_none_or(|(day, _)| day_of(now_ms) < *day);
            if let (true, Some(long)) = (live, rules.all_declared_flat(props)) {
                return Ok(Verdict { long, flat: true });
            }
        }
        let mut found = Vec::new();
        self.collect(event, props, now_ms, false, &mut found);
        found.pop().map_or(
            Ok(Verdict {
                long: true,
                flat: false,
            }),
            Err,
        )
    }

    /// Every reason to refuse the event, not only the first (for `schema --check`).
    pub(crate) fn problems(
        &self,
        event: &str,
        props: &Map<String, Value>,
        now_ms: i64,
    ) -> Vec<Refusal> {
        let mut found = Vec::new();
        self.collect(event, props, now_ms, true, &mut found);
        found
    }

    /// Adds the reasons to refuse the event to `found`: only the first unless `all`.
    fn collect(
        &self,
        event: &str,
        props: &Map<String, Value>,
        now_ms: i64,
        all: bool,
        found: &mut Vec<Refusal>,
    ) {
        let refuse = |field: Option<String>, why: String| Refusal {
            event: event.to_string(),
            field,
            why,
        };
        let Some(rules) = self.events.get(event) else {
            found.push(refuse(
                None,
                format!("not declared in the {} catalog", self.app),
            ));
            return;
        };
        if let Some((day, date)) = &rules.expires_on {
            if day_of(now_ms) >= *day {
                found.push(refuse(
                    None,
                    format!("expired on {date} (the catalog's expires date)"),
                ));
                if !all {
                    return;
                }
            }
        }
        let mut fields = Vec::new();
        rules.check_map(props, None, all, &mut fields);
        found.extend(
            fields
                .into_iter()
                .map(|(field, why)| refuse(Some(field), why)),
        );
    }

    /// The rules of the declared event `name`, if it is declared.
    pub(crate) fn event(&self, name: &str) -> Option<&EventRules> {
        self.events.get(name)
    }
}

impl EventRules {
    /// Returns true if and only if `key` is a declared `enum`, whose value is stored
    /// exactly as declared. A scan, not a lookup: the scrubber asks for every key,
    /// and an event has few enums.
    pub(crate) fn is_raw(&self, key: &str) -> bool {
        let raw = self.raw();
        !raw.is_empty() && raw.iter().any(|r| r == key)
    }

    /// Returns true if and only if some `enum` of this event is kept from the scrubber.
    pub(crate) fn has_raw(&self) -> bool {
        !self.raw().is_empty()
    }

    fn raw(&self) -> &[String] {
        self.raw.get_or_init(|| {
            let scrubber = crate::privacy::current_user();
            self.enums
                .iter()
                .filter(|(name, values)| {
                    values.iter().any(|v| {
                        let mut probe = Value::String(v.clone());
                        scrubber.scrub_value(name, &mut probe);
                        probe.as_str() != Some(v.as_str())
                    })
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
    }

    /// The `enum` values that arrived nested (`{"host": {"os": …}}` for a declared
    /// `host.os`), taken before scrubbing so [`EventRules::finish`] can put them back
    /// as declared. Empty for almost every event: only dotted enums count.
    pub(crate) fn nested_enums(&self, props: &Map<String, Value>) -> Vec<(String, Value)> {
        let raw = self.raw();
        if !raw.iter().any(|n| n.contains('.')) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for name in raw.iter().filter(|n| n.contains('.')) {
            if props.contains_key(name.as_str()) {
                continue; // the flat key: kept raw by `is_raw`
            }
            if let Some(v) = find(props, name) {
                out.push((name.clone(), v.clone()));
            }
        }
        out
    }

    /// Scrubs an event the check found flat ([`Verdict::flat`]) by its declared
    /// types, and cuts its strings to their `max_length` (all of them if `long`, else
    /// those the scrubber changed). A declared name and an `enum` value are the
    /// catalog's own text, never the user's, so they are stored as declared: only
    /// `string` and `string_list` values are scrubbed (except those `keep` names, a
    /// host's [`crate::Event::unscrubbed_property`]).
    pub(crate) fn scrub_flat(
        &self,
        props: &mut Map<String, Value>,
        scrubber: &crate::privacy::Scrubber,
        keep: impl Fn(&str) -> bool,
        long: bool,
    ) {
        let mut cursor = 0;
        for (key, value) in props.iter_mut() {
            let Some((_, slot)) = self.slot(key, &mut cursor) else {
                // The check found every key declared in this same map, so never; if
                // it were, the value is scrubbed as without a catalog.
                if !keep(key) {
                    scrubber.scrub_value(key, value);
                }
                continue;
            };
            if !matches!(slot.kind, Kind::String | Kind::StringList) {
                continue;
            }
            let changed = !keep(key) && scrubber.scrub_declared(value, slot.error_key);
            if slot.max != u32::MAX && (long || changed) {
                cut(value, slot.max as usize);
            }
        }
    }

    /// A cutter for [`EventRules::cut_entry`]: where in the declared order it is.
    pub(crate) fn cutter(&self) -> Cutter {
        Cutter {
            cursor: 0,
            nested: false,
        }
    }

    /// Called on each top-level entry once it is scrubbed, in the object's order:
    /// cuts a string (or each string of a list) of a property with a `max_length` to
    /// that many characters, the ellipsis included. Found as the check found it, by
    /// comparing with the next declared name, not by a lookup per cut.
    #[inline]
    pub(crate) fn cut_entry(&self, c: &mut Cutter, key: &str, v: &mut Value) {
        match v {
            Value::String(_) | Value::Array(_) => {}
            Value::Object(_) => {
                c.nested = true;
                c.cursor += 1;
                return;
            }
            // Not cut, but the next declared one in a host's usual order.
            _ => {
                c.cursor += 1;
                return;
            }
        }
        if let Some(max) = self.slot(key, &mut c.cursor).and_then(|(_, s)| s.max()) {
            cut(v, max);
        }
    }

    /// After scrubbing (and [`EventRules::cut_entry`] on every entry): puts nested
    /// `enum` values back as declared, and cuts the values of dotted properties with
    /// a `max_length` that arrived nested.
    pub(crate) fn finish(
        &self,
        props: &mut Map<String, Value>,
        enums: Vec<(String, Value)>,
        c: &Cutter,
    ) {
        for (name, value) in enums {
            if let Some(slot) = find_mut(props, &name) {
                *slot = value;
            }
        }
        if c.nested && self.dotted_cuts {
            for (name, max) in self.cuts.iter().filter(|(n, _)| n.contains('.')) {
                if props.contains_key(name.as_str()) {
                    continue; // flat: cut in the pass
                }
                if let Some(v) = find_mut(props, name) {
                    cut(v, *max);
                }
            }
        }
    }

    /// The type of the declared property `name`: the one after `cursor` if that is it
    /// (then `cursor` moves past it), else looked up.
    fn lookup(&self, name: &str, cursor: &mut usize) -> Option<(usize, &Slot)> {
        self.slot(name, cursor)
    }

    /// Returns true if and only if `value` (not `null`) has the type of `slot`.
    #[inline(always)]
    fn accepts(&self, slot: &Slot, value: &Value) -> bool {
        match (slot.kind, value) {
            (Kind::String, Value::String(_)) => true,
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Kind::Number, Value::Number(_)) => true,
            (Kind::Enum, Value::String(s)) => {
                let first = slot.first_value as usize;
                let spans = self
                    .values
                    .get(first..first + slot.value_count as usize)
                    .unwrap_or_default();
                spans
                    .iter()
                    .any(|&(start, len)| self.names_hold(start as usize, len as usize, s))
            }
            (Kind::StringList, Value::Array(items)) => items.iter().all(Value::is_string),
            _ => false,
        }
    }

    /// Returns true if and only if `names[start..start + len]` is `text`.
    #[inline(always)]
    fn names_hold(&self, start: usize, len: usize, text: &str) -> bool {
        len == text.len()
            && self
                .names
                .as_bytes()
                .get(start..start + len)
                .is_some_and(|held| same_short(held, text.as_bytes()))
    }

    /// The declared property `name`: the one after `cursor` if that is it (then
    /// `cursor` moves past it), else looked up. Inlined, with the look-up apart: it
    /// runs once per property of every recorded event.
    #[inline(always)]
    fn slot(&self, name: &str, cursor: &mut usize) -> Option<(usize, &Slot)> {
        let i = *cursor;
        if let Some(slot) = self.declared.get(i) {
            if self.names_hold(slot.start as usize, slot.len as usize, name) {
                *cursor += 1;
                return Some((i, slot));
            }
        }
        self.slot_by_name(name, cursor)
    }

    /// [`EventRules::slot`] for a property sent out of the declared order.
    #[cold]
    #[inline(never)]
    fn slot_by_name(&self, name: &str, cursor: &mut usize) -> Option<(usize, &Slot)> {
        let i = *self.index.get(name)?;
        *cursor = i + 1;
        Some((i, self.declared.get(i)?))
    }

    /// If every entry of `map` is a declared property, by its flat name, with a value
    /// of its type (or `null`): whether some string of a property with a `max_length`
    /// is longer than it in bytes. `None` otherwise. Few branches and no formatting: it
    /// runs for every recorded event, after a disk write has left the caches and the
    /// branch predictor cold.
    #[inline]
    fn all_declared_flat(&self, map: &Map<String, Value>) -> Option<bool> {
        let mut cursor = 0;
        let mut long = false;
        for (key, value) in map {
            let (_, slot) = self.slot(key, &mut cursor)?;
            if !(value.is_null() || self.accepts(slot, value)) {
                return None;
            }
            if slot.max != u32::MAX {
                long |= exceeds(value, slot.max as usize);
            }
        }
        Some(long)
    }

    /// Checks the entries of `map`, found under the dotted `prefix` (`None` at the
    /// top), adding each field refused (its dotted name and why) to `found`; stops at
    /// the first unless `all`. Returns false once it stopped.
    fn check_map(
        &self,
        map: &Map<String, Value>,
        prefix: Option<&str>,
        all: bool,
        found: &mut Vec<(String, String)>,
    ) -> bool {
        let mut cursor = 0;
        for (key, value) in map {
            let joined;
            let name = match prefix {
                None => key.as_str(),
                Some(p) => {
                    joined = format!("{p}.{key}");
                    joined.as_str()
                }
            };
            if let Some((i, slot)) = self.lookup(name, &mut cursor) {
                if value.is_null() || self.accepts(slot, value) {
                    continue;
                }
                let Some(kind) = self.kinds.get(i) else {
                    continue;
                };
                let why = match kind {
                    PropertyType::Enum(values) if value.is_string() => {
                        format!("a value outside its enum ({})", values.join(", "))
                    }
                    PropertyType::StringList if value.is_array() => {
                        "expected string_list, got an array holding a non-string".to_string()
                    }
                    kind => format!("expected {}, got {}", kind.name(), describe(value)),
                };
                found.push((name.to_string(), why));
            } else if let (Value::Object(inner), true) = (value, self.prefixes.contains(name)) {
                if !self.check_map(inner, Some(name), all, found) {
                    return false;
                }
                continue;
            } else {
                found.push((name.to_string(), "not declared in the catalog".to_string()));
            }
            if !all {
                return false;
            }
        }
        true
    }
}

/// `a == b` for slices of equal length, compared in registers up to 16 bytes (names
/// and enum values are short), without the call a slice comparison makes.
#[inline(always)]
fn same_short(a: &[u8], b: &[u8]) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    fn half(s: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    }
    fn pair(s: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([s[at], s[at + 1]])
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        // Two overlapping loads cover every length from 8 to 16 (4 to 7, 2 to 3).
        8..=16 => (word(a, 0) ^ word(b, 0)) | (word(a, n - 8) ^ word(b, n - 8)) == 0,
        4..=7 => (half(a, 0) ^ half(b, 0)) | (half(a, n - 4) ^ half(b, n - 4)) == 0,
        2..=3 => (pair(a, 0) ^ pair(b, 0)) | (pair(a, n - 2) ^ pair(b, n - 2)) == 0,
        1 => a[0] == b[0],
        0 => true,
        _ => a == b,
    }
}

/// Returns true if and only if a string, or a string of a list, is longer than `max`
/// bytes: only such a one (or one the scrubber changed) can be over `max` characters.
fn exceeds(v: &Value, max: usize) -> bool {
    match v {
        Value::String(s) => s.len() > max,
        Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| s.len() > max)),
        _ => false,
    }
}

/// Cuts a string, or each string of a list, to `max` characters, the ellipsis included.
fn cut(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => crate::privacy::truncate_chars(s, max),
        Value::Array(items) => {
            for item in items {
                if let Value::String(s) = item {
                    crate::privacy::truncate_chars(s, max);
                }
            }
        }
        _ => {}
    }
}

/// What a refused value is, without saying what it holds.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        other => crate::event::json_type(other),
    }
}

/// The value under the dotted `name`: the flat key, or nested objects along any
/// split of it at dots (`a.b.c` as `a` → `b.c`, `a.b` → `c`, …).
fn find<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    for (i, _) in name.match_indices('.') {
        if let Some(Value::Object(inner)) = map.get(&name[..i]) {
            if let Some(v) = find(inner, &name[i + 1..]) {
                return Some(v);
            }
        }
    }
    None
}

/// [`find`], mutably.
fn find_mut<'a>(map: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Value> {
    // One hash lookup for the usual undotted name (this runs per declared cut on
    // every recorded event).
    if !name.contains('.') {
        return map.get_mut(name);
    }
    if map.contains_key(name) {
        return map.get_mut(name);
    }
    let split = name.match_indices('.').map(|(i, _)| i).find(|&i| {
        matches!(map.get(&name[..i]), Some(Value::Object(inner)) if find(inner, &name[i + 1..]).is_some())
    })?;
    match map.get_mut(&name[..split]) {
        Some(Value::Object(inner)) => find_mut(inner, &name[split + 1..]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DeclaredEvent, DeclaredProperty, Expiry};
    use serde_json::json;

    fn rules() -> Rules {
        Rules::new(
            &Catalog::new("jobrunner")
                .event(
                    DeclaredEvent::usage("job_finished", "A job finished.")
                        .property(DeclaredProperty::integer("duration", "ms"))
                        .property(DeclaredProperty::number("ratio", "r"))
                        .property(DeclaredProperty::bool("success", "ok"))
                        .property(DeclaredProperty::one_of(
                            "trigger",
                            ["user", "service"],
                            "who",
                        ))
                        .property(DeclaredProperty::string("host.platform", "os"))
                        .property(DeclaredProperty::one_of(
                            "host.kind",
                            ["vm", "ops@example.com"],
                            "k",
                        ))
                        .property(DeclaredProperty::string_list("adapters", "a"))
                        .property(DeclaredProperty::string("error.message", "why").max_length(10)),
                )
                .event(
                    DeclaredEvent::usage("old", "Gone soon.")
                        .expires(Expiry::parse("2026-12-01").unwrap()),
                ),
        )
    }

    fn check(event: &str, props: Value) -> Result<(), String> {
        let Value::Object(map) = props else { panic!() };
        // 2026-11-30T12:00:00Z
        rules()
            .check(event, &map, 1_796_083_200_000 - 12 * 3_600_000)
            .map_err(|r| r.to_string())
    }

    #[test]
    fn short_comparisons_agree_with_slice_equality() {
        let texts: Vec<Vec<u8>> = (0..40)
            .map(|n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        for a in &texts {
            for b in &texts {
                assert_eq!(same_short(a, b), a == b);
                // One byte different anywhere.
                for i in 0..a.len() {
                    let mut c = a.clone();
                    c[i] ^= 1;
                    assert!(!same_short(a, &c), "{a:?} {i}");
                }
            }
        }
    }

    /// Each enum is checked against its own values, however many an earlier one has
    /// (their places in the compiled rules once overflowed 16 bits).
    #[test]
    fn each_enum_is_checked_against_its_own_values_past_65536_of_them() {
        let big: Vec<String> = (0..70_000).map(|i| format!("v{i}")).collect();
        let r = Rules::new(
            &Catalog::new("t").event(
                DeclaredEvent::usage("e", "d")
                    .property(DeclaredProperty::one_of("big", big, "p"))
                    .property(DeclaredProperty::one_of("small", ["x", "y"], "p")),
            ),
        );
        let check = |v: Value| {
            let Value::Object(m) = v else { panic!() };
            r.check("e", &m, 0)
        };
        assert!(check(json!({"big": "v69999", "small": "y"})).is_ok());
        assert!(check(json!({"small": "v5"})).is_err());
        assert!(check(json!({"big": "x"})).is_err());
    }

    #[test]
    fn declared_values_pass_and_null_counts_as_absent() {
        assert_eq!(check("job_finished", json!({})), Ok(()));
        assert_eq!(
            check(
                "job_finished",
                json!({"duration": 3, "ratio": 0.5, "success": true, "trigger": "user",
                       "host.platform": "linux", "adapters": ["a", "b"], "error.message": null})
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "job_finished",
                json!({"host": {"platform": "linux", "kind": "vm"}})
            ),
            Ok(())
        );
        assert_eq!(
            check("job_finished", json!({"ratio": 3})),
            Ok(()),
            "an integer is a number"
        );
        assert_eq!(check("old", json!({})), Ok(()), "the day before it expires");
        // In any order, not only the declared one.
        assert_eq!(
            check(
                "job_finished",
                json!({"error.message": "x", "trigger": "service", "duration": 3, "success": false})
            ),
            Ok(())
        );
        assert!(check("job_finished", json!({"duration": 3, "duration2": 3})).is_err());
    }

    #[test]
    fn each_refusal_names_the_event_and_field_and_never_the_value() {
        for (event, props, says) in [
            (
                "job_started",
                json!({}),
                "job_started: not declared in the jobrunner catalog",
            ),
            (
                "job_finished",
                json!({"colour": "red"}),
                "job_finished.colour: not declared in the catalog",
            ),
            (
                "job_finished",
                json!({"host": {"secret": "x"}}),
                "job_finished.host.secret: not declared in the catalog",
            ),
            (
                "job_finished",
                json!({"host": "linux"}),
                "job_finished.host: not declared in the catalog",
            ),
            (
                "job_finished",
                json!({"duration": "31812"}),
                "job_finished.duration: expected integer, got a string",
            ),
            (
                "job_finished",
                json!({"duration": 1.5}),
                "job_finished.duration: expected integer, got a number with a fraction",
            ),
            (
                "job_finished",
                json!({"success": 1}),
                "job_finished.success: expected bool, got a number",
            ),
            (
                "job_finished",
                json!({"trigger": "robot@example.com"}),
                "job_finished.trigger: a value outside its enum (user, service)",
            ),
            (
                "job_finished",
                json!({"host": {"kind": "cloud"}}),
                "job_finished.host.kind: a value outside its enum (vm, ops@example.com)",
            ),
            (
                "job_finished",
                json!({"adapters": ["a", 1]}),
                "job_finished.adapters: expected string_list, got an array holding a non-string",
            ),
            (
                "job_finished",
                json!({"adapters": "a"}),
                "job_finished.adapters: expected string_list, got a string",
            ),
            (
                "job_finished",
                json!({"undeclared": null}),
                "job_finished.undeclared: not declared in the catalog",
            ),
        ] {
            let got = check(event, props).unwrap_err();
            assert_eq!(got, says);
            assert!(!got.contains("robot") && !got.contains("31812"), "{got}");
        }
        let Value::Object(empty) = json!({}) else {
            panic!()
        };
        let at = |ms| rules().check("old", &empty, ms).map_err(|r| r.to_string());
        assert_eq!(
            at(1_796_083_200_000),
            Err("old: expired on 2026-12-01 (the catalog's expires date)".into())
        );
        assert!(at(1_796_083_200_000 - 1).is_ok());
    }

    #[test]
    fn strings_are_cut_with_the_ellipsis_and_nested_enums_restored() {
        let r = rules();
        let Value::Object(mut props) = json!({
            "error.message": "0123456789abc",
            "host": {"kind": "ops@example.com", "platform": "linux"},
        }) else {
            panic!()
        };
        let e = r.event("job_finished").unwrap();
        let enums = e.nested_enums(&props);
        assert_eq!(enums, [("host.kind".to_string(), json!("ops@example.com"))]);
        props["host"]["kind"] = json!("<scrubbed>");
        let mut c = e.cutter();
        for (k, v) in props.iter_mut() {
            e.cut_entry(&mut c, k, v);
        }
        e.finish(&mut props, enums, &c);
        assert_eq!(props["error.message"], "012345678…");
        assert_eq!(props["error.message"].as_str().unwrap().chars().count(), 10);
        assert_eq!(props["host"]["kind"], "ops@example.com");
        assert!(e.is_raw("host.kind") && !e.is_raw("trigger") && !e.is_raw("duration"));
    }

    /// A flat event scrubbed by its declared types: the values are what the general
    /// rules give (strings and lists scrubbed, then cut; an error message cut to
    /// 1000), except that a declared name and an `enum` value are the catalog's text
    /// and stay as declared, even when they read like this user's name.
    #[test]
    fn a_flat_event_is_scrubbed_by_its_declared_types() {
        let scrubber = crate::privacy::Scrubber::new(Some("/home/ada"), Some("ada"));
        let catalog = Catalog::new("t").event(
            DeclaredEvent::usage("e", "E.")
                .property(DeclaredProperty::string("ada", "named like the user"))
                .property(DeclaredProperty::string("path", "p").max_length(6))
                .property(DeclaredProperty::one_of("kind", ["ada", "vm"], "k"))
                .property(DeclaredProperty::string_list("files", "f").max_length(100))
                .property(DeclaredProperty::string("error", "e"))
                .property(DeclaredProperty::integer("n", "n"))
                .property(DeclaredProperty::string("raw", "kept"))
                .property(DeclaredProperty::string("host.os", "os")),
        );
        let r = Rules::new(&catalog);
        let long_error = "x".repeat(1500);
        let Value::Object(given) = json!({
            "ada": "in /home/ada/src",
            // Within its 6 bytes as given; longer once scrubbed, so cut.
            "path": "a@b.co",
            "kind": "ada",
            "files": ["/home/ada/f", "ok"],
            "error": long_error,
            "n": 3,
            "raw": "/home/ada/kept",
            "host.os": null,
        }) else {
            panic!()
        };
        let v = r.verdict("e", &given, 0).unwrap();
        assert_eq!(
            v,
            Verdict {
                long: false,
                flat: true
            }
        );
        let e = r.event("e").unwrap();
        let mut props = given.clone();
        e.scrub_flat(&mut props, &scrubber, |k| k == "raw", v.long);
        let want = json!({
            "ada": "in ~/src",
            "path": "<emai…",
            "kind": "ada",
            "files": ["~/f", "ok"],
            "error": format!("{}…", "x".repeat(999)),
            "n": 3,
            "raw": "/home/ada/kept",
            "host.os": null,
        });
        assert_eq!(Value::Object(props), want);
        // The general path for an accepted event (values scrubbed, keys kept, then
        // every entry cut) stores exactly the same.
        let mut general = given.clone();
        scrubber.scrub_values_changed(&mut general, &|k| k == "raw" || k == "kind");
        let mut c = e.cutter();
        for (k, v) in general.iter_mut() {
            e.cut_entry(&mut c, k, v);
        }
        assert_eq!(Value::Object(general), want);
        // Without a catalog the key is scrubbed too: it reads like the user's name.
        let mut unchecked = given.clone();
        scrubber.scrub_properties(&mut unchecked, |k| k == "raw" || k == "kind");
        assert_eq!(unchecked["<user>"], "in ~/src");
        // A declared value sent nested is accepted, not flat: the general path
        // takes it, and keeps the nested keys as declared too.
        let Value::Object(mut nested) = json!({"n": 1, "host": {"os": "/home/ada/x", "ada": null}})
        else {
            panic!()
        };
        assert!(
            r.verdict("e", &nested, 0).is_err(),
            "host.ada is not declared"
        );
        nested["host"].as_object_mut().unwrap().shift_remove("ada");
        let Value::Object(mut ada_nested) = json!({"host": {"os": "/home/ada/x"}, "ada": "x"})
        else {
            panic!()
        };
        for m in [&mut nested, &mut ada_nested] {
            let v = r.verdict("e", m, 0).unwrap();
            assert_eq!(
                v,
                Verdict {
                    long: true,
                    flat: false
                }
            );
            scrubber.scrub_values_changed(m, &|_| false);
            assert_eq!(m["host"], json!({"os": "~/x"}));
        }
        assert_eq!(
            ada_nested["ada"], "x",
            "a declared name stays, nested event or not"
        );
    }

    #[test]
    fn dotted_names_are_found_flat_or_nested_along_any_split() {
        let Value::Object(m) = json!({"a": {"b.c": 1}, "x.y": {"z": 2}, "p.q.r": 3}) else {
            panic!()
        };
        assert_eq!(find(&m, "a.b.c"), Some(&json!(1)));
        assert_eq!(find(&m, "x.y.z"), Some(&json!(2)));
        assert_eq!(find(&m, "p.q.r"), Some(&json!(3)));
        assert_eq!(find(&m, "a.b"), None);
        let mut m = m;
        *find_mut(&mut m, "x.y.z").unwrap() = json!(9);
        assert_eq!(m["x.y"]["z"], 9);
    }
}
