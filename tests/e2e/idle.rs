//! Idle clients are cheap: thousands of kept-alive connections sitting
//! between requests leave the gateway serving others at its usual pace, an
//! idle HTTP/1.1 connection is parked (it holds its socket and nothing of
//! hyper's), a parked one takes its next request however it arrives, and
//! the idle timeout closes them. A burst leaves the upstream pool no more
//! connections than its idle bound.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::metrics::Metrics;
use crate::support::{Backend, Gateway, get, get_all_at_once, upstream};

async fn gateway(server: &str, keepalive: &str) -> (Backend, Gateway) {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nserver: {{ {server} }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], keepalive)
    ));
    (svc, gw)
}

/// Sends `request` in pieces (as given) and reads one whole answer with a
/// `content-length`, returning its head and body.
async fn exchange(stream: &mut TcpStream, pieces: &[&[u8]]) -> (String, Vec<u8>) {
    for piece in pieces {
        stream.write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    read_answer(stream).await
}

async fn read_answer(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if got.len() >= end + 4 + length {
                let body = got[end + 4..end + 4 + length].to_vec();
                got.drain(..end + 4 + length);
                assert!(got.is_empty(), "nothing more was asked for");
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

async fn parked(gw: &Gateway) -> f64 {
    Metrics::scrape(gw)
        .await
        .value("gateway_connections_parked", &[])
}

/// Waits until `parked` reaches `count`, up to `limit`.
async fn until_parked(gw: &Gateway, count: f64, limit: Duration) {
    let until = Instant::now() + limit;
    while parked(gw).await != count {
        assert!(
            Instant::now() < until,
            "parked: {} of {count}",
            parked(gw).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client connection that was served `GET path` and is now the gateway's
/// one parked connection.
async fn served_then_parked(gw: &Gateway, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    let (head, _) = exchange(&mut stream, &[request.as_bytes()]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    until_parked(gw, 1.0, Duration::from_secs(5)).await;
    stream
}

#[tokio::test]
async fn thousands_of_idle_clients_leave_others_served_and_are_closed_at_the_idle_timeout() {
    const IDLE: usize = 2000;
    let (_svc, gw) = gateway("idle_timeout: 6s, max_connections: 5000", "").await;
    // Two thousand clients, a hundred at a time, each served one request
    // and then silent.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE / 100 {
        let batch: Vec<_> = (0..100)
            .map(|_| {
                let addr = gw.addr;
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(addr).await.expect("connect");
                    let (head, _) =
                        exchange(&mut stream, &[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await;
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    (stream, Instant::now())
                })
            })
            .collect();
        for client in batch {
            idle.push(client.await.expect("client"));
        }
    }
    // All of them parked, while new clients are served at once.
    until_parked(&gw, IDLE as f64, Duration::from_secs(5)).await;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(get(&gw.url("/")).await.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a new client waited {:?}",
            started.elapsed()
        );
    }
    // Each idle one is closed at the idle timeout counted from its answer:
    // not before, and not long after.
    let closings: Vec<_> = idle
        .into_iter()
        .map(|(mut stream, answered)| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let read =
                    tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
                assert!(matches!(read, Ok(Ok(0))), "closed without a word: {read:?}");
                answered.elapsed()
            })
        })
        .collect();
    for closing in closings {
        let after = closing.await.expect("closing");
        assert!(
            after >= Duration::from_millis(5500) && after < Duration::from_secs(15),
            "closed {after:?} after its answer (idle_timeout 6s)"
        );
    }
    until_parked(&gw, 0.0, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_parked_connection_takes_its_next_requests_however_they_arrive() {
    let (svc, gw) = gateway("", "").await;
    let mut stream = served_then_parked(&gw, "/first").await;

    // A head in pieces, the first of them waking the connection.
    let (head, body) = exchange(
        &mut stream,
        &[b"GE", b"T /second HTTP/1.1\r\n", b"Host: a\r\n", b"\r\n"],
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("/second"));
    until_parked(&gw, 1.0, Duration::from_secs(5)).await;

    // Two requests at once (pipelined), the second with a body.
    stream
        .write_all(
            b"GET /third HTTP/1.1\r\nHost: a\r\n\r\nPOST /upload HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await
        .expect("write");
    let (third, body) = read_answer(&mut stream).await;
    assert!(third.starts_with("http/1.1 200"), "{third}");
    assert!(String::from_utf8_lossy(&body).contains("/third"));
    let (upload, body) = read_answer(&mut stream).await;
    assert!(upload.starts_with("http/1.1 200"), "{upload}");
    assert!(
        String::from_utf8_lossy(&body).contains('5'),
        "{}",
        String::from_utf8_lossy(&body)
    );
    until_parked(&gw, 1.0, Duration::from_secs(5)).await;
    assert_eq!(
        svc.connections_accepted(),
        1,
        "one upstream connection, reused"
    );
}

#[tokio::test]
async fn an_answer_streamed_for_longer_than_a_park_arrives_whole() {
    let (_svc, gw) = gateway("", "").await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /download?bytes=20000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // Read slowly, for about three seconds: the answer is in progress all
    // along, so the connection is never at rest.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() - end - 4 >= 20_000_000
        {
            break;
        }
        if started.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // And the connection goes on.
    let (head, _) = exchange(&mut stream, &[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_head_trickling_in_is_never_parked_so_the_header_timeout_holds() {
    let (_svc, gw) = gateway("header_read_timeout: 2s", "").await;
    let mut stream = served_then_parked(&gw, "/").await;
    // The next head, a header line every 400 ms: it began, so it must end
    // within the header timeout counted from its first byte.
    let started = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut closed = false;
    for i in 0..25 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if stream
            .write_all(format!("x-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            // Closed, with or without a 408 first.
            if let Ok(n) = read {
                assert!(
                    n == 0 || buf.starts_with(b"HTTP/1.1 408"),
                    "answered a trickled head: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
            }
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickle went on for 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed {:?} after the head began (header_read_timeout 2s)",
        started.elapsed()
    );
}

#[tokio::test]
async fn after_a_burst_the_upstream_pool_keeps_its_idle_bound_then_closes_them() {
    // One worker: the bound is per worker (workers.rs).
    let (svc, gw) = gateway(
        "workers: 1",
        "    keepalive: { max_idle_per_target: 8, idle_timeout: 2s }\n",
    )
    .await;
    svc.set_delay(Duration::from_millis(300));
    // 200 requests at once: 200 upstream connections while they wait.
    get_all_at_once(&gw.url("/"), 200).await;
    assert!(
        svc.connections_accepted() > 8,
        "the burst needed more than the bound"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = svc.connections_open();
    assert!(
        kept <= 8,
        "{kept} upstream connections kept after the burst"
    );
    // And those close once idle for the pool's idle timeout.
    let until = Instant::now() + Duration::from_secs(6);
    while svc.connections_open() > 0 {
        assert!(
            Instant::now() < until,
            "{} still open",
            svc.connections_open()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_whose_body_is_still_coming_is_never_parked() {
    let (svc, gw) = gateway("", "").await;
    // The upstream answers without reading the body.
    svc.serve("/early", 200, "text/plain", "early");
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = format!(
        "POST /early HTTP/1.1\r\nHost: a\r\ncontent-length: {}\r\n\r\n",
        50 + smuggled.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&[b'x'; 50]).await.expect("write");
    let (answer, body) = read_answer(&mut stream).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(body, b"early");
    // The client pauses mid-body for longer than a park takes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&gw).await, 0.0, "a body still coming is not at rest");
    // The rest of the body looks like a request: it is body, never a request.
    let _ = stream.write_all(smuggled).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut buf = [0u8; 1024];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await
    {
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("smuggled"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    assert_eq!(svc.served(), 1, "only the POST reached the upstream");
}

/// Sends a POST with `body_len` bytes over `client`, in 16 KiB frames a few
/// milliseconds apart, and returns the upstream's echo of it.
async fn h2_echo(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    authority: &str,
    body_len: usize,
) -> serde_json::Value {
    let request = http::Request::post(format!("http://{authority}/h2"))
        .header("x-team", "platform-edge-gateway")
        .header("user-agent", "idle-test/1.0 (resting between requests)")
        .body(())
        .expect("request");
    let (response, mut sending) = client
        .send_request(request, body_len == 0)
        .expect("send request");
    let mut left = body_len;
    while left > 0 {
        let frame = left.min(16 * 1024);
        left -= frame;
        sending
            .send_data(bytes::Bytes::from(vec![b'x'; frame]), left == 0)
            .expect("send data");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("data");
        let _ = body.flow_control().release_capacity(data.len());
        got.extend_from_slice(&data);
    }
    serde_json::from_slice(&got).expect("echo json")
}

#[tokio::test]
async fn an_http2_connection_at_rest_keeps_its_header_table_and_takes_big_frames_after() {
    let (_svc, gw) = gateway("", "").await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let authority = gw.addr.to_string();
    // The first request's headers go into both sides' HPACK tables.
    let first = h2_echo(&mut client, &authority, 0).await;
    assert_eq!(first["headers"]["x-team"][0], "platform-edge-gateway");
    for round in 0..2 {
        // At rest, the gateway holds none of the connection's read, write
        // or Huffman buffers; the header table stays.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The same headers now arrive as table indexes, and a body of
        // frames larger than a read.
        let echo = h2_echo(&mut client, &authority, 200 * 1024 + round).await;
        assert_eq!(echo["headers"]["x-team"][0], "platform-edge-gateway");
        assert_eq!(
            echo["headers"]["user-agent"][0],
            "idle-test/1.0 (resting between requests)"
        );
        assert_eq!(echo["headers"]["x-forwarded-host"][0], authority.as_str());
        assert_eq!(echo["body_bytes"], 200 * 1024 + round);
    }
    // Streams side by side after a rest still each get their own answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let together: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            let authority = authority.clone();
            tokio::spawn(async move { h2_echo(&mut client, &authority, i * 1000).await })
        })
        .collect();
    for (i, echo) in together.into_iter().enumerate() {
        assert_eq!(echo.await.expect("stream")["body_bytes"], i * 1000);
    }
}

#[tokio::test]
async fn clients_past_max_connections_wait_in_a_backlog_of_thousands() {
    // One connection allowed: while it is open the gateway accepts no more,
    // and the kernel completes connections for it up to the listen backlog.
    let (_svc, gw) = gateway("max_connections: 1", "").await;
    let held = TcpStream::connect(gw.addr).await.expect("connect");
    let backlog: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(4096, |max: usize| max.min(4096));
    // A burst of new clients past a thousand (what tokio's default backlog
    // held): each is connected at once, none is refused or left hanging.
    let burst = (backlog - 100).min(3000);
    // Room for that many sockets in this process, as far as it may raise it.
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: files.maximum,
            maximum: files.maximum,
        },
    );
    let mut waiting = Vec::with_capacity(burst);
    for _ in 0..burst {
        let connect = tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(gw.addr));
        match connect.await {
            Ok(Ok(stream)) => waiting.push(stream),
            other => panic!(
                "client {} of {burst} not connected at once: {other:?}",
                waiting.len() + 1
            ),
        }
    }
    // Once the held one closes, one of the first in line is served: with
    // several workers, each takes the first client in its own socket's queue
    // and the place goes to one of them.
    let first = &mut waiting[..50];
    for stream in first.iter_mut() {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
    }
    drop(held);
    let until = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    let served = loop {
        if let Some(n) = first
            .iter()
            .find_map(|s| s.try_read(&mut buf).ok().filter(|&n| n > 0))
        {
            break n;
        }
        assert!(
            Instant::now() < until,
            "no waiting client served once the place freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        buf[..served].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &buf[..served]
    );
}
