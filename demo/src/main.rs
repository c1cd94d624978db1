//! The demo: the gateway in front of small users, orders and payments services.
//!
//! `cargo run --release -p demo` builds the plugins (into `plugins/dist`),
//! makes a certificate for localhost (into `target/demo-tls`) and serves
//! `config/demo.yaml` on 127.0.0.1:8080 and https://localhost:8443 until Ctrl-C. `--smoke` runs the same on free ports, checks a few requests
//! and exits; the test suite runs it so the demo cannot rot.

mod services;
mod tls;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use services::Service;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.yaml");

/// The web app `config/demo.yaml` lets call its API from a browser.
const APP: &str = "https://app.example.com";

/// (service, instance name, port in demo.yaml)
const INSTANCES: [(Service, &str, u16); 5] = [
    (Service::Users, "users-1", 9001),
    (Service::Users, "users-2", 9002),
    (Service::Orders, "orders-1", 9003),
    (Service::Orders, "orders-2", 9004),
    (Service::Payments, "payments-1", 9005),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    tracing_subscriber::fmt()
        .with_env_filter(if smoke { "warn" } else { "info" })
        .init();
    let shipped = ["transform", "cors", "auth", "rate-limit", "aggregate"];
    let built = build_plugins::build(&shipped).map_err(anyhow::Error::msg)?;
    let dist = build_plugins::workspace_root().join("plugins/dist");
    build_plugins::install(&built, &dist, &shipped).map_err(anyhow::Error::msg)?;
    let mut text = std::fs::read_to_string(CONFIG).with_context(|| format!("reading {CONFIG}"))?;
    for (service, instance, port) in INSTANCES {
        let wanted: SocketAddr = ([127, 0, 0, 1], if smoke { 0 } else { port }).into();
        let bound = services::spawn(service, instance, wanted)
            .await
            .with_context(|| format!("starting {instance} on {wanted}"))?;
        // Smoke runs use free ports so they never collide with anything.
        text = text.replace(&format!("127.0.0.1:{port}"), &bound.to_string());
    }
    if smoke {
        text = text
            .replace("address: 127.0.0.1:8080", "address: 127.0.0.1:0")
            .replace("address: 127.0.0.1:8443", "address: 127.0.0.1:0")
            .replace("listen: 127.0.0.1:9901", "listen: 127.0.0.1:0");
    }
    let tls_dir = build_plugins::workspace_root().join("target/demo-tls");
    let ca = tls::make_certificates(&tls_dir)?;
    // A fresh secret for key set "demo" at each start, and tokens signed with it.
    let secret = fresh_secret()?;
    let env = |name: &str| match name {
        "DEMO_JWT_SECRET" => Some(secret.clone()),
        _ => std::env::var(name).ok(),
    };
    let config = gateway::config::from_text(&text, Path::new(CONFIG), &env)?;
    let alice = demo_token(&secret, "alice")?;
    let gw = gateway::Gateway::start(&config).await?;
    let listeners = gateway::bind(&gw, &config)?;
    let addr = listeners[0].listener.local_addr()?;
    let https = listeners[1].listener.local_addr()?;
    let admin = match &config.admin {
        Some(admin) => {
            let listener = tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin.listen)", admin.listen))?;
            let bound = listener.local_addr()?;
            tokio::spawn(gateway::admin::serve(
                listener,
                gw.clone(),
                std::future::pending(),
            ));
            Some(bound)
        }
        None => None,
    };

    if smoke {
        tokio::spawn(async move {
            gateway::serve(listeners, gw, &config.server, std::future::pending()).await;
        });
        smoke_test(addr, &alice, &demo_token(&secret, "bob")?).await?;
        tls::smoke_test(https, &ca, &alice).await?;
        let admin = admin.context("config/demo.yaml has an admin listener")?;
        metrics_counted(admin).await?;
        println!("demo smoke test ok: 20 requests checked, plugins, HTTPS and metrics included");
        return Ok(());
    }
    println!(
        "gateway listening on http://{addr} and https://localhost:{}",
        https.port()
    );
    println!("The API routes need a token (valid for an hour, signed for this run) or an API key:");
    println!("  TOKEN={alice}");
    println!("try:");
    println!(
        "  curl -si -H \"authorization: Bearer $TOKEN\" http://{addr}/api/users   # x-served-by: gateway (transform plugin)"
    );
    println!(
        "  curl -si http://{addr}/api/users          # 401 and WWW-Authenticate: no token (auth plugin)"
    );
    println!(
        "  curl -s -H \"authorization: Bearer $TOKEN\" -H 'x-user-id: mallory' http://{addr}/api/orders   # the upstream sees x-user-id: alice"
    );
    println!(
        "  curl -s -H 'x-api-key: demo-api-key' http://{addr}/api/users/7   # the batch job's API key"
    );
    println!(
        "  curl -si -H \"authorization: Bearer $TOKEN\" -H 'origin: {APP}' http://{addr}/api/users   # access-control-allow-origin (cors plugin)"
    );
    println!(
        "  curl -si -X OPTIONS -H 'origin: {APP}' -H 'access-control-request-method: POST' http://{addr}/api/payments   # 204 preflight"
    );
    println!(
        "  curl -s -H \"authorization: Bearer $TOKEN\" -X POST -d '{{\"amount\": 10}}' http://{addr}/api/payments"
    );
    println!(
        "  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' -H \"authorization: Bearer $TOKEN\" -X POST -d '{{}}' http://{addr}/api/payments; done   # 202 202 202 429 (rate-limit plugin, 3 a minute per user)"
    );
    println!(
        "  curl -s -H \"authorization: Bearer $TOKEN\" http://{addr}/api/dashboard   # profile, orders and balance in one answer (aggregate plugin)"
    );
    println!("  curl -s http://{addr}/nowhere        # the gateway's JSON 404");
    if let Some(admin) = admin {
        println!(
            "  curl -s http://{admin}/metrics | grep gateway_requests_total   # Prometheus metrics (admin API)"
        );
    }
    println!(
        "  curl -s --cacert target/demo-tls/ca.pem -H \"authorization: Bearer $TOKEN\" https://localhost:{}/api/users   # over HTTPS (HTTP/2 where curl has it)",
        https.port()
    );
    println!("Ctrl-C stops it (in-flight requests finish first).");
    gateway::serve(listeners, gw, &config.server, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// 32 random bytes from the OS, as hex: the demo key set's secret.
fn fresh_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom for the demo's secret")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A token for `subject` from the demo's "identity provider", valid for an hour.
fn demo_token(secret: &str, subject: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = serde_json::json!({ "sub": subject, "iss": "demo-idp", "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// Requests the README suggests, with what each must answer.
async fn smoke_test(addr: SocketAddr, alice: &str, bob: &str) -> anyhow::Result<()> {
    let as_alice = format!("Bearer {alice}");
    let auth = [("authorization", as_alice.as_str())];
    let (status, body, _) = call(addr, "GET", "/api/users", &auth, "").await?;
    ensure!(
        status == 200 && body["service"] == "users",
        "GET /api/users: {status} {body}"
    );

    let (status, body, headers) = call(addr, "GET", "/api/users", &[], "").await?;
    ensure!(
        status == 401
            && body["error"]["code"] == "missing_credentials"
            && headers
                .get("www-authenticate")
                .is_some_and(|v| v == "Bearer realm=\"demo\""),
        "GET /api/users without a token: {status} {body} {headers:?}"
    );

    let (status, body, _) = call(
        addr,
        "GET",
        "/api/users/7",
        &[("x-api-key", "demo-api-key")],
        "",
    )
    .await?;
    ensure!(
        status == 200 && body["data"]["id"] == "7",
        "GET /api/users/7 with the API key: {status} {body}"
    );

    let mut instances = Vec::new();
    for _ in 0..3 {
        let (_, body, _) = call(addr, "GET", "/api/users", &auth, "").await?;
        instances.push(body["instance"].as_str().unwrap_or_default().to_string());
    }
    instances.sort();
    ensure!(
        instances == ["users-1", "users-1", "users-2"],
        "weights 2:1 over three requests: {instances:?}"
    );

    // The orders pool hashes on x-user-id, which only the token can set.
    let forged = [
        ("authorization", as_alice.as_str()),
        ("x-user-id", "mallory"),
    ];
    let (_, first, _) = call(addr, "GET", "/api/orders", &forged, "").await?;
    let (_, second, _) = call(addr, "GET", "/api/orders", &auth, "").await?;
    ensure!(
        first["instance"] == second["instance"] && first["data"]["user"] == "alice",
        "alice sticks to one orders instance, whatever x-user-id she sends: {first} {second}"
    );
    let as_bob = format!("Bearer {bob}");
    let (_, other, _) = call(
        addr,
        "GET",
        "/api/orders",
        &[("authorization", &as_bob)],
        "",
    )
    .await?;
    ensure!(other["data"]["user"] == "bob", "bob is bob: {other}");

    let (status, body, _) = call(addr, "POST", "/api/payments", &auth, "{\"amount\": 10}").await?;
    ensure!(
        status == 202 && body["data"]["payment"]["amount"] == 10,
        "POST /api/payments: {status} {body}"
    );

    // Payments are limited to three a minute per user: bob has his own
    // budget, and the fourth is refused before reaching the service.
    let bob_auth = [("authorization", as_bob.as_str())];
    for left in ["2", "1", "0"] {
        let (status, _, headers) = call(addr, "POST", "/api/payments", &bob_auth, "{}").await?;
        ensure!(
            status == 202
                && headers
                    .get("ratelimit-remaining")
                    .is_some_and(|v| v == left),
            "POST /api/payments as bob, {left} left: {status} {headers:?}"
        );
    }
    let (status, body, headers) = call(addr, "POST", "/api/payments", &bob_auth, "{}").await?;
    ensure!(
        status == 429
            && body["error"]["code"] == "rate_limited"
            && headers.contains_key("retry-after"),
        "bob's fourth payment in a minute: {status} {body} {headers:?}"
    );

    // One call, three services: alice's profile, orders and balance.
    let (status, body, _) = call(addr, "GET", "/api/dashboard", &auth, "").await?;
    ensure!(
        status == 200
            && body["profile"]["id"] == "alice"
            && body["orders"][0]["id"] == 7
            && body["balance"]["balance"] == 120.5,
        "GET /api/dashboard: {status} {body}"
    );

    let (status, body, _) = call(addr, "GET", "/nowhere", &[], "").await?;
    if status != 404 || body["error"]["code"] != "route_not_found" {
        bail!("GET /nowhere: {status} {body}");
    }

    let from_app = [("origin", APP), ("authorization", as_alice.as_str())];
    let (status, _, headers) = call(addr, "GET", "/api/users", &from_app, "").await?;
    ensure!(
        status == 200
            && headers
                .get("access-control-allow-origin")
                .is_some_and(|v| v == APP),
        "GET /api/users from {APP}: {status} {headers:?}"
    );
    let preflight = [("origin", APP), ("access-control-request-method", "POST")];
    let (status, _, headers) = call(addr, "OPTIONS", "/api/payments", &preflight, "").await?;
    ensure!(
        status == 204
            && headers
                .get("access-control-allow-methods")
                .is_some_and(|v| v == "POST"),
        "preflight for POST /api/payments: {status} {headers:?}"
    );
    Ok(())
}

/// The admin API's `/metrics` counted the smoke test's requests.
async fn metrics_counted(admin: SocketAddr) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{admin}/metrics").parse()?)
        .await?;
    let status = response.status();
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    let users = "gateway_requests_total{route=\"users\",method=\"GET\",class=\"2xx\"}";
    ensure!(
        status == 200 && text.contains(users),
        "GET /metrics: {status}, no {users} in:\n{text}"
    );
    Ok(())
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> anyhow::Result<(u16, serde_json::Value, hyper::HeaderMap)> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request.body(Full::new(Bytes::from_static(body.as_bytes())))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await?.to_bytes();
    // A preflight's 204 has no body.
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, json, headers))
}
