//! What the upstream and the client see of each other's headers.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, raw, send, upstream};

fn gateway(backend: &Backend, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[backend], extra)
    ))
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_in_both_directions() {
    let svc = Backend::start("svc").await;
    let gw = gateway(&svc, "");
    let response = raw(
        gw.addr,
        "GET /hop HTTP/1.1\r\nHost: shop.test\r\nConnection: close, x-client-secret\r\nx-client-secret: 1\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nUpgrade: h2c\r\nx-kept: yes\r\n\r\n",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    let echo: serde_json::Value = serde_json::from_str(body.trim()).expect("echo JSON");
    let seen = echo["headers"].as_object().expect("headers");
    for gone in [
        "connection",
        "x-client-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(gone),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(echo["headers"]["x-kept"][0], "yes");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-backend-visible: yes"), "{head}");
    for gone in ["x-backend-secret", "keep-alive", "proxy-authenticate"] {
        assert!(!head.contains(gone), "{gone} reached the client: {head}");
    }
}

#[tokio::test]
async fn forwarding_headers_and_request_ids() {
    let svc = Backend::start("svc").await;
    let gw = gateway(&svc, "");
    let request = Request::get(gw.url("/who"))
        .header("host", "shop.test:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(request).await;
    // A client's own X-Forwarded-For is not believed: it is replaced.
    assert_eq!(
        reply.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        reply.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        reply.upstream_header("x-forwarded-host").as_deref(),
        Some("shop.test:8080")
    );
    // Host is the target's own authority unless the pool preserves it.
    assert_eq!(reply.upstream_header("host"), Some(svc.addr.to_string()));
    let id = reply
        .upstream_header("x-request-id")
        .expect("a request id is generated");
    assert_eq!(id.len(), 36);
    assert_eq!(
        reply.headers["x-request-id"],
        id.as_str(),
        "the client sees the same id"
    );

    let request = Request::get(gw.url("/who"))
        .header("x-request-id", "client-chosen-id")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(request).await;
    assert_eq!(
        reply.upstream_header("x-request-id").as_deref(),
        Some("client-chosen-id")
    );
    assert_eq!(reply.headers["x-request-id"], "client-chosen-id");
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let svc = Backend::start("svc").await;
    let gw = gateway(&svc, "    preserve_host: true\n");
    let request = Request::get(gw.url("/"))
        .header("host", "shop.test:8080")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        send(request).await.upstream_header("host").as_deref(),
        Some("shop.test:8080")
    );
}

#[tokio::test]
async fn only_trusted_proxies_pass_on_what_earlier_proxies_said() {
    let svc = Backend::start("svc").await;
    let forged = |gw: &Gateway| {
        Request::get(gw.url("/who"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-real-ip", "203.0.113.9")
            .header("forwarded", "for=203.0.113.9")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let trusting = |blocks: &str| {
        Gateway::start(&format!(
            "server: {{ trusted_proxies: [{blocks}] }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
            upstream("svc", &[&svc], "")
        ))
    };
    let untrusted = trusting("10.0.0.0/8");
    let reply = send(forged(&untrusted)).await;
    assert_eq!(
        reply.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        reply.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(reply.upstream_header("x-real-ip"), None);
    assert_eq!(reply.upstream_header("forwarded"), None);

    let trusted = trusting("127.0.0.0/8, \"::1\"");
    let reply = send(forged(&trusted)).await;
    assert_eq!(
        reply.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        reply.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        reply.upstream_header("x-real-ip").as_deref(),
        Some("203.0.113.9")
    );
    assert_eq!(
        reply.upstream_header("forwarded").as_deref(),
        Some("for=203.0.113.9")
    );
}

#[tokio::test]
async fn a_clients_trace_is_continued_and_a_request_without_one_starts_one() {
    let svc = Backend::start("svc").await;
    let gw = gateway(&svc, "");
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get(gw.url("/"))
        .header("traceparent", client)
        .header("tracestate", "vendor=abc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(request).await;
    let sent = reply
        .upstream_header("traceparent")
        .expect("traceparent upstream");
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(fields.len(), 4, "{sent}");
    assert_eq!(
        fields[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the same trace"
    );
    assert_ne!(
        fields[2], "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(fields[3], "01");
    assert_eq!(
        reply.upstream_header("tracestate").as_deref(),
        Some("vendor=abc")
    );

    let fresh = crate::support::get(&gw.url("/")).await;
    let started = fresh.upstream_header("traceparent").expect("a new trace");
    assert!(
        started.len() == 55 && started.starts_with("00-"),
        "{started}"
    );
    assert_ne!(&started[3..35], "4bf92f3577b34da6a3ce929d0e0e4736");
    let other = crate::support::get(&gw.url("/")).await;
    assert_ne!(
        other
            .upstream_header("traceparent")
            .map(|t| t[3..35].to_string()),
        Some(started[3..35].to_string()),
        "each request starts its own"
    );
}

#[tokio::test]
async fn a_failed_request_is_logged_with_its_trace() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  svc:\n    targets: [{{ url: \"http://127.0.0.1:{port}\" }}]\nroutes:\n  - {{ name: all, upstream: svc }}\n"
    ));
    let request = Request::get(gw.url("/"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(send(request).await.status, 502);
    let log = gw
        .log_with(&[
            "request failed",
            "trace_id=0af7651916cd43dd8448eb211c80319c",
        ])
        .await;
    assert!(
        log.contains("trace_id=0af7651916cd43dd8448eb211c80319c"),
        "{log}"
    );
}
