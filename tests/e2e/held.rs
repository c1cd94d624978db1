//! Nothing a client does holds a connection forever, and the gateway never
//! holds more connections than it is allowed.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Backend, Gateway, served_and_kept, upstream};

async fn gateway(server: &str) -> (Backend, Gateway) {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "server: {{ {server} }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    (svc, gw)
}

/// How long until the gateway closes `stream` (reading and dropping
/// whatever it sends), up to `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Asserts that the gateway closes `stream` in less than `within`.
async fn assert_closed_within(stream: &mut TcpStream, within: Duration) {
    let after = closed_after(stream, within + Duration::from_secs(3)).await;
    assert!(after.is_some_and(|d| d < within), "closed after {after:?}");
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout_and_kept_alive_ones_when_idle() {
    let (_svc, gw) = gateway("header_read_timeout: 300ms, idle_timeout: 1s").await;
    // Says nothing at all.
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    assert_closed_within(&mut silent, Duration::from_secs(2)).await;
    // Starts an HTTP/2 preface and stops.
    let mut partial = TcpStream::connect(gw.addr).await.expect("connect");
    partial
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    assert_closed_within(&mut partial, Duration::from_secs(2)).await;
    // Kept alive after one request, then silent: closed by idle_timeout
    // (the header timeout counts from a next request's first byte).
    let mut kept = TcpStream::connect(gw.addr).await.expect("connect");
    kept.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    assert_closed_within(&mut kept, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn an_idle_websocket_is_closed() {
    let (_svc, gw) = gateway("websocket_idle_timeout: 400ms").await;
    let url = format!("ws://{}/ws", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    // Traffic keeps it open past the timeout...
    for _ in 0..6 {
        ws.send(Message::text("ping")).await.expect("send");
        assert!(ws.next().await.is_some_and(|m| m.is_ok()));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // ...silence closes it.
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(end.is_ok(), "still open after 5s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn past_max_connections_new_clients_wait_until_one_closes() {
    let (_svc, gw) = gateway("max_connections: 2").await;
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(served_and_kept(gw.addr).await);
    }
    let mut third = TcpStream::connect(gw.addr)
        .await
        .expect("the kernel queues it");
    third.write_all(request).await.expect("write");
    let mut buf = [0u8; 4096];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the third client is not served while two are open"
    );
    drop(open.pop());
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("served once a slot is free")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// An HTTP/2 connection to the gateway with the h2 crate, its driver task
/// reporting how the connection ended.
async fn h2_client(
    gw: &Gateway,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    (client, tokio::spawn(connection))
}

#[tokio::test]
async fn http2_streams_are_bounded_and_rapid_resets_end_the_connection() {
    let (svc, gw) = gateway("http2: { max_concurrent_streams: 8 }").await;
    let (client, connection) = h2_client(&gw).await;
    let mut client = client.ready().await.expect("ready");
    // One whole exchange first: the gateway's SETTINGS have arrived by then.
    let request = http::Request::get(format!("http://{}/", gw.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    assert_eq!(
        client.current_max_send_streams(),
        8,
        "the limit is advertised"
    );

    // Rapid reset (CVE-2023-44487): open a stream and cancel it, at once, many times.
    let mut sent = 0;
    for _ in 0..5000 {
        let request = http::Request::get(format!("http://{}/slow?ms=500", gw.addr))
            .body(())
            .expect("request");
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((_response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the gateway ends the connection");
    // The gateway sends GOAWAY (ENHANCE_YOUR_CALM) and closes; a client still
    // writing may see only the closed socket.
    let ended = ended.expect("task");
    assert!(
        ended.is_err(),
        "the gateway closed the connection: {ended:?}"
    );
    assert!(
        svc.served() <= 1 + 20,
        "cancelled streams did not reach the backend: {} served after {sent} resets",
        svc.served()
    );
    // The gateway keeps serving.
    let reply = crate::support::get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let (_svc, gw) = gateway("").await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut out = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        out.extend_from_slice(payload);
        out
    };
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&frame(0x4, 0, &[])[..])
        .await
        .expect("settings");
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end:
    // each carries literal header fields `a: b`.
    let field = [0x00u8, 0x01, b'a', 0x01, b'b'];
    let block: Vec<u8> = field.iter().copied().cycle().take(5 * 3000).collect();
    tcp.write_all(&frame(0x1, 0x1, &[0x82, 0x86, 0x84])[..])
        .await
        .expect("headers");
    let started = Instant::now();
    let mut written = 0usize;
    while written < 64 * 1024 * 1024 {
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            tcp.write_all(&frame(0x9, 0, &block)),
        )
        .await;
        match sent {
            Ok(Ok(())) => written += block.len(),
            _ => break,
        }
    }
    assert!(
        written < 64 * 1024 * 1024,
        "the gateway stopped reading or closed before 64 MiB of header block"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(gw.rss_kib() < 200 * 1024, "rss {} KiB", gw.rss_kib());
    let reply = crate::support::get(&gw.url("/")).await;
    assert_eq!(reply.status, 200, "the gateway keeps serving");
}

#[tokio::test]
async fn an_open_websocket_keeps_its_connection_slot() {
    let (_svc, gw) = gateway("max_connections: 1").await;
    let url = format!("ws://{}/ws", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    ws.send(Message::text("hi")).await.expect("send");
    assert!(ws.next().await.is_some_and(|m| m.is_ok()));
    let mut other = TcpStream::connect(gw.addr)
        .await
        .expect("the kernel queues it");
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let waited = tokio::time::timeout(Duration::from_millis(500), other.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the tunnel still counts as the one open connection"
    );
    ws.close(None).await.expect("close");
    drop(ws);
    let n = tokio::time::timeout(Duration::from_secs(3), other.read(&mut buf))
        .await
        .expect("served once the tunnel closed")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn an_http2_connection_with_no_requests_is_closed_when_idle() {
    let (_svc, gw) = gateway("idle_timeout: 500ms").await;
    let (client, connection) = h2_client(&gw).await;
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{}/", gw.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    // The client stays, answering pings, but sends no request.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "the gateway closed the idle connection");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(client);
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_of_connections() {
    let (_svc, gw) = gateway("max_connections_per_address: 2").await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(served_and_kept(gw.addr).await);
    }
    let mut third = TcpStream::connect(gw.addr).await.expect("connect");
    // Closed at once.
    assert_closed_within(&mut third, Duration::from_secs(1)).await;
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        crate::support::get(&gw.url("/")).await.status,
        200,
        "a freed place is usable"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let (_svc, gw) = gateway("send_timeout: 300ms").await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /download?bytes=200000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // Read nothing for a while: the socket buffers fill and writes stall.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection was neither closed nor fed"),
        }
    }
    assert!(
        total < 200_000_000,
        "cut off, not served whole: {total} bytes"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_is_closed() {
    let (_svc, gw) =
        gateway("idle_timeout: 1h, http2: { keepalive_interval: 200ms, keepalive_timeout: 200ms }")
            .await;
    // A preface and SETTINGS, then silence: no ACK, no PING reply.
    let mut raw = TcpStream::connect(gw.addr).await.expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    assert_closed_within(&mut raw, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn out_of_file_descriptors_the_gateway_backs_off_and_recovers() {
    let (_svc, gw) = gateway("").await;
    // Leave the gateway few descriptors, then open more connections than that.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=48:48"])
        .status()
        .expect("prlimit");
    assert!(limited.success());
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(stream) = TcpStream::connect(gw.addr).await {
            held.push(stream);
        }
    }
    // Accepting fails now: it must back off, not spin a core.
    let log = gw.log_with(&["accept failed"]).await;
    assert!(
        log.contains("accept failed"),
        "the gateway ran out of descriptors:\n{log}"
    );
    let before = cpu_ticks(gw.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(gw.pid()) - before;
    assert!(
        used < 30,
        "{used} ticks of CPU in one second while out of descriptors"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = crate::support::get(&gw.url("/")).await;
    assert_eq!(reply.status, 200, "serving again once descriptors are free");
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}
