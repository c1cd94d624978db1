//! Load for bench/run's idle-connection rows: CONNECTIONS keep-alive
//! clients each make one `GET /` and then stay open, idle, as mobile
//! clients and browsers do at an edge. `sequential` opens them one after
//! another; `burst` opens all at once, so every request is in flight
//! together. The proxy's resident memory (VmRSS of PID) is read before, at
//! its highest while they are opened, and SETTLE seconds after the last
//! answer; then every connection sends a second request, to show it was
//! kept open and still works.
//!
//! usage: idle-load ADDRESS http1|http2 sequential|burst CONNECTIONS PID SETTLE_SECONDS
//! prints: `connections N answered A alive L rss_before_kib B rss_peak_kib P
//!          rss_idle_kib I per_connection_kib C`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str =
    "usage: idle-load ADDRESS http1|http2 sequential|burst CONNECTIONS PID SETTLE_SECONDS";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("idle-load: {error}\n{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

fn run(args: &[String]) -> Result<(), String> {
    let [address, protocol, mode, connections, pid, settle] = args else {
        return Err("six arguments expected".into());
    };
    let address: SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let protocol = match protocol.as_str() {
        "http1" => Protocol::Http1,
        "http2" => Protocol::Http2,
        other => return Err(format!("protocol `{other}`: http1 or http2")),
    };
    let burst = match mode.as_str() {
        "sequential" => false,
        "burst" => true,
        other => return Err(format!("mode `{other}`: sequential or burst")),
    };
    let connections: usize = connections
        .parse()
        .map_err(|e| format!("{connections}: {e}"))?;
    let pid: u32 = pid.parse().map_err(|e| format!("{pid}: {e}"))?;
    let settle = Duration::from_secs(settle.parse().map_err(|e| format!("{settle}: {e}"))?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(measure(address, protocol, burst, connections, pid, settle))
}

async fn measure(
    address: SocketAddr,
    protocol: Protocol,
    burst: bool,
    count: usize,
    pid: u32,
    settle: Duration,
) -> Result<(), String> {
    let before = rss_kib(pid)?;
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while let Ok(now) = rss_kib(pid) {
                peak.fetch_max(now, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut open = Vec::with_capacity(count);
    let mut first_error = None;
    if burst {
        let tasks: Vec<_> = (0..count)
            .map(|_| tokio::spawn(Client::open(address, protocol)))
            .collect();
        for task in tasks {
            match task.await {
                Ok(Ok(client)) => open.push(client),
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(e) => first_error = first_error.or(Some(e.to_string())),
            }
        }
    } else {
        for _ in 0..count {
            match Client::open(address, protocol).await {
                Ok(client) => open.push(client),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
    }
    tokio::time::sleep(settle).await;
    sampler.abort();
    let idle = rss_kib(pid)?;
    let answered = open.len();
    let mut alive = 0;
    for client in &mut open {
        match client.request().await {
            Ok(()) => alive += 1,
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(error) = first_error {
        eprintln!("idle-load: first error: {error}");
    }
    let per_connection = (idle as f64 - before as f64) / answered.max(1) as f64;
    println!(
        "connections {count} answered {answered} alive {alive} rss_before_kib {before} rss_peak_kib {} rss_idle_kib {idle} per_connection_kib {per_connection:.2}",
        peak.load(Ordering::Relaxed).max(idle)
    );
    Ok(())
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("process {pid}: no VmRSS"))
}

/// One kept-alive client connection.
enum Client {
    Http1(TcpStream),
    Http2(h2::client::SendRequest<Bytes>),
}

impl Client {
    async fn open(address: SocketAddr, protocol: Protocol) -> Result<Self, String> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = match protocol {
            Protocol::Http1 => Client::Http1(tcp),
            Protocol::Http2 => {
                let (sender, connection) = h2::client::handshake(tcp)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(connection);
                Client::Http2(sender)
            }
        };
        client.request().await?;
        Ok(client)
    }

    /// `GET /` and its whole answer, which must be a 200.
    async fn request(&mut self) -> Result<(), String> {
        match self {
            Client::Http1(tcp) => http1_get(tcp).await,
            Client::Http2(sender) => http2_get(sender).await,
        }
    }
}

async fn http1_get(tcp: &mut TcpStream) -> Result<(), String> {
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a whole answer".into());
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("not a 200: {:?}", &head[..head.len().min(40)]));
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("an answer without content-length")?;
            if answer.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

async fn http2_get(sender: &mut h2::client::SendRequest<Bytes>) -> Result<(), String> {
    let request = http::Request::get("http://bench/")
        .body(())
        .map_err(|e| e.to_string())?;
    let ready = sender
        .clone()
        .ready()
        .await
        .map_err(|e| format!("h2: {e}"))?;
    *sender = ready;
    let (answer, _) = sender
        .send_request(request, true)
        .map_err(|e| format!("h2 send: {e}"))?;
    let answer = answer.await.map_err(|e| format!("h2 answer: {e}"))?;
    if answer.status() != 200 {
        return Err(format!("not a 200: {}", answer.status()));
    }
    let mut body = answer.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("h2 body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(())
}
