//! The shipped rate-limit plugin in front of a real upstream. Its counters
//! live where the operator says (`state:`): in the gateway's memory, or in a
//! real Redis that several gateways share. Limits are GCRA: a fresh client
//! gets `burst` requests at once, then one more every `per / requests`; a
//! request is allowed only when every limit allows it, and one refused is
//! counted against none. When Redis is gone or slow, each route fails open or
//! closed as its policy says, answers in time, and never holds a thread.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::client::{Reply, send_from};
use crate::support::tokens::{SECRET, now, sign};
use crate::support::{Backend, Gateway, PluginDir, Redis, SlowProxy, get, send, upstream};

/// The grant the plugin needs: the state service.
const GRANT: &str = "  grants: { rate-limit: { state: {} } }\n";

const ADMIN: &str = "admin: { listen: 127.0.0.1:0 }\n";

/// A config: `top` (state, admin, server), the plugin folder with `grants`,
/// upstream `svc` and `routes`.
fn config(plugins: &PluginDir, svc: &Backend, top: &str, grants: &str, routes: &str) -> String {
    format!(
        "{top}{}upstreams:\n{}routes:\n{routes}",
        plugins.section(grants),
        upstream("svc", &[svc], "")
    )
}

/// Route `name`, answering under `/name`, limited by the plugin configured
/// with `limit` (a YAML flow mapping).
fn limited(name: &str, limit: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    upstream: svc\n    plugins: [{{ name: rate-limit, config: {limit} }}]\n"
    )
}

/// Route `name`, answering under `/name`, with no plugin at all.
fn unlimited(name: &str) -> String {
    format!("  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    upstream: svc\n")
}

/// The top-level `state:` section for a Redis at `url`.
fn redis_state(url: &str, timeout: &str) -> String {
    format!("state: {{ backend: redis, url: \"{url}\", timeout: {timeout} }}\n")
}

/// Starts a gateway whose one route, `/api`, is limited by `limit`.
async fn one_route(limit: &str) -> (PluginDir, Backend, Gateway) {
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        ADMIN,
        GRANT,
        &limited("api", limit),
    ));
    (plugins, svc, gw)
}

fn request(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

/// A response header read as a number of requests or seconds.
fn number(reply: &Reply, name: &str) -> Option<u64> {
    reply
        .headers
        .get(name)
        .map(|v| v.to_str().ok().and_then(|v| v.parse().ok()))
        .map(|n| n.unwrap_or_else(|| panic!("{name}: not a number: {:?}", reply.headers[name])))
}

/// Whether the reply carries the budget headers of a decision made.
fn has_budget(reply: &Reply) -> bool {
    reply.headers.contains_key("ratelimit-limit")
}

/// Checks an allowed reply and its budget: (limit, remaining, reset seconds).
fn allowed(reply: &Reply) -> (u64, u64, u64) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let read = |name| number(reply, name).unwrap_or_else(|| panic!("no {name}: {reply:?}"));
    (
        read("ratelimit-limit"),
        read("ratelimit-remaining"),
        read("ratelimit-reset"),
    )
}

/// Checks a refusal (429, the gateway's JSON error, `retry-after`) and
/// returns its `retry-after` in seconds.
fn refused(reply: &Reply) -> u64 {
    assert_eq!(
        reply.status,
        429,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.error_code(), "rate_limited");
    let retry = number(reply, "retry-after").expect("a refusal says when to retry");
    assert!(retry >= 1, "retry-after {retry}");
    retry
}

/// What `GET /admin/state` reports.
async fn store(gw: &Gateway) -> Value {
    get(&gw.admin_url("/admin/state")).await.json()
}

/// Sends to `url` until a reply satisfies `done` (at most 10 s), and returns it.
async fn eventually(url: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(url).await;
        if done(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < until,
            "{url}: not within 10 s; last reply {} {:?}: {}",
            reply.status,
            reply.headers,
            String::from_utf8_lossy(&reply.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `count` requests to `url` at once; each task gives its reply and
/// how long it took.
fn launch(url: &str, count: usize) -> Vec<tokio::task::JoinHandle<(Reply, Duration)>> {
    (0..count)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { timed(&url).await })
        })
        .collect()
}

