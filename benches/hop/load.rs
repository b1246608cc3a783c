//! The load generator: keep-alive HTTP/1.1 connections, one request at a time each, on the
//! caller's (single-threaded) runtime, so it takes as little of the two cores from Envoy and
//! the processors as it can.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use crate::workload::CHAT_PATH;

/// How long one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One client connection; reconnects after an error or a `connection: close`.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    async fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends `request` (complete bytes) and reads the whole response: its status code.
    async fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        self.connect().await?;
        let stream = self.stream.as_mut().expect("connected above");
        let exchanged =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, &mut self.buf, request)).await;
        match exchanged {
            Ok(Ok((status, keep_alive))) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(status)
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    Ok(())
}

/// Index just past the next CRLF in `buf`, reading more as needed.
async fn line_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n") {
            return Ok(i + 2);
        }
        fill(stream, buf).await?;
    }
}

/// One request/response exchange: (status, whether the connection stays open).
async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> io::Result<(u16, bool)> {
    stream.write_all(request).await?;
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        loop {
            let end = line_end(stream, buf).await?;
            let size_text = String::from_utf8_lossy(&buf[..end - 2]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                buf.drain(..end);
                // Trailers, if any, then the empty line.
                loop {
                    let end = line_end(stream, buf).await?;
                    buf.drain(..end);
                    if end == 2 {
                        break;
                    }
                }
                break;
            }
            while buf.len() < end + size + 2 {
                fill(stream, buf).await?;
            }
            buf.drain(..end + size + 2);
        }
    } else if let Some(n) = length {
        while buf.len() < n {
            fill(stream, buf).await?;
        }
        buf.drain(..n);
    } else if !(status < 200 || status == 204 || status == 304) {
        // Delimited by the end of the connection.
        loop {
            buf.clear();
            buf.reserve(4096);
            if stream.read_buf(buf).await? == 0 {
                break;
            }
        }
        close = true;
    }
    Ok((status, !close))
}

/// One request as raw bytes.
pub fn raw_request(to: SocketAddr, body: &[u8], extra_headers: &[(&str, String)]) -> Arc<[u8]> {
    let mut head = format!(
        "POST {CHAT_PATH} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\n\
         accept: application/json\r\nx-team: engineering\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw.into()
}

/// Latencies (ns) of successful requests, and the failures.
#[derive(Default)]
pub struct Samples {
    pub ns: Vec<u64>,
    pub errors: usize,
    /// Requests never sent because the phase ran out of time.
    pub dropped: usize,
    pub first_error: Option<String>,
}

impl Samples {
    fn record(&mut self, result: io::Result<u16>, latency: Duration) {
        match result {
            Ok(status) if (200..300).contains(&status) => self.ns.push(latency.as_nanos() as u64),
            Ok(status) => self.fail(format!("HTTP {status}")),
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    pub fn merge(&mut self, other: Samples) {
        self.ns.extend(other.ns);
        self.errors += other.errors;
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Closed loop: `conns` connections send back to back until `total` requests are done.
pub async fn closed_loop(
    addr: SocketAddr,
    request: Arc<[u8]>,
    conns: usize,
    total: usize,
    limit: Duration,
) -> (Samples, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut workers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (next, request) = (next.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut samples = Samples::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                if Instant::now() > deadline {
                    samples.dropped += 1;
                    continue;
                }
                let sent = Instant::now();
                let result = conn.send(&request).await;
                samples.record(result, sent.elapsed());
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await.expect("a load worker panicked"));
    }
    (all, started.elapsed())
}

/// Open loop: `rate` requests/s for `secs`, each scheduled at a fixed instant and timed from
/// that instant, over up to `conns` connections (a request waits only if all are busy).
pub async fn open_loop(
    addr: SocketAddr,
    request: Arc<[u8]>,
    rate: u64,
    secs: u64,
    conns: usize,
) -> Samples {
    let count = rate * secs;
    let period_ns = 1_000_000_000 / rate;
    // Connections are opened before the clock starts.
    let mut ready = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut conn = Conn::new(addr);
        if let Err(e) = conn.connect().await {
            let mut failed = Samples::default();
            failed.fail(format!("connect {addr}: {e}"));
            failed.dropped = count as usize;
            return failed;
        }
        ready.push(conn);
    }
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(20);
    let give_up = start + Duration::from_secs(secs) + REQUEST_TIMEOUT * 2;
    // A plain thread paces the sends: std's sleep is finer than tokio's 1 ms timer wheel.
    let pacer = std::thread::spawn(move || {
        for i in 0..count {
            let due = start + Duration::from_nanos(period_ns * i);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut workers = Vec::with_capacity(conns);
    for mut conn in ready {
        let (rx, request) = (rx.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let due = { rx.lock().await.recv().await };
                let Some(due) = due else {
                    return samples;
                };
                if Instant::now() > give_up {
                    samples.dropped += 1;
                    continue;
                }
                let result = conn.send(&request).await;
                samples.record(result, due.elapsed());
            }
        }));
    }
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await.expect("a load worker panicked"));
    }
    pacer.join().expect("the pacer panicked");
    all
}
