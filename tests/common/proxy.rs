//! A fault-injecting HTTP/1.1 proxy for the test suites, on 127.0.0.1 between the engine and the
//! reference server.
//!
//! The proxy reads each request whole (head and `Content-Length`/chunked body), draws a fault for
//! it, and then forwards it, delays it, cuts it or swallows it; responses are read whole from the
//! server and forwarded, delayed, dribbled, cut or withheld the same way. Faults come from seeded
//! ChaCha RNGs: one for the connections in accept order (which connection is reset on accept, and
//! the seed of each connection's own RNG), and one per connection for the requests sent on it. The
//! sequence of decisions is therefore fixed by the seed; which request meets which decision
//! depends on how the client spreads its requests over connections.
//!
//! Every fault is counted by kind. Two "mutant" kinds (`FakeAck`, `DupFreshKey`) make the network
//! lie; they exist only so the suites can prove that their checks catch a lost or duplicated
//! mutation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Forwarded untouched.
    Clean,
    /// Connection level: accepted, then closed with a RST before a byte is read.
    ResetOnAccept,
    /// `latency_ms` added one way, before the request and before the response.
    Latency,
    /// Request and response dribbled at `bytes_per_sec` in `piece`-byte writes (slow bodies).
    Throttle,
    /// The head and half the body reach the server, then both sides get a RST.
    ResetRequest,
    /// The server answers; the client gets the head and half the body, then a RST.
    ResetResponse,
    /// The server answers; the client gets the head and half the body, then a FIN.
    Truncate,
    /// The request is swallowed: no answer, no close. Only the client's timeout ends it.
    HalfOpen,
    /// The request reaches the server (and is applied); the answer is withheld and the
    /// connection held open: the client times out after the commit.
    Stall,
    /// The request is held `late_ms` (longer than the client's timeout), then delivered: a stale
    /// copy that reaches the server after the client gave up, maybe after its retry.
    Late,
    /// MUTANT: the proxy answers `200 {}` itself and never forwards (a lost mutation).
    FakeAck,
    /// MUTANT: forwarded, then sent again under a fresh `Idempotency-Key` (a duplicate).
    DupFreshKey,
}

pub const KINDS: [Fault; 12] = [
    Fault::Clean,
    Fault::ResetOnAccept,
    Fault::Latency,
    Fault::Throttle,
    Fault::ResetRequest,
    Fault::ResetResponse,
    Fault::Truncate,
    Fault::HalfOpen,
    Fault::Stall,
    Fault::Late,
    Fault::FakeAck,
    Fault::DupFreshKey,
];

/// Which requests may draw a fault (others pass clean).
pub type Target = Arc<dyn Fn(&Head) -> bool + Send + Sync>;

/// What the proxy injects.
#[derive(Clone)]
pub struct Mix {
    /// Probability of each per-request fault (the rest pass clean).
    pub faults: Vec<(Fault, f64)>,
    /// Probability that a new connection is reset on accept.
    pub reset_on_accept: f64,
    pub latency_ms: u64,
    pub bytes_per_sec: u64,
    /// Size of each write when throttled.
    pub piece: usize,
    /// How long a `Late` request is held before it is delivered.
    pub late_ms: u64,
    pub target: Option<Target>,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            faults: Vec::new(),
            reset_on_accept: 0.0,
            latency_ms: 30,
            bytes_per_sec: 64 * 1024,
            piece: 64,
            late_ms: 1_000,
            target: None,
        }
    }
}

/// The request line of a request (for `Target`s).
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub path: String,
}

pub struct Counts {
    by_kind: BTreeMap<Fault, AtomicU64>,
    pub connections: AtomicU64,
}

