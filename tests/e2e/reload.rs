//! Hot reload: plugin files and the config change on disk under load, with
//! no failed request, and a bad change leaves the gateway serving as before.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::{Backend, Gateway, PluginDir, get, upstream};

/// Clients sending requests back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Tally>>,
}

#[derive(Default, Debug)]
struct Tally {
    requests: usize,
    failures: Vec<String>,
    /// `x-plugin-version` values (or backend names) seen.
    seen: BTreeSet<String>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        tally.requests += 1;
                        match client.get(url.parse().expect("uri")).await {
                            Ok(response) => {
                                let status = response.status();
                                let version = response
                                    .headers()
                                    .get("x-plugin-version")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string);
                                let body =
                                    response.into_body().collect().await.map(|b| b.to_bytes());
                                if status != 200 || body.is_err() {
                                    tally
                                        .failures
                                        .push(format!("status {status}, body {body:?}"));
                                }
                                if let Some(version) = version {
                                    tally.seen.insert(version);
                                }
                            }
                            Err(error) => tally.failures.push(error.to_string()),
                        }
                    }
                    tally
                })
            })
            .collect();
        Load { stop, clients }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for client in self.clients {
            let tally = client.await.expect("client task");
            total.requests += tally.requests;
            total.failures.extend(tally.failures);
            total.seen.extend(tally.seen);
        }
        total
    }
}

/// Polls `url` until `check` holds for the reply; the time it took.
async fn until(
    url: &str,
    limit: Duration,
    check: impl Fn(&crate::support::client::Reply) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = get(url).await;
        if check(&reply) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "not seen within {limit:?}; last reply {} {:?}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn version(reply: &crate::support::client::Reply) -> Option<&str> {
    reply
        .headers
        .get("x-plugin-version")
        .and_then(|v| v.to_str().ok())
}

/// Puts `from` at `to` in one of the ways editors and deploy tools do.
fn place(from: &Path, to: &Path, how: usize) {
    match how % 3 {
        // Write in place (truncate, then write).
        0 => {
            std::fs::copy(from, to).expect("copy");
        }
        // Write a temporary file, then rename it over the old one.
        1 => {
            let temp = to.with_extension("wasm.partial");
            std::fs::copy(from, &temp).expect("copy");
            std::fs::rename(&temp, to).expect("rename");
        }
        // Delete, then create.
        _ => {
            std::fs::remove_file(to).expect("remove");
            std::thread::sleep(Duration::from_millis(10));
            std::fs::copy(from, to).expect("copy");
        }
    }
}

/// A plugin folder with `stamp.wasm` (starting as version 1) and both versions beside it.
fn stamp_plugins() -> (PluginDir, std::path::PathBuf, std::path::PathBuf) {
    let plugins = PluginDir::with(&["stamp-v1", "stamp-v2", "probe", "next-major", "sockets"]);
    let versions = tempfile::tempdir().expect("temp dir").keep();
    let (v1, v2) = (versions.join("v1.wasm"), versions.join("v2.wasm"));
    std::fs::rename(plugins.file("stamp-v1"), &v1).expect("move v1");
    std::fs::rename(plugins.file("stamp-v2"), &v2).expect("move v2");
    std::fs::copy(&v1, plugins.file("stamp")).expect("install v1");
    (plugins, v1, v2)
}

fn stamp_config(plugins: &PluginDir, svc: &Backend, extra: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{extra}{}upstreams:\n{}routes:\n  - {{ name: stamped, upstream: svc, plugins: [{{ name: stamp }}] }}\n",
        plugins.section(""),
        upstream("svc", &[svc], "")
    )
}

