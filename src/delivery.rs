//! Delivery policy and transport: which endpoints are allowed, how a request body is
//! built, how a response is classified, and how long to back off. The policy parts
//! are pure functions with the unit tests beside them.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// assert!(eventspool::fuzzing::check_endpoint("https://t.example.com/v1/events").is_ok());
/// assert!(eventspool::fuzzing::check_endpoint("http://127.0.0.1:8080/e").is_ok());
/// assert!(eventspool::fuzzing::check_endpoint("http://t.example.com/e").is_err());
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

/// At most this many redirects are followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 3;

/// The redirect rule from the design: only 307 and 308 are followed (they keep the
/// method and the body), at most [`MAX_REDIRECTS`] hops, and only to a target that
/// passes [`check_endpoint`]. A 301/302/303 would turn the POST into a GET without
/// its body, whose 2xx proves nothing was delivered: it is not followed, and the 3xx
/// itself comes back (a retryable failure in [`classify`]).
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let status = attempt.status().as_u16();
        if !matches!(status, 307 | 308) {
            return attempt.stop();
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            let why = format!("more than {MAX_REDIRECTS} redirects");
            return attempt.error(RedirectRefused(why));
        }
        match check_endpoint(attempt.url().as_str()) {
            Ok(_) => attempt.follow(),
            Err(e) => {
                let why = format!("HTTP {status} to a refused target: {e}");
                attempt.error(RedirectRefused(why))
            }
        }
    })
}

/// Why a redirect was not followed; found again in the error chain for the report.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect not followed: {}", self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// A lookup that failed, found again in the error chain for the report.
#[derive(Debug)]
struct DnsFailed(String);

impl std::fmt::Display for DnsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DNS: {}", self.0)
    }
}

impl std::error::Error for DnsFailed {}

/// Most lookups left running at once; past it a lookup fails at once instead of
/// starting yet another thread behind a resolver that does not answer.
const MAX_PENDING_LOOKUPS: usize = 4;

static PENDING_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// Resolves names with the system resolver (`getaddrinfo`, so `/etc/hosts`, NSS and
/// `resolv.conf` apply as for any program) on a detached thread of its own.
///
/// reqwest's default resolver runs `getaddrinfo` on the runtime's blocking pool, and
/// dropping a runtime waits for that pool: with a resolver that never answers, a
/// flush whose deadline had passed still held `flush_blocking`, a background
/// `close` and a detached child for the resolver's full timeout (10 s and more). A
/// lookup here is only awaited through a channel, so a deadline drops it at once and
/// no runtime ever waits for it; the thread ends when `getaddrinfo` gives up.
#[derive(Debug, Default)]
pub(crate) struct DetachedResolver {
    /// Lookups of this resolver still running: a connect timeout while one is
    /// running was the resolver's silence, and is reported as DNS.
    pending: Arc<AtomicUsize>,
}

impl reqwest::dns::Resolve for DetachedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let mine = self.pending.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if PENDING_LOOKUPS.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_LOOKUPS {
                PENDING_LOOKUPS.fetch_sub(1, Ordering::SeqCst);
                let why = format!("{host}: earlier lookups have not come back yet");
                return Err(Box::new(DnsFailed(why)) as _);
            }
            let lookup = host.clone();
            mine.fetch_add(1, Ordering::SeqCst);
            let done = mine.clone();
            let spawned = std::thread::Builder::new()
                .name("eventspool-dns".into())
                .spawn(move || {
                    let found = (lookup.as_str(), 0)
                        .to_socket_addrs()
                        .map(|addrs| addrs.collect::<Vec<SocketAddr>>());
                    PENDING_LOOKUPS.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_sub(1, Ordering::SeqCst);
                    let _ = tx.send(found);
                });
            if let Err(e) = spawned {
                PENDING_LOOKUPS.fetch_sub(1, Ordering::SeqCst);
                mine.fetch_sub(1, Ordering::SeqCst);
                return Err(Box::new(DnsFailed(format!("{host}: {e}"))) as _);
            }
            match rx.await {
                Ok(Ok(addrs)) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Ok(Err(e)) => Err(Box::new(DnsFailed(format!("{host}: {e}"))) as _),
                Err(_) => Err(Box::new(DnsFailed(format!("{host}: lookup lost"))) as _),
            }
        })
    }
}

/// The HTTP client of a flush (bounded timeouts, the redirect rule, the detached
/// resolver) and what it needs to explain its failures.
pub(crate) struct Transport {
    /// The client.
    pub client: reqwest::Client,
    connect_timeout: Duration,
    request_timeout: Duration,
    lookups: Arc<AtomicUsize>,
}

impl Transport {
    /// A transport with these timeouts and user agent.
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        user_agent: String,
    ) -> reqwest::Result<Transport> {
        let resolver = Arc::new(DetachedResolver::default());
        let lookups = resolver.pending.clone();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .redirect(redirect_policy())
            .dns_resolver(resolver)
            .user_agent(user_agent)
            .build()?;
        Ok(Transport {
            client,
            connect_timeout,
            request_timeout,
            lookups,
        })
    }

    /// Says in a few words why a request failed without an HTTP status.
    pub fn describe(&self, e: &reqwest::Error) -> String {
        let dns_pending = self.lookups.load(Ordering::SeqCst) > 0;
        describe_error(e, self.connect_timeout, self.request_timeout, dns_pending)
    }
}

