//! Targets that die, fail their checks, and come back.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, get, raw, send, upstream};

fn one_route(pool: &str) -> String {
    format!("upstreams:\n{pool}routes:\n  - {{ name: all, upstream: pool }}\n")
}

#[tokio::test]
async fn a_dead_target_is_failed_over_then_ejected_for_its_cooldown() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&one_route(&upstream(
        "pool",
        &[&a, &b],
        "    passive_health: { max_fails: 2, cooldown: 1500ms }\n",
    )));
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let b_addr = b.addr.to_string();
    b.stop();
    // GETs that land on the dead target are retried on the live one.
    for i in 0..10 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "request {i}: {:?}", reply.body);
        assert_eq!(reply.backend(), "a");
    }
    // b is back, but ejected after two failures in a row: it gets nothing
    // until the cool-down is over, then takes its share again.
    let b = Backend::start_on("b", &b_addr).await;
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.backend(), "a");
    }
    assert_eq!(b.served(), 0, "an ejected target gets no requests");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let mut back = 0;
    for _ in 0..10 {
        back += usize::from(get(&gw.url("/")).await.backend() == "b");
    }
    assert_eq!(back, 5, "round robin includes b again after the cool-down");
}

#[tokio::test]
async fn a_connection_reset_is_retried_for_get_and_a_502_when_nothing_is_left() {
    let good = Backend::start("good").await;
    let rude = rude_listener();
    let gw = Gateway::start(&format!(
        "upstreams:\n  mixed:\n    targets:\n      - {{ url: \"http://{rude}\" }}\n      - {{ url: \"{}\" }}\n  rude:\n    targets:\n      - {{ url: \"http://{rude}\" }}\nroutes:\n  - {{ name: rude, upstream: rude, match: {{ path_prefix: /rude }} }}\n  - {{ name: mixed, upstream: mixed }}\n",
        good.url()
    ));
    for _ in 0..4 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "good");
    }
    let reply = get(&gw.url("/rude")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_unavailable");
}

