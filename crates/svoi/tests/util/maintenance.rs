//! A tiny HTTP receiver for the maintenance tests: a std `TcpListener` on `127.0.0.1:0` in a
//! thread that records the method, path and body of every request and answers each with a
//! configurable status and body. It stands in for a Slack-compatible webhook and for
//! Alertmanager's v2 API. One request per connection (`Connection: close`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The request target (`/api/v2/silences`).
    pub path: String,
    /// The body as text.
    pub body: String,
}

impl Request {
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method, self.path, self.body
            )
        })
    }
}

#[derive(Debug)]
struct Shared {
    requests: Vec<Request>,
    status: u16,
    body: String,
}

/// The receiver; it runs until the test process ends.
#[derive(Clone, Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    /// Starts a receiver answering `200` with `body` to every request.
    pub fn start(body: &str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            requests: Vec::new(),
            status: 200,
            body: body.to_owned(),
        }));
        let state = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&state);
                std::thread::spawn(move || handle(stream, &state));
            }
        });
        Receiver { addr, shared }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every later request with this status.
    pub fn set_status(&self, status: u16) {
        self.shared.lock().unwrap().status = status;
    }

    /// Answer every later request with this body.
    pub fn set_body(&self, body: &str) {
        self.shared.lock().unwrap().body = body.to_owned();
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.shared.lock().unwrap().requests.clear();
    }

    /// Waits up to `limit` until at least `n` requests arrived; returns them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one request from `stream`, records it and answers it.
fn handle(stream: TcpStream, shared: &Mutex<Shared>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, answer) = {
        let mut s = shared.lock().unwrap();
        s.requests.push(Request {
            method,
            path,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        (s.status, s.body.clone())
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.flush();
}