async fn reload_attempts(gw: &Gateway) -> u64 {
    get(&gw.admin_url("/admin/reloads")).await.json()["attempts"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits for a reload attempt after `before`; returns the newest record.
async fn next_reload(gw: &Gateway, before: u64) -> serde_json::Value {
    let started = Instant::now();
    while reload_attempts(gw).await <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload attempt"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    get(&gw.admin_url("/admin/reloads")).await.json()["reloads"][0].clone()
}

/// Waits until `/` answers with stamp `expected` and the successful reload
/// that did it is recorded: the new snapshot serves a moment before its
/// record lands, so a count taken after this starts after that reload.
async fn serving_after_reload(gw: &Gateway, before: u64, expected: &str) {
    until(&gw.url("/"), Duration::from_secs(5), |r| {
        version(r) == Some(expected)
    })
    .await;
    let report = next_reload(gw, before).await;
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test]
async fn replacing_a_plugin_fifty_times_under_load_drops_nothing() {
    let (plugins, v1, v2) = stamp_plugins();
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&stamp_config(&plugins, &svc, ""));
    assert_eq!(version(&get(&gw.url("/")).await), Some("1"));

    let load = Load::start(gw.url("/"), 4);
    let mut live_after = Vec::new();
    for swap in 0..50 {
        let (file, expected) = if swap % 2 == 0 {
            (&v2, "2")
        } else {
            (&v1, "1")
        };
        place(file, &plugins.file("stamp"), swap);
        live_after.push(
            until(&gw.url("/"), Duration::from_secs(5), |r| {
                version(r) == Some(expected)
            })
            .await,
        );
    }
    let tally = load.finish().await;

    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        tally.failures.len(),
        tally.requests,
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert_eq!(
        tally.seen,
        BTreeSet::from(["1".to_string(), "2".to_string()]),
        "only the two versions answered"
    );
    let last = *live_after.last().expect("50 swaps");
    assert!(
        last < Duration::from_secs(1),
        "the last swap went live after {last:?}"
    );
    live_after.sort();
    eprintln!(
        "plugin swap to live: median {:?}, worst {:?}, over {} swaps; {} requests under load, 0 failed",
        live_after[live_after.len() / 2],
        live_after[live_after.len() - 1],
        live_after.len(),
        tally.requests
    );
}

#[tokio::test]
async fn config_edits_under_load_add_change_and_remove_routes() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pools = format!("{}{}", upstream("a", &[&a], ""), upstream("b", &[&b], ""));
    let stable = "  - { name: stable, upstream: a, match: { path_prefix: /stable } }\n";
    let gw = Gateway::start(&format!("upstreams:\n{pools}routes:\n{stable}"));
    let load = Load::start(gw.url("/stable"), 4);
    for round in 0..10 {
        // Add a route.
        let added = format!(
            "upstreams:\n{pools}routes:\n{stable}  - {{ name: extra, upstream: b, match: {{ path_prefix: /extra }} }}\n"
        );
        if round % 2 == 0 {
            gw.replace_config(&added)
        } else {
            gw.edit_config(&added)
        }
        until(&gw.url("/extra/x"), Duration::from_secs(5), |r| {
            r.status == 200 && r.backend() == "b"
        })
        .await;
        // Change it: another upstream and a strip_prefix.
        let changed = format!(
            "upstreams:\n{pools}routes:\n{stable}  - {{ name: extra, upstream: a, match: {{ path_prefix: /extra }}, strip_prefix: /extra }}\n"
        );
        gw.replace_config(&changed);
        until(&gw.url("/extra/x"), Duration::from_secs(5), |r| {
            r.status == 200 && r.backend() == "a" && r.json()["uri"] == "/x"
        })
        .await;
        // Remove it.
        gw.replace_config(&format!("upstreams:\n{pools}routes:\n{stable}"));
        until(&gw.url("/extra/x"), Duration::from_secs(5), |r| {
            r.status == 404
        })
        .await;
    }
    let tally = load.finish().await;
    assert!(
        tally.failures.is_empty(),
        "{:?}",
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert!(tally.requests > 100, "the load ran: {}", tally.requests);
    // 30 reloads, yet the unchanged pool kept its keep-alive connections.
    assert!(
        a.connections_accepted() < 20,
        "upstream a saw {} connections",
        a.connections_accepted()
    );
}

/// Something that breaks the running gateway's files.
type Breaker<'a> = dyn Fn(&Gateway) + 'a;

#[tokio::test]
async fn invalid_changes_keep_the_old_behaviour_and_are_reported() {
    let (plugins, v1, v2) = stamp_plugins();
    let svc = Backend::start("svc").await;
    let good = stamp_config(&plugins, &svc, "");
    let gw = Gateway::start(&good);
    let stamp = plugins.file("stamp");

    // (what breaks it, what the report must say, the fix, the version after the fix)
    let garbage = |_: &Gateway| std::fs::write(&stamp, b"\0asm but not really").expect("write");
    let next_major = |_: &Gateway| {
        std::fs::copy(plugins.file("next-major"), &stamp).expect("copy");
    };
    let sockets = |_: &Gateway| {
        std::fs::copy(plugins.file("sockets"), &stamp).expect("copy");
    };
    let refused = |gw: &Gateway| {
        gw.replace_config(&good.replace(
            "routes:\n",
            "routes:\n  - { name: strict, upstream: svc, match: { path_prefix: /strict }, plugins: [{ name: probe, config: { refuse: not today } }] }\n",
        ))
    };
    let bad_yaml = |gw: &Gateway| gw.edit_config("routes: [\n");
    let cases: [(&str, &Breaker, &str); 5] = [
        (
            "not a component",
            &garbage,
            "stamp.wasm is not a WebAssembly component",
        ),
        (
            "another WIT major",
            &next_major,
            "was built for gateway:plugin@0.4.0",
        ),
        (
            "an import no config grants",
            &sockets,
            "stamp.wasm imports wasi:sockets/",
        ),
        (
            "refused config",
            &refused,
            "plugin \"probe\" refused the config of route \"strict\": not today",
        ),
        ("YAML error", &bad_yaml, "gateway.yaml:3: while parsing"),
    ];
    let mut running = "1";
    for (i, (case, break_it, says)) in cases.into_iter().enumerate() {
        let before = reload_attempts(&gw).await;
        break_it(&gw);
        let report = next_reload(&gw, before).await;
        assert_eq!(report["ok"], false, "{case}: {report}");
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{case}: {error}");
        // The old snapshot keeps serving.
        assert_eq!(version(&get(&gw.url("/")).await), Some(running), "{case}");
        let status = get(&gw.admin_url("/admin/plugins")).await.json();
        assert_eq!(status["plugins"][0]["name"], "stamp");
        assert!(
            status["plugins"][0]["last_reload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(says)),
            "{case}: {status}"
        );

        // Fixing it reloads normally.
        let (fix, fixed) = if i % 2 == 0 { (&v2, "2") } else { (&v1, "1") };
        let before = reload_attempts(&gw).await;
        std::fs::copy(fix, &stamp).expect("fix plugin");
        gw.replace_config(&good);
        serving_after_reload(&gw, before, fixed).await;
        running = fixed;
        let status = get(&gw.admin_url("/admin/plugins")).await.json();
        let plugin = &status["plugins"][0];
        assert_eq!(plugin["file"], stamp.display().to_string());
        assert_eq!(plugin["sha256"].as_str().map(str::len), Some(64));
        assert!(
            plugin["loaded_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
}

#[tokio::test]
async fn a_removed_plugin_file_keeps_the_loaded_version_and_is_reported() {
    let (plugins, v1, _v2) = stamp_plugins();
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&stamp_config(&plugins, &svc, ""));
    let before = reload_attempts(&gw).await;
    std::fs::remove_file(plugins.file("stamp")).expect("remove");
    let report = next_reload(&gw, before).await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("stamp.wasm was removed")),
        "{report}"
    );
    assert_eq!(
        version(&get(&gw.url("/")).await),
        Some("1"),
        "the route keeps working"
    );
    let status = get(&gw.admin_url("/admin/plugins")).await.json();
    assert_eq!(status["plugins"][0]["file_present"], false, "{status}");

    std::fs::copy(&v1, plugins.file("stamp")).expect("restore");
    let started = Instant::now();
    while get(&gw.admin_url("/admin/plugins")).await.json()["plugins"][0]["file_present"] != true {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "restored file not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_sighup_right_after_start_reloads_and_does_not_end_the_gateway() {
    let svc = Backend::start("svc").await;
    let config = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nserver: {{ workers: 1 }}\nreload: {{ watch: false }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    );
    // SIGHUP's default action ends a process: the gateway must handle it
    // from the moment it says it is listening, which is when this sends it.
    for start in 0..20 {
        let gw = Gateway::start(&config);
        gw.signal(rustix::process::Signal::HUP);
        // Attempt 1 is the startup load, recorded before the gateway listens.
        let report = next_reload(&gw, 1).await;
        assert_eq!(report["trigger"], "SIGHUP", "start {start}");
        assert_eq!(get(&gw.url("/")).await.status, 200, "start {start}");
    }
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let (plugins, _v1, v2) = stamp_plugins();
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&stamp_config(&plugins, &svc, "reload: { watch: false }\n"));
    std::fs::copy(&v2, plugins.file("stamp")).expect("copy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        version(&get(&gw.url("/")).await),
        Some("1"),
        "nothing watches the files"
    );
    let before = reload_attempts(&gw).await;
    gw.signal(rustix::process::Signal::HUP);
    let report = next_reload(&gw, before).await;
    assert_eq!(report["trigger"], "SIGHUP");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(version(&get(&gw.url("/")).await), Some("2"));
}

#[tokio::test]
async fn five_hundred_reloads_do_not_grow_memory() {
    let (plugins, v1, v2) = stamp_plugins();
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&stamp_config(&plugins, &svc, "reload: { watch: false }\n"));
    let mut after_50 = 0;
    for i in 1..=500 {
        // Alternate the versions, so each reload compiles (or takes from the
        // disk cache) code and frees the old.
        std::fs::copy(if i % 2 == 0 { &v1 } else { &v2 }, plugins.file("stamp")).expect("copy");
        let before = reload_attempts(&gw).await;
        gw.signal(rustix::process::Signal::HUP);
        let report = next_reload(&gw, before).await;
        assert_eq!(report["ok"], true, "reload {i}: {report}");
        assert_eq!(get(&gw.url("/")).await.status, 200);
        if i == 50 {
            after_50 = gw.rss_kib();
        }
    }
    let after_500 = gw.rss_kib();
    eprintln!("resident memory: {after_50} KiB after 50 reloads, {after_500} KiB after 500");
    // Generous: a leak of even 100 KiB per reload would pass 45 MiB here.
    let bound = after_50 + after_50 / 4 + 16 * 1024;
    assert!(
        after_500 <= bound,
        "{after_500} KiB after 500 reloads > bound {bound} KiB ({after_50} KiB after 50)"
    );
}

#[tokio::test]
async fn partial_writes_and_late_files_are_picked_up_once_complete() {
    let (plugins, v1, v2) = stamp_plugins();
    let svc = Backend::start("svc").await;
    let good = stamp_config(&plugins, &svc, "");
    let gw = Gateway::start(&good);

    // Half a file, left long enough to be reloaded: refused, v1 keeps serving.
    let bytes = std::fs::read(&v2).expect("read v2");
    let before = reload_attempts(&gw).await;
    std::fs::write(plugins.file("stamp"), &bytes[..bytes.len() / 2]).expect("half");
    let report = next_reload(&gw, before).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(version(&get(&gw.url("/")).await), Some("1"));
    // The rest of the write completes it.
    let before = reload_attempts(&gw).await;
    std::fs::write(plugins.file("stamp"), &bytes).expect("whole");
    serving_after_reload(&gw, before, "2").await;

    // A route naming a plugin whose file is not there yet: refused until it appears.
    let before = reload_attempts(&gw).await;
    gw.replace_config(&good.replace(
        "routes:\n",
        "routes:\n  - { name: late, upstream: svc, match: { path_prefix: /late }, plugins: [{ name: late }] }\n",
    ));
    let report = next_reload(&gw, before).await;
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("no plugin \"late\"")),
        "{report}"
    );
    let old = get(&gw.url("/late")).await;
    assert_eq!(
        version(&old),
        Some("2"),
        "still the old routes: the catch-all with stamp v2"
    );
    // `late` is version 1, so its route answering shows the reload happened.
    std::fs::copy(&v1, plugins.file("late")).expect("late file appears");
    until(&gw.url("/late"), Duration::from_secs(5), |r| {
        version(r) == Some("1")
    })
    .await;
}

