//! The cost of one plugin hook call: a no-op plugin and the transform
//! plugin, on a pooled (reused) instance and on a fresh instance per call,
//! with 10 and 50 request headers on the request (which stays in the
//! gateway: the plugin reads and edits it through host calls).
//!
//! A second group runs a whole route chain over one request and its
//! response, as the proxy does: what plugins add to a request beyond the
//! hook calls (checking instances out and in, the exchange, the context).
//! Its `context/*` and `request-in-response/*` rows price the per-request
//! context store (a value set by one plugin and read by another) and a
//! response hook reading the request, each against the same chain of
//! plugins whose hooks run and do nothing.
//!
//! A `waiting` group prices the ways a hook can wait on the host: the
//! synchronous path, a fiber (the async path), and two synchronous hooks
//! (what a two-phase contract would cost at least).
//!
//! `cargo bench --workspace --bench plugin_hooks`. The pooled/fresh figures
//! behind the choice in `gateway/src/plugin/chain.rs` come from here.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway::body;
use gateway::config::ByteSize;
use gateway::config::state::StateConfig;
use gateway::plugin::PluginRuntime;
use gateway::plugin::chain::ChainEntry;
use gateway::plugin::exchange::{Exchange, Message};
use gateway::plugin::instance::Instance;
use gateway::plugin::limits::Limits;
use gateway::plugin::request_context::RequestHead;
use gateway::plugin::runtime::LoadedPlugin;
use gateway::plugin::services::{self, Granted, Resources};
use gateway::plugin::{Chain, RequestContext, RequestFlow};
use gateway::state::StateStore;
use http::HeaderValue;

const LIMITS: Limits = Limits {
    deadline: Duration::from_millis(100),
    wall_deadline: Duration::from_secs(1),
    memory: ByteSize::mib(16),
};

fn context(params: &[(&str, &str)]) -> RequestContext {
    let params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RequestContext::new(
        &HeaderValue::from_static("4f0e4d0a-33a5-4b55-9a8c-52f3b8f1e4a1"),
        &HeaderValue::from_static("127.0.0.1"),
        None,
        &params,
        &Arc::from("users"),
    )
}

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
    Exchange::new(Message::Request(parts), None, context(&[("id", "42")]))
}

fn bench(c: &mut Criterion) {
    let built = build_plugins::build_all().unwrap_or_else(|e| panic!("{e}"));
    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = PluginRuntime::new(cache.path(), 1000).expect("engine");
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
            let mut pooled = rt.block_on(instance(plugin, &route, config, Arc::default()));
            group.bench_function(BenchmarkId::new(format!("{name}/pooled"), headers), |b| {
                b.iter(|| rt.block_on(pooled.on_request(&mut exchange)).expect("hook"));
            });
            group.bench_function(BenchmarkId::new(format!("{name}/fresh"), headers), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let mut fresh = instance(plugin, &route, config, Arc::default()).await;
                        fresh.on_request(&mut exchange).await.expect("hook")
                    })
                });
            });
        }
    }
    group.finish();

    waiting(c, &rt, &runtime, &built, &route);

    let mut group = c.benchmark_group("chain");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let noop = runtime
        .load("noop", &built.join("noop.wasm"))
        .expect("noop");
    let transform = &plugins[1].1;
    let probe = &plugins[0].1;
    let chains = [
        ("two-no-hook-plugins", vec![(&noop, "{}"), (&noop, "{}")]),
        ("transform", vec![(transform, TRANSFORM_CONFIG)]),
        (
            "transform+two-no-hook-plugins",
            vec![(transform, TRANSFORM_CONFIG), (&noop, "{}"), (&noop, "{}")],
        ),
        ("context/two-idle-hooks", vec![(probe, "{}"), (probe, "{}")]),
        (
            "context/set-then-read",
            vec![
                (probe, r#"{"remember_header":"x-user"}"#),
                (probe, r#"{"recall":"x-user"}"#),
            ],
        ),
        ("request-in-response/idle-hooks", vec![(probe, "{}")]),
        (
            "request-in-response/read-origin",
            vec![(probe, r#"{"echo_request_header":"origin"}"#)],
        ),
    ];
    for (name, plugins) in chains {
        let entries = plugins
            .into_iter()
            .map(|(plugin, config)| {
                rt.block_on(ChainEntry::new(
                    plugin.clone(),
                    "users",
                    config.to_string(),
                    LIMITS,
                    Arc::<Granted>::default(),
                ))
                .expect("chain entry")
            })
            .collect();
        let chain = Chain::new(entries, 1 << 20);
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(request_and_response(&chain)));
        });
    }
    group.finish();
}