/// Says in a few words why a request failed without an HTTP status, for the flush
/// report: `DNS: …`, `connection refused`, `timed out after 10s`, a refused redirect.
/// `dns_pending`: a lookup was still running when it failed.
fn describe_error(
    e: &reqwest::Error,
    connect_timeout: Duration,
    request_timeout: Duration,
    dns_pending: bool,
) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(err) = source {
        if let Some(d) = err.downcast_ref::<DnsFailed>() {
            return d.to_string();
        }
        if let Some(r) = err.downcast_ref::<RedirectRefused>() {
            return r.to_string();
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return "connection refused".into(),
                K::ConnectionReset => return "connection reset".into(),
                K::ConnectionAborted => return "connection aborted".into(),
                _ => {}
            }
        }
        innermost = err.to_string();
        source = err.source();
    }
    let took = |d: Duration| humantime::format_duration(d).to_string();
    if e.is_timeout() && dns_pending {
        let limit = if e.is_connect() {
            connect_timeout
        } else {
            request_timeout
        };
        format!("DNS: no answer within {}", took(limit))
    } else if e.is_timeout() && e.is_connect() {
        format!("connect timed out after {}", took(connect_timeout))
    } else if e.is_timeout() {
        format!("timed out after {}", took(request_timeout))
    } else if e.is_connect() {
        format!("connection failed: {innermost}")
    } else {
        format!("request failed: {innermost}")
    }
}

/// Says in a few words what an HTTP answer meant: `HTTP 503`, `HTTP 429
/// (Retry-After 30s)`, `HTTP 302: redirect not followed (only 307/308 are)`, or for a
/// rejection `HTTP 400: 3 events rejected`. `events` is the size of the batch.
pub(crate) fn describe_status(status: u16, outcome: Outcome, events: usize) -> String {
    let plural = |n: usize| if n == 1 { "event" } else { "events" };
    match outcome {
        Outcome::Retry(Some(after)) => format!(
            "HTTP {status} (Retry-After {})",
            humantime::format_duration(Duration::from_secs(after.as_secs()))
        ),
        Outcome::Retry(None) if (300..400).contains(&status) => {
            format!("HTTP {status}: redirect not followed (only 307/308 are)")
        }
        Outcome::Rejected => format!("HTTP {status}: {events} {} rejected", plural(events)),
        Outcome::TooLarge if events == 1 => format!("HTTP {status}: 1 event too large"),
        _ => format!("HTTP {status}"),
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
/// ```text
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
///
/// The compressor (a few hundred KB of tables) is kept for the next body instead of being
/// allocated, page-faulted in and dropped for every batch: one is kept per process,
/// and a second flush running meanwhile makes its own.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    static SPARE: std::sync::Mutex<Option<Box<Compress>>> = std::sync::Mutex::new(None);
    let mut c = SPARE
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or_else(|| Box::new(Compress::new(Compression::fast(), false)));
    c.reset();
    // The member header as flate2's `GzEncoder` writes it at this level: no name, no
    // time, "fastest" in XFL, an unknown OS.
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    loop {
        let read = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let rest = data.get(read..).unwrap_or_default();
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(256));
        }
        match c.compress_vec(rest, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break,
            // Out of room: twice the room, so a body takes a few rounds at most.
            Ok(_) => out.reserve(out.len().max(256)),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32, as RFC 1952 defines it.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    if let Ok(mut spare) = SPARE.lock() {
        spare.get_or_insert(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_bodies_decode_to_what_was_given_with_the_compressor_reused() {
        use std::io::Read;
        // Repetitive JSON, incompressible bytes (the output outgrows its first
        // guess), nothing; each twice, so the second runs on the kept compressor.
        let json = "{\"event\":\"cli_invoked\",\"n\":1},".repeat(5000);
        let mut noise = Vec::with_capacity(300_000);
        let mut x: u32 = 1;
        for _ in 0..300_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            noise.push((x >> 16) as u8);
        }
        for data in [json.as_bytes(), &noise, b"", json.as_bytes(), &noise, b""] {
            let gz = gzip(data).unwrap();
            assert_eq!(&gz[..3], [0x1f, 0x8b, 8]);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }

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
        for code in [301, 303, 307, 308] {
            assert_eq!(classify(code, None, now), Outcome::Retry(None), "{code}");
        }
    }

    #[test]
    fn status_reasons_name_the_status() {
        assert_eq!(describe_status(503, Outcome::Retry(None), 5), "HTTP 503");
        assert_eq!(
            describe_status(429, Outcome::Retry(Some(Duration::from_secs(30))), 5),
            "HTTP 429 (Retry-After 30s)"
        );
        assert_eq!(
            describe_status(400, Outcome::Rejected, 3),
            "HTTP 400: 3 events rejected"
        );
        assert_eq!(
            describe_status(404, Outcome::Rejected, 1),
            "HTTP 404: 1 event rejected"
        );
        assert_eq!(
            describe_status(303, Outcome::Retry(None), 1),
            "HTTP 303: redirect not followed (only 307/308 are)"
        );
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