#[tokio::test]
async fn changes_that_need_a_restart_are_reported_not_ignored() {
    let svc = Backend::start("svc").await;
    let base = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    );
    let gw = Gateway::start(&base);
    let before = reload_attempts(&gw).await;
    gw.replace_config(&format!("server: {{ header_read_timeout: 3s }}\n{base}"));
    let report = next_reload(&gw, before).await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("server changed")))),
        "{report}"
    );
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

/// A config with an admin API, one upstream and route `name` on `/name`.
fn routed(svc: &Backend, name: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nreload: {{ debounce: 200ms }}\nupstreams:\n{}routes:\n  - {{ name: {name}, upstream: svc, match: {{ path_prefix: /{name} }} }}\n",
        upstream("svc", &[svc], "")
    )
}

#[tokio::test]
async fn a_busy_unrelated_file_does_not_postpone_reloads() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&routed(&svc, "before"));
    let folder = gw.config_path.parent().expect("folder").to_path_buf();
    // Another program writes a file beside the config every 50 ms, for good.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let _ = std::fs::write(folder.join("access.log"), n.to_string());
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let before = reload_attempts(&gw).await;
    gw.replace_config(&routed(&svc, "after"));
    let started = Instant::now();
    let report = next_reload(&gw, before).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(&gw.url("/after")).await.status, 200);
}

