//! Attacks on the edge, each sent as raw bytes, and what the gateway does:
//! ambiguous framing is refused with 400 before it reaches a backend, and the
//! connection is closed so nothing left in it is read as a next request.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Backend, Gateway, get, raw, upstream};

async fn gateway() -> (Backend, Gateway) {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    (svc, gw)
}

/// Sends `request`; `None` when the gateway answered 400 and closed, else
/// what went wrong.
async fn refused_and_closed(gw: &Gateway, name: &str, request: &str) -> Option<String> {
    let started = Instant::now();
    let answer = raw(gw.addr, request).await;
    if !answer.starts_with("HTTP/1.1 400") {
        return Some(format!("{name}: expected 400, got {answer:?}"));
    }
    if answer.matches("HTTP/1.1").count() != 1 || started.elapsed() > Duration::from_secs(3) {
        return Some(format!(
            "{name}: one answer, then the connection closes; got {answer:?} after {:?}",
            started.elapsed()
        ));
    }
    None
}

#[tokio::test]
async fn ambiguous_hosts_and_body_framing_get_400_and_reach_no_backend() {
    let (svc, gw) = gateway().await;
    let attacks = [
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        (
            "Host disagreeing with an absolute-form target",
            "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
        ),
        (
            "a Host that is not a host name",
            "GET / HTTP/1.1\r\nHost: evil.test#.example.com\r\n\r\n",
        ),
        (
            "Content-Length then Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding then Content-Length",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "a Content-Length list",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "an invalid chunk size",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    let mut failed = Vec::new();
    for (name, request) in attacks {
        failed.extend(refused_and_closed(&gw, name, request).await);
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(svc.served(), 0, "no attack reached the backend");
    assert_eq!(
        get(&gw.url("/")).await.status,
        200,
        "the gateway keeps serving"
    );
}

/// An upstream that reads each request head and answers with `answer`,
/// bytes as given, then closes (or, with `stall`, keeps the connection open
/// without another byte).
async fn raw_upstream(answer: &'static [u8], stall: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    addr
}

fn one_route_to(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "upstreams:\n  raw:\n    targets:\n      - {{ url: \"http://{addr}\" }}\nroutes:\n  - {{ name: all, upstream: raw{extra} }}\n"
    )
}

#[tokio::test]
async fn an_http11_client_gets_http11_and_keep_alive_from_an_http10_upstream() {
    let old = raw_upstream(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!", false).await;
    let gw = Gateway::start(&one_route_to(old, ""));
    let answer = raw(
        gw.addr,
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        answer.matches("HTTP/1.1 200 OK").count(),
        2,
        "both requests answered in HTTP/1.1 on one connection: {answer:?}"
    );
    assert_eq!(answer.matches("old!").count(), 2, "{answer:?}");
}

#[tokio::test]
async fn a_content_length_beside_chunking_or_from_a_plugin_never_frames_the_answer() {
    // Smuggling's response side: a length that disagrees with the body
    // would leave bytes on the kept-alive connection, read as the next answer.
    let both = raw_upstream(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
    )
    .await;
    let gw = Gateway::start(&one_route_to(both, ""));
    let two =
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = raw(gw.addr, two).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer:?}");
    assert_eq!(answer.matches("hello").count(), 2, "{answer:?}");
    assert!(!answer.contains("content-length: 2\r\n"), "{answer:?}");

    let plugins = crate::support::PluginDir::with(&["transform"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:\n  - {{ name: all, upstream: svc, plugins: [{{ name: transform, config: {{ response: {{ set_headers: {{ content-length: \"2\" }} }} }} }}] }}\n",
        plugins.section(""),
        upstream("svc", &[&svc], "")
    ));
    let answer = raw(gw.addr, two).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer:?}");
    assert_eq!(
        answer.matches("\"backend\":\"svc\"").count(),
        2,
        "whole bodies: {answer:?}"
    );
    assert!(!answer.contains("content-length: 2\r\n"), "{answer:?}");
}

#[tokio::test]
async fn clients_that_abort_or_trickle_uploads_do_not_eject_a_healthy_target() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: svc, timeout: 400ms }}\n",
        upstream(
            "svc",
            &[&svc],
            "    passive_health: { max_fails: 2, cooldown: 30s }\n"
        )
    ));
    // Uploads cut off halfway: the client goes away.
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(&[b'x'; 1000]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream);
    }
    // Uploads trickled slower than the route timeout allows.
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        for _ in 0..8 {
            let _ = stream.write_all(b"x").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = get(&gw.url("/")).await;
    assert_eq!(
        reply.status, 200,
        "the target was not ejected: {:?}",
        reply.body
    );
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_a_stalled_answer_is_cut_off() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "server: {{ body_idle_timeout: 300ms }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    let started = Instant::now();
    let answer = raw(
        gw.addr,
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("client_body_timeout"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let stalls = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst", true).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  raw:\n    timeouts: {{ body_idle: 300ms }}\n    targets:\n      - {{ url: \"http://{stalls}\" }}\nroutes:\n  - {{ name: all, upstream: raw }}\n"
    ));
    let started = Instant::now();
    let answer = raw(gw.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("first"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the client's connection is cut, not held: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_normalised_path_for_routing_plugins_and_the_upstream() {
    let plugins = crate::support::PluginDir::with(&["transform"]);
    let admin = Backend::start("admin").await;
    let users = Backend::start("users").await;
    let rest = Backend::start("rest").await;
    let guard = "plugins: [{ name: transform, config: { request: { set_headers: { x-guarded: \"yes\" } } } }]";
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}{}{}routes:\n  - {{ name: admin, upstream: admin, match: {{ path_prefix: /admin }}, {guard} }}\n  - {{ name: users, upstream: users, match: {{ path: \"/u/{{id}}\" }}, rewrite: \"/v2/users/{{id}}\" }}\n  - {{ name: rest, upstream: rest }}\n",
        plugins.section(""),
        upstream("admin", &[&admin], ""),
        upstream("users", &[&users], ""),
        upstream("rest", &[&rest], ""),
    ));
    // Each of these is /admin: its route, its plugins, and that path upstream.
    for sneaky in [
        "/x/../admin",
        "/x/%2e%2E/admin",
        "/%61dmin",
        "//admin",
        "/./admin/.",
        "/x/./../admin/",
    ] {
        let reply = get(&gw.url(sneaky)).await;
        assert_eq!(reply.backend(), "admin", "{sneaky}");
        assert_eq!(
            reply.upstream_header("x-guarded").as_deref(),
            Some("yes"),
            "{sneaky}"
        );
        assert!(
            reply.json()["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/admin")),
            "{sneaky}: {:?}",
            reply.json()["path"]
        );
    }
    // A {param} is one plain segment: never `..`, never a slash.
    let reply = get(&gw.url("/u/%2e%2e")).await;
    assert_eq!(reply.backend(), "rest", "/u/.. is /, not a user");
    let reply = get(&gw.url("/u/42/%2e%2e/7")).await;
    assert_eq!(reply.json()["path"], "/v2/users/7");
    for refused in [
        "/u/a%2Fb",
        "/u/a%5cb",
        "/..",
        "/a/../../admin",
        "/a%00",
        "/a%zz",
    ] {
        let reply = get(&gw.url(refused)).await;
        assert_eq!(reply.status, 400, "{refused}: {:?}", reply.body);
    }
    let raw_backslash = raw(gw.addr, "GET /x\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(
        raw_backslash.starts_with("HTTP/1.1 400"),
        "{raw_backslash:?}"
    );
    // Escapes of reserved characters and `;` parameters are data, passed on as sent.
    let reply = get(&gw.url("/files/a%20b;v=1?q=%2F")).await;
    assert_eq!(reply.json()["uri"], "/files/a%20b;v=1?q=%2F");
    assert_eq!(admin.served() + users.served() + rest.served(), 6 + 2 + 1);
}

#[tokio::test]
async fn escaped_slashes_can_be_kept_as_data() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "server: {{ escaped_slashes: keep }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    let reply = get(&gw.url("/repos/a%2fb/../c%5C")).await;
    assert_eq!(reply.json()["path"], "/repos/c%5C");
    let reply = get(&gw.url("/repos/a%2fb")).await;
    assert_eq!(reply.json()["path"], "/repos/a%2Fb");
}

#[tokio::test]
async fn headers_the_client_names_in_connection_are_gone_before_plugins_run() {
    let plugins = crate::support::PluginDir::with(&["transform"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:\n  - {{ name: all, upstream: svc, plugins: [{{ name: transform, config: {{ request: {{ set_headers: {{ x-added: by-plugin }} }} }} }}] }}\n",
        plugins.section(""),
        upstream("svc", &[&svc], "")
    ));
    // The client names x-added as hop-by-hop: that covers its own header,
    // not the one a plugin sets afterwards.
    let answer = raw(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-added\r\nx-added: from-client\r\n\r\n",
    )
    .await;
    let (_, body) = answer.split_once("\r\n\r\n").expect("a full response");
    let echo: serde_json::Value = serde_json::from_str(body.trim()).expect("echo JSON");
    assert_eq!(echo["headers"]["x-added"][0], "by-plugin", "{echo}");
    assert_eq!(echo["headers"]["x-added"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn over_http2_a_host_disagreeing_with_the_authority_is_refused_and_plugins_see_one_host() {
    let plugins = crate::support::PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:\n  - {{ name: all, upstream: svc, plugins: [{{ name: probe, config: {{ remember_header: host, recall: host }} }}] }}\n",
        plugins.section(""),
        upstream("svc", &[&svc], "")
    ));
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get("http://api.example/")
        .header("host", "admin.example")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 400);
    assert_eq!(svc.served(), 0);
    // Without a Host header, the plugin reads `:authority` as the host.
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get("http://api.example/")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-recalled-host"], "api.example");
}
