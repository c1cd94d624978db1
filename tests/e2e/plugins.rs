//! Plugin chains on routes: order, early answers, bodies, logging, and what
//! happens when a plugin is missing, refuses its config, or misbehaves.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, PluginDir, get, send, upstream};

/// One upstream `svc` and the given routes, with `plugins` as the plugin folder.
fn config(plugins: &PluginDir, svc: &Backend, routes: &str) -> String {
    format!(
        "{}upstreams:\n{}routes:\n{routes}",
        plugins.section("  limits: { deadline: 50ms, memory: 8MiB }\n  max_body_bytes: 64KiB\n"),
        upstream("svc", &[svc], "")
    )
}

#[tokio::test]
async fn request_hooks_run_in_order_and_response_hooks_in_reverse() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - name: chained
    upstream: svc
    plugins:
      - { name: probe, config: { tag: a } }
      - { name: probe, config: { tag: b } }
      - { name: probe, config: { tag: c } }
",
    ));
    let reply = get(&gw.url("/x")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-chain").as_deref(), Some("a,b,c"));
    assert_eq!(reply.headers["x-chain-response"], "c,b,a");
}

#[tokio::test]
async fn an_early_response_skips_the_rest_and_the_upstream() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - name: guarded
    upstream: svc
    plugins:
      - { name: probe, config: { tag: a } }
      - { name: probe, config: { tag: b, respond: 418 } }
      - { name: probe, config: { tag: c } }
",
    ));
    let reply = get(&gw.url("/x")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.body, "answered by the probe plugin");
    assert_eq!(reply.headers["x-answered-by"], "b");
    // The plugins that ran (a, and b which answered) see the response; c never ran.
    assert_eq!(reply.headers["x-chain-response"], "b,a");
    assert!(reply.headers.contains_key("x-request-id"));
    assert_eq!(svc.served(), 0, "the upstream was skipped");
}

#[tokio::test]
async fn a_plugins_answer_with_more_headers_than_allowed_is_a_500_not_a_panic() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: chatty, upstream: svc, match: { path_prefix: /chatty }, plugins: [{ name: probe, config: { respond: 200, respond_headers: 30000 }, limits: { deadline: 500ms } }] }
  - { name: calm, upstream: svc, plugins: [{ name: probe, config: { tag: calm } }] }
",
    ));
    let reply = get(&gw.url("/chatty")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.error_code(), "plugin_failed");
    let id = reply.request_id();
    let log = gw.log_with(&[&id, "header lines"]).await;
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("header lines")),
        "{log}"
    );
    assert_eq!(get(&gw.url("/")).await.status, 200, "still serving");
}

#[tokio::test]
async fn bodies_reach_only_plugins_that_ask_and_are_limited() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: bodies, upstream: svc, match: { path_prefix: /bodies }, strip_prefix: /bodies, plugins: [{ name: probe, config: { bodies: true } }] }
  - { name: streams, upstream: svc, plugins: [{ name: probe, config: { tag: s } }] }
",
    ));
    let post = |path: &str, size: usize| {
        Request::post(gw.url(path))
            .body(Full::new(Bytes::from(vec![b'x'; size])))
            .expect("request")
    };
    let reply = send(post("/bodies", 1000)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.upstream_header("x-request-body-bytes").as_deref(),
        Some("1000")
    );
    assert_eq!(
        reply.json()["body_bytes"],
        1000,
        "the buffered body still goes upstream"
    );
    assert!(
        reply.headers["x-response-body-bytes"]
            .to_str()
            .is_ok_and(|n| n.parse::<usize>().is_ok_and(|n| n > 100))
    );

    let reply = send(post("/bodies", 100 * 1024)).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error_code(), "payload_too_large");

    let reply = get(&gw.url("/bodies/download?bytes=100000")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_response_too_large");

    // A plugin that did not ask for bodies lets any size stream past.
    let reply = send(post("/streams", 4 * 1024 * 1024)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_bytes"], 4 * 1024 * 1024);
    assert_eq!(reply.upstream_header("x-chain").as_deref(), Some("s"));
}

#[tokio::test]
async fn plugins_see_no_environment_or_files_but_real_clocks() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: nosy, upstream: svc, plugins: [{ name: probe, config: { report_sandbox: true } }] }\n",
    ));
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.upstream_header("x-sandbox-env-vars").as_deref(),
        Some("0")
    );
    assert_eq!(
        reply.upstream_header("x-sandbox-files").as_deref(),
        Some("false")
    );
    // `SystemTime::now()` in the plugin reads the host's wall clock...
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let plugin_now: u64 = reply
        .upstream_header("x-sandbox-clock-secs")
        .and_then(|s| s.parse().ok())
        .expect("the plugin reports its clock");
    assert!(
        now.abs_diff(plugin_now) <= 5,
        "plugin {plugin_now}, host {now}"
    );
    // ...and `Instant` moves.
    assert_eq!(
        reply
            .upstream_header("x-sandbox-monotonic-moves")
            .as_deref(),
        Some("true")
    );
    assert_eq!(get(&gw.url("/")).await.status, 200, "still serving");
}

