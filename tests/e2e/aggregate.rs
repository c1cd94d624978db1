//! The aggregate plugin: one client request answered from several calls to
//! upstream pools, merged into one JSON object with a key per part.
//!
//! The calls go only to the pools the operator granted
//! (`plugins.grants.aggregate.outbound.pools`), through those pools'
//! balancing, health and timeouts. They are sent together, so an answer
//! takes as long as its slowest part, not the sum of them. An optional part
//! that fails is a `null` with its reason in `_failed` (and its name in
//! `x-aggregate-partial`); a required one fails the whole request with
//! `502 aggregate_part_failed`. While the calls are out, the gateway's
//! threads go on serving everyone else.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::client::Reply;
use crate::support::{Backend, Gateway, PluginDir, raw, send, upstream};

/// Three services, one backend each, in pools `users`, `orders` and `payments`.
struct Services {
    users: Backend,
    orders: Backend,
    payments: Backend,
}

impl Services {
    async fn start() -> Services {
        Services {
            users: Backend::start("users").await,
            orders: Backend::start("orders").await,
            payments: Backend::start("payments").await,
        }
    }

    fn all(&self) -> [&Backend; 3] {
        [&self.users, &self.orders, &self.payments]
    }

    /// The `upstreams:` entries of the three pools.
    fn upstreams(&self) -> String {
        format!(
            "{}{}{}",
            upstream("users", &[&self.users], ""),
            upstream("orders", &[&self.orders], ""),
            upstream("payments", &[&self.payments], "")
        )
    }
}

/// The grant most tests use: all three pools, answers up to the default 1MiB.
const GRANT: &str = "pools: [users, orders, payments]";

/// A config: `top` (server settings), the plugin folder with `aggregate`
/// granted `outbound: { GRANT }`, then `upstreams` and `routes`.
fn config(plugins: &PluginDir, top: &str, grant: &str, upstreams: &str, routes: &str) -> String {
    format!(
        "{top}{}upstreams:\n{upstreams}routes:\n{routes}",
        plugins.section(&format!(
            "  grants: {{ aggregate: {{ outbound: {{ {grant} }} }} }}\n"
        ))
    )
}

