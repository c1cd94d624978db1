//! The cost of one plugin hook call: a no-op plugin and the transform
//! plugin, on a pooled (reused) instance and on a fresh instance per call,
//! with 10 and 50 request headers crossing the boundary.
//!
//! `cargo bench -p gateway --bench plugin_hooks`. The pooled/fresh figures
//! behind the choice in `gateway/src/plugin/chain.rs` come from here.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway::config::ByteSize;
use gateway::plugin::PluginRuntime;
use gateway::plugin::bindings::{Context, Header, Request};
use gateway::plugin::instance::{Instance, Limits};
use gateway::plugin::runtime::LoadedPlugin;

const LIMITS: Limits = Limits {
    deadline: Duration::from_millis(100),
    memory: ByteSize::mib(16),
};

const TRANSFORM_CONFIG: &str = r#"{"request":{"set_headers":{"x-gateway":"bench"},"remove_headers":["x-internal"],"add_query":{"src":"gw"}},"response":{"set_headers":{"x-served-by":"gateway"}}}"#;

fn request(headers: usize) -> Request {
    Request {
        method: "GET".into(),
        path: "/api/users/42".into(),
        query: "page=2".into(),
        headers: (0..headers)
            .map(|i| Header {
                name: format!("x-header-{i}"),
                value: format!("value number {i} of a typical length"),
            })
            .collect(),
        body: None,
    }
}

fn context() -> Context {
    Context {
        route: "users".into(),
        request_id: "4f0e4d0a-33a5-4b55-9a8c-52f3b8f1e4a1".into(),
        client_address: "127.0.0.1".into(),
        params: vec![("id".into(), "42".into())],
    }
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
    let ctx = context();

    let mut group = c.benchmark_group("on_request");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, plugin, config) in &plugins {
        for headers in [10, 50] {
            let req = request(headers);
            let mut pooled = rt.block_on(async {
                let mut instance = Instance::new(plugin, &route, LIMITS)
                    .await
                    .expect("instance");
                instance.init(config).await.expect("init");
                instance
            });
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/pooled"), headers),
                &req,
                |b, req| {
                    b.iter(|| rt.block_on(pooled.on_request(req, &ctx)).expect("hook"));
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/fresh"), headers),
                &req,
                |b, req| {
                    b.iter(|| {
                        rt.block_on(async {
                            let mut instance = Instance::new(plugin, &route, LIMITS)
                                .await
                                .expect("instance");
                            instance.init(config).await.expect("init");
                            instance.on_request(req, &ctx).await.expect("hook")
                        })
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
