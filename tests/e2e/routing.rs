//! Which route a request takes, and the path the upstream then sees.

use crate::support::{Backend, Gateway, get, send, upstream};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

#[tokio::test]
async fn the_most_specific_route_wins_and_priority_overrides() {
    let names = [
        "catchall", "prefix", "deeper", "exact", "param", "wild", "host", "canary", "posts",
        "forced",
    ];
    let mut backends = Vec::new();
    for name in names {
        backends.push(Backend::start(name).await);
    }
    let upstreams: String = backends
        .iter()
        .map(|b| upstream(&b.name, &[b], ""))
        .collect();
    // Listed from least to most specific on purpose: file order must not decide.
    let gw = Gateway::start(&format!(
        "upstreams:\n{upstreams}routes:
  - {{ name: catchall, upstream: catchall }}
  - {{ name: prefix, upstream: prefix, match: {{ path_prefix: /api }} }}
  - {{ name: deeper, upstream: deeper, match: {{ path_prefix: /api/users }} }}
  - {{ name: param, upstream: param, match: {{ path: '/api/users/{{id}}' }} }}
  - {{ name: exact, upstream: exact, match: {{ path: /api/users/me }} }}
  - {{ name: wild, upstream: wild, match: {{ host: '*.example.com' }} }}
  - {{ name: host, upstream: host, match: {{ host: api.example.com }} }}
  - {{ name: canary, upstream: canary, match: {{ path_prefix: /api, headers: [{{ name: x-canary, value: 'on' }}] }} }}
  - {{ name: posts, upstream: posts, match: {{ path_prefix: /api, methods: [POST] }} }}
  - {{ name: forced, upstream: forced, priority: 100, match: {{ path_prefix: /api/users/admin }} }}
"
    ));
    let backend_for = |method: &'static str,
                       host: &'static str,
                       path: &'static str,
                       header: Option<(&'static str, &'static str)>| {
        let mut request = Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("host", host);
        if let Some((k, v)) = header {
            request = request.header(k, v);
        }
        let request = request.body(Full::new(Bytes::new())).expect("request");
        async move { send(request).await.backend() }
    };
    assert_eq!(
        backend_for("GET", "h", "/api/users/me", None).await,
        "exact"
    );
    assert_eq!(
        backend_for("GET", "h", "/api/users/42", None).await,
        "param"
    );
    assert_eq!(
        backend_for("GET", "h", "/api/users/42/orders", None).await,
        "deeper"
    );
    assert_eq!(backend_for("GET", "h", "/api/orders", None).await, "prefix");
    assert_eq!(
        backend_for("GET", "h", "/apixyz", None).await,
        "catchall",
        "prefixes match whole segments"
    );
    assert_eq!(backend_for("GET", "h", "/", None).await, "catchall");
    assert_eq!(
        backend_for("GET", "api.example.com", "/api/users/me", None).await,
        "host",
        "host beats path"
    );
    assert_eq!(
        backend_for("GET", "API.example.com:8080", "/x", None).await,
        "host",
        "host is case-insensitive, port ignored"
    );
    assert_eq!(
        backend_for("GET", "eu.shop.example.com", "/x", None).await,
        "wild"
    );
    assert_eq!(
        backend_for("GET", "h", "/api/orders", Some(("x-canary", "on"))).await,
        "canary"
    );
    assert_eq!(
        backend_for("GET", "h", "/api/orders", Some(("x-canary", "off"))).await,
        "prefix"
    );
    assert_eq!(backend_for("POST", "h", "/api/orders", None).await, "posts");
    assert_eq!(
        backend_for("GET", "api.example.com", "/api/users/admin/x", None).await,
        "forced"
    );
}

#[tokio::test]
async fn unmatched_requests_get_a_json_404() {
    let users = Backend::start("users").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: users, upstream: users, match: {{ path_prefix: /users, methods: [GET] }} }}\n",
        upstream("users", &[&users], "")
    ));
    let reply = get(&gw.url("/orders")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "route_not_found");
    let post = Request::post(gw.url("/users"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        send(post).await.status,
        404,
        "a method outside the route's list does not match"
    );
    assert_eq!(users.served(), 0);
}

#[tokio::test]
async fn strip_prefix_and_rewrite_shape_the_upstream_path() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:
  - {{ name: strip, upstream: svc, match: {{ path_prefix: /api }}, strip_prefix: /api }}
  - {{ name: by-id, upstream: svc, match: {{ path: '/v1/users/{{id}}/orders/{{order}}' }}, rewrite: '/orders/{{order}}/by/{{id}}' }}
  - {{ name: moved, upstream: svc, match: {{ path_prefix: /old }}, rewrite: /new }}
",
        upstream("svc", &[&svc], "")
    ));
    let path_of = |p: &'static str| {
        let url = gw.url(p);
        async move {
            get(&url).await.json()["uri"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    assert_eq!(path_of("/api/users/7?full=1").await, "/users/7?full=1");
    assert_eq!(path_of("/api").await, "/");
    assert_eq!(
        path_of("/v1/users/7/orders/9?x=1").await,
        "/orders/9/by/7?x=1"
    );
    assert_eq!(path_of("/old/a/b?q=1").await, "/new/a/b?q=1");
}