/// Sends to `url` and returns the reply and how long it took.
async fn timed(url: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = get(url).await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn a_fresh_client_gets_its_burst_and_not_one_request_more() {
    let (_plugins, svc, gw) =
        one_route("{ limits: [{ requests: 3, per: 1h }], key: [client_ip] }").await;
    let url = gw.url("/api");
    for i in 0..10u64 {
        let reply = get(&url).await;
        if i < 3 {
            // The burst defaults to `requests`; a full budget comes back one
            // request every 20 minutes.
            let (limit, remaining, reset) = allowed(&reply);
            assert_eq!((limit, remaining), (3, 2 - i), "request {i}");
            let full_in = 1200 * (i + 1);
            assert!(
                (full_in - 5..=full_in).contains(&reset),
                "request {i}: reset {reset}, wanted about {full_in}"
            );
        } else {
            let retry = refused(&reply);
            assert!(
                (1100..=1200).contains(&retry),
                "request {i}: the next one is allowed in 20 minutes, not {retry} s"
            );
        }
    }
    assert_eq!(svc.served(), 3, "no refused request reached the upstream");
    let state = store(&gw).await;
    assert_eq!(state["backend"], "memory", "the default store: {state}");
    assert_eq!(state["decisions"], 10, "{state}");
    assert_eq!(state["refused"], 7, "{state}");
    assert_eq!(state["failures"], 0, "{state}");
}

#[tokio::test]
async fn after_the_burst_requests_pass_at_the_steady_pace() {
    // Four per two seconds is one every 500 ms; two at once at most.
    let (_plugins, svc, gw) =
        one_route("{ limits: [{ requests: 4, per: 2s, burst: 2 }], key: [client_ip] }").await;
    let url = gw.url("/api");
    let (limit, remaining, _) = allowed(&get(&url).await);
    assert_eq!((limit, remaining), (2, 1));
    assert_eq!(allowed(&get(&url).await).1, 0);
    assert_eq!(
        refused(&get(&url).await),
        1,
        "the next one is half a second away, rounded up"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let paced = get(&url).await;
    assert_eq!(
        allowed(&paced).1,
        0,
        "one more has come back, and it is spent"
    );
    assert_eq!(refused(&get(&url).await), 1, "and only one");
    assert_eq!(svc.served(), 3);
}

#[tokio::test]
async fn several_limits_are_decided_together_and_a_refused_request_spends_none() {
    // Two a second (500 ms apart, two at once) and three an hour (one every
    // 20 minutes, three at once).
    let (_plugins, svc, gw) = one_route(
        "{ limits: [{ requests: 2, per: 1s }, { requests: 3, per: 1h }], key: [client_ip] }",
    )
    .await;
    let url = gw.url("/api");
    // The headers describe the tightest budget: the one with fewest left.
    let (limit, remaining, _) = allowed(&get(&url).await);
    assert_eq!((limit, remaining), (2, 1), "per second: one left");
    let (limit, remaining, _) = allowed(&get(&url).await);
    assert_eq!((limit, remaining), (2, 0), "per second: none left");
    // The per-second limit refuses the third. Had it been counted against the
    // hour limit anyway, that one would now be spent: 3 of 3.
    assert_eq!(refused(&get(&url).await), 1, "the second limit bites");

    // A second later the per-second budget is full again, and the hour limit
    // still has one: only two were counted against it. (Had the refused
    // request been counted, this one would be refused for 20 minutes.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (limit, remaining, _) = allowed(&get(&url).await);
    assert_eq!(
        (limit, remaining),
        (3, 0),
        "the hour budget is now the tightest, and spent"
    );

    // From now on the hour limit refuses, however the requests are spaced.
    for n in 0..2 {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let retry = refused(&get(&url).await);
        assert!(
            retry > 1000,
            "the hour limit refuses (next one in ~20 minutes), not the second one: {retry}"
        );
    }
    assert_eq!(svc.served(), 3);
}

/// A request to `url` with `x-client: who`, or no `x-client` at all.
async fn as_client(url: &str, who: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = who.map(|w| ("x-client", w)).into_iter().collect();
    send(request(url, &headers)).await
}

#[tokio::test]
async fn a_header_names_the_budget_and_without_it_the_client_address_does() {
    let (_plugins, svc, gw) =
        one_route("{ limits: [{ requests: 2, per: 1h }], key: [\"header:x-client\"] }").await;
    let url = gw.url("/api");
    for who in [Some("a"), Some("b"), None] {
        for _ in 0..2 {
            allowed(&as_client(&url, who).await);
        }
        refused(&as_client(&url, who).await);
    }
    assert!(
        refused(&as_client(&url, Some("a")).await) > 1000,
        "a's budget is still spent: the others spent their own"
    );
    // Without the header, each client address has a budget of its own.
    let other: IpAddr = [127, 0, 0, 2].into();
    for _ in 0..2 {
        allowed(&send_from(other, request(&url, &[])).await);
    }
    refused(&send_from(other, request(&url, &[])).await);
    assert_eq!(svc.served(), 8);
}

#[tokio::test]
async fn behind_auth_each_consumer_has_a_budget_no_header_can_reset() {
    let plugins = PluginDir::with(&["auth", "rate-limit"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "key_sets:\n  hs: {{ algorithms: [HS256], secret: \"{SECRET}\" }}\n{}",
        config(
            &plugins,
            &svc,
            "",
            "  grants: { auth: { keys: [hs] }, rate-limit: { state: {} } }\n",
            "  - name: api
    match: { path_prefix: /api }
    upstream: svc
    plugins:
      - { name: auth, config: { jwt: { key_sets: [hs] } } }
      - name: rate-limit
        config: { limits: [{ requests: 2, per: 1h }], key: [\"context:consumer\"] }
",
        )
    ));
    let url = gw.url("/api");
    let token = |sub: &str| {
        let token = sign(Algorithm::HS256, &json!({ "sub": sub, "exp": now() + 600 }));
        format!("Bearer {token}")
    };
    let (ann, bob) = (token("ann"), token("bob"));

    for _ in 0..2 {
        allowed(&send(request(&url, &[("authorization", &ann)])).await);
    }
    refused(&send(request(&url, &[("authorization", &ann)])).await);
    // The budget is the verified consumer's, which auth put in the context;
    // a header claiming another identity changes nothing.
    let spoofed = send(request(
        &url,
        &[("authorization", &ann), ("x-consumer", "someone-else")],
    ))
    .await;
    refused(&spoofed);

    for _ in 0..2 {
        allowed(&send(request(&url, &[("authorization", &bob)])).await);
    }
    // No token: auth refuses before the limit is consulted.
    let anonymous = send(request(&url, &[("x-consumer", "someone-else")])).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(svc.served(), 4);
}

#[tokio::test]
async fn the_plugin_needs_the_state_grant() {
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    let yaml = config(
        &plugins,
        &svc,
        "",
        "",
        &limited("api", "{ limits: [{ requests: 3, per: 1h }] }"),
    );
    let refused = Gateway::try_start(&yaml).err().expect("refused at start");
    assert!(
        refused.contains("imports gateway:plugin/state, which it is not granted")
            && refused.contains("plugins.grants.rate-limit.state"),
        "{refused}"
    );
}

#[tokio::test]
async fn gateways_sharing_a_redis_share_one_exact_budget() {
    let redis = Redis::start();
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    // Closed on failure, with time to spare: a store failure would show as a
    // 503, never as an extra request let through.
    let yaml = config(
        &plugins,
        &svc,
        &format!("{ADMIN}{}", redis_state(&redis.url(), "2s")),
        GRANT,
        &limited(
            "api",
            "{ limits: [{ requests: 10, per: 1h }], key: [client_ip], policy: fail_closed }",
        ),
    );
    let gateways = [Gateway::start(&yaml), Gateway::start(&yaml)];
    let urls: Vec<String> = gateways.iter().map(|gw| gw.url("/api")).collect();
    let mut statuses = Vec::new();

    // Alternating: each gateway sees the other's requests spent.
    for i in 0..8u64 {
        let reply = get(&urls[i as usize % 2]).await;
        assert_eq!(allowed(&reply).1, 9 - i, "request {i}");
        statuses.push(reply.status.as_u16());
    }
    // Then 24 at once, half through each: two are left for them.
    let racing: Vec<_> = (0..24)
        .map(|i| {
            let url = urls[i % 2].clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for task in racing {
        let reply = task.await.expect("request task");
        if reply.status == 429 {
            refused(&reply);
        }
        statuses.push(reply.status.as_u16());
    }
    // And the rest one by one, alternating.
    for i in 0..8 {
        let reply = get(&urls[i % 2]).await;
        refused(&reply);
        statuses.push(reply.status.as_u16());
    }

    assert_eq!(statuses.len(), 40);
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (10, 30), "{statuses:?}");
    assert_eq!(svc.served(), 10);
    let mut totals = (0, 0, 0);
    for gw in &gateways {
        let state = store(gw).await;
        assert_eq!(state["backend"], "redis", "{state}");
        totals.0 += state["decisions"].as_u64().unwrap_or_default();
        totals.1 += state["refused"].as_u64().unwrap_or_default();
        totals.2 += state["failures"].as_u64().unwrap_or_default();
    }
    assert_eq!(totals, (40, 30, 0), "(decisions, refused, failures)");
}

#[tokio::test]
async fn when_redis_goes_away_each_route_fails_as_its_policy_says_and_both_recover() {
    let mut redis = Redis::start();
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    let limit = |policy: &str| {
        format!(
            "{{ limits: [{{ requests: 3, per: 1h }}], key: [client_ip, route], policy: {policy} }}"
        )
    };
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &format!("{ADMIN}{}", redis_state(&redis.url(), "50ms")),
        GRANT,
        &format!(
            "{}{}",
            limited("open", &limit("fail_open")),
            limited("closed", &limit("fail_closed"))
        ),
    ));
    let (open, closed) = (gw.url("/open"), gw.url("/closed"));

    // Redis up: decisions are made (the first may wait for the connection).
    eventually(&open, has_budget).await;
    allowed(&eventually(&closed, |r| r.status == 200).await);

    redis.stop();
    let served = svc.served();
    for _ in 0..3 {
        let (reply, took) = timed(&open).await;
        assert!(took < Duration::from_secs(1), "/open took {took:?}");
        assert_eq!(reply.status, 200, "fail open lets it through");
        assert!(
            !has_budget(&reply),
            "no budget to tell: {:?}",
            reply.headers
        );

        let (reply, took) = timed(&closed).await;
        assert!(took < Duration::from_secs(1), "/closed took {took:?}");
        assert_eq!(reply.status, 503, "fail closed refuses");
        assert_eq!(reply.error_code(), "rate_limit_unavailable");
    }
    assert_eq!(svc.served(), served + 3, "only /open reached the upstream");
    let state = store(&gw).await;
    assert_eq!(state["backend"], "redis", "{state}");
    assert!(
        state["failures"].as_u64().is_some_and(|f| f >= 6),
        "each of the six decisions failed: {state}"
    );
    let log = gw.log_with(&["rate-limit store unavailable"]).await;
    assert_eq!(
        log.matches("rate-limit store unavailable").count(),
        1,
        "warned once, not per request:\n{log}"
    );

    // The warning says why: the connection broke, not a slow Redis.
    let warning = log
        .lines()
        .find(|l| l.contains("rate-limit store unavailable"))
        .unwrap_or_default();
    assert!(
        warning.contains("redis: ") && !warning.contains("did not answer"),
        "{warning}"
    );

    // Redis back (empty: nothing was saved): the gateway reconnects by itself.
    redis.restart();
    allowed(&eventually(&closed, |r| r.status != 503).await);
    gw.log_with(&["rate-limit store answering again"]).await;
    assert!(gw.stderr().contains("rate-limit store answering again"));
    let mut spent = false;
    for _ in 0..4 {
        let reply = get(&closed).await;
        if reply.status == 429 {
            refused(&reply);
            spent = true;
            break;
        }
        allowed(&reply);
    }
    assert!(spent, "limits are enforced again");
    allowed(&eventually(&open, has_budget).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_holds_up_only_the_requests_waiting_on_it() {
    let redis = Redis::start();
    let proxy = SlowProxy::start(redis.port()).await;
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    // One gateway thread: a hook that blocked it while waiting on Redis
    // would stall every other request.
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &format!(
            "server: {{ workers: 1 }}\n{}",
            redis_state(&proxy.url(), "2s")
        ),
        GRANT,
        &format!(
            "{}{}",
            limited(
                "limited",
                "{ limits: [{ requests: 1000, per: 1h }], key: [client_ip] }"
            ),
            unlimited("free")
        ),
    ));
    let url = gw.url("/limited");
    // Connected while Redis is still quick.
    eventually(&url, has_budget).await;
    proxy.set_delay(Duration::from_millis(400));

    let launched = Instant::now();
    let waiting = launch(&url, 20);
    // While all twenty wait on Redis, the other route answers at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let (reply, took) = timed(&gw.url("/free")).await;
        assert_eq!(reply.status, 200);
        assert!(
            took < Duration::from_millis(300),
            "a route without limits waited {took:?} for Redis"
        );
    }
    if launched.elapsed() < Duration::from_millis(390) {
        assert!(
            waiting.iter().all(|task| !task.is_finished()),
            "the limited requests were still waiting meanwhile"
        );
    }
    for task in waiting {
        let (reply, took) = task.await.expect("request task");
        allowed(&reply);
        assert!(
            took >= Duration::from_millis(400),
            "answered in {took:?}, before Redis did"
        );
    }
}

#[tokio::test]
async fn a_redis_slower_than_the_timeout_is_not_waited_for() {
    let redis = Redis::start();
    let proxy = SlowProxy::start(redis.port()).await;
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &format!("{ADMIN}{}", redis_state(&proxy.url(), "50ms")),
        GRANT,
        &limited(
            "api",
            "{ limits: [{ requests: 100, per: 1m }], key: [client_ip], policy: fail_open }",
        ),
    ));
    let url = gw.url("/api");
    eventually(&url, has_budget).await;
    proxy.set_delay(Duration::from_millis(500));
    let failures = store(&gw).await["failures"].as_u64().unwrap_or_default();
    for i in 0..5 {
        let (reply, took) = timed(&url).await;
        assert!(
            took < Duration::from_millis(400),
            "request {i} waited {took:?} for a 500 ms Redis"
        );
        assert_eq!(reply.status, 200, "fail open");
        assert!(!has_budget(&reply), "request {i}: {:?}", reply.headers);
    }
    let state = store(&gw).await;
    assert!(
        state["failures"]
            .as_u64()
            .is_some_and(|f| f >= failures + 5),
        "each timed out decision is a failure: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_gets_at_most_max_waiting_decisions_the_rest_apply_the_policy_at_once() {
    let redis = Redis::start();
    let proxy = SlowProxy::start(redis.port()).await;
    let plugins = PluginDir::with(&["rate-limit", "transform"]);
    let svc = Backend::start("svc").await;
    // Each waiting decision holds a plugin instance; `max_waiting` keeps a
    // slow Redis from holding them all, so other plugins' routes go on.
    let edited = "  - name: edited\n    match: { path_prefix: /edited }\n    upstream: svc\n    plugins: [{ name: transform, config: { request: { set_headers: { x-edited: \"yes\" } } } }]\n";
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &format!(
            "{ADMIN}state: {{ backend: redis, url: \"{}\", timeout: 2s, max_waiting: 4 }}\n",
            proxy.url()
        ),
        &format!("{GRANT}  max_instances: 24\n"),
        &format!(
            "{}{edited}",
            limited(
                "limited",
                "{ limits: [{ requests: 1000, per: 1h }], key: [client_ip], policy: fail_open }"
            )
        ),
    ));
    let url = gw.url("/limited");
    eventually(&url, has_budget).await;
    proxy.set_delay(Duration::from_millis(600));
    let failures_before = store(&gw).await["failures"].as_u64().unwrap_or_default();

    let waiting = launch(&url, 12);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let (reply, took) = timed(&gw.url("/edited")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.upstream_header("x-edited").as_deref(), Some("yes"));
        assert!(took < Duration::from_millis(300), "{took:?}");
    }
    let (mut decided, mut passed_at_once) = (0, 0);
    for task in waiting {
        let (reply, took) = task.await.expect("request task");
        assert_eq!(reply.status, 200, "fail open either way");
        if has_budget(&reply) {
            assert!(took >= Duration::from_millis(600), "{took:?}");
            decided += 1;
        } else {
            assert!(
                took < Duration::from_millis(400),
                "not waited for: {took:?}"
            );
            passed_at_once += 1;
        }
    }
    assert_eq!((decided, passed_at_once), (4, 8));
    let failures = store(&gw).await["failures"].as_u64().unwrap_or_default();
    assert!(failures >= failures_before + 8, "{failures}");
}

