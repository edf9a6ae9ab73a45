//! Delivery policy and transport: which endpoints are allowed, how a request body is
//! built, how a response is classified, and how long to back off. The policy parts
//! are pure functions with the unit tests beside them.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use reqwest::Url;

use crate::error::{Kind, Result};

/// Bodies at least this large are sent gzip-compressed.
pub const GZIP_THRESHOLD: usize = 1024;

/// At most this much of a response body is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Checks a collection endpoint: an absolute `https://` URL, or `http://` to a
/// loopback host (`localhost`, `127.0.0.0/8`, `[::1]`). Refused before any connection.
///
/// ```
/// assert!(eventspool::check_endpoint("https://t.example.com/v1/events").is_ok());
/// assert!(eventspool::check_endpoint("http://127.0.0.1:8080/e").is_ok());
/// assert!(eventspool::check_endpoint("http://t.example.com/e").is_err());
/// ```
pub fn check_endpoint(url: &str) -> Result<Url> {
    let bad = |why: &str| Kind::Endpoint {
        url: url.to_string(),
        why: why.to_string(),
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.cannot_be_a_base() || parsed.host().is_none() {
        return Err(bad("expected an absolute http(s) URL with a host").into());
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(bad("plain http:// is only allowed to loopback hosts; use https://").into()),
        other => Err(bad(&format!("unsupported scheme {other:?}; use https://")).into()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// What a response (or a failure to get one) means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: delete the batch.
    Delivered,
    /// 408, 429, 5xx, 3xx not followed, timeouts, connection and DNS errors: keep the
    /// batch, back off (for the server's `Retry-After` if it gave one), stop the round.
    Retry(Option<Duration>),
    /// 413: split the batch; a lone event is dropped.
    TooLarge,
    /// Any other 4xx: drop the batch.
    Rejected,
}

/// Classifies an HTTP status, with the `Retry-After` header's value if present.
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        413 => Outcome::TooLarge,
        408 | 429 => Outcome::Retry(retry_after.and_then(|v| parse_retry_after(v, now))),
        400..=499 => Outcome::Rejected,
        _ => Outcome::Retry(retry_after.and_then(|v| parse_retry_after(v, now))),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date. `None` for garbage; a date in
/// the past is zero.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let now = SystemTime::now();
/// assert_eq!(eventspool::parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(eventspool::parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate; the caller caps them.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before attempt `attempts + 1` after `attempts` failures: `first` doubled
/// per failure, capped at `max`, then scaled by `jitter` in [½, 1] so that many
/// clients do not retry in lock-step.
pub fn backoff(attempts: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let base = first.saturating_mul(1u32 << exp.min(31)).min(max);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// The request body for `payloads` (each a JSON object): one bare event when
/// `bare` is true and there is exactly one, else `{"batch":[…],"sent_at":"…"}`.
pub fn body(payloads: &[&str], bare: bool, sent_at: &str) -> String {
    if bare && payloads.len() == 1 {
        return payloads[0].to_string();
    }
    let len: usize = payloads.iter().map(|p| p.len() + 1).sum::<usize>() + 48;
    let mut out = String::with_capacity(len);
    out.push_str("{\"batch\":[");
    for (i, p) in payloads.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push_str("],\"sent_at\":\"");
    out.push_str(sent_at);
    out.push_str("\"}");
    out
}

/// Gzips `data` at a fast level: telemetry bodies are repetitive JSON, so even the
/// fastest level shrinks them several-fold.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "https://x.example/e",
            "http://localhost:1/e",
            "http://127.0.0.9/",
            "http://[::1]:8080/e",
            "HTTPS://X.EXAMPLE",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/e",
            "http://10.0.0.1/",
            "ftp://x/",
            "not a url",
            "",
            "https://",
            "file:///etc/passwd",
            "http://localhost.evil.com/",
            "mailto:a@b",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        assert_eq!(classify(200, None, now), Outcome::Delivered);
        assert_eq!(classify(204, None, now), Outcome::Delivered);
        assert_eq!(classify(400, None, now), Outcome::Rejected);
        assert_eq!(classify(404, None, now), Outcome::Rejected);
        assert_eq!(classify(413, None, now), Outcome::TooLarge);
        assert_eq!(classify(408, None, now), Outcome::Retry(None));
        assert_eq!(
            classify(429, Some("7"), now),
            Outcome::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(classify(503, Some("x"), now), Outcome::Retry(None));
        assert_eq!(classify(500, None, now), Outcome::Retry(None));
        assert_eq!(classify(302, None, now), Outcome::Retry(None));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for junk in ["", "-5", "1.5", "tomorrow", "Fri, 99 Foo 2024"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (f, m) = (Duration::from_secs(10), Duration::from_secs(3600));
        assert_eq!(backoff(1, f, m, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(2, f, m, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(4, f, m, 1.0), Duration::from_secs(80));
        assert_eq!(backoff(20, f, m, 1.0), m);
        assert_eq!(backoff(u32::MAX, f, m, 1.0), m);
        assert_eq!(backoff(1, f, m, 0.5), Duration::from_secs(5));
        assert_eq!(
            backoff(1, f, m, 0.0),
            Duration::from_secs(5),
            "jitter is clamped to [1/2, 1]"
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(body(&[r#"{"a":1}"#], true, "T"), r#"{"a":1}"#);
        let b = body(&[r#"{"a":1}"#, r#"{"b":2}"#], false, "T");
        assert_eq!(b, r#"{"batch":[{"a":1},{"b":2}],"sent_at":"T"}"#);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["batch"].as_array().unwrap().len(), 2);
        assert_eq!(
            body(&[r#"{"a":1}"#], false, "T"),
            r#"{"batch":[{"a":1}],"sent_at":"T"}"#
        );
    }
}
