//! Capability grants: a plugin gets the basic imports and nothing else
//! unless the operator grants it a host service, per plugin, in config.
//! What a component imports is read at load, so a plugin that would reach
//! for something it was not given never starts serving.

use crate::support::{Backend, Gateway, PluginDir, get, upstream};

fn config(plugins: &PluginDir, svc: &Backend, grants: &str, routes: &str) -> String {
    format!(
        "{}upstreams:\n{}routes:\n{routes}",
        plugins.section(grants),
        upstream("svc", &[svc], "")
    )
}

#[tokio::test]
async fn a_plugin_importing_what_no_config_grants_is_refused_at_load() {
    let plugins = PluginDir::with(&["sockets", "probe"]);
    let svc = Backend::start("svc").await;
    let yaml = config(
        &plugins,
        &svc,
        "",
        "  - { name: ok, upstream: svc, plugins: [{ name: probe }] }\n  - { name: net, upstream: svc, plugins: [{ name: sockets }] }\n",
    );
    let (ok, text) = plugins.validate(&yaml);
    assert!(!ok);
    assert!(
        text.contains(
            "routes[1].plugins[0].name: plugin \"sockets\": DIR/sockets.wasm imports wasi:sockets/"
        ) && text.contains("which the gateway never grants to plugins"),
        "{text}"
    );
    let refused = Gateway::try_start(&yaml).err().expect("refused at start");
    assert!(
        refused.contains("sockets.wasm imports wasi:sockets/")
            && refused.contains("never grants to plugins"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_host_service_needs_a_grant_naming_the_plugin_and_the_key() {
    let plugins = PluginDir::with(&["secret-reader", "probe"]);
    let svc = Backend::start("svc").await;
    let route = "  - name: secret\n    upstream: svc\n    plugins:\n      - { name: secret-reader, config: { name: PATH } }\n";

    // Not granted: refused, saying which key would grant it.
    let (ok, text) = plugins.validate(&config(&plugins, &svc, "", route));
    assert!(!ok);
    assert!(
        text.contains(":12: routes[0].plugins[0].name: plugin \"secret-reader\" imports gateway:plugin/env, which it is not granted; grant it under plugins.grants.secret-reader.env"),
        "{text}"
    );
    let refused = Gateway::try_start(&config(&plugins, &svc, "", route));
    assert!(
        refused
            .err()
            .is_some_and(|e| e.contains("grant it under plugins.grants.secret-reader.env")),
        "refused at start too"
    );

    // Granted: it reads what it was granted and nothing else.
    let grants = "  grants:\n    secret-reader:\n      env: [PATH]\n";
    let admin = "admin: { listen: 127.0.0.1:0 }\n";
    let gw = Gateway::start(&format!("{admin}{}", config(&plugins, &svc, grants, route)));
    let status = get(&gw.admin_url("/admin/plugins")).await.json();
    assert_eq!(
        status["plugins"][0]["grants"],
        serde_json::json!(["env"]),
        "{status}"
    );
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.upstream_header("x-secret"),
        std::env::var("PATH").ok(),
        "the granted variable"
    );
    let other = route.replace("name: PATH", "name: HOME");
    let gw = Gateway::start(&config(&plugins, &svc, grants, &other));
    assert_eq!(
        get(&gw.url("/"))
            .await
            .upstream_header("x-secret")
            .as_deref(),
        Some("none"),
        "a variable it was not granted reads as absent"
    );
}

#[tokio::test]
async fn grants_are_checked_like_the_rest_of_the_config() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let route = "  - { name: r, upstream: svc, plugins: [{ name: probe }] }\n";

    // A grant the plugin has no use for is a warning, not an error.
    let unused = "  grants:\n    probe:\n      env: [PATH]\n";
    let (ok, text) = plugins.validate(&config(&plugins, &svc, unused, route));
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: plugins.grants.probe.env: plugin \"probe\" does not import gateway:plugin/env; the grant has no effect"),
        "{text}"
    );

    // So is a grant for a plugin no route uses.
    let stray = "  grants:\n    nobody:\n      env: [PATH]\n";
    let (ok, text) = plugins.validate(&config(&plugins, &svc, stray, route));
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: plugins.grants.nobody: no route uses plugin \"nobody\""),
        "{text}"
    );

    // A service that does not exist, or a grant of the wrong shape, points at its line.
    let unknown = "  grants:\n    probe:\n      storage: {}\n";
    let (ok, text) = plugins.validate(&config(&plugins, &svc, unknown, route));
    assert!(!ok);
    assert!(
        text.starts_with("FILE:6: plugins.grants.probe.storage: no host service is named \"storage\"; the gateway grants: env"),
        "{text}"
    );
    // Whether or not a route uses the plugin, and once however many do.
    let unused_plugin = "  grants:\n    nobody:\n      envv: [PATH]\n";
    let (ok, text) = plugins.validate(&config(&plugins, &svc, unused_plugin, route));
    assert!(!ok);
    assert!(
        text.starts_with("FILE:6: plugins.grants.nobody.envv: no host service is named \"envv\""),
        "{text}"
    );
    let two_routes =
        format!("{route}  - {{ name: r2, upstream: svc, plugins: [{{ name: probe }}] }}\n");
    let (ok, text) = plugins.validate(&config(&plugins, &svc, unknown, &two_routes));
    assert!(!ok);
    assert_eq!(
        text.matches("no host service is named").count(),
        1,
        "{text}"
    );

    let wrong = "  grants:\n    probe:\n      env: [PATH, 7]\n";
    let (ok, text) = plugins.validate(&config(&plugins, &svc, wrong, route));
    assert!(!ok);
    assert!(
        text.starts_with("FILE:6: plugins.grants.probe.env[1]: invalid type"),
        "{text}"
    );
}