#[tokio::test]
async fn a_budget_key_holding_garbage_counts_as_a_fresh_budget_and_is_overwritten() {
    let redis = Redis::start();
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &redis_state(&redis.url(), "2s"),
        GRANT,
        &limited(
            "api",
            "{ limits: [{ requests: 2, per: 1h }], key: [client_ip] }",
        ),
    ));
    // The key this plugin's budget for 127.0.0.1 lives under, as
    // docs/config.md describes it: `gw:rl:PLUGIN:KEY`.
    let key = r#"gw:rl:rate-limit:[["ip","127.0.0.1"]]|2/3600000/2"#;
    for garbage in ["not a number", "-5", "1e300", "nan"] {
        assert_eq!(redis.command(&["SET", key, garbage]), "+OK");
        let url = gw.url("/api");
        assert_eq!(allowed(&get(&url).await).1, 1, "{garbage}: a fresh budget");
        assert_eq!(allowed(&get(&url).await).1, 0);
        refused(&get(&url).await);
        assert_eq!(redis.command(&["DEL", key]), ":1", "{garbage}: overwritten");
    }
}

#[tokio::test]
async fn counters_survive_a_reload_until_the_store_itself_changes() {
    let plugins = PluginDir::with(&["rate-limit"]);
    let svc = Backend::start("svc").await;
    let limit = "{ limits: [{ requests: 3, per: 1h }], key: [client_ip] }";
    let with = |top: &str, extra_routes: &str| {
        config(
            &plugins,
            &svc,
            top,
            GRANT,
            &format!("{}{extra_routes}", limited("api", limit)),
        )
    };
    let gw = Gateway::start(&with("", ""));
    let url = gw.url("/api");
    assert_eq!(allowed(&get(&url).await).1, 2);
    assert_eq!(allowed(&get(&url).await).1, 1);

    // Another route comes: the same store, the same counters.
    gw.replace_config(&with("", &unlimited("other")));
    eventually(&gw.url("/other"), |r| r.status == 200).await;
    assert_eq!(allowed(&get(&url).await).1, 0);
    refused(&get(&url).await);

    // A different `state:` is a new store: counting starts again.
    gw.replace_config(&with(
        "state: { backend: memory, max_keys: 5000 }\n",
        &unlimited("third"),
    ));
    eventually(&gw.url("/third"), |r| r.status == 200).await;
    assert_eq!(allowed(&get(&url).await).1, 2);
}

