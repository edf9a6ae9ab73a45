//! `spool serve`: a small local collection endpoint for developers integrating
//! telemetry. It accepts both body shapes and gzip, dedupes by event id, prints each
//! new event, and appends it to a JSONL file. A development sink, not a production
//! collector.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// Largest request body accepted, compressed or not.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where received events go: stdout (one JSON line each) and an optional JSONL file.
pub struct Collector {
    seen: Mutex<HashSet<String>>,
    out: Mutex<Option<File>>,
    print: bool,
}

impl Collector {
    /// A collector appending to `out` (ids already in it count as seen) and printing
    /// each new event to stdout if `print`.
    pub fn new(out: Option<&Path>, print: bool) -> Result<Collector> {
        let mut seen = HashSet::new();
        let file = match out {
            Some(path) => {
                if let Ok(f) = File::open(path) {
                    for line in std::io::BufReader::new(f)
                        .lines()
                        .map_while(std::result::Result::ok)
                    {
                        if let Some(id) = serde_json::from_str::<Value>(&line)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_string))
                        {
                            seen.insert(id);
                        }
                    }
                }
                Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| Error::io(path, e))?,
                )
            }
            None => None,
        };
        Ok(Collector {
            seen: Mutex::new(seen),
            out: Mutex::new(file),
            print,
        })
    }

    /// Handles one request body; returns (status, response JSON).
    pub fn receive(&self, body: &[u8], gzipped: bool) -> (u16, Value) {
        let raw = if gzipped {
            let mut out = Vec::new();
            match flate2::read::GzDecoder::new(body)
                .take(MAX_BODY as u64 * 4)
                .read_to_end(&mut out)
            {
                Ok(_) => out,
                Err(e) => return (400, json!({"error": format!("bad gzip body: {e}")})),
            }
        } else {
            body.to_vec()
        };
        let value: Value = match serde_json::from_slice(&raw) {
            Ok(v) => v,
            Err(e) => return (400, json!({"error": format!("body is not JSON: {e}")})),
        };
        let events = match value {
            Value::Object(mut o) if o.get("batch").is_some_and(Value::is_array) => {
                match o.remove("batch") {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                }
            }
            v @ Value::Object(_) => vec![v],
            _ => {
                return (
                    400,
                    json!({"error": "expected an event object or {\"batch\": [...]}"}),
                );
            }
        };
        let (mut accepted, mut duplicates) = (0, 0);
        for ev in events {
            let Some(id) = ev.get("id").and_then(Value::as_str).map(str::to_string) else {
                return (400, json!({"error": "an event has no string \"id\""}));
            };
            let new = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id);
            if !new {
                duplicates += 1;
                continue;
            }
            accepted += 1;
            let line = ev.to_string();
            if let Some(f) = self.out.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if self.print {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            }
        }
        (200, json!({"accepted": accepted, "duplicates": duplicates}))
    }
}

/// Serves `collector` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, collector: Arc<Collector>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let collector = collector.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, collector.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    collector: Arc<Collector>,
) -> std::result::Result<Response<Full<Bytes>>, hyper::Error> {
    let respond = |status: u16, v: Value| {
        let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    };
    if req.method() != hyper::Method::POST {
        return Ok(respond(405, json!({"error": "POST events here"})));
    }
    let gzipped = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(respond(413, json!({"error": "body too large"}))),
    };
    let (status, v) = collector.receive(&body, gzipped);
    Ok(respond(status, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_shapes_and_gzip_and_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        let c = Collector::new(Some(&out), false).unwrap();
        assert_eq!(
            c.receive(br#"{"id":"a","event":"x"}"#, false).1["accepted"],
            1
        );
        let batch = br#"{"batch":[{"id":"a"},{"id":"b"}],"sent_at":"t"}"#;
        let gz = crate::delivery::gzip(batch).unwrap();
        let (status, v) = c.receive(&gz, true);
        assert_eq!(
            (status, v["accepted"].as_u64(), v["duplicates"].as_u64()),
            (200, Some(1), Some(1))
        );
        assert_eq!(c.receive(b"nope", false).0, 400);
        assert_eq!(c.receive(b"[1]", false).0, 400);
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
        // A restarted collector remembers what the file holds.
        let again = Collector::new(Some(&out), false).unwrap();
        assert_eq!(again.receive(br#"{"id":"b"}"#, false).1["duplicates"], 1);
    }
}