/// Accepts connections and closes them at once, before any response.
///
/// A thread of its own with a blocking accept: it must close every connection
/// promptly even while the test's runtime is busy, and an accept error (CI
/// once ran this beside tests holding many sockets) must not end the loop
/// and leave the gateway's connection unanswered in the backlog.
fn rude_listener() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        loop {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_target_that_never_accepts_gets_504_after_the_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so a connect neither succeeds nor fails, as with a black-holed host.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let gw = Gateway::start(&format!(
        "upstreams:\n  hole:\n    timeouts: {{ connect: 300ms }}\n    targets:\n      - {{ url: \"http://{addr}\" }}\nroutes:\n  - {{ name: hole, upstream: hole }}\n"
    ));
    let started = std::time::Instant::now();
    let reply = send(
        Request::post(gw.url("/"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert_eq!(reply.error_code(), "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let svc = Backend::start("svc").await;
    // One worker: each worker keeps connections of its own (workers.rs).
    let gw = Gateway::start(&format!(
        "server: {{ workers: 1 }}\n{}",
        one_route(&upstream("pool", &[&svc], ""))
    ));
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(svc.served(), 20);
    assert_eq!(
        svc.connections_accepted(),
        1,
        "sequential requests share one upstream connection"
    );
}

#[tokio::test]
async fn a_request_with_a_body_is_not_retried_and_gets_502() {
    let dead = Backend::start("dead").await;
    dead.stop();
    let gw = Gateway::start(&one_route(&upstream("pool", &[&dead], "")));
    let request = Request::post(gw.url("/orders"))
        .body(Full::new(Bytes::from_static(b"{\"item\":1}")))
        .expect("request");
    let reply = send(request).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_unavailable");
    // The client is not told the target's address; the log says which
    // target failed, with the request id the client got.
    let target = dead.addr.to_string();
    assert!(
        !reply.error_message().contains(&target),
        "{}",
        reply.error_message()
    );
    let log = gw.log_with(&[&reply.request_id(), &target]).await;
    assert!(
        log.lines()
            .any(|l| l.contains(&reply.request_id()) && l.contains(&target)),
        "the log names the target:\n{log}"
    );
}

#[tokio::test]
async fn active_checks_eject_an_unhealthy_target_and_bring_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&one_route(&upstream(
        "pool",
        &[&a, &b],
        "    health_check: { path: /healthz, interval: 100ms, healthy_after: 2, unhealthy_after: 2 }\n",
    )));
    b.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let served_by_b = b.served();
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.backend(), "a");
    }
    assert_eq!(b.served(), served_by_b, "no traffic to an unhealthy target");
    assert!(b.health_checks() >= 2, "b kept being checked");

    b.set_healthy(true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut saw_b = false;
    for _ in 0..10 {
        saw_b |= get(&gw.url("/")).await.backend() == "b";
    }
    assert!(saw_b, "b takes traffic again once healthy");
}

#[tokio::test]
async fn no_healthy_target_is_a_503_and_other_routes_keep_working() {
    let sick = Backend::start("sick").await;
    let fine = Backend::start("fine").await;
    let pools = format!(
        "{}{}",
        upstream(
            "sick",
            &[&sick],
            "    health_check: { path: /healthz, interval: 100ms, unhealthy_after: 1 }\n"
        ),
        upstream("fine", &[&fine], "")
    );
    let gw = Gateway::start(&format!(
        "upstreams:\n{pools}routes:\n  - {{ name: sick, upstream: sick, match: {{ path_prefix: /sick }} }}\n  - {{ name: fine, upstream: fine }}\n"
    ));
    sick.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = get(&gw.url("/sick")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_code(), "no_healthy_upstream");
    assert_eq!(get(&gw.url("/other")).await.backend(), "fine");
}

/// Timers are reused across the requests of a keep-alive connection and
/// re-armed lazily; a short timeout after a long one must still fire on time.
#[tokio::test]
async fn timeouts_hold_for_every_request_on_a_kept_alive_connection() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: patient, upstream: svc, match: {{ path_prefix: /fast }}, timeout: 30s }}\n  - {{ name: strict, upstream: svc, timeout: 200ms }}\n",
        upstream("svc", &[&svc], "")
    ));
    let started = std::time::Instant::now();
    // Two requests on one connection: the first arms the timer for 30 s.
    let replies = raw(
        gw.addr,
        "GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /slow?ms=3000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(replies.starts_with("HTTP/1.1 200"), "{replies}");
    assert!(replies.contains("HTTP/1.1 504"), "{replies}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the second request's 200ms applied: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_upstream_gets_504_within_the_route_timeout() {
    let slow = Backend::start("slow").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: slow, upstream: slow, timeout: 200ms }}\n",
        upstream("slow", &[&slow], "    timeouts: { request: 30s }\n")
    ));
    let started = std::time::Instant::now();
    let reply = get(&gw.url("/slow?ms=3000")).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.error_code(), "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the route timeout, not the pool's, applied"
    );
    assert_eq!(
        get(&gw.url("/fast")).await.status,
        200,
        "the gateway keeps serving"
    );
}

#[tokio::test]
async fn a_dead_target_is_ejected_by_requests_with_bodies_too() {
    let live = Backend::start("live").await;
    let dead = Backend::start("dead").await;
    dead.stop();
    let gw = Gateway::start(&one_route(&upstream(
        "pool",
        &[&live, &dead],
        "    passive_health: { max_fails: 2, cooldown: 30s }\n",
    )));
    let mut failed = 0;
    for _ in 0..10 {
        let request = Request::post(gw.url("/orders"))
            .body(Full::new(Bytes::from_static(b"{\"item\":1}")))
            .expect("request");
        failed += usize::from(send(request).await.status == 502);
    }
    assert_eq!(failed, 2, "two refused connects eject the dead target");
}