#[tokio::test]
async fn plugin_log_lines_reach_the_gateway_log_with_plugin_and_route() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: chatty, upstream: svc, plugins: [{ name: probe, config: { log: hello-from-the-sandbox } }] }\n",
    ));
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let log = gw.log_with(&["hello-from-the-sandbox"]).await;
    let line = log
        .lines()
        .find(|l| l.contains("hello-from-the-sandbox"))
        .unwrap_or_else(|| panic!("no plugin log line in:\n{log}"));
    assert!(
        line.contains("plugin=\"probe\"") || line.contains("plugin=probe"),
        "{line}"
    );
    assert!(line.contains("chatty"), "{line}");
}

#[tokio::test]
async fn hostile_plugins_fail_their_request_and_nothing_else() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    // Each route's plugin misbehaves only when the request has `x-attack`.
    let hostile = |name: &str, hook: &str, how: &str| {
        format!(
            "  - {{ name: {name}, upstream: svc, match: {{ path_prefix: /{name} }}, plugins: [{{ name: probe, config: {{ fail_on: {hook}, how: {how}, fail_when_header: x-attack }} }}] }}\n"
        )
    };
    let routes = [
        hostile("trap", "request", "trap"),
        hostile("spin", "request", "loop"),
        hostile("hog", "request", "grow"),
        hostile("nap", "request", "sleep"),
        hostile("mangle", "request", "bad_header"),
        hostile("confused", "request", "wrong_hook"),
        // 40,000 host calls need more than the 50ms of the others.
        hostile("hoarder", "request", "fill_context"),
        hostile("flood", "request", "flood").replace("} }] }", "}, limits: { deadline: 1s } }] }"),
        "  - { name: calm, upstream: svc, plugins: [{ name: probe, config: { tag: calm } }] }\n"
            .to_string(),
    ]
    .concat();
    let gw = Gateway::start(&config(&plugins, &svc, &routes));
    let attack = |path: &str| {
        Request::get(gw.url(path))
            .header("x-attack", "1")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let cases = [
        // A panic traps as `unreachable`; its own text goes to the log (below).
        (
            "/trap",
            500,
            "plugin_failed",
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        ("/spin", 503, "plugin_timeout", "deadline"),
        ("/hog", 500, "plugin_failed", "memory limit of 8MiB"),
        // Hooks run on the gateway's thread: a WASI call that would wait traps.
        ("/nap", 500, "plugin_failed", "plugins may not block"),
        (
            "/mangle",
            500,
            "plugin_failed",
            "sent the gateway an invalid header name `bad name`",
        ),
        (
            "/confused",
            500,
            "plugin_failed",
            "the response is not available in this hook",
        ),
        // More headers than the host's header map can hold: refused, not a panic.
        ("/flood", 500, "plugin_failed", "plugins may set at most"),
        // A request's context is bounded too.
        ("/hoarder", 500, "plugin_failed", "holds at most 64 keys"),
    ];
    for (path, status, code, says) in cases {
        for round in 0..2 {
            let reply = send(attack(path)).await;
            assert_eq!(
                reply.status, status,
                "{path} round {round}: {:?}",
                reply.body
            );
            assert_eq!(reply.error_code(), code, "{path}");
            let message = reply.error_message();
            assert!(message.contains("plugin \"probe\""), "{path}: {message}");
            assert!(
                message.contains(&format!("route \"{}\"", &path[1..])),
                "{path}: {message}"
            );
            // What went wrong inside the plugin is logged, not told to the client.
            for internal in ["panicked", "wasm", "unreachable", "64 keys", "at most"] {
                assert!(!message.contains(internal), "{path}: {message}");
            }
            let id = reply.request_id();
            let log = gw.log_with(&[&id, says]).await;
            assert!(
                log.lines().any(|l| l.contains(&id) && l.contains(says)),
                "{path}: the log says {says:?}:\n{log}"
            );
            // The same route serves the next ordinary request, and so do the others.
            assert_eq!(
                get(&gw.url(path)).await.status,
                200,
                "{path} after an attack"
            );
            assert_eq!(
                get(&gw.url("/calm"))
                    .await
                    .upstream_header("x-chain")
                    .as_deref(),
                Some("calm")
            );
        }
    }
    assert!(
        gw.stderr().contains("plugin \\\"probe\\\"") || gw.stderr().contains("plugin \"probe\""),
        "failures are logged"
    );
    let log = gw
        .log_with(&["panicked", "the probe plugin was told to trap"])
        .await;
    assert!(
        log.lines().any(|l| l.contains("panicked")
            && l.contains("the probe plugin was told to trap")
            && (l.contains("route=\"trap\"") || l.contains("route=trap"))),
        "a plugin's panic message reaches the gateway's log:\n{log}"
    );
}

#[tokio::test]
async fn per_plugin_limits_override_the_defaults() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: small, upstream: svc, match: { path_prefix: /small }, plugins: [{ name: probe, config: { fail_on: request, how: grow }, limits: { memory: 2MiB } }] }
  - { name: patient, upstream: svc, plugins: [{ name: probe, config: { fail_on: request, how: loop }, limits: { deadline: 120ms } }] }