impl Counts {
    fn add(&self, f: Fault) {
        self.by_kind[&f].fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listen on 127.0.0.1 and forward to `upstream` with the faults of `mix`.
    pub async fn start(upstream: SocketAddr, seed: u64, mix: Mix) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts {
            by_kind: KINDS.iter().map(|k| (*k, AtomicU64::new(0))).collect(),
            connections: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let (c, s) = (counts.clone(), stop.clone());
        let mix = Arc::new(mix);
        tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = s.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                c.connections.fetch_add(1, Ordering::Relaxed);
                let reset = rng.gen::<f64>() < mix.reset_on_accept;
                let conn_rng = ChaCha8Rng::seed_from_u64(rng.gen());
                if reset {
                    c.add(Fault::ResetOnAccept);
                    rst(&client);
                    continue;
                }
                let (c, s, mix) = (c.clone(), s.clone(), mix.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(client, upstream, conn_rng, mix, c) => {}
                        _ = s.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, counts, stop }
    }

    pub fn count(&self, f: Fault) -> u64 {
        self.counts.by_kind[&f].load(Ordering::Relaxed)
    }

    /// Faults injected (every kind but `Clean`).
    pub fn faults(&self) -> u64 {
        KINDS
            .iter()
            .filter(|k| **k != Fault::Clean)
            .map(|k| self.count(*k))
            .sum()
    }

    /// Requests the proxy read whole (each drew one fault or `Clean`), plus resets on accept.
    pub fn decisions(&self) -> u64 {
        KINDS.iter().map(|k| self.count(*k)).sum()
    }

    pub fn connections(&self) -> u64 {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// "ResetRequest 12, Truncate 3, ..." for the kinds that occurred.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = KINDS
            .iter()
            .filter(|k| **k != Fault::Clean && self.count(**k) > 0)
            .map(|k| format!("{k:?} {}", self.count(*k)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---- one connection ----------------------------------------------------------------------------

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut rng: ChaCha8Rng,
    mix: Arc<Mix>,
    counts: Arc<Counts>,
) {
    let mut server: Option<TcpStream> = None;
    let mut cbuf = Vec::new();
    let mut sbuf = Vec::new();
    loop {
        let req = match read_message(&mut client, &mut cbuf, None).await {
            Read::Message(m) => m,
            // The client closed (idle keep-alive connection) or reset: mirror it upstream.
            Read::Closed(_) => return,
            Read::Reset(_) => {
                if let Some(s) = &server {
                    rst(s);
                }
                return;
            }
        };
        let fault = draw(&mut rng, &mix, &req);
        counts.add(fault);

        if fault == Fault::HalfOpen {
            drop(server);
            hold_until_closed(&mut client).await;
            return;
        }
        if fault == Fault::FakeAck {
            let canned = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            if client.write_all(canned).await.is_err() {
                return;
            }
            continue;
        }
        if server.is_none() {
            match TcpStream::connect(upstream).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    server = Some(s);
                }
                Err(_) => {
                    rst(&client);
                    return;
                }
            }
        }
        let up = server.as_mut().unwrap();

        match fault {
            Fault::ResetRequest => {
                let _ = up.write_all(&req.bytes[..req.cut_point()]).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                rst(up);
                rst(&client);
                return;
            }
            Fault::Late => {
                // The client times out meanwhile; the copy still reaches the server.
                tokio::time::sleep(Duration::from_millis(mix.late_ms)).await;
                drop(client);
                if up.write_all(&req.bytes).await.is_ok() {
                    let _ = read_message(up, &mut sbuf, Some(&req.method)).await;
                }
                return;
            }
            _ => {}
        }
        if send(up, &req.bytes, fault, &mix).await.is_err() {
            rst(&client);
            return;
        }
        let resp = match read_message(up, &mut sbuf, Some(&req.method)).await {
            Read::Message(m) => m,
            // The server cut the connection (its own drop faults): the client sees the same.
            Read::Closed(partial) => {
                let _ = client.write_all(&partial).await;
                let _ = client.shutdown().await;
                hold_until_closed(&mut client).await;
                return;
            }
            Read::Reset(partial) => {
                let _ = client.write_all(&partial).await;
                rst(&client);
                return;
            }
        };
        match fault {
            Fault::Stall => {
                drop(server);
                hold_until_closed(&mut client).await;
                return;
            }
            Fault::ResetResponse | Fault::Truncate => {
                let _ = client.write_all(&resp.bytes[..resp.cut_point()]).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                if fault == Fault::ResetResponse {
                    rst(&client);
                } else {
                    let _ = client.shutdown().await;
                    hold_until_closed(&mut client).await;
                }
                return;
            }
            _ => {}
        }
        if send(&mut client, &resp.bytes, fault, &mix).await.is_err() {
            return;
        }
        if fault == Fault::DupFreshKey {
            // The same request again under another key: the server cannot tell it is a copy.
            let dup = req.with_fresh_key();
            if up.write_all(&dup).await.is_err() {
                return;
            }
            let _ = read_message(up, &mut sbuf, Some(&req.method)).await;
        }
        if req.close || resp.close {
            let _ = client.shutdown().await;
            return;
        }
    }
}

fn draw(rng: &mut ChaCha8Rng, mix: &Mix, req: &Message) -> Fault {
    // Always draw, so the sequence of decisions does not depend on the targets.
    let x: f64 = rng.gen();
    if let Some(t) = &mix.target {
        let head = Head {
            method: req.method.clone(),
            path: req.path.clone(),
        };
        if !t(&head) {
            return Fault::Clean;
        }
    }
    let mut acc = 0.0;
    for (f, p) in &mix.faults {
        acc += p;
        if x < acc {
            return *f;
        }
    }
    Fault::Clean
}

async fn send(to: &mut TcpStream, bytes: &[u8], fault: Fault, mix: &Mix) -> io::Result<()> {
    match fault {
        Fault::Latency => {
            tokio::time::sleep(Duration::from_millis(mix.latency_ms)).await;
            to.write_all(bytes).await
        }
        Fault::Throttle => {
            let piece = mix.piece.max(1);
            let per_piece = Duration::from_secs_f64(piece as f64 / mix.bytes_per_sec.max(1) as f64);
            for p in bytes.chunks(piece) {
                to.write_all(p).await?;
                tokio::time::sleep(per_piece).await;
            }
            Ok(())
        }
        _ => to.write_all(bytes).await,
    }
}

/// Close with a RST instead of a FIN: SO_LINGER 0, then the socket is dropped by the caller.
fn rst(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Keep the connection open, reading and discarding, until the client closes or resets it.
async fn hold_until_closed(s: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
}

// ---- HTTP/1.1 framing --------------------------------------------------------------------------

struct Message {
    bytes: Vec<u8>,
    head_len: usize,
    method: String,
    path: String,
    close: bool,
}

impl Message {
    /// Where a cut goes: half-way through the body, or half-way through the head without one.
    fn cut_point(&self) -> usize {
        let body = self.bytes.len() - self.head_len;
        if body > 1 {
            self.head_len + body / 2
        } else {
            self.head_len / 2
        }
    }

    fn with_fresh_key(&self) -> Vec<u8> {
        let head = String::from_utf8_lossy(&self.bytes[..self.head_len]);
        let head: String = head
            .split("\r\n")
            .map(|line| match line.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("idempotency-key") => {
                    format!("{k}: {}-dup", v.trim())
                }
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.bytes[self.head_len..]);
        out
    }
}

enum Read {
    Message(Message),
    /// EOF; the bytes of an incomplete message, if any.
    Closed(Vec<u8>),
    /// Reset or another error; the bytes of an incomplete message, if any.
    Reset(Vec<u8>),
}

enum Framing {
    Length(usize),
    Chunked,
    UntilEof,
}

/// Read one whole message; `request_method` is `Some` when reading a response to it. Bytes after
/// the message stay in `buf`.
async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>, request_method: Option<&str>) -> Read {
    let mut chunk = [0u8; 16 * 1024];
    let mut eof = false;
    loop {
        if let Some(head_len) = find(buf, b"\r\n\r\n").map(|i| i + 4) {
            let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
            let mut lines = head.split("\r\n");
            let first = lines.next().unwrap_or_default().to_string();
            let mut parts = first.split(' ');
            let (a, b) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let mut length = None;
            let mut chunked = false;
            let mut close = false;
            for line in lines {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
            let framing = match request_method {
                None => match (chunked, length) {
                    (true, _) => Framing::Chunked,
                    (false, n) => Framing::Length(n.unwrap_or(0)),
                },
                Some(m) => {
                    let status: u16 = b.parse().unwrap_or(0);
                    if m == "HEAD" || status < 200 || status == 204 || status == 304 {
                        Framing::Length(0)
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(n) = length {
                        Framing::Length(n)
                    } else {
                        Framing::UntilEof
                    }
                }
            };
            let end = match framing {
                Framing::Length(n) => (buf.len() >= head_len + n).then_some(head_len + n),
                Framing::Chunked => chunked_end(buf, head_len),
                Framing::UntilEof => eof.then_some(buf.len()),
            };
            if let Some(end) = end {
                let bytes: Vec<u8> = buf.drain(..end).collect();
                let (method, path) = match request_method {
                    None => (a.to_string(), b.to_string()),
                    Some(m) => (m.to_string(), String::new()),
                };
                return Read::Message(Message {
                    bytes,
                    head_len,
                    method,
                    path,
                    close,
                });
            }
        }
        if eof {
            return Read::Closed(std::mem::take(buf));
        }
        match s.read(&mut chunk).await {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Read::Reset(std::mem::take(buf)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// End of a chunked body starting at `at`, if it is all in `buf`.
fn chunked_end(buf: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let e = at + find(&buf[at..], b"\r\n")?;
                if e == at {
                    return Some(at + 2);
                }
                at = e + 2;
            }
        }
        at += size + 2;
        if at > buf.len() {
            return None;
        }
    }
}