#[tokio::test]
async fn a_plugin_cannot_wait_on_redis_without_end_nor_in_init() {
    // Waits on the store are not charged to a hook's deadlines, so a hook
    // may wait at most four times; a hostile plugin asking more fails that
    // request alone.
    let redis = Redis::start();
    let plugins = PluginDir::with(&["state-abuser", "rate-limit"]);
    let svc = Backend::start("svc").await;
    let abuser = |name: &str, calls: u32| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    upstream: svc\n    plugins: [{{ name: state-abuser, config: {{ calls: {calls} }} }}]\n"
        )
    };
    let grants = "  grants: { state-abuser: { state: {} }, rate-limit: { state: {} } }\n";
    let gw = Gateway::start(&config(
        &plugins,
        &svc,
        &redis_state(&redis.url(), "2s"),
        grants,
        &format!(
            "{}{}{}",
            abuser("four", 4),
            abuser("endless", 1000),
            limited("api", "{ limits: [{ requests: 100, per: 1m }] }")
        ),
    ));
    let four = get(&gw.url("/four")).await;
    assert_eq!(four.status, 200);
    assert_eq!(four.upstream_header("x-decisions").as_deref(), Some("4"));

    let endless = get(&gw.url("/endless")).await;
    assert_eq!(endless.status, 500);
    assert_eq!(endless.error_code(), "plugin_failed");
    let log = gw.log_with(&["at most 4 calls per hook"]).await;
    assert!(log.contains("at most 4 calls per hook"), "{log}");
    // Nothing else is affected.
    allowed(&get(&gw.url("/api")).await);
    assert_eq!(get(&gw.url("/four")).await.status, 200);

    // In `init` the plugin may not wait at all: its config is refused at load.
    let refused = Gateway::try_start(&config(
        &plugins,
        &svc,
        &redis_state(&redis.url(), "2s"),
        grants,
        "  - name: init\n    upstream: svc\n    plugins: [{ name: state-abuser, config: { calls: 1, in_init: true } }]\n",
    ));
    let stderr = refused.err().unwrap_or_default();
    assert!(stderr.contains("none in init"), "{stderr}");
}
