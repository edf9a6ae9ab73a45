//! The deletion request: the one event an opted-out spool sends, asking the receiver
//! to erase what it holds for the anonymous ids it names.
//!
//! It waits in the queue like any event (so `spool list` shows it and it is retried
//! across runs), under the reserved name `deletion_request`, which hosts cannot
//! record; `spool clear` keeps it. Its payload has no context and no properties:
//! `{"id", "event", "timestamp", "anonymous_ids"}`.

use serde::{Deserialize, Serialize};

use crate::error::{Kind, Result};

/// The reserved event name of a deletion request.
pub(crate) const EVENT: &str = "deletion_request";

/// A deletion request as it is queued and, for the native destination, sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeletionRequest {
    /// UUIDv7, the receiver's dedupe key. A request that gains an id gets a new one,
    /// so a receiver that saw the shorter request still takes the longer.
    pub id: String,
    /// Always `deletion_request`.
    pub event: String,
    /// When it was (last) queued, RFC 3339.
    pub timestamp: String,
    /// The anonymous ids whose data to erase, oldest first.
    pub anonymous_ids: Vec<String>,
}

impl DeletionRequest {
    /// A new request for `ids`, stamped `now` (unix ms).
    pub(crate) fn new(ids: Vec<String>, now: i64) -> Self {
        DeletionRequest {
            id: uuid::Uuid::now_v7().to_string(),
            event: EVENT.to_string(),
            timestamp: crate::time::rfc3339_ms(now),
            anonymous_ids: ids,
        }
    }

    /// The request in a stored payload, if it is one.
    pub(crate) fn parse(payload: &str) -> Option<Self> {
        // Asked of every event a vendor flush sends: a payload that does not even
        // hold the name is not parsed.
        if !payload.contains(EVENT) {
            return None;
        }
        serde_json::from_str::<Self>(payload)
            .ok()
            .filter(|r| r.event == EVENT)
    }

    /// The stored payload.
    pub(crate) fn to_payload(&self) -> String {
        // Strings and a list of strings always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The request in the shape of an ordinary event, for the vendor destinations
    /// (PostHog, Segment, OTLP), which have no message of their own for it: an event
    /// named `deletion_request` from the first id, with `anonymous_ids` in its
    /// properties and an empty context.
    pub(crate) fn as_event(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "event": EVENT,
            "timestamp": self.timestamp,
            "anonymous_id": self.anonymous_ids.first().cloned().unwrap_or_default(),
            "session_id": "",
            "context": {},
            "properties": {"anonymous_ids": self.anonymous_ids},
        })
        .to_string()
    }
}

/// Refuses the reserved name: a host's own `deletion_request` would be kept by
/// `spool clear` and sent while telemetry is off.
pub(crate) fn check_not_reserved(name: &str) -> Result<()> {
    if name == EVENT {
        return Err(Kind::EventName {
            name: name.to_string(),
            why: "reserved for the deletion request eventspool sends on opt-out",
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_with_no_context_or_properties() {
        let r = DeletionRequest::new(vec!["a".into(), "b".into()], 0);
        let text = r.to_payload();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["anonymous_ids", "event", "id", "timestamp"]);
        assert_eq!(DeletionRequest::parse(&text), Some(r));
        assert_eq!(DeletionRequest::parse(r#"{"event":"x"}"#), None);
    }

    #[test]
    fn as_an_event_it_names_the_ids_in_properties() {
        let r = DeletionRequest::new(vec!["a".into(), "b".into()], 0);
        let v: serde_json::Value = serde_json::from_str(&r.as_event()).unwrap();
        assert_eq!(v["event"], EVENT);
        assert_eq!(v["anonymous_id"], "a");
        assert_eq!(
            v["properties"]["anonymous_ids"],
            serde_json::json!(["a", "b"])
        );
        assert!(check_not_reserved(EVENT).is_err());
        assert!(check_not_reserved("deletion_requested").is_ok());
    }
}