#[tokio::test]
async fn a_configmap_style_data_link_swap_is_reloaded() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&routed(&svc, "v1"));
    let folder = gw.config_path.parent().expect("folder").to_path_buf();
    let listen = std::fs::read_to_string(&gw.config_path).expect("config");
    let listen = listen.lines().next().expect("listen line").to_string();
    // Lay the folder out as Kubernetes mounts a ConfigMap: the file is a link
    // into `..data`, itself a link to a timestamped folder.
    let version = |dir: &str, route: &str| {
        std::fs::create_dir(folder.join(dir)).expect("dir");
        std::fs::write(
            folder.join(dir).join("gateway.yaml"),
            format!("{listen}\n{}", routed(&svc, route)),
        )
        .expect("write");
    };
    version("..2026_01", "v1");
    std::os::unix::fs::symlink("..2026_01", folder.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/gateway.yaml", folder.join("gateway.tmp")).expect("link");
    let before = reload_attempts(&gw).await;
    std::fs::rename(folder.join("gateway.tmp"), &gw.config_path).expect("rename");
    assert_eq!(next_reload(&gw, before).await["ok"], true);
    // The update: a new folder, a new link, renamed over `..data`.
    version("..2026_02", "v2");
    std::os::unix::fs::symlink("..2026_02", folder.join("..data_tmp")).expect("link");
    let before = reload_attempts(&gw).await;
    std::fs::rename(folder.join("..data_tmp"), folder.join("..data")).expect("swap");
    let report = next_reload(&gw, before).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        get(&gw.url("/v2")).await.status,
        200,
        "the new version serves"
    );
    assert_eq!(get(&gw.url("/v1")).await.status, 404);
}