/// A dashboard for user `{id}`: a profile, orders and a balance, each part
/// required and each the whole answer of its service (the echo of what it
/// received).
const DASH: &str = "  - name: dash
    match: { path: \"/dash/{id}\" }
    upstream: users
    plugins:
      - name: aggregate
        config:
          parts:
            - { name: profile, pool: users, path: \"/users/{id}\" }
            - { name: orders, pool: orders, path: \"/orders/{id}\" }
            - { name: balance, pool: payments, path: \"/balance/{id}\" }
";

fn request(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

/// Sends `request` and returns the reply and how long it took.
async fn timed(request: Request<Full<Bytes>>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = send(request).await;
    (reply, started.elapsed())
}

/// Checks a merged answer (200, a JSON object) and returns it.
fn merged(reply: &Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{:?}: {}",
        reply.headers,
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.headers["content-type"], "application/json");
    let answer = reply.json();
    assert!(answer.is_object(), "{answer}");
    answer
}

/// Checks an answer with every part in it, and returns it.
fn complete(reply: &Reply) -> Value {
    let answer = merged(reply);
    assert!(answer.get("_failed").is_none(), "{answer}");
    assert!(
        !reply.headers.contains_key("x-aggregate-partial"),
        "{:?}",
        reply.headers
    );
    answer
}

/// Checks a partial answer: each failed part is a `null`, `_failed` gives
/// its reason and `x-aggregate-partial` names it. Returns (the answer, the
/// reason of each failed part).
fn partial(reply: &Reply) -> (Value, BTreeMap<String, String>) {
    let answer = merged(reply);
    let failed: BTreeMap<String, String> = answer["_failed"]
        .as_array()
        .unwrap_or_else(|| panic!("a partial answer lists its failed parts: {answer}"))
        .iter()
        .map(|f| {
            let field = |name: &str| {
                f[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} in {f}"))
                    .to_string()
            };
            (field("part"), field("reason"))
        })
        .collect();
    let named: BTreeSet<String> = reply
        .headers
        .get("x-aggregate-partial")
        .unwrap_or_else(|| panic!("no x-aggregate-partial: {:?}", reply.headers))
        .to_str()
        .expect("a text header")
        .split(',')
        .map(|part| part.trim().to_string())
        .collect();
    assert_eq!(
        named,
        failed.keys().cloned().collect::<BTreeSet<_>>(),
        "x-aggregate-partial names the failed parts: {answer}"
    );
    for part in failed.keys() {
        assert!(
            answer.get(part).is_some_and(Value::is_null),
            "{part} is there, as null: {answer}"
        );
    }
    (answer, failed)
}

/// Checks a `502 aggregate_part_failed` and returns its message.
fn part_failed(reply: &Reply) -> String {
    assert_eq!(
        reply.status,
        502,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.error_code(), "aggregate_part_failed");
    reply.error_message()
}

/// Percent-decodes a query value (`+` is a space).
fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query of `uri` as (name, raw value) pairs, in order.
fn query_pairs(uri: &str) -> Vec<(String, String)> {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The JSON body of a raw HTTP/1.1 answer, with its head.
fn raw_answer(response: &str) -> (String, Value) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a whole answer: {response}"));
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        let mut rest = body;
        let mut joined = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").expect("a chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
            if size == 0 {
                break;
            }
            joined.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        joined
    } else {
        body.to_string()
    };
    let json = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {head}\n\n{body}"));
    (head, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parts_are_fetched_at_once_so_an_answer_takes_the_slowest_not_the_sum() {
    let plugins = PluginDir::with(&["aggregate"]);
    let services = Services::start().await;
    let delay = Duration::from_millis(300);
    for service in services.all() {
        service.set_delay(delay);
    }
    let gw = Gateway::start(&config(&plugins, "", GRANT, &services.upstreams(), DASH));

    let (reply, took) = timed(request(&gw.url("/dash/7"), &[])).await;
    let answer = complete(&reply);
    let keys: Vec<&String> = answer
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        ["balance", "orders", "profile"],
        "a key per part: {answer}"
    );
    // Each part is its service's whole JSON answer.
    assert_eq!(answer["profile"]["backend"], "users");
    assert_eq!(answer["profile"]["path"], "/users/7");
    assert_eq!(answer["orders"]["backend"], "orders");
    assert_eq!(answer["orders"]["path"], "/orders/7");
    assert_eq!(answer["balance"]["backend"], "payments");
    assert_eq!(answer["balance"]["path"], "/balance/7");
    // One call each: the route's own upstream (`users`) is never called,
    // the plugin answers.
    for service in services.all() {
        assert_eq!(service.served(), 1, "{}", service.name);
    }
    // One after the other they would take 900 ms; together, about 300.
    let serial = delay * 3;
    assert!(
        took < serial.mul_f64(0.6),
        "three 300 ms parts took {took:?}: not sent at once"
    );
}

#[tokio::test]
async fn an_optional_part_that_fails_is_a_null_with_its_reason_a_required_one_fails_the_request() {
    let plugins = PluginDir::with(&["aggregate"]);
    let services = Services::start().await;
    let gw = Gateway::start(&config(
        &plugins,
        "",
        GRANT,
        &services.upstreams(),
        "  - name: dash
    match: { path: \"/dash/{id}\" }
    upstream: users
    plugins:
      - name: aggregate
        config:
          parts:
            - { name: profile, pool: users, path: \"/users/{id}\" }
            - { name: orders, pool: orders, path: \"/orders/{id}\" }
            - { name: balance, pool: payments, path: \"/balance/{id}\", required: false, timeout: 300ms }
",
    ));
    let url = gw.url("/dash/7");

    // Slower than its own timeout: not waited for past it.
    services.payments.set_delay(Duration::from_secs(2));
    let (reply, took) = timed(request(&url, &[])).await;
    let (answer, failed) = partial(&reply);
    assert_eq!(
        failed,
        BTreeMap::from([("balance".to_string(), "timed out".to_string())])
    );
    assert_eq!(answer["profile"]["path"], "/users/7", "{answer}");
    assert_eq!(answer["orders"]["path"], "/orders/7", "{answer}");
    assert!(
        took < Duration::from_millis(900),
        "a part with a 300 ms timeout held the answer {took:?}"
    );

    // Down: the reason says so, without the target's address (which
    // the gateway's log has).
    services.payments.set_delay(Duration::ZERO);
    services.payments.stop();
    let (answer, failed) = partial(&send(request(&url, &[])).await);
    let reason = &failed["balance"];
    assert_eq!(reason, "the upstream is unavailable", "{answer}");
    assert_eq!(failed.len(), 1, "{answer}");
    assert_eq!(answer["profile"]["path"], "/users/7", "{answer}");

    // A required part that fails fails the request, naming the part.
    services.users.stop();
    let message = part_failed(&send(request(&url, &[])).await);
    assert!(
        message.starts_with("required part \"profile\" failed: "),
        "{message}"
    );
}

#[tokio::test]
async fn paths_are_filled_from_route_params_the_query_and_the_context() {
    let plugins = PluginDir::with(&["probe", "aggregate"]);
    let services = Services::start().await;
    // The probe keeps the `consumer` header in the request's context, as an
    // auth plugin keeps the consumer it identified. Each part's value is the
    // path (or the whole target) its service received.
    let gw = Gateway::start(&config(
        &plugins,
        "server: { escaped_slashes: keep }\n",
        GRANT,
        &services.upstreams(),
        "  - name: dash
    match: { path: \"/dash/{id}\" }
    upstream: users
    plugins:
      - { name: probe, config: { remember_header: consumer } }
      - name: aggregate
        config:
          parts:
            - { name: profile, pool: users, path: \"/users/{id}\", pointer: /path }
            - { name: orders, pool: orders, path: \"/orders?limit={query.limit}\", pointer: /uri, required: false }
            - { name: balance, pool: payments, path: \"/balance/{context.consumer}\", pointer: /path }
  - name: strict
    match: { path: \"/strict/{id}\" }
    upstream: users
    plugins:
      - name: aggregate
        config:
          parts:
            - { name: orders, pool: orders, path: \"/orders?limit={query.limit}\" }
",
    ));

    // Values that need escaping arrive escaped, each one segment or one
    // query value: a `&` never makes another parameter.
    let reply = send(request(
        &gw.url("/dash/a%20b%3Fc?limit=a%20b%2Fc%26x%3D1"),
        &[("consumer", "ann smith?2")],
    ))
    .await;
    let answer = complete(&reply);
    assert_eq!(answer["profile"], "/users/a%20b%3Fc", "{answer}");
    assert_eq!(answer["balance"], "/balance/ann%20smith%3F2", "{answer}");
    let orders = answer["orders"].as_str().expect("the orders target");
    assert!(orders.starts_with("/orders?"), "{orders}");
    let query = query_pairs(orders);
    assert_eq!(query.len(), 1, "one parameter: {orders}");
    assert_eq!(query[0].0, "limit", "{orders}");
    assert_eq!(decoded(&query[0].1), "a b/c&x=1", "{orders}");

    // A slash never lands in a path, not even encoded (an upstream that
    // decodes `%2F` before routing would read a path of the client's
    // choosing): that part fails instead.
    let reply = send(request(
        &gw.url("/dash/7?limit=1"),
        &[("consumer", "../admin")],
    ))
    .await;
    let message = part_failed(&reply);
    assert!(
        message.starts_with("required part \"balance\" failed: ") && message.contains("slash"),
        "{message}"
    );

    // A value the request lacks (or sends empty): that part is not sent,
    // and fails.
    let sent = services.orders.served();
    for url in ["/dash/7", "/dash/7?limit="] {
        let reply = send(request(&gw.url(url), &[("consumer", "ann")])).await;
        let (answer, failed) = partial(&reply);
        assert_eq!(
            failed,
            BTreeMap::from([(
                "orders".to_string(),
                "no value for {query.limit}".to_string()
            )]),
            "{url}"
        );
        assert_eq!(answer["profile"], "/users/7");
        assert_eq!(answer["balance"], "/balance/ann");
    }
    let message = part_failed(&send(request(&gw.url("/strict/7"), &[])).await);
    assert_eq!(
        message,
        "required part \"orders\" failed: no value for {query.limit}"
    );
    assert_eq!(services.orders.served(), sent, "no call without its value");

    // A required part that cannot be filled fails the request before
    // anything is sent.
    let served: Vec<usize> = services.all().iter().map(|s| s.served()).collect();
    let message = part_failed(&send(request(&gw.url("/dash/7?limit=5"), &[])).await);
    assert_eq!(
        message,
        "required part \"balance\" failed: no value for {context.consumer}"
    );
    assert_eq!(
        services
            .all()
            .iter()
            .map(|s| s.served())
            .collect::<Vec<_>>(),
        served,
        "no part was called"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_json_too_large_or_an_error_is_a_failed_part() {
    let plugins = PluginDir::with(&["aggregate"]);
    let services = Services::start().await;
    let users = &services.users;
    users.serve(
        "/profile",
        200,
        "application/json",
        json!({ "data": { "id": 7, "name": "Ann" }, "meta": { "etag": "x1" } }).to_string(),
    );
    users.serve("/text", 200, "text/plain", "hello, not JSON");
    users.serve(
        "/big",
        200,
        "application/json",
        json!({ "pad": "x".repeat(2048) }).to_string(),
    );
    users.serve(
        "/maintenance",
        503,
        "application/json",
        "{\"error\":\"maintenance\"}",
    );
    // Answers are read up to the grant's `max_body`.
    let gw = Gateway::start(&config(
        &plugins,
        "",
        "pools: [users], max_body: 1KiB",
        &services.upstreams(),
        "  - name: mixed
    match: { path: /mixed }
    upstream: users
    plugins:
      - name: aggregate
        config:
          parts:
            - { name: profile, pool: users, path: /profile, pointer: /data }
            - { name: text, pool: users, path: /text, required: false }
            - { name: big, pool: users, path: /big, required: false }
            - { name: down, pool: users, path: /maintenance, required: false }
",
    ));
    let (answer, failed) = partial(&send(request(&gw.url("/mixed"), &[])).await);
    // A pointer picks one value out of a part's answer.
    assert_eq!(answer["profile"], json!({ "id": 7, "name": "Ann" }));
    assert_eq!(failed.len(), 3, "{answer}");
    assert!(failed["text"].contains("not JSON"), "{failed:?}");
    assert!(failed["big"].contains("over 1024 bytes"), "{failed:?}");
    assert_eq!(failed["down"], "answered 503", "{failed:?}");
}

#[tokio::test]
async fn calls_go_through_the_pools_balancing_and_health_as_routes_do() {
    let plugins = PluginDir::with(&["aggregate"]);
    let a = Backend::start("users-a").await;
    let b = Backend::start("users-b").await;
    let gw = Gateway::start(&config(
        &plugins,
        "",
        "pools: [users]",
        &upstream(
            "users",
            &[&a, &b],
            "    passive_health: { max_fails: 2, cooldown: 10s }\n",
        ),
        "  - name: me
    match: { path: \"/me/{id}\" }
    upstream: users
    plugins:
      - name: aggregate
        config:
          parts:
            - { name: profile, pool: users, path: \"/users/{id}\", pointer: /backend }
",
    ));
    let who = || async {
        let answer = complete(&send(request(&gw.url("/me/7"), &[])).await);
        answer["profile"].as_str().unwrap_or_default().to_string()
    };
    // Round robin, as for a route to the pool.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(who().await);
    }
    seen.sort();
    assert_eq!(seen, ["users-a", "users-a", "users-b", "users-b"]);

    // A dead target: calls that land on it are tried again on the live one,
    // and after two failures it is ejected.
    let b_addr = b.addr.to_string();
    b.stop();
    for i in 0..6 {
        assert_eq!(who().await, "users-a", "request {i}");
    }
    // Back, but ejected for its cool-down: it gets no call meanwhile.
    let b = Backend::start_on("users-b", &b_addr).await;
    for i in 0..4 {
        assert_eq!(who().await, "users-a", "request {i} after b is back");
    }
    assert_eq!(b.served(), 0, "an ejected target gets no calls");
}

#[tokio::test]
async fn a_part_calling_a_pool_not_granted_is_refused_at_load() {
    let plugins = PluginDir::with(&["aggregate"]);
    let services = Services::start().await;
    // `payments` is a pool, but not one the plugin may call.
    let yaml = config(
        &plugins,
        "",
        "pools: [users, orders]",
        &services.upstreams(),
        DASH,
    );
    let (ok, text) = plugins.validate(&yaml);
    assert!(!ok, "{text}");
    assert!(
        text.contains("routes[0].plugins[0].config.parts[2].pool: plugin \"aggregate\" refused the config of route \"dash\"")
            && text.contains("payments")
            && text.contains("not granted")
            && text.contains("plugins.grants.aggregate.outbound.pools"),
        "{text}"
    );
    let refused = Gateway::try_start(&yaml)
        .err()
        .expect("the gateway refuses to start");
    assert!(
        refused.contains("not granted")
            && refused.contains("plugins.grants.aggregate.outbound.pools"),
        "{refused}"
    );
    for service in services.all() {
        assert_eq!(service.served(), 0, "{}", service.name);
    }
}

#[tokio::test]
async fn every_call_carries_the_request_id_and_trace_and_the_headers_passed_on() {
    let plugins = PluginDir::with(&["transform", "aggregate"]);
    let services = Services::start().await;
    let parts = "          parts:
            - { name: profile, pool: users, path: \"/users/{id}\" }
            - { name: orders, pool: orders, path: \"/orders/{id}\" }
            - { name: balance, pool: payments, path: \"/balance/{id}\" }
";
    // `dash` passes on the request's headers (by default, all but a few);
    // `narrow` only those it names.
    let gw = Gateway::start(&config(
        &plugins,
        "",
        GRANT,
        &services.upstreams(),
        &format!(
            "  - name: dash
    match: {{ path: \"/dash/{{id}}\" }}
    upstream: users
    plugins:
      - {{ name: transform, config: {{ request: {{ set_headers: {{ x-tenant: acme }} }} }} }}
      - name: aggregate
        config:
{parts}  - name: narrow
    match: {{ path: \"/narrow/{{id}}\" }}
    upstream: users
    plugins:
      - name: aggregate
        config:
          pass_headers: [x-user-id]
{parts}"
        ),
    ));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // Hop-by-hop headers (and what `Connection` names) go no further than
    // the gateway; the client's own headers and those an earlier plugin set
    // reach every part.
    let response = raw(
        gw.addr,
        &format!(
            "GET /dash/7 HTTP/1.1\r\nHost: shop.test\r\nConnection: close, x-client-secret\r\n\
             x-client-secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
             Proxy-Authorization: Basic eA==\r\nx-request-id: agg-request-1\r\n\
             traceparent: {traceparent}\r\ntracestate: vendor=1\r\nx-user-id: ann\r\nAccept-Encoding: gzip\r\n\r\n"
        ),
    )
    .await;
    let (head, answer) = raw_answer(&response);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-request-id: agg-request-1"), "{head}");
    for (part, service) in [
        ("profile", &services.users),
        ("orders", &services.orders),
        ("balance", &services.payments),
    ] {
        let seen = &answer[part]["headers"];
        assert_eq!(
            seen["x-request-id"],
            json!(["agg-request-1"]),
            "{part}: {seen}"
        );
        // The client's trace, with the gateway's span as the parent.
        let sent = seen["traceparent"][0].as_str().unwrap_or_default();
        assert_eq!(&sent[..36], &traceparent[..36], "{part}: {seen}");
        assert_ne!(sent, traceparent, "{part}: {seen}");
        assert_eq!(seen["tracestate"], json!(["vendor=1"]), "{part}: {seen}");
        assert_eq!(seen["x-user-id"], json!(["ann"]), "{part}: {seen}");
        assert_eq!(seen["x-tenant"], json!(["acme"]), "{part}: {seen}");
        for gone in [
            "connection",
            "x-client-secret",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(seen.get(gone).is_none(), "{part}: {gone} passed on: {seen}");
        }
        assert_ne!(
            seen["accept-encoding"],
            json!(["gzip"]),
            "{part}: the client's accept-encoding is not passed on: {seen}"
        );
        assert_eq!(
            seen["host"],
            json!([service.addr.to_string()]),
            "{part}: the pool's own host: {seen}"
        );
    }

    // With `pass_headers`, only the headers named; the request id (here the
    // gateway's own) and the trace still go with every call.
    let reply = send(request(
        &gw.url("/narrow/7"),
        &[
            ("x-user-id", "ann"),
            ("x-other", "kept-here"),
            ("traceparent", traceparent),
        ],
    ))
    .await;
    let answer = complete(&reply);
    let id = reply.request_id();
    assert_eq!(id.len(), 36, "a generated id");
    for part in ["profile", "orders", "balance"] {
        let seen = &answer[part]["headers"];
        assert_eq!(seen["x-request-id"], json!([id]), "{part}: {seen}");
        // The client's trace, with the gateway's span as the parent.
        let sent = seen["traceparent"][0].as_str().unwrap_or_default();
        assert_eq!(&sent[..36], &traceparent[..36], "{part}: {seen}");
        assert_ne!(sent, traceparent, "{part}: {seen}");
        assert_eq!(seen["x-user-id"], json!(["ann"]), "{part}: {seen}");
        assert!(seen.get("x-other").is_none(), "{part}: {seen}");
    }
}

#[tokio::test]
async fn a_method_the_route_does_not_aggregate_is_405_with_allow() {
    let plugins = PluginDir::with(&["aggregate"]);
    let services = Services::start().await;
    let gw = Gateway::start(&config(&plugins, "", GRANT, &services.upstreams(), DASH));
    let reply = send(
        Request::post(gw.url("/dash/7"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.error_code(), "method_not_allowed");
    let allow = reply
        .headers
        .get("allow")
        .unwrap_or_else(|| panic!("no Allow: {:?}", reply.headers))
        .to_str()
        .expect("a text header");
    assert!(allow.contains("GET") && !allow.contains("POST"), "{allow}");
    for service in services.all() {
        assert_eq!(service.served(), 0, "{}: nothing was called", service.name);
    }
    complete(&send(request(&gw.url("/dash/7"), &[])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_aggregations_waiting_on_their_parts_hold_up_no_other_request() {
    let plugins = PluginDir::with(&["aggregate"]);
    let services = Services::start().await;
    let plain = Backend::start("plain").await;
    // One gateway thread: a hook that held it while its calls were out would
    // stall every other request for a part's whole second, and the fifty
    // would run one after another (fifty seconds, far past the batch's one).
    // The bounds leave room for the CPU the batch itself needs on a busy
    // machine, and none for a thread held through a part's delay.
    let gw = Gateway::start(&config(
        &plugins,
        "server: { workers: 1 }\n",
        GRANT,
        &format!(
            "{}{}",
            services.upstreams(),
            upstream("plain", &[&plain], "")
        ),
        &format!(
            "{}  - {{ name: plain, match: {{ path_prefix: /plain }}, upstream: plain }}\n",
            DASH.replace("config:\n", "config:\n          timeout: 10s\n")
        ),
    ));
    assert_eq!(send(request(&gw.url("/plain"), &[])).await.status, 200);
    let part_delay = Duration::from_secs(1);
    for service in services.all() {
        service.set_delay(part_delay);
    }

    let started = Instant::now();
    let aggregating: Vec<_> = (0..50)
        .map(|i| {
            let url = gw.url(&format!("/dash/{i}"));
            tokio::spawn(async move { (i, send(request(&url, &[])).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut plain_answers = 0;
    let until = started + Duration::from_secs(20);
    while aggregating.iter().any(|task| !task.is_finished()) && Instant::now() < until {
        let (reply, took) = timed(request(&gw.url("/plain"), &[])).await;
        assert_eq!(reply.status, 200);
        assert!(
            took < part_delay * 6 / 10,
            "a plain request waited {took:?} behind the aggregations"
        );
        plain_answers += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batch = started.elapsed();
    assert!(
        batch < part_delay * 5,
        "fifty aggregations whose parts each take {part_delay:?} took {batch:?}"
    );
    assert!(
        plain_answers >= 3,
        "only {plain_answers} plain requests while the aggregations ran"
    );
    for task in aggregating {
        let (i, reply) = task.await.expect("request task");
        let answer = complete(&reply);
        assert_eq!(answer["profile"]["path"], format!("/users/{i}"));
        assert_eq!(answer["orders"]["path"], format!("/orders/{i}"));
        assert_eq!(answer["balance"]["path"], format!("/balance/{i}"));
    }
    for service in services.all() {
        assert_eq!(service.served(), 50, "{}", service.name);
    }
}

#[tokio::test]
async fn a_part_timeout_shorter_than_the_pools_never_ejects_its_targets() {
    // A client can make parts slow (an expensive query); a part's timeout
    // below the pool's own says nothing about the target's health, so the
    // pool stays up for every route.
    let plugins = PluginDir::with(&["aggregate"]);
    let svc = Backend::start("svc").await;
    svc.set_delay(Duration::from_millis(300));
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:\n  - name: plain\n    match: {{ path_prefix: /plain }}\n    upstream: svc\n  - name: dash\n    match: {{ path: /dash }}\n    upstream: svc\n    plugins:\n      - name: aggregate\n        config: {{ parts: [{{ name: one, pool: svc, path: /one, required: false, timeout: 50ms }}] }}\n",
        plugins.section("  grants: { aggregate: { outbound: { pools: [svc] } } }\n"),
        upstream(
            "svc",
            &[&svc],
            "    passive_health: { max_fails: 2, cooldown: 30s }\n"
        ),
    ));
    for _ in 0..6 {
        let reply = send(request(&gw.url("/dash"), &[])).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["_failed"][0]["reason"], "timed out");
    }
    let plain = send(request(&gw.url("/plain"), &[])).await;
    assert_eq!(plain.status, 200, "the pool's one target is still in");
}
