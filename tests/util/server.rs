//! A loopback HTTP server that records what it receives and answers with real faults.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What the test server does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer with this status, headers and body.
    Status(u16, Vec<(String, String)>, Vec<u8>),
    /// Read the request, then hold the connection without answering until the
    /// server is dropped (at most 60 s).
    Hang,
    /// Read the request, then reset the connection.
    Reset,
    /// Answer 200 with a body of this many bytes, streamed until the client stops reading.
    Huge(usize),
    /// Hold the request this long, then answer with this status.
    Delay(Duration, u16),
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, Vec::new(), Vec::new())
    }

    pub fn with_header(code: u16, k: &str, v: &str) -> Reply {
        Reply::Status(code, vec![(k.to_string(), v.to_string())], Vec::new())
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When its request line arrived.
    pub started: Instant,
    /// When it had been read whole.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped if it was sent with `Content-Encoding: gzip`; `null` when
    /// there was none or it was protobuf (`Content-Type: application/x-protobuf`).
    pub body: Value,
    /// The body's bytes, gunzipped if it was sent gzipped: what a protobuf body is
    /// decoded from.
    #[cfg_attr(windows, allow(dead_code))] // read by the Unix-only OTLP tests
    pub raw: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The events in the body: the batch's, or the one bare event (none without a body).
    pub fn events(&self) -> Vec<Value> {
        match self.body.get("batch") {
            Some(Value::Array(a)) => a.clone(),
            _ if self.body.is_null() => Vec::new(),
            _ => vec![self.body.clone()],
        }
    }
}

type Handler = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// A real HTTP/1.1 server on 127.0.0.1, scripted per request.
pub struct TestServer {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    pub huge_bytes_written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handler: Arc<Mutex<Arc<Handler>>>,
}

impl TestServer {
    /// Starts a server; `handler` gets the request's index (0-based) and the request.
    pub fn start(
        handler: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/events", listener.local_addr().expect("addr"));
        let server = TestServer {
            url,
            received: Arc::default(),
            connections: Arc::default(),
            huge_bytes_written: Arc::default(),
            stop: Arc::default(),
            handler: Arc::new(Mutex::new(Arc::new(handler))),
        };
        let (received, connections, stop, handler, huge) = (
            server.received.clone(),
            server.connections.clone(),
            server.stop.clone(),
            server.handler.clone(),
            server.huge_bytes_written.clone(),
        );
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let (received, stop, handler, huge) = (
                            received.clone(),
                            stop.clone(),
                            handler.clone(),
                            huge.clone(),
                        );
                        std::thread::spawn(move || {
                            serve_conn(stream, received, stop, handler, huge)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        server
    }

    #[cfg_attr(windows, allow(dead_code))] // used by the Unix-only destination tests
    /// The server's origin, `http://127.0.0.1:PORT`, for destinations that add their
    /// own path to a base URL.
    pub fn origin(&self) -> String {
        self.url.trim_end_matches("/v1/events").to_string()
    }

    /// A server that answers every request with `code`.
    pub fn answering(code: u16) -> TestServer {
        TestServer::start(move |_, _| Reply::status(code))
    }

    /// Changes the script from now on.
    pub fn set_handler(&self, handler: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every event received, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests().iter().flat_map(Received::events).collect()
    }

    /// Ids of every event received, with repeats.
    pub fn ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_string())
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until an event of each of `names` arrived, or panics after `within`;
    /// returns every event received.
    #[track_caller]
    pub fn wait_for_events(&self, names: &[&str], within: Duration) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let events = self.events();
            if names
                .iter()
                .all(|n| events.iter().any(|e| e["event"] == *n))
            {
                return events;
            }
            assert!(
                t.elapsed() < within,
                "only got {:?}",
                events
                    .iter()
                    .map(|e| e["event"].clone())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until at least `n` requests arrived, or panics after `within`.
    #[track_caller]
    pub fn wait_for_requests(&self, n: usize, within: Duration) {
        let t = Instant::now();
        while self.received.lock().unwrap().len() < n {
            assert!(
                t.elapsed() < within,
                "only {} of {n} requests arrived",
                self.received.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Asserts every id in `want` was received exactly once.
#[track_caller]
pub fn assert_delivered_once(server: &TestServer, want: &[String]) {
    let got = server.ids();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "duplicates delivered");
    let want_set: HashSet<&String> = want.iter().collect();
    assert_eq!(unique, want_set, "delivered set differs from queued set");
}

fn serve_conn(
    stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    handler: Arc<Mutex<Arc<Handler>>>,
    huge: Arc<AtomicU64>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let started = Instant::now();
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0; len];
        if reader.read_exact(&mut raw).is_err() {
            return;
        }
        let gz = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("content-encoding") && v.eq_ignore_ascii_case("gzip")
        });
        if gz {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
            raw = out;
        }
        let protobuf = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("content-type")
                && v.eq_ignore_ascii_case("application/x-protobuf")
        });
        let body: Value = if raw.is_empty() || protobuf {
            Value::Null
        } else {
            serde_json::from_slice(&raw).expect("request body is JSON")
        };
        let req = Received {
            started,
            at: Instant::now(),
            method,
            path,
            headers,
            body,
            raw,
        };
        let index = {
            let mut r = received.lock().unwrap();
            r.push(req.clone());
            r.len() - 1
        };
        let h = handler.lock().unwrap().clone();
        match h(index, &req) {
            Reply::Status(code, hdrs, body) => {
                let mut resp = format!("HTTP/1.1 {code} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in hdrs {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                if stream
                    .write_all(resp.as_bytes())
                    .and_then(|_| stream.write_all(&body))
                    .is_err()
                {
                    return;
                }
            }
            Reply::Hang => {
                let t = Instant::now();
                while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Delay(d, code) => {
                std::thread::sleep(d);
                let resp = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                if stream.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Reset => {
                reset(&stream);
                return;
            }
            Reply::Huge(n) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes());
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                while sent < n {
                    match stream.write(&chunk[..chunk.len().min(n - sent)]) {
                        Ok(k) if k > 0 => {
                            sent += k;
                            huge.store(sent as u64, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0), on every platform.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// A loopback port with nothing listening on it.
pub fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1/events")
}