#[tokio::test]
async fn a_hundred_reloads_while_slow_uploads_hold_old_snapshots() {
    // Few instance slots, so that snapshots kept alive by slow uploads
    // would run out of them if they held on to their plugin instances.
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let yaml = |version: usize| {
        format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nreload: {{ debounce: 20ms }}\n{}upstreams:\n{}routes:\n  - {{ name: tagged, upstream: svc, timeout: 60s, plugins: [{{ name: probe, config: {{ tag: v{version} }} }}] }}\n",
            plugins.section("  max_instances: 12\n"),
            upstream("svc", &[&svc], "")
        )
    };
    let gw = Gateway::start(&yaml(0));
    let mut slow = Vec::new();
    for version in 1..=100 {
        if version <= 30 {
            // An upload that sends one byte of a hundred, then waits.
            let mut stream = tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect");
            let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx";
            tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
                .await
                .expect("write");
            slow.push(stream);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let before = reload_attempts(&gw).await;
        gw.replace_config(&yaml(version));
        let report = next_reload(&gw, before).await;
        assert_eq!(report["ok"], true, "reload {version}: {report}");
    }
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.upstream_header("x-chain").as_deref(), Some("v100"));
    drop(slow);
}

#[tokio::test]
async fn a_symlinked_plugin_is_followed_and_repointing_the_link_reloads() {
    let (plugins, v1, v2) = stamp_plugins();
    let stamp = plugins.file("stamp");
    std::fs::remove_file(&stamp).expect("remove the copy");
    std::os::unix::fs::symlink(&v1, &stamp).expect("link to v1");
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&stamp_config(&plugins, &svc, ""));
    assert_eq!(
        version(&get(&gw.url("/")).await),
        Some("1"),
        "loaded through the link"
    );
    // Re-point the link, as deploy tools do: a new link renamed over the old.
    let before = reload_attempts(&gw).await;
    let next = plugins.path().join("stamp.wasm.new");
    std::os::unix::fs::symlink(&v2, &next).expect("link to v2");
    std::fs::rename(&next, &stamp).expect("swap the link");
    serving_after_reload(&gw, before, "2").await;
}
