//! The cost of one plugin hook call: a no-op plugin and the transform
//! plugin, on a pooled (reused) instance and on a fresh instance per call,
//! with 10 and 50 request headers on the request (which stays in the
//! gateway: the plugin reads and edits it through host calls).
//!
//! A second group runs a whole route chain over one request and its
//! response, as the proxy does: what plugins add to a request beyond the
//! hook calls (checking instances out and in, the exchange, the context).
//!
//! `cargo bench -p gateway --bench plugin_hooks`. The pooled/fresh figures
//! behind the choice in `gateway/src/plugin/chain.rs` come from here.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway::body;
use gateway::config::ByteSize;
use gateway::plugin::PluginRuntime;
use gateway::plugin::chain::ChainEntry;
use gateway::plugin::exchange::{Exchange, Message};
use gateway::plugin::instance::{Instance, Limits};
use gateway::plugin::runtime::LoadedPlugin;
use gateway::plugin::{Chain, HookContext, RequestFlow};
use http::HeaderValue;

const LIMITS: Limits = Limits {
    deadline: Duration::from_millis(100),
    memory: ByteSize::mib(16),
};

const TRANSFORM_CONFIG: &str = r#"{"request":{"set_headers":{"x-gateway":"bench"},"remove_headers":["x-internal"],"add_query":{"src":"gw"}},"response":{"set_headers":{"x-served-by":"gateway"}}}"#;

fn exchange(headers: usize) -> Exchange {
    let mut request = http::Request::get("/api/users/42?page=2");
    for i in 0..headers {
        request = request.header(
            format!("x-header-{i}"),
            format!("value number {i} of a typical length"),
        );
    }
    let (parts, ()) = request.body(()).expect("request").into_parts();
    let context = HookContext::new(
        &HeaderValue::from_static("4f0e4d0a-33a5-4b55-9a8c-52f3b8f1e4a1"),
        &HeaderValue::from_static("127.0.0.1"),
        &vec![("id".into(), "42".into())],
    );
    Exchange::new(Message::Request(parts), None, context)
}

fn bench(c: &mut Criterion) {
    let built = build_plugins::build_all().unwrap_or_else(|e| panic!("{e}"));
    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = PluginRuntime::new(cache.path()).expect("engine");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let plugins: Vec<(&str, Arc<LoadedPlugin>, &str)> = vec![
        (
            "noop",
            runtime
                .load("probe", &built.join("probe.wasm"))
                .expect("probe"),
            "{}",
        ),
        (
            "transform",
            runtime
                .load("transform", &built.join("transform.wasm"))
                .expect("transform"),
            TRANSFORM_CONFIG,
        ),
    ];
    let route: Arc<str> = "users".into();

    let mut group = c.benchmark_group("on_request");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, plugin, config) in &plugins {
        for headers in [10, 50] {
            // The transform's edits are idempotent, so one exchange serves every iteration.
            let mut exchange = exchange(headers);
            let mut pooled = Instance::new(plugin, &route, LIMITS).expect("instance");
            pooled.init(config).expect("init");
            group.bench_function(BenchmarkId::new(format!("{name}/pooled"), headers), |b| {
                b.iter(|| pooled.on_request(&mut exchange).expect("hook"));
            });
            group.bench_function(BenchmarkId::new(format!("{name}/fresh"), headers), |b| {
                b.iter(|| {
                    let mut instance = Instance::new(plugin, &route, LIMITS).expect("instance");
                    instance.init(config).expect("init");
                    instance.on_request(&mut exchange).expect("hook")
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("chain");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let noop = runtime
        .load("noop", &built.join("noop.wasm"))
        .expect("noop");
    let transform = &plugins[1].1;
    let chains = [
        ("two-no-hook-plugins", vec![(&noop, "{}"), (&noop, "{}")]),
        ("transform", vec![(transform, TRANSFORM_CONFIG)]),
        (
            "transform+two-no-hook-plugins",
            vec![(transform, TRANSFORM_CONFIG), (&noop, "{}"), (&noop, "{}")],
        ),
    ];
    for (name, plugins) in chains {
        let entries = plugins
            .into_iter()
            .map(|(plugin, config)| {
                ChainEntry::new(plugin.clone(), "users", config.to_string(), LIMITS)
                    .expect("chain entry")
            })
            .collect();
        let chain = Chain::new(entries, 1 << 20);
        let context = HookContext::new(
            &HeaderValue::from_static("4f0e4d0a-33a5-4b55-9a8c-52f3b8f1e4a1"),
            &HeaderValue::from_static("127.0.0.1"),
            &Vec::new(),
        );
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(request_and_response(&chain, &context)));
        });
    }
    group.finish();
}

/// One request through the chain's request hooks and its response back
/// through the response hooks, with the headers wrk and nginx send.
async fn request_and_response(chain: &Chain, context: &HookContext) {
    let request = http::Request::get("/")
        .header("host", "127.0.0.1:8080")
        .header("x-request-id", "4f0e4d0a-33a5-4b55-9a8c-52f3b8f1e4a1")
        .body(body::empty())
        .expect("request");
    match chain.on_request(request, context).await {
        Ok(RequestFlow::Forward { .. }) => {}
        _ => panic!("the chain should forward"),
    }
    let response = http::Response::builder()
        .header("server", "nginx")
        .header("date", "Sun, 22 Nov 2026 09:00:00 GMT")
        .header("content-type", "application/json")
        .header("content-length", "1011")
        .body(body::empty())
        .expect("response");
    chain
        .on_response(response, chain.len(), context)
        .await
        .expect("response hooks");
}

criterion_group!(benches, bench);
criterion_main!(benches);
