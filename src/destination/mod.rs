//! The seam between the flusher and a wire format: where a batch is posted, how it
//! is encoded, how large a request may be, and what an answer means. The flusher
//! ([`crate::flush`]) calls only this trait; the transport (client, DNS, redirects)
//! stays in [`crate::delivery`]. The native format is the first implementation;
//! another destination is one more file here and one arm in [`destination`].

use std::sync::Arc;
use std::time::SystemTime;

use reqwest::Url;

use crate::delivery::Outcome;
use crate::limits::Limits;

mod config;
mod native;
mod otlp;
mod posthog;
mod segment;
mod vendor;

#[cfg(feature = "cli")]
pub(crate) use config::parse_header;
pub use config::{Compression, DestinationConfig, DestinationKind, OtlpProtocol};
pub(crate) use config::{Overrides, Target, apply, check_header, resolve};
pub(crate) use native::Native;
pub(crate) use otlp::Otlp;
pub(crate) use posthog::Posthog;
pub(crate) use segment::Segment;

/// A request body ready to send, with the headers that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// The bytes to post.
    pub body: Vec<u8>,
    /// Headers describing the body (`content-type`, `content-encoding`, …).
    pub headers: Vec<(&'static str, String)>,
}

/// Byte bounds a destination puts on what it is sent; `None` is no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ByteLimits {
    /// An event larger than this is never sent: it is dropped as `too_large`.
    pub per_event: Option<usize>,
    /// A batch is cut before its payloads would exceed this (at least one event goes).
    pub per_batch: Option<usize>,
}

/// One batch as the flusher hands it to [`Destination::encode`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch<'a> {
    /// The stored payloads, each a JSON object as recording wrote it.
    pub payloads: &'a [&'a str],
    /// The send time, RFC 3339.
    pub sent_at: &'a str,
    /// How many earlier attempts of these events failed (0 on a first send): the
    /// most of any event in the batch.
    pub retry: u32,
}

/// A wire format and its retry rules. Object-safe: a flush holds one as
/// `Arc<dyn Destination>`, chosen per spool by [`build`].
pub(crate) trait Destination: Send + Sync {
    /// The URL batches are posted to, for the configured endpoint.
    fn url(&self, endpoint: &Url) -> Url;

    /// Encodes one batch: the body and the headers that describe it (content type,
    /// encoding, authentication).
    fn encode(&self, batch: &Batch<'_>) -> Encoded;

    /// How many bytes one stored payload takes once mapped to this format: what
    /// [`ByteLimits`] are checked against (a destination that maps events to a
    /// larger shape checks the size it sends, not the size it stores).
    fn event_len(&self, payload: &str) -> usize {
        payload.len()
    }

    /// True if a deletion request is sent to this format as an ordinary event named
    /// `deletion_request` with the ids in its properties (the vendor formats, which
    /// have no message of their own for it); false if it is sent as stored.
    fn deletion_request_as_event(&self) -> bool {
        true
    }

    /// The byte bounds the flusher cuts batches to before sending.
    fn byte_limits(&self) -> ByteLimits;

    /// What an HTTP status (with the `Retry-After` header's value, if any) means
    /// for the batch: which codes are delivered, retried, split or dropped.
    fn classify(&self, status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome;

    /// True if a 2xx reply's body means something ([`Destination::reply_note`]);
    /// otherwise it is drained unread.
    fn reads_reply(&self) -> bool {
        false
    }

    /// What a delivered batch's reply body (at most [`crate::delivery::MAX_RESPONSE_BYTES`])
    /// says that the flush report should mention, e.g. records a collector refused
    /// in a partial success. Never turns a delivery into a retry.
    fn reply_note(&self, _body: &[u8]) -> Option<String> {
        None
    }

    /// Says in a few words what an answer meant, for the flush report.
    fn describe(&self, status: u16, outcome: Outcome, events: usize) -> String {
        crate::delivery::describe_status(status, outcome, events)
    }
}

/// The wire format for a resolved destination under these limits; the choice is
/// made here so the flusher never names a format.
pub(crate) fn build(target: &Target, limits: &Limits) -> Arc<dyn Destination> {
    match target.kind {
        DestinationKind::Native => Arc::new(Native::new(limits, target.compression)),
        DestinationKind::Otlp => Arc::new(Otlp::new(target)),
        DestinationKind::Posthog => Arc::new(Posthog::new(target)),
        DestinationKind::Segment => Arc::new(Segment::new(target)),
    }
}

/// What to do with the front of the queue under `limits`: the events too large to
/// send ever (dropped as `too_large`), and the longest prefix of the rest whose
/// payloads fit the batch bound (at least one event). Events past the cut are left
/// queued for the next batch.
pub(crate) fn cut<T>(
    batch: Vec<T>,
    limits: ByteLimits,
    len: impl Fn(&T) -> usize,
) -> (Vec<T>, Vec<T>) {
    let (too_large, fits): (Vec<T>, Vec<T>) = batch
        .into_iter()
        .partition(|p| limits.per_event.is_some_and(|max| len(p) > max));
    let Some(max) = limits.per_batch else {
        return (too_large, fits);
    };
    let mut total = 0usize;
    let mut send = Vec::with_capacity(fits.len());
    for p in fits {
        // One byte per event for the separator between payloads.
        let n = len(&p).saturating_add(1);
        if !send.is_empty() && total.saturating_add(n) > max {
            break;
        }
        total = total.saturating_add(n);
        send.push(p);
    }
    (too_large, send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bounds_keep_the_batch_whole() {
        let (big, send) = cut(vec!["a"; 5], ByteLimits::default(), |s| s.len());
        assert!(big.is_empty());
        assert_eq!(send.len(), 5);
    }

    #[test]
    fn oversized_events_are_set_apart_and_the_batch_is_cut_to_fit() {
        let batch = vec!["aaaa", "b".repeat(20).leak(), "cccc", "dddd", "eeee"];
        let limits = ByteLimits {
            per_event: Some(10),
            per_batch: Some(10),
        };
        let (big, send) = cut(batch, limits, |s| s.len());
        assert_eq!(big.len(), 1);
        // 4 + 1 per event: two fit in 10 bytes, the third waits for the next batch.
        assert_eq!(send, vec!["aaaa", "cccc"]);
    }

    #[test]
    fn a_lone_event_larger_than_the_batch_bound_still_goes() {
        let limits = ByteLimits {
            per_event: None,
            per_batch: Some(3),
        };
        let (big, send) = cut(vec!["aaaaaa", "b"], limits, |s| s.len());
        assert!(big.is_empty());
        assert_eq!(send, vec!["aaaaaa"]);
    }
}
