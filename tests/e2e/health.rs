//! Targets that die, fail their checks, and come back.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, get, send, upstream};

fn one_route(pool: &str) -> String {
    format!("upstreams:\n{pool}routes:\n  - {{ name: all, upstream: pool }}\n")
}

#[tokio::test]
async fn a_dead_target_is_failed_over_without_a_client_error() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&one_route(&upstream(
        "pool",
        &[&a, &b],
        "    passive_health: { max_fails: 2, cooldown: 30s }\n",
    )));
    assert_eq!(get(&gw.url("/")).await.status, 200);
    b.stop();
    // GETs that land on the dead target are retried on the live one.
    for i in 0..20 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "request {i}: {:?}", reply.body);
        assert_eq!(reply.backend(), "a");
    }
    // After two failures in a row b is ejected: a sees every request directly.
    let before = a.served();
    for _ in 0..10 {
        get(&gw.url("/")).await;
    }
    assert_eq!(a.served() - before, 10);
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
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&dead.addr.to_string()),
        "the message names the target: {message}"
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