",
    ));
    let reply = get(&gw.url("/small")).await;
    assert_eq!(reply.status, 500);
    let id = reply.request_id();
    let log = gw.log_with(&[&id, "memory limit of 2MiB"]).await;
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("memory limit of 2MiB")),
        "{log}"
    );

    let started = std::time::Instant::now();
    let reply = get(&gw.url("/patient")).await;
    assert_eq!(reply.status, 503);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("120ms deadline"), "{message}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(120),
        "the longer deadline was given"
    );
}

#[tokio::test]
async fn a_failing_response_hook_is_a_500_naming_the_plugin() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let late = |name: &str, how: &str| {
        format!(
            "  - {{ name: {name}, upstream: svc, match: {{ path_prefix: /{name} }}, plugins: [{{ name: probe, config: {{ fail_on: response, how: {how} }} }}] }}\n"
        )
    };
    let routes = [
        late("trap", "trap"),
        late("mangle", "bad_header"),
        late("confused", "wrong_hook"),
        late("flood", "flood").replace("} }] }", "}, limits: { deadline: 1s } }] }"),
    ]
    .concat();
    let gw = Gateway::start(&config(&plugins, &svc, &routes));
    let cases = [
        ("/trap", "trapped"),
        ("/mangle", "invalid value for header `x-ok`"),
        (
            "/confused",
            "changing the request is not available in this hook",
        ),
    ];
    for (served, (path, says)) in (1..).zip(cases) {
        let reply = get(&gw.url(path)).await;
        assert_eq!(reply.status, 500, "{path}");
        assert_eq!(reply.error_code(), "plugin_failed", "{path}");
        let id = reply.request_id();
        let log = gw.log_with(&[&id, says]).await;
        assert!(
            log.lines().any(|l| l.contains(&id) && l.contains(says)),
            "{path}: the log says {says:?}:\n{log}"
        );
        assert_eq!(
            svc.served(),
            served,
            "the upstream was called before the response hook failed"
        );
    }
}

#[tokio::test]
async fn bad_plugins_fail_the_config_load_with_route_and_plugin_named() {
    let plugins = PluginDir::with(&["probe", "next-major"]);
    std::fs::write(plugins.file("garbage"), b"not wasm at all").expect("write");
    let head = format!(
        "{}upstreams:\n  svc:\n    targets: [{{ url: \"http://127.0.0.1:1\" }}]\nroutes:\n",
        plugins.section("")
    );
    let cases = [
        (
            "  - name: users\n    upstream: svc\n    plugins:\n      - name: probe\n        config: { refuse: \"tag must be set\" }\n",
            "FILE:12: routes[0].plugins[0].config: plugin \"probe\" refused the config of route \"users\": tag must be set\n",
        ),
        (
            "  - name: users\n    upstream: svc\n    plugins:\n      - name: probe\n        config: { colour: blue }\n",
            "FILE:12: routes[0].plugins[0].config.colour: plugin \"probe\" refused the config of route \"users\": invalid config: unknown field `colour`, expected one of `tag`, `respond`, `respond_headers`, `refuse`, `fail_on`, `how`, `fail_when_header`, `bodies`, `log`, `report_sandbox`, `remember_header`, `recall`, `echo_request_header`, `spin_from_header`, `report_tls`, `not_implemented`, `count_calls`\n",
        ),
        (
            // A field of the wrong type: the plugin names it, the gateway finds its line.
            "  - name: users\n    upstream: svc\n    plugins:\n      - name: probe\n        config:\n          tag: a\n          respond:\n            - 200\n",
            "FILE:14: routes[0].plugins[0].config.respond: plugin \"probe\" refused the config of route \"users\": invalid config: invalid type: sequence, expected u16\n",
        ),
        (
            "  - name: users\n    upstream: svc\n    plugins:\n      - name: nope\n",
            "FILE:11: routes[0].plugins[0].name: no plugin \"nope\": DIR/nope.wasm does not exist\n",
        ),
        (
            "  - name: users\n    upstream: svc\n    plugins:\n      - name: next-major\n",
            "FILE:11: routes[0].plugins[0].name: plugin \"next-major\": DIR/next-major.wasm was built for gateway:plugin@0.4.0; this gateway runs plugins built for gateway:plugin@0.3.0\n",
        ),
    ];
    for (routes, expected) in cases {
        let (ok, text) = plugins.validate(&format!("{head}{routes}"));
        assert!(!ok, "{routes}");
        assert_eq!(text, expected, "{routes}");
    }
    let (ok, text) = plugins.validate(&format!(
        "{head}  - {{ name: users, upstream: svc, plugins: [{{ name: garbage }}] }}\n"
    ));
    assert!(!ok);
    assert!(
        text.starts_with("FILE:8: routes[0].plugins[0].name: plugin \"garbage\": DIR/garbage.wasm is not a WebAssembly component"),
        "{text}"
    );
    // The running gateway refuses the same way and does not start.
    let svc = Backend::start("svc").await;
    let refused = Gateway::try_start(&config(
        &plugins,
        &svc,
        "  - { name: users, upstream: svc, plugins: [{ name: probe, config: { refuse: nope } }] }\n",
    ));
    let stderr = refused.err().expect("the gateway refuses to start");
    assert!(
        stderr.contains("plugin \"probe\" refused the config of route \"users\": nope"),
        "{stderr}"
    );
}

