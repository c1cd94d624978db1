//! The transform plugin, every operation, end to end.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, PluginDir, send, upstream};

#[tokio::test]
async fn every_transform_operation_applies() {
    let plugins = PluginDir::with(&["transform"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:
  - name: users
    match: {{ path: \"/api/users/{{id}}\" }}
    upstream: svc
    plugins:
      - name: transform
        config:
          request:
            remove_headers: [x-internal]
            rename_headers: {{ x-old-name: x-new-name }}
            set_headers: {{ x-gateway: demo }}
            add_headers: {{ x-added: one }}
            path: \"/v2/users/{{id}}/profile\"
            remove_query: [debug]
            add_query: {{ source: gateway }}
          response:
            remove_headers: [x-backend-visible]
            rename_headers: {{ content-type: x-original-content-type }}
            set_headers: {{ x-served-by: gateway }}
            add_headers: {{ x-extra: two }}
            status: 203
",
        plugins.section(""),
        upstream("svc", &[&svc], "")
    ));
    let request = Request::get(gw.url("/api/users/42?debug=1&page=2"))
        .header("x-internal", "secret")
        .header("x-old-name", "kept-value")
        .header("x-gateway", "client-sent")
        .header("x-added", "zero")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(request).await;

    let echo = reply.json();
    assert_eq!(echo["uri"], "/v2/users/42/profile?page=2&source=gateway");
    let seen = |name: &str| {
        echo["headers"][name]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(seen("x-internal").is_empty(), "removed");
    assert!(seen("x-old-name").is_empty(), "renamed away");
    assert_eq!(seen("x-new-name"), vec!["kept-value"]);
    assert_eq!(
        seen("x-gateway"),
        vec!["demo"],
        "set replaces the client's value"
    );
    assert_eq!(
        seen("x-added"),
        vec!["zero", "one"],
        "add keeps the client's value"
    );

    assert_eq!(reply.status, 203);
    assert_eq!(reply.headers["x-served-by"], "gateway");
    assert_eq!(reply.headers["x-extra"], "two");
    assert_eq!(reply.headers["x-original-content-type"], "application/json");
    assert!(!reply.headers.contains_key("content-type"));
}

#[tokio::test]
async fn a_transform_path_replaces_the_routes_own_rewrite() {
    let plugins = PluginDir::with(&["transform"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:
  - {{ name: plain, upstream: svc, match: {{ path_prefix: /plain }}, strip_prefix: /plain, plugins: [{{ name: transform, config: {{ request: {{ set_headers: {{ x-a: b }} }} }} }}] }}
  - {{ name: moved, upstream: svc, match: {{ path_prefix: /moved }}, strip_prefix: /moved, plugins: [{{ name: transform, config: {{ request: {{ path: /elsewhere }} }} }}] }}
",
        plugins.section(""),
        upstream("svc", &[&svc], "")
    ));
    let uri_of = |path: &str| {
        let request = Request::get(gw.url(path))
            .body(Full::new(Bytes::new()))
            .expect("request");
        async move {
            send(request).await.json()["uri"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    assert_eq!(
        uri_of("/plain/x?q=1").await,
        "/x?q=1",
        "strip_prefix applies when no plugin set a path"
    );
    assert_eq!(
        uri_of("/moved/x?q=1").await,
        "/elsewhere?q=1",
        "a plugin's path wins"
    );
}