async fn instance(
    plugin: &LoadedPlugin,
    route: &Arc<str>,
    config: &str,
    granted: Arc<Granted>,
) -> Instance {
    let mut instance = Instance::new(plugin, route, LIMITS, granted)
        .await
        .expect("instance");
    instance.init(config).await.expect("init");
    instance
}

/// The ways a hook could wait on the host (Redis, outbound calls), priced
/// per request hook: the same no-op hook on the synchronous path, on a fiber
/// (wasmtime's async path, which a plugin importing `state` takes), and
/// called twice synchronously (the least a "return the work, resume in a
/// second hook" contract would add); then the rate-limit plugin deciding
/// in the in-process store, on its fiber.
fn waiting(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    runtime: &PluginRuntime,
    built: &std::path::Path,
    route: &Arc<str>,
) {
    let mut group = c.benchmark_group("waiting");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let probe = runtime
        .load("probe", &built.join("probe.wasm"))
        .expect("probe");
    // The same compiled plugin, marked as one whose hooks run on a fiber.
    let on_fiber = LoadedPlugin {
        name: probe.name.clone(),
        path: probe.path.clone(),
        sha256: probe.sha256.clone(),
        loaded_at: probe.loaded_at,
        pre: probe.pre.clone(),
        services: Vec::new(),
        waits: true,
        request_hook: true.into(),
        response_hook: true.into(),
    };
    let mut exchange = exchange(10);
    let mut sync = rt.block_on(instance(&probe, route, "{}", Arc::default()));
    group.bench_function("no-op/sync", |b| {
        b.iter(|| rt.block_on(sync.on_request(&mut exchange)).expect("hook"));
    });
    let mut fiber = rt.block_on(instance(&on_fiber, route, "{}", Arc::default()));
    group.bench_function("no-op/fiber", |b| {
        b.iter(|| rt.block_on(fiber.on_request(&mut exchange)).expect("hook"));
    });
    group.bench_function("no-op/two-sync-hooks", |b| {
        b.iter(|| {
            rt.block_on(sync.on_request(&mut exchange)).expect("hook");
            rt.block_on(sync.on_request(&mut exchange)).expect("hook")
        });
    });
    let limiter = runtime
        .load("rate-limit", &built.join("rate_limit.wasm"))
        .expect("rate-limit");
    let store = StateStore::new(&StateConfig::default()).expect("memory store");
    let resources = Resources {
        state: Some(Arc::new(store)),
        ..Resources::default()
    };
    let grants = [("state".to_string(), serde_json::json!({}))].into();
    let granted = Arc::new(services::configure(&grants, &resources).expect("grant"));
    // A budget no benchmark run spends: every decision allows and records.
    let config = r#"{"limits":[{"requests":1000000000,"per":"1s"}]}"#;
    let mut limited = rt.block_on(instance(&limiter, route, config, granted));
    group.bench_function("rate-limit/memory/fiber", |b| {
        b.iter(|| {
            rt.block_on(limited.on_request(&mut exchange))
                .expect("hook")
        });
    });
    group.finish();
}

/// One request through the chain's request hooks and its response back
/// through the response hooks, with the headers wrk and nginx send (and a
/// browser's `origin`, and a user header for the context rows), keeping the
/// request for response hooks as the proxy does.
async fn request_and_response(chain: &Chain) {
    let mut context = context(&[]);
    let request = http::Request::get("/")
        .header("host", "127.0.0.1:8080")
        .header("x-request-id", "4f0e4d0a-33a5-4b55-9a8c-52f3b8f1e4a1")
        .header("origin", "https://app.example.com")
        .header("x-user", "alice")
        .body(body::empty())
        .expect("request");
    match chain.on_request(request, &mut context).await {
        Ok(RequestFlow::Forward { request, .. }) => {
            chain.keep_request(&mut context, || RequestHead::of_request(&request));
        }
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
        .on_response(response, chain.len(), &mut context)
        .await
        .expect("response hooks");
}

criterion_group!(benches, bench);
criterion_main!(benches);
