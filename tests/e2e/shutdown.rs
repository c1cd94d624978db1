//! SIGTERM stops accepting, lets requests in flight finish, then exits.

use std::time::Duration;

use crate::support::{Backend, Gateway, get, upstream};

#[tokio::test]
async fn sigterm_drains_requests_in_flight() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "server: {{ drain_timeout: 10s }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    let slow = tokio::spawn({
        let url = gw.url("/slow?ms=800");
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut gw = gw;
    gw.signal(rustix::process::Signal::TERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "no new connections once draining"
    );
    let reply = slow.await.expect("request task");
    assert_eq!(reply.status, 200, "the request in flight finished");
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.wait_exit(Duration::from_secs(5));
        (status, gw.stderr())
    })
    .await
    .expect("wait");
    assert!(
        status.0.success(),
        "exit status {:?}; log:\n{}",
        status.0,
        status.1
    );
    assert!(status.1.contains("all connections drained"), "{}", status.1);
}

#[tokio::test]
async fn the_drain_timeout_bounds_shutdown() {
    let svc = Backend::start("svc").await;
    let mut gw = Gateway::start(&format!(
        "server: {{ drain_timeout: 300ms }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc, timeout: 1m }}\n",
        upstream("svc", &[&svc], "")
    ));
    let url = gw.url("/slow?ms=20000");
    let _stuck = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let _ = client.get(url.parse().expect("uri")).await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal(rustix::process::Signal::TERM);
    let (status, log) =
        tokio::task::spawn_blocking(move || (gw.wait_exit(Duration::from_secs(5)), gw.stderr()))
            .await
            .expect("wait");
    assert!(status.success());
    assert!(log.contains("drain timeout reached"), "{log}");
}

#[tokio::test]
async fn draining_waits_for_open_websockets_too() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let svc = Backend::start("svc").await;
    let mut gw = Gateway::start(&format!(
        "server: {{ drain_timeout: 10s }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("handshake");
    gw.signal(rustix::process::Signal::TERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::text("still here")).await.expect("send");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(
        echoed.to_text().expect("text"),
        "still here",
        "the tunnel outlives SIGTERM"
    );
    ws.close(None).await.expect("close");
    drop(ws);
    let started = std::time::Instant::now();
    let (status, log) =
        tokio::task::spawn_blocking(move || (gw.wait_exit(Duration::from_secs(5)), gw.stderr()))
            .await
            .expect("wait");
    assert!(status.success(), "{log}");
    assert!(log.contains("all connections drained"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exits once the tunnel closed"
    );
}