#[tokio::test]
async fn compiled_plugins_are_cached_on_disk() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let yaml = config(
        &plugins,
        &svc,
        "  - { name: r, upstream: svc, plugins: [{ name: probe }] }\n",
    );
    let gw = Gateway::start(&yaml);
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let cached = walk_files(&plugins.path().join(".cache"));
    assert!(
        !cached.is_empty(),
        "the compiled plugin is in the cache folder"
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn hooks_a_plugin_does_not_implement_are_not_called_again() {
    let plugins = PluginDir::with(&["noop", "stamp-v1", "probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(
            &plugins,
            &svc,
            "  - { name: mixed, upstream: svc, plugins: [{ name: noop }, { name: stamp-v1 }, { name: probe, config: { tag: p } }] }\n",
        )
    ));
    for _ in 0..3 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.headers["x-plugin-version"], "1",
            "stamp's response hook still runs"
        );
        assert_eq!(reply.upstream_header("x-chain").as_deref(), Some("p"));
    }
    let status = get(&gw.admin_url("/admin/plugins")).await.json();
    let hooks = |name: &str| {
        let plugin = status["plugins"]
            .as_array()
            .and_then(|list| list.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_default();
        (
            plugin["request_hook"].clone(),
            plugin["response_hook"].clone(),
        )
    };
    assert_eq!(hooks("noop"), (false.into(), false.into()), "{status}");
    assert_eq!(hooks("stamp-v1"), (false.into(), true.into()), "{status}");
    assert_eq!(hooks("probe"), (true.into(), true.into()), "{status}");
}

#[tokio::test]
async fn an_instance_that_produced_invalid_output_is_not_reused() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: all, upstream: svc, plugins: [{ name: probe, config: { count_calls: true, fail_on: request, how: bad_header, fail_when_header: x-break } }] }\n",
    ));
    let calls = |reply: &crate::support::client::Reply| reply.upstream_header("x-instance-calls");
    assert_eq!(calls(&get(&gw.url("/")).await).as_deref(), Some("1"));
    let broken = send(
        Request::get(gw.url("/"))
            .header("x-break", "1")
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(broken.status, 500);
    // A fresh instance: the one that produced the bad header (its second
    // call) was dropped, with whatever state led it there.
    assert_eq!(calls(&get(&gw.url("/")).await).as_deref(), Some("1"));
}

#[tokio::test]
async fn one_routes_not_implemented_hook_does_not_turn_it_off_for_another() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        "  - { name: quiet, upstream: svc, match: { path_prefix: /quiet }, plugins: [{ name: probe, config: { not_implemented: true } }] }
  - { name: tagged, upstream: svc, plugins: [{ name: probe, config: { tag: b } }] }
",
    ));
    for _ in 0..2 {
        assert_eq!(
            get(&gw.url("/quiet")).await.upstream_header("x-chain"),
            None
        );
    }
    assert_eq!(
        get(&gw.url("/"))
            .await
            .upstream_header("x-chain")
            .as_deref(),
        Some("b"),
        "the other route's hook still runs"
    );
}
