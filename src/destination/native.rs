//! The native format: `{"batch":[…],"sent_at":"…"}` (or one bare event when the
//! batch size is 1) posted as JSON to the endpoint itself, gzipped from 1 KiB unless
//! the destination's `compression` says otherwise; the design's status rules.

use std::time::SystemTime;

use reqwest::Url;

use super::{Batch, ByteLimits, Destination, Encoded};
#[cfg(test)]
use crate::delivery::GZIP_THRESHOLD;
use crate::delivery::{self, Outcome};
use crate::limits::Limits;

/// The native format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Native {
    /// Send a lone event as a bare JSON object (batch size 1).
    bare: bool,
    /// The configured compression; `None`: gzip from the threshold.
    compression: Option<crate::Compression>,
}

impl Native {
    /// The native format under these limits.
    pub fn new(limits: &Limits, compression: Option<crate::Compression>) -> Self {
        Native {
            bare: limits.batch_size == 1,
            compression,
        }
    }
}

impl Destination for Native {
    fn url(&self, endpoint: &Url) -> Url {
        endpoint.clone()
    }

    fn deletion_request_as_event(&self) -> bool {
        false
    }

    fn encode(&self, batch: &Batch<'_>) -> Encoded {
        let body = delivery::body(batch.payloads, self.bare, batch.sent_at);
        super::vendor::json_body(body, self.compression)
    }

    fn byte_limits(&self) -> ByteLimits {
        // The native endpoint takes what recording accepted (`max_event_bytes` is
        // enforced there) and answers 413 to split a batch it finds too large.
        ByteLimits::default()
    }

    fn classify(&self, status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
        delivery::classify(status, retry_after, now)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;

    fn native(batch_size: u32) -> Native {
        Native::new(
            &Limits {
                batch_size,
                ..Limits::default()
            },
            None,
        )
    }

    fn enc(n: &Native, payloads: &[&str], sent_at: &str) -> Encoded {
        n.encode(&Batch {
            payloads,
            sent_at,
            retry: 0,
        })
    }

    fn header<'a>(e: &'a Encoded, name: &str) -> Option<&'a str> {
        e.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn posts_to_the_endpoint_itself() {
        let url = Url::parse("https://t.example.com/v1/events?k=1").unwrap();
        assert_eq!(native(100).url(&url), url);
    }

    #[test]
    fn a_small_batch_is_plain_json_with_sent_at() {
        let e = enc(
            &native(100),
            &[r#"{"a":1}"#, r#"{"b":2}"#],
            "2026-01-01T00:00:00.000Z",
        );
        assert_eq!(
            String::from_utf8(e.body.clone()).unwrap(),
            r#"{"batch":[{"a":1},{"b":2}],"sent_at":"2026-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(header(&e, "content-type"), Some("application/json"));
        assert_eq!(header(&e, "content-encoding"), None);
    }

    #[test]
    fn batch_size_one_sends_a_bare_event() {
        let e = enc(&native(1), &[r#"{"a":1}"#], "t");
        assert_eq!(e.body, br#"{"a":1}"#);
        // More than one (never happens at size 1) is still a batch.
        let e = enc(&native(100), &[r#"{"a":1}"#], "t");
        assert_eq!(e.body, br#"{"batch":[{"a":1}],"sent_at":"t"}"#);
    }

    #[test]
    fn bodies_from_the_threshold_are_gzipped() {
        let big = format!(r#"{{"p":"{}"}}"#, "x".repeat(GZIP_THRESHOLD));
        let e = enc(&native(100), &[&big], "t");
        assert_eq!(header(&e, "content-encoding"), Some("gzip"));
        let mut plain = String::new();
        flate2::read::GzDecoder::new(e.body.as_slice())
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, format!(r#"{{"batch":[{big}],"sent_at":"t"}}"#));
    }

    #[test]
    fn compression_none_sends_large_bodies_plain_and_gzip_compresses_small_ones() {
        let big = format!(r#"{{"p":"{}"}}"#, "x".repeat(GZIP_THRESHOLD));
        let limits = Limits::default();
        let plain = Native::new(&limits, Some(crate::Compression::None));
        assert_eq!(header(&enc(&plain, &[&big], "t"), "content-encoding"), None);
        let always = Native::new(&limits, Some(crate::Compression::Gzip));
        assert_eq!(
            header(&enc(&always, &[r#"{"a":1}"#], "t"), "content-encoding"),
            Some("gzip")
        );
    }

    #[test]
    fn no_byte_bounds_of_its_own() {
        assert_eq!(native(100).byte_limits(), ByteLimits::default());
    }

    #[test]
    fn statuses_follow_the_design() {
        let n = native(100);
        let now = SystemTime::now();
        assert_eq!(n.classify(204, None, now), Outcome::Delivered);
        assert_eq!(n.classify(413, None, now), Outcome::TooLarge);
        assert_eq!(n.classify(400, None, now), Outcome::Rejected);
        assert_eq!(
            n.classify(429, Some("30"), now),
            Outcome::Retry(Some(Duration::from_secs(30)))
        );
        assert_eq!(n.classify(503, None, now), Outcome::Retry(None));
        assert_eq!(n.classify(302, None, now), Outcome::Retry(None));
        assert_eq!(
            n.describe(400, Outcome::Rejected, 3),
            "HTTP 400: 3 events rejected"
        );
    }
}
