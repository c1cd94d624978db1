//! The plugin contract around one request: a context the whole chain
//! shares and no other request sees, response hooks that read the request,
//! and response hooks on every answer after routing, the gateway's own
//! errors included.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, PluginDir, get, send, upstream};

fn config(plugins: &PluginDir, backends: &str, routes: &str) -> String {
    format!(
        "{}upstreams:\n{backends}routes:\n{routes}",
        plugins.section("  limits: { deadline: 50ms, memory: 8MiB }\n  max_body_bytes: 64KiB\n"),
    )
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test]
async fn a_value_one_plugin_sets_reaches_the_next_and_the_response_hooks() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &upstream("svc", &[&svc], ""),
        "  - name: passing
    match: { path_prefix: /passing }
    upstream: svc
    plugins:
      - { name: probe, config: { remember_header: x-user } }
      - { name: probe, config: { recall: x-user } }
  - name: keeping
    upstream: svc
    plugins:
      - { name: probe, config: { remember_header: x-user } }
",
    ));
    let reply = send(get_with(&gw.url("/passing"), &[("x-user", "alice")])).await;
    assert_eq!(reply.status, 200);
    // The second plugin's request hook read it and chose to forward it...
    assert_eq!(
        reply.upstream_header("x-recalled-x-user").as_deref(),
        Some("alice")
    );
    // ...and its response hook read it too.
    assert_eq!(reply.headers["x-recalled-x-user"], "alice");

    // A value no plugin copies into a header never reaches the upstream.
    let plain = send(get_with(&gw.url("/keeping"), &[("x-user", "alice")])).await;
    let forwarded = plain.json()["headers"].clone();
    let names: Vec<&String> = forwarded
        .as_object()
        .map(|h| h.keys().collect())
        .unwrap_or_default();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("recalled") && *n != "consumer"),
        "{names:?}"
    );
    let alice_values = forwarded
        .as_object()
        .map(|h| {
            h.values()
                .filter(|v| v.to_string().contains("alice"))
                .count()
        })
        .unwrap_or_default();
    assert_eq!(alice_values, 1, "only the client's own x-user: {forwarded}");
}

#[tokio::test]
async fn concurrent_requests_never_see_each_others_context() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &upstream("svc", &[&svc], ""),
        "  - name: shared
    upstream: svc
    plugins:
      - { name: probe, config: { remember_header: x-user } }
      - { name: probe, config: { recall: x-user } }
",
    ));
    // 16 clients at once, 25 requests each, half of them without a user:
    // pooled instances serve them all, in any order, and a value left behind
    // by one request would show up in another's answer.
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let url = gw.url("/");
            tokio::spawn(async move {
                for i in 0..25 {
                    let user = format!("user-{client}-{i}");
                    let anonymous = i % 2 == 1;
                    let headers: Vec<(&str, &str)> = if anonymous {
                        vec![]
                    } else {
                        vec![("x-user", user.as_str())]
                    };
                    let reply = send(get_with(&url, &headers)).await;
                    assert_eq!(reply.status, 200);
                    let expected = if anonymous { "none" } else { user.as_str() };
                    assert_eq!(
                        reply.headers["x-recalled-x-user"], expected,
                        "response hook"
                    );
                    assert_eq!(
                        reply.upstream_header("x-recalled-x-user").as_deref(),
                        Some(expected),
                        "request hook"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!(svc.served(), 400);
}

#[tokio::test]
async fn a_response_hook_reads_the_request_as_it_was_sent() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &upstream("svc", &[&svc], ""),
        "  - { name: echo, upstream: svc, plugins: [{ name: probe, config: { echo_request_header: origin } }] }\n",
    ));
    let reply = send(get_with(
        &gw.url("/"),
        &[("origin", "https://app.example.com")],
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-request-origin"], "https://app.example.com");
    assert_eq!(get(&gw.url("/")).await.headers["x-request-origin"], "none");
}

#[tokio::test]
async fn the_gateways_own_answers_after_routing_pass_through_response_hooks() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let backends = format!(
        "{}{}",
        upstream("svc", &[&svc], ""),
        "  down:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\n"
    );
    let hooks = "{ name: probe, config: { tag: a, echo_request_header: origin } }";
    let routes = format!(
        "  - {{ name: down, upstream: down, match: {{ path_prefix: /down }}, plugins: [{hooks}] }}
  - {{ name: slow, upstream: svc, match: {{ path_prefix: /slow }}, timeout: 100ms, plugins: [{hooks}] }}
  - {{ name: big, upstream: svc, match: {{ path_prefix: /big }}, plugins: [{hooks}, {{ name: probe, config: {{ bodies: true }} }}] }}
  - {{ name: failing, upstream: svc, match: {{ path_prefix: /failing }}, plugins: [{hooks}, {{ name: probe, config: {{ tag: b, fail_on: request }} }}, {{ name: probe, config: {{ tag: c }} }}] }}
  - {{ name: nowhere, upstream: svc, match: {{ path: /only-this }}, plugins: [{hooks}] }}
"
    );
    let gw = Gateway::start(&config(&plugins, &backends, &routes));
    let origin = [("origin", "https://app.example.com")];

    // (request, status, code, response hooks that ran)
    let big = Request::post(gw.url("/big"))
        .header("origin", "https://app.example.com")
        .body(Full::new(Bytes::from(vec![b'x'; 100 * 1024])))
        .expect("request");
    let cases = [
        (
            get_with(&gw.url("/down"), &origin),
            502,
            "upstream_unavailable",
            Some("a"),
        ),
        (
            get_with(&gw.url("/slow?ms=2000"), &origin),
            504,
            "upstream_timeout",
            Some("a"),
        ),
        (big, 413, "payload_too_large", Some("a")),
        // The failing plugin and those after it never ran: only `a` did.
        (
            get_with(&gw.url("/failing"), &origin),
            500,
            "plugin_failed",
            Some("a"),
        ),
        // No route matched: there is no chain to run.
        (
            get_with(&gw.url("/elsewhere"), &origin),
            404,
            "route_not_found",
            None,
        ),
    ];
    for (request, status, code, hooks) in cases {
        let path = request.uri().path().to_string();
        let reply = send(request).await;
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(reply.error_code(), code, "{path}");
        assert_eq!(
            reply
                .headers
                .get("x-chain-response")
                .map(|v| v.to_str().unwrap_or("")),
            hooks,
            "{path}"
        );
        if hooks.is_some() {
            assert_eq!(
                reply.headers["x-request-origin"], "https://app.example.com",
                "{path}: the response hook read the request"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        get(&gw.url("/slow?ms=1")).await.status,
        200,
        "still serving"
    );
}
