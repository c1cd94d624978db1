//! `gateway validate FILE`: OK for a good file, every problem with file,
//! line and field for a bad one.

use crate::support::gateway::{validate, validate_with_env, write_config};

/// Validates `yaml` and returns the output with the temp path shortened to `FILE`.
fn check(yaml: &str) -> (bool, String) {
    let (_dir, path) = write_config(yaml);
    let (ok, text) = validate(&path);
    (ok, text.replace(&path.display().to_string(), "FILE"))
}

const POOL: &str =
    "upstreams:\n  users:\n    targets:\n      - { url: \"http://127.0.0.1:9001\" }\n";

#[test]
fn a_valid_file_says_ok() {
    let (ok, text) = check(&format!(
        "{POOL}routes:\n  - {{ name: users, upstream: users }}\n"
    ));
    assert!(ok, "{text}");
    assert_eq!(text, "OK: FILE is valid (1 routes, 1 upstreams)\n");
}

#[test]
fn the_shipped_configs_are_valid() {
    // Both name shipped plugins in plugins/dist, as the demo installs them.
    let built = build_plugins::build_all().unwrap_or_else(|e| panic!("{e}"));
    let dist = build_plugins::workspace_root().join("plugins/dist");
    build_plugins::install(
        &built,
        &dist,
        &["transform", "cors", "auth", "rate-limit", "aggregate"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for file in ["example.yaml", "demo.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(file);
        // The demo makes its secret at start; any will do here.
        let secret = "a-demo-secret-that-is-at-least-32-bytes-long";
        let (ok, text) = validate_with_env(&path, &[("DEMO_JWT_SECRET", secret)]);
        assert!(ok, "{file}: {text}");
    }
}

#[test]
fn broken_files_get_exact_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "routes:\n  - name: orders\n    upstream: orders\n",
            "FILE:3: routes[0].upstream: no upstream named \"orders\"\n",
        ),
        (
            "listen: 127.0.0.1:99999\n",
            "FILE:1: listen: `127.0.0.1:99999` is not an address; write it like 0.0.0.0:8080\n",
        ),
        (
            "lisen: 0.0.0.0:80\n",
            "FILE:1: lisen: unknown field `lisen`, expected one of `listen`, `admin`, `plugins`, `server`, `reload`, `upstreams`, `routes`, `key_sets`, `state`, `access_log`, `trace`\n",
        ),
        (
            &format!("{POOL}routes:\n  - name: a\n    upstream: users\n    timeout: 5\n"),
            "FILE:8: routes[0].timeout: invalid type: integer `5`, expected a duration like 250ms, 5s, 1m or 2h\n",
        ),
        (
            &format!("{POOL}routes:\n  - name: a\n    upstream: users\n    timeout: 5 seconds\n"),
            "FILE:8: routes[0].timeout: `5 seconds` is not a duration; write it like 250ms, 5s, 1m or 2h\n",
        ),
        (
            "upstreams:\n  u:\n    targets:\n      - { url: \"ftp://10.0.0.1:443\" }\n",
            "FILE:4: upstreams.u.targets[0].url: `ftp://10.0.0.1:443` must start with http:// or https://\n",
        ),
        (
            "server:\n  trusted_proxies: [10.0.0.0/33]\n",
            "FILE:2: server.trusted_proxies[0]: `10.0.0.0/33` is not an address or block; write it like 10.0.0.0/8 or ::1\n",
        ),
        (
            "server:\n  escaped_slashes: decode\n",
            "FILE:2: server.escaped_slashes: unknown variant `decode`, expected `reject` or `keep`\n",
        ),
        (
            "server:\n  drain_timeout: 99999999999h\n",
            "FILE:2: server.drain_timeout: `99999999999h` is too long; durations are at most 8760h (a year)\n",
        ),
        (
            "upstreams:\n  u:\n    balance: fastest\n    targets: []\n",
            "FILE:3: upstreams.u.balance: unknown variant `fastest`, expected one of `round_robin`, `least_request`, `random`, `consistent_hash`\n",
        ),
        (
            &format!(
                "{POOL}routes:\n  - name: a\n    upstream: users\n    match: {{ host: 'a.*.com' }}\n"
            ),
            "FILE:8: routes[0].match.host: `a.*.com` is not a host pattern; write `api.example.com` or `*.example.com` (no port, `*` only as the first label)\n",
        ),
        (
            "routes: [\n",
            "FILE:2: while parsing a node, did not find expected node content\n",
        ),
        (
            "upstreams:\n  u:\n    targets:\n      - { url: \"http://127.0.0.1:1\", weight: 0 }\n    balance: consistent_hash\n",
            "FILE:4: upstreams.u.targets[0].weight: weight must be between 1 and 1000, not 0\nFILE:2: upstreams.u.hash_on: balance: consistent_hash needs hash_on (header:NAME, cookie:NAME or client_ip)\n",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\n    health_check: { path: healthz }\nroutes:\n  - { name: a, upstream: u }\n  - { name: a, upstream: u }\n",
            "FILE:4: upstreams.u.health_check.path: must start with `/`\nFILE:7: routes[1].name: another route is already named \"a\"\n",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\n    passive_health: { error_rate: { threshold: 2 } }\n    circuit_breaker: { max_pending: 5 }\n",
            "FILE:4: upstreams.u.passive_health.error_rate.threshold: a share of requests, more than 0 and at most 1 (0.5 for half), not 2\nFILE:5: upstreams.u.circuit_breaker.max_pending: requests only wait for a place when max_in_flight is set\n",
        ),
        (
            "access_log: { to: /nonexistent-gateway-folder/access.log }\nupstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\n",
            "FILE:1: access_log.to: the folder /nonexistent-gateway-folder does not exist\n",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://me:secret@127.0.0.1:1\" }]\n",
            "FILE:3: upstreams.u.targets[0].url: a target URL cannot carry credentials (user:password@); send an Authorization header with the transform plugin\n",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\nroutes:\n  - { name: \"(unrouted)\", upstream: u }\n",
            "FILE:5: routes[0].name: (unrouted) names requests no route matched in the metrics; choose another\n",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\n    password: ${GATEWAY_TEST_UNSET_VARIABLE}\n",
            "FILE:4: upstreams.u.password: environment variable `GATEWAY_TEST_UNSET_VARIABLE` is not set\n",
        ),
    ];
    for (yaml, expected) in cases {
        let (ok, text) = check(yaml);
        assert!(!ok, "accepted:\n{yaml}");
        assert_eq!(&text, expected, "for:\n{yaml}");
    }
}

#[test]
fn environment_variables_fill_values() {
    let (_dir, path) = write_config("listen: ${GATEWAY_TEST_LISTEN}\n");
    let output = std::process::Command::new(crate::support::gateway::binary())
        .arg("validate")
        .arg(&path)
        .env("GATEWAY_TEST_LISTEN", "127.0.0.1:7777")
        .output()
        .expect("run validate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
