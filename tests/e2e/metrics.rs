//! Prometheus metrics at `GET /metrics` on the admin listener: requests by
//! route, method and status class, latencies per route and per target,
//! target health and ejections, plugin hooks and their failures, reloads,
//! rate-limit decisions and connections, moving as traffic flows.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::{Backend, Gateway, Metrics, PluginDir, get, send};

const TOKEN: &str = "a-long-admin-token-for-tests";

fn config(plugins: &PluginDir, svc: &Backend, dead: &str, admin: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0{admin} }}
reload: {{ watch: false }}
{}upstreams:
  svc:
    targets: [{{ url: \"{}\" }}]
  dead:
    passive_health: {{ max_fails: 2, cooldown: 30s }}
    targets: [{{ url: \"{dead}\" }}]
routes:
  - {{ name: api, match: {{ path_prefix: /api }}, upstream: svc, plugins: [{{ name: probe, config: {{ tag: a }} }}] }}
  - {{ name: broken, match: {{ path_prefix: /broken }}, upstream: svc, plugins: [{{ name: probe, config: {{ fail_on: request, how: trap }} }}] }}
  - {{ name: spinning, match: {{ path_prefix: /spinning }}, upstream: svc, plugins: [{{ name: probe, config: {{ fail_on: request, how: loop }}, limits: {{ deadline: 20ms }} }}] }}
  - {{ name: hog, match: {{ path_prefix: /hog }}, upstream: svc, plugins: [{{ name: probe, config: {{ fail_on: request, how: grow }}, limits: {{ memory: 2MiB }} }}] }}
  - {{ name: limited, match: {{ path_prefix: /limited }}, upstream: svc, plugins: [{{ name: rate-limit, config: {{ limits: [{{ requests: 1, per: 1h }}] }} }}] }}
  - {{ name: down, match: {{ path_prefix: /down }}, upstream: dead }}
",
        plugins.section("  grants: { rate-limit: { state: {} } }\n"),
        svc.url()
    )
}

/// An address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

async fn post(url: &str) -> crate::support::client::Reply {
    send(
        Request::builder()
            .method(Method::POST)
            .uri(url)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn metrics_are_prometheus_text_that_moves_with_traffic() {
    let plugins = PluginDir::with(&["probe", "rate-limit"]);
    let svc = Backend::start("svc").await;
    let dead = dead_address();
    let gw = Gateway::start(&config(&plugins, &svc, &dead, ""));

    let before = Metrics::scrape(&gw).await;
    assert_eq!(before.value("gateway_requests_total", &[]), 0.0);
    assert_eq!(
        before.value("gateway_connections_open", &[]),
        0.0,
        "{}",
        before.text
    );
    // Every target is listed from the start, available.
    assert_eq!(
        before.value(
            "gateway_upstream_target_available",
            &[("upstream", "svc"), ("target", &svc.url())]
        ),
        1.0
    );

    for _ in 0..3 {
        assert_eq!(get(&gw.url("/api/users")).await.status, 200);
    }
    assert_eq!(post(&gw.url("/api/users")).await.status, 200);
    assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    assert_eq!(get(&gw.url("/broken")).await.status, 500);
    assert_eq!(get(&gw.url("/spinning")).await.status, 503);
    assert_eq!(get(&gw.url("/hog")).await.status, 500);
    assert_eq!(get(&gw.url("/limited")).await.status, 200);
    assert_eq!(get(&gw.url("/limited")).await.status, 429);
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/down")).await.status, 502);
    }
    assert_eq!(get(&gw.url("/down")).await.status, 503, "ejected");

    let after = Metrics::scrape(&gw).await;
    let requests = |route: &str, method: &str, class: &str| {
        after.value(
            "gateway_requests_total",
            &[("route", route), ("method", method), ("class", class)],
        )
    };
    assert_eq!(requests("api", "GET", "2xx"), 3.0, "{}", after.text);
    assert_eq!(requests("api", "POST", "2xx"), 1.0);
    assert_eq!(requests("(unrouted)", "GET", "4xx"), 1.0);
    assert_eq!(requests("broken", "GET", "5xx"), 1.0);
    assert_eq!(requests("limited", "GET", "2xx"), 1.0);
    assert_eq!(requests("limited", "GET", "4xx"), 1.0);
    assert_eq!(requests("down", "GET", "5xx"), 3.0);
    assert_eq!(
        after.value("gateway_request_duration_seconds", &[("route", "api")]),
        4.0
    );
    assert_eq!(
        after.value(
            "gateway_request_duration_seconds_count",
            &[("route", "api")]
        ),
        4.0
    );

    // Upstream side: latency per target, failures by reason, the ejection.
    let svc_url = svc.url();
    let svc_target = [("upstream", "svc"), ("target", svc_url.as_str())];
    assert_eq!(
        after.value("gateway_upstream_duration_seconds", &svc_target),
        5.0,
        "four on api, one on limited (the trap and the 429 never left)"
    );
    let dead_target = [("upstream", "dead"), ("target", dead.as_str())];
    assert_eq!(
        after.value(
            "gateway_upstream_failures_total",
            &[dead_target[0], dead_target[1], ("reason", "connect")]
        ),
        2.0
    );
    assert_eq!(
        after.value("gateway_upstream_ejections_total", &dead_target),
        1.0
    );
    assert_eq!(
        after.value("gateway_upstream_target_available", &dead_target),
        0.0
    );
    assert_eq!(
        after.value("gateway_upstream_target_circuit", &dead_target),
        1.0,
        "open"
    );

    // Plugins: each hook's latency, and the trap by its reason.
    assert_eq!(
        after.value(
            "gateway_plugin_hook_duration_seconds",
            &[("plugin", "probe"), ("route", "api"), ("hook", "request")]
        ),
        4.0
    );
    assert_eq!(
        after.value(
            "gateway_plugin_hook_duration_seconds",
            &[("plugin", "probe"), ("route", "api"), ("hook", "response")]
        ),
        4.0
    );
    assert_eq!(
        after.value(
            "gateway_plugin_failures_total",
            &[
                ("plugin", "probe"),
                ("route", "broken"),
                ("hook", "request"),
                ("reason", "trap")
            ]
        ),
        1.0
    );

    for (route, reason) in [("spinning", "deadline"), ("hog", "memory")] {
        assert_eq!(
            after.value(
                "gateway_plugin_failures_total",
                &[("plugin", "probe"), ("route", route), ("reason", reason)]
            ),
            1.0,
            "{route}: {}",
            after.text
        );
    }

    // The rate-limit store's decisions.
    let decision = |decision: &str| {
        after.value(
            "gateway_rate_limit_decisions_total",
            &[("backend", "memory"), ("decision", decision)],
        )
    };
    assert_eq!(decision("allowed"), 1.0);
    assert_eq!(decision("limited"), 1.0);
    assert_eq!(
        after.value("gateway_rate_limit_store_errors_total", &[]),
        0.0
    );
    assert!(after.value("gateway_connections_accepted_total", &[]) >= 10.0);

    // Reloads, by result.
    assert_eq!(post(&gw.admin_url("/admin/reload")).await.status, 200);
    std::fs::write(&gw.config_path, "routes: [").expect("write");
    assert_eq!(post(&gw.admin_url("/admin/reload")).await.status, 422);
    let reloaded = Metrics::scrape(&gw).await;
    assert_eq!(
        reloaded.value("gateway_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        reloaded.value("gateway_reloads_total", &[("result", "failed")]),
        1.0
    );
    // Counters survive the reload.
    assert_eq!(
        reloaded.value(
            "gateway_requests_total",
            &[("route", "api"), ("method", "GET"), ("class", "2xx")]
        ),
        3.0
    );
}

#[tokio::test]
async fn open_connections_are_counted_while_they_are_open() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        crate::support::upstream("svc", &[&svc], "")
    ));
    let addr: std::net::SocketAddr = gw
        .url("")
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
            .await
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        open.push(stream);
    }
    let metrics = Metrics::scrape(&gw).await;
    assert_eq!(metrics.value("gateway_connections_open", &[]), 3.0);
    drop(open);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = Metrics::scrape(&gw).await;
        if metrics.value("gateway_connections_open", &[]) == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < until, "{}", metrics.text);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_a_token_metrics_need_it_too() {
    let plugins = PluginDir::with(&["probe", "rate-limit"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &dead_address(),
        &format!(", token: {TOKEN}"),
    ));
    assert_eq!(get(&gw.admin_url("/metrics")).await.status, 401);
    let reply = send(
        Request::get(gw.admin_url("/metrics"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).contains("gateway_connections_open"));
}
