//! The `gateway` command itself: its help and version, the forms of its
//! options, and `gateway plugin new`, whose crate builds as generated and
//! loads into a running gateway.

use std::process::Command;

use crate::support::gateway::{binary, write_config};
use crate::support::{Backend, Gateway, upstream};

fn gateway(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run gateway");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn version_help_per_subcommand_and_usage_errors() {
    let (code, out) = gateway(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("gateway {}", env!("CARGO_PKG_VERSION")));
    for (args, says) in [
        (&["--help"][..], "plugin"),
        (&["run", "--help"][..], "--config <FILE>"),
        (&["validate", "--help"][..], "warnings and errors"),
        (&["plugin", "new", "--help"][..], "--sdk <PATH>"),
        (&["help", "run"][..], "--config <FILE>"),
    ] {
        let (code, out) = gateway(args);
        assert!(code == 0 && out.contains(says), "{args:?}: {out}");
    }
    let (code, out) = gateway(&["run"]);
    assert!(code == 2 && out.contains("--config <FILE>"), "{out}");
    let (code, out) = gateway(&["serve"]);
    assert!(
        code == 2 && out.contains("unrecognized subcommand"),
        "{out}"
    );
}

#[test]
fn the_config_is_named_in_every_usual_form() {
    let (_dir, path) =
        write_config("upstreams: { a: { targets: [{ url: \"http://127.0.0.1:1\" }] } }\n");
    let path = path.to_str().expect("utf-8");
    for args in [
        vec!["validate", path],
        vec!["validate", "--config", path],
        vec!["validate", "-c", path],
        vec!["validate", &format!("--config={path}")],
    ] {
        let (code, out) = gateway(&args);
        assert!(code == 0 && out.starts_with("OK:"), "{args:?}: {out}");
    }
}

#[tokio::test]
async fn a_new_plugin_builds_for_wasm_as_generated_and_loads() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, out) = gateway(&[
        "plugin",
        "new",
        "say-hello",
        "--dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cargo build --release --target wasm32-wasip2"),
        "{out}"
    );
    let (code, again) = gateway(&[
        "plugin",
        "new",
        "say-hello",
        "--dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(code != 0 && again.contains("already exists"), "{again}");
    let (code, bad) = gateway(&["plugin", "new", "Say_Hello"]);
    assert!(code != 0 && bad.contains("not a plugin name"), "{bad}");

    // Built as a plugin author would, with its own lock file and profile
    // (a target folder kept between runs, so only the first one is slow).
    let crate_dir = dir.path().join("say-hello");
    let target = build_plugins::workspace_root().join("target/scaffold");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_in_crate = |args: &'static [&'static str]| {
        let (cargo, crate_dir, target) = (cargo.clone(), crate_dir.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(cargo)
                .current_dir(&crate_dir)
                .args(args)
                .arg("--target-dir")
                .arg(&target)
                .output()
                .expect("run cargo")
        })
    };
    let built = cargo_in_crate(&["build", "--release", "--target", "wasm32-wasip2"])
        .await
        .expect("build thread");
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{stderr}");
    // Its own unit tests pass on the host.
    let tested = cargo_in_crate(&["test"]).await.expect("test thread");
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && report.contains("2 passed"),
        "{report}"
    );
    let wasm = build_plugins::workspace_root()
        .join("target/scaffold/wasm32-wasip2/release/say_hello.wasm");
    let plugins = tempfile::tempdir().expect("dir");
    std::fs::copy(&wasm, plugins.path().join("say-hello.wasm")).expect("copy the plugin");

    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "plugins: {{ dir: \"{}\" }}\nupstreams:\n{}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: svc\n    plugins: [{{ name: say-hello, config: {{ value: hi }} }}]\n",
        plugins.path().display(),
        upstream("svc", &[&svc], "")
    ));
    let reply = crate::support::get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-say-hello"], "hi", "the response hook ran");
    assert_eq!(
        reply.upstream_header("x-say-hello").as_deref(),
        Some("hi"),
        "the request hook ran"
    );
}
