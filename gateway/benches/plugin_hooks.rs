//! The cost of one plugin hook call: a no-op plugin and the transform
//! plugin, on a pooled (reused) instance and on a fresh instance per call,
//! with 10 and 50 request headers on the request (which stays in the
//! gateway: the plugin reads and edits it through host calls).
//!
//! `cargo bench -p gateway --bench plugin_hooks`. The pooled/fresh figures
//! behind the choice in `gateway/src/plugin/chain.rs` come from here.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway::config::ByteSize;
use gateway::plugin::HookContext;
use gateway::plugin::PluginRuntime;
use gateway::plugin::exchange::{Exchange, Message};
use gateway::plugin::instance::{Instance, Limits};
use gateway::plugin::runtime::LoadedPlugin;
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
        "users",
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
            let mut pooled = rt.block_on(async {
                let mut instance = Instance::new(plugin, &route, LIMITS)
                    .await
                    .expect("instance");
                instance.init(config).await.expect("init");
                instance
            });
            group.bench_function(BenchmarkId::new(format!("{name}/pooled"), headers), |b| {
                b.iter(|| rt.block_on(pooled.on_request(&mut exchange)).expect("hook"));
            });
            group.bench_function(BenchmarkId::new(format!("{name}/fresh"), headers), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let mut instance = Instance::new(plugin, &route, LIMITS)
                            .await
                            .expect("instance");
                        instance.init(config).await.expect("init");
                        instance.on_request(&mut exchange).await.expect("hook")
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
