//! The shipped CORS plugin in front of a real upstream: preflights answered
//! at the edge, CORS headers on allowed origins' responses (the gateway's
//! own errors included), and everything else left alone.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, PluginDir, send, upstream};

const APP: &str = "https://app.example.com";

fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

async fn start(svc: &Backend) -> (PluginDir, Gateway) {
    let plugins = PluginDir::with(&["cors"]);
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}  down:\n    targets: [{{ url: \"http://127.0.0.1:1\" }}]\nroutes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: svc
    plugins:
      - name: cors
        config:
          origins: [\"{APP}\", \"https://*.example.org\"]
          methods: [GET, POST]
          headers: [authorization, content-type]
          exposed_headers: [x-request-id]
          max_age: 600
  - name: public
    match: {{ path_prefix: /public }}
    upstream: svc
    plugins: [{{ name: cors, config: {{ origins: [\"*\"] }} }}]
  - name: session
    match: {{ path_prefix: /session }}
    upstream: svc
    plugins: [{{ name: cors, config: {{ origins: [\"*\"], credentials: true }} }}]
  - name: broken
    match: {{ path_prefix: /broken }}
    upstream: down
    plugins: [{{ name: cors, config: {{ origins: [\"{APP}\"] }} }}]
",
        plugins.section(""),
        upstream("svc", &[svc], "")
    ));
    (plugins, gw)
}

#[tokio::test]
async fn a_preflight_is_answered_at_the_edge() {
    let svc = Backend::start("svc").await;
    let (_plugins, gw) = start(&svc).await;
    let preflight = |origin: &str, method: &str| {
        request(
            "OPTIONS",
            &gw.url("/api/users"),
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "authorization"),
            ],
        )
    };

    let allowed = send(preflight(APP, "POST")).await;
    assert_eq!(allowed.status, 204);
    let h = &allowed.headers;
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,content-type"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h.get("access-control-allow-credentials").is_none());
    assert!(h.get_all("vary").iter().any(|v| v == "Origin"));

    let pattern = send(preflight("https://eu.shop.example.org", "GET")).await;
    assert_eq!(pattern.status, 204);
    assert_eq!(
        pattern.headers["access-control-allow-origin"],
        "https://eu.shop.example.org"
    );

    for (origin, method, code) in [
        ("https://evil.example.net", "GET", "cors_origin_not_allowed"),
        ("https://example.org", "GET", "cors_origin_not_allowed"),
        (
            "https://app.example.com.evil.net",
            "GET",
            "cors_origin_not_allowed",
        ),
        ("http://app.example.com", "GET", "cors_origin_not_allowed"),
        (APP, "DELETE", "cors_method_not_allowed"),
    ] {
        let denied = send(preflight(origin, method)).await;
        assert_eq!(denied.status, 403, "{origin} {method}");
        assert_eq!(denied.error_code(), code, "{origin} {method}");
        assert!(denied.headers.get("access-control-allow-origin").is_none());
    }
    assert_eq!(svc.served(), 0, "no preflight reached the upstream");
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_other_requests_pass_untouched() {
    let svc = Backend::start("svc").await;
    let (_plugins, gw) = start(&svc).await;

    let cross = send(request("GET", &gw.url("/api/users"), &[("origin", APP)])).await;
    assert_eq!(cross.status, 200);
    assert_eq!(cross.headers["access-control-allow-origin"], APP);
    assert_eq!(
        cross.headers["access-control-expose-headers"],
        "x-request-id"
    );
    assert!(cross.headers.get_all("vary").iter().any(|v| v == "Origin"));
    assert_eq!(
        cross.upstream_header("origin").as_deref(),
        Some(APP),
        "the request went on as it was"
    );

    let same_origin = send(request("GET", &gw.url("/api/users"), &[])).await;
    let stranger = send(request(
        "GET",
        &gw.url("/api/users"),
        &[("origin", "https://evil.example.net")],
    ))
    .await;
    for reply in [&same_origin, &stranger] {
        assert_eq!(reply.status, 200);
        let cors: Vec<_> = reply
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{cors:?}");
    }
    // A plain OPTIONS (no Access-Control-Request-Method) is not a preflight.
    let options = send(request(
        "OPTIONS",
        &gw.url("/api/users"),
        &[("origin", APP)],
    ))
    .await;
    assert_eq!(options.status, 200);
    assert_eq!(svc.served(), 4);
}

#[tokio::test]
async fn any_origin_is_a_star_but_never_with_credentials() {
    let svc = Backend::start("svc").await;
    let (_plugins, gw) = start(&svc).await;
    let public = send(request("GET", &gw.url("/public"), &[("origin", APP)])).await;
    assert_eq!(public.headers["access-control-allow-origin"], "*");
    assert!(
        public
            .headers
            .get("access-control-allow-credentials")
            .is_none()
    );

    let session = send(request("GET", &gw.url("/session"), &[("origin", APP)])).await;
    assert_eq!(session.headers["access-control-allow-origin"], APP);
    assert_eq!(session.headers["access-control-allow-credentials"], "true");
    assert!(
        session
            .headers
            .get_all("vary")
            .iter()
            .any(|v| v == "Origin")
    );
    let preflight = send(request(
        "OPTIONS",
        &gw.url("/session"),
        &[("origin", APP), ("access-control-request-method", "GET")],
    ))
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.headers["access-control-allow-origin"], APP);
    assert_eq!(
        preflight.headers["access-control-allow-credentials"],
        "true"
    );
}

#[tokio::test]
async fn a_browser_can_read_the_gateways_own_errors() {
    let svc = Backend::start("svc").await;
    let (_plugins, gw) = start(&svc).await;
    let reply = send(request("GET", &gw.url("/broken"), &[("origin", APP)])).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_unavailable");
    assert_eq!(reply.headers["access-control-allow-origin"], APP);
}
