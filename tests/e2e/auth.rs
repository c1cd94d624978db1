//! The shipped auth plugin in front of a real upstream: JWTs checked against
//! key sets the gateway holds (a secret, PEM files, a JWKS file, a JWKS URL
//! served by a test server), API keys, trusted identity headers, and every
//! known token attack refused.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::tokens::{
    JwksServer, SECRET, jwk, jwks, keys_dir, now, sign, sign_with, signing_key,
};
use crate::support::{Backend, Gateway, PluginDir, send, upstream};

fn request(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).expect("request")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Claims that pass the `api` route's policy, plus `extra`.
fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "sub": "ann", "iss": "https://idp.test", "aud": "orders", "exp": now() + 600,
        "scope": "orders:read"
    });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            claims.insert(k.clone(), v.clone());
        }
    }
    claims
}

async fn start(svc: &Backend, extra_sets: &str) -> (PluginDir, Gateway) {
    let plugins = PluginDir::with(&["auth"]);
    let keys = keys_dir();
    let key = |name: &str| keys.join(format!("{name}.pem")).display().to_string();
    let gw = Gateway::start(&format!(
        "server: {{ max_header_bytes: 131072 }}
key_sets:
  hs: {{ algorithms: [HS256, HS384, HS512], secret: \"{SECRET}\" }}
  rsa: {{ algorithms: [RS256, RS384, RS512, PS256, PS384, PS512], pem_files: [\"{rsa}\"] }}
  ec: {{ algorithms: [ES256, ES384], pem_files: [\"{ec256}\", \"{ec384}\"] }}
  ed: {{ algorithms: [EdDSA], pem_files: [\"{ed}\"] }}
{extra_sets}{plugins_section}upstreams:
{svc}routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: svc
    plugins:
      - name: auth
        config:
          jwt:
            key_sets: [hs, rsa, ec, ed]
            issuer: https://idp.test
            audience: [orders, billing]
            leeway_seconds: 30
            required_claims: [exp, sub]
            claims_to_headers: {{ sub: x-user-id }}
          api_keys:
            keys: [{{ consumer: billing-batch, sha256: \"{billing}\" }}]
          realm: orders
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: svc
    plugins:
      - name: auth
        config:
          jwt:
            key_sets: [hs]
            rules: [{{ claim: scope, contains: \"orders:write\" }}]
",
        rsa = key("rsa"),
        ec256 = key("ec256"),
        ec384 = key("ec384"),
        ed = key("ed25519"),
        plugins_section = plugins.section(&format!(
            "  grants: {{ auth: {{ keys: [hs, rsa, ec, ed{}] }} }}\n",
            if extra_sets.is_empty() {
                ""
            } else {
                ", remote"
            }
        )),
        svc = upstream("svc", &[svc], ""),
        billing = sha256_hex("k-billing"),
    ));
    (plugins, gw)
}

#[tokio::test]
async fn every_token_gets_the_status_it_deserves() {
    let svc = Backend::start("svc").await;
    let (_plugins, gw) = start(&svc, "").await;
    let hs = signing_key("hs");
    let rsa_public_pem = std::fs::read(keys_dir().join("rsa.pem")).expect("rsa.pem");
    let b64 = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none"}"#),
        b64(&claims(json!({})).to_string())
    );
    let huge_header = format!(
        "{}.{}.c2ln",
        b64(&format!(
            r#"{{"alg":"HS256","x":"{}"}}"#,
            "a".repeat(48 * 1024)
        )),
        b64(&claims(json!({})).to_string())
    );
    let not_object = {
        let signed = format!("{}.{}", b64(r#"{"alg":"HS256"}"#), b64("[1,2,3]"));
        let signature =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &hs, Algorithm::HS256).expect("sign");
        format!("{signed}.{signature}")
    };
    let mut cases: Vec<(String, String, u16)> = Vec::new();
    for alg in [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        cases.push((format!("valid {alg:?}"), sign(alg, &claims(json!({}))), 200));
    }
    let t = now();
    let more: Vec<(&str, String, u16)> = vec![
        (
            "expired",
            sign(Algorithm::RS256, &claims(json!({ "exp": t - 3600 }))),
            401,
        ),
        (
            "expired inside the leeway",
            sign(Algorithm::RS256, &claims(json!({ "exp": t - 10 }))),
            200,
        ),
        (
            "expired past the leeway",
            sign(Algorithm::RS256, &claims(json!({ "exp": t - 45 }))),
            401,
        ),
        (
            "not yet valid",
            sign(Algorithm::ES256, &claims(json!({ "nbf": t + 3600 }))),
            401,
        ),
        (
            "not yet valid inside the leeway",
            sign(Algorithm::ES256, &claims(json!({ "nbf": t + 10 }))),
            200,
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                &claims(json!({ "iss": "https://evil.test" })),
            ),
            401,
        ),
        (
            "wrong audience",
            sign(Algorithm::HS256, &claims(json!({ "aud": "payroll" }))),
            401,
        ),
        (
            "second audience",
            sign(
                Algorithm::HS256,
                &claims(json!({ "aud": ["x", "billing"] })),
            ),
            200,
        ),
        (
            "no subject",
            sign(
                Algorithm::HS256,
                &json!({ "exp": t + 60, "iss": "https://idp.test", "aud": "orders" }),
            ),
            401,
        ),
        (
            "bad signature",
            sign_with(
                &signing_key("rsa2"),
                Algorithm::RS256,
                Some("rsa"),
                &claims(json!({})),
            ),
            401,
        ),
        ("alg none", none, 401),
        (
            "HS256 signed with the RSA public key",
            sign_with(
                &EncodingKey::from_secret(&rsa_public_pem).expect("key"),
                Algorithm::HS256,
                Some("rsa"),
                &claims(json!({})),
            ),
            401,
        ),
        (
            "unknown kid",
            sign_with(
                &signing_key("rsa"),
                Algorithm::RS256,
                Some("nope"),
                &claims(json!({})),
            ),
            401,
        ),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.e30".into(), 401),
        ("bad base64", "!!!.???.***".into(), 401),
        ("a 64 KiB header", huge_header, 401),
        ("claims that are not an object", not_object, 401),
    ];
    cases.extend(
        more.into_iter()
            .map(|(name, token, status)| (name.to_string(), token, status)),
    );
    let mut failures = Vec::new();
    for (name, token, status) in &cases {
        let reply = send(request(
            &gw.url("/api/orders"),
            &[("authorization", &bearer(token))],
        ))
        .await;
        if reply.status.as_u16() != *status {
            failures.push(format!(
                "{name}: {} (wanted {status}): {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
            continue;
        }
        if *status == 200 {
            assert_eq!(
                reply.upstream_header("x-user-id").as_deref(),
                Some("ann"),
                "{name}"
            );
            assert_eq!(
                reply.upstream_header("authorization"),
                None,
                "{name}: the token is not forwarded"
            );
        } else {
            assert_eq!(reply.error_code(), "invalid_token", "{name}");
            let challenge = reply.headers["www-authenticate"]
                .to_str()
                .unwrap_or_default();
            assert!(
                challenge.starts_with(
                    "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\""
                ),
                "{name}: {challenge}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let log = gw.stderr();
    for (_, token, _) in &cases {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(
            signature.len() < 8 || !log.contains(signature),
            "a token reached the log"
        );
    }
}

#[tokio::test]
async fn api_keys_claim_rules_and_spoofed_identity() {
    let svc = Backend::start("svc").await;
    let (_plugins, gw) = start(&svc, "").await;
    let url = gw.url("/api/orders");

    let ok = send(request(
        &url,
        &[
            ("x-api-key", "k-billing"),
            ("x-consumer", "root"),
            ("x-user-id", "root"),
            ("x_user_id", "root"),
        ],
    ))
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.upstream_header("x_user_id"), None, "in any spelling");
    assert_eq!(
        ok.upstream_header("x-consumer").as_deref(),
        Some("billing-batch")
    );
    assert_eq!(
        ok.upstream_header("x-user-id"),
        None,
        "a spoofed header is removed"
    );
    assert_eq!(
        ok.upstream_header("x-api-key"),
        None,
        "the key is not forwarded"
    );

    let wrong = send(request(&url, &[("x-api-key", "k-guess")])).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_code(), "invalid_api_key");
    assert_eq!(wrong.headers["www-authenticate"], "ApiKey realm=\"orders\"");

    let missing = send(request(&url, &[])).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error_code(), "missing_credentials");
    let challenges: Vec<_> = missing.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(
        challenges,
        ["Bearer realm=\"orders\"", "ApiKey realm=\"orders\""]
    );
    assert_eq!(svc.served(), 1, "only the good key reached the upstream");

    let token = sign(Algorithm::HS256, &claims(json!({ "sub": "bob" })));
    let spoofed = send(request(
        &url,
        &[
            ("authorization", &bearer(&token)),
            ("x-user-id", "admin"),
            ("x-consumer", "admin"),
            ("x_api_key", "unchecked"),
        ],
    ))
    .await;
    assert_eq!(spoofed.status, 200);
    let seen = &spoofed.json()["headers"];
    assert_eq!(
        seen["x_api_key"],
        Value::Null,
        "no unchecked credential goes on"
    );
    assert_eq!(
        seen["x-user-id"],
        json!(["bob"]),
        "only the verified subject"
    );
    assert_eq!(seen["x-consumer"], json!(["bob"]));

    let admin = gw.url("/admin/users");
    let reader = send(request(&admin, &[("authorization", &bearer(&token))])).await;
    assert_eq!(reader.status, 403);
    assert_eq!(reader.error_code(), "insufficient_scope");
    let challenge = reader.headers["www-authenticate"]
        .to_str()
        .unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let writer = sign(
        Algorithm::HS256,
        &claims(json!({ "scope": "orders:read orders:write" })),
    );
    let allowed = send(request(&admin, &[("authorization", &bearer(&writer))])).await;
    assert_eq!(allowed.status, 200);
}

/// A gateway whose every path needs a token checked with key set `name`,
/// defined by `set` (a YAML flow mapping); `pools` adds upstreams.
fn guarded(plugins: &PluginDir, svc: &Backend, name: &str, set: &str, pools: &str) -> Gateway {
    Gateway::start(&format!(
        "key_sets:
  {name}: {set}
{plugins}upstreams:
{pools}{svc}routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: svc
    plugins: [{{ name: auth, config: {{ jwt: {{ key_sets: [{name}] }} }} }}]
",
        plugins = plugins.section(&format!("  grants: {{ auth: {{ keys: [{name}] }} }}\n")),
        svc = upstream("svc", &[svc], ""),
    ))
}

/// A token for `ann`, valid for ten minutes, signed with test key `key`
/// under `alg` and naming `kid`.
fn ann(key: &str, alg: Algorithm, kid: &str) -> String {
    sign_with(
        &signing_key(key),
        alg,
        Some(kid),
        &json!({ "sub": "ann", "exp": now() + 600 }),
    )
}

/// Polls `url` with `token` until it answers `status` or 10 s pass.
async fn eventually(url: &str, token: &str, status: u16) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let reply = send(request(url, &[("authorization", &bearer(token))])).await;
        if reply.status.as_u16() == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_fetched_jwks_picks_up_new_keys_survives_its_server_going_down_and_is_not_flooded() {
    let idp = JwksServer::start(jwks(vec![jwk("rsa", Algorithm::RS256, "k1")])).await;
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["auth"]);
    let set = format!(
        "{{ algorithms: [RS256, ES256], jwks_url: \"{}\", min_refresh_interval: 1s }}",
        idp.url()
    );
    let gw = guarded(&plugins, &svc, "remote", &set, "");
    let url = gw.url("/orders");
    let old = ann("rsa", Algorithm::RS256, "k1");
    assert!(eventually(&url, &old, 200).await, "the first fetch serves");

    // The issuer adds a key: a token naming it is refused until the set is
    // fetched again, which that very token asks for.
    let new = ann("ec256", Algorithm::ES256, "k2");
    let first = send(request(&url, &[("authorization", &bearer(&new))])).await;
    assert_eq!(first.status, 401);
    idp.publish(jwks(vec![
        jwk("rsa", Algorithm::RS256, "k1"),
        jwk("ec256", Algorithm::ES256, "k2"),
    ]));
    assert!(
        eventually(&url, &new, 200).await,
        "the new key is picked up without restart"
    );
    let changed = gw.log_with(&["key set changed", "added=k2"]).await;
    assert!(!changed.contains("BEGIN"), "no key material in the log");

    // A flood of unknown kids fetches at most once per min_refresh_interval.
    let before = idp.fetches();
    let started = Instant::now();
    for i in 0..300 {
        let forged = ann("rsa", Algorithm::RS256, &format!("forged-{i}"));
        let reply = send(request(&url, &[("authorization", &bearer(&forged))])).await;
        assert_eq!(reply.status, 401);
    }
    let seconds = started.elapsed().as_secs_f64();
    let fetched = idp.fetches() - before;
    assert!(
        fetched as f64 <= seconds.ceil() + 2.0,
        "{fetched} fetches in {seconds:.1}s with min_refresh_interval 1s"
    );

    // An empty answer is a broken one, not a rotation to no keys at all.
    idp.publish(jwks(vec![]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let nudge = ann("rsa", Algorithm::RS256, "k8");
    let _ = send(request(&url, &[("authorization", &bearer(&nudge))])).await;
    gw.log_with(&["JWKS fetch failed", "no signing key"]).await;
    assert_eq!(
        send(request(&url, &[("authorization", &bearer(&old))]))
            .await
            .status,
        200
    );
    let fetched = idp.fetches() - before;

    // The issuer goes down: the keys already fetched keep serving.
    idp.set_up(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let unknown = ann("rsa", Algorithm::RS256, "k9");
    let _ = send(request(&url, &[("authorization", &bearer(&unknown))])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(idp.fetches() > before + fetched, "it tried again");
    let still = send(request(&url, &[("authorization", &bearer(&old))])).await;
    assert_eq!(still.status, 200, "the last good set serves");
    gw.log_with(&["JWKS fetch failed", "keys_in_use=2"]).await;
}

#[tokio::test]
async fn a_jwks_url_over_https_is_trusted_by_its_ca_file_only() {
    let idp = JwksServer::start_https(jwks(vec![jwk("ec256", Algorithm::ES256, "k1")])).await;
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["auth"]);
    let ca = keys_dir().join("tls-ca.pem");
    let gw = Gateway::start(&format!(
        "key_sets:
  trusted: {{ algorithms: [ES256], jwks_url: \"{url}\", ca_file: \"{ca}\" }}
  web: {{ algorithms: [ES256], jwks_url: \"{url}\", min_refresh_interval: 1s }}
{plugins}upstreams:
{svc}routes:
  - name: trusted
    match: {{ path_prefix: /trusted }}
    upstream: svc
    plugins: [{{ name: auth, config: {{ jwt: {{ key_sets: [trusted] }} }} }}]
  - name: web
    match: {{ path_prefix: /web }}
    upstream: svc
    plugins: [{{ name: auth, config: {{ jwt: {{ key_sets: [web] }} }} }}]
",
        url = idp.url(),
        ca = ca.display(),
        plugins = plugins.section("  grants: { auth: { keys: [trusted, web] } }\n"),
        svc = upstream("svc", &[&svc], ""),
    ));
    assert!(idp.url().starts_with("https://"));
    let token = ann("ec256", Algorithm::ES256, "k1");
    assert!(
        eventually(&gw.url("/trusted"), &token, 200).await,
        "fetched over HTTPS"
    );
    // The test CA is not one of the web's: the same server is not trusted.
    let refused = gw.log_with(&["JWKS fetch failed", "key_set=web"]).await;
    assert!(refused.contains("certificate"), "{refused}");
    let reply = send(request(
        &gw.url("/web"),
        &[("authorization", &bearer(&token))],
    ))
    .await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn tokens_come_from_cookies_or_the_query_and_the_identity_reaches_later_plugins() {
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["auth", "probe"]);
    let gw = Gateway::start(&format!(
        "key_sets:
  hs: {{ algorithms: [HS256], secret: \"{SECRET}\" }}
{plugins}upstreams:
{svc}routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: svc
    plugins:
      - name: auth
        config:
          jwt:
            key_sets: [hs]
            from: [{{ cookie: session }}, {{ query: access_token }}]
            claims_to_context: [scope]
      - {{ name: probe, config: {{ recall: consumer }} }}
      - {{ name: probe, config: {{ recall: claims.scope }} }}
      - {{ name: probe, config: {{ recall: auth }} }}
",
        plugins = plugins.section("  grants: { auth: { keys: [hs] } }\n"),
        svc = upstream("svc", &[&svc], ""),
    ));
    let token = sign(
        Algorithm::HS256,
        &json!({ "sub": "ann", "exp": now() + 600, "scope": "a b" }),
    );

    let by_cookie = send(request(
        &gw.url("/x"),
        &[("cookie", &format!("theme=dark; session={token}"))],
    ))
    .await;
    assert_eq!(by_cookie.status, 200);
    assert_eq!(
        by_cookie.upstream_header("x-recalled-consumer").as_deref(),
        Some("ann")
    );
    assert_eq!(
        by_cookie
            .upstream_header("x-recalled-claims.scope")
            .as_deref(),
        Some("a b")
    );
    assert_eq!(
        by_cookie.upstream_header("x-recalled-auth").as_deref(),
        Some("jwt")
    );

    let by_query = send(request(
        &gw.url(&format!("/x?page=2&access_token={token}")),
        &[],
    ))
    .await;
    assert_eq!(by_query.status, 200);
    assert_eq!(
        by_query.json()["uri"],
        "/x?page=2",
        "the token is not forwarded"
    );

    let bearer_only = send(request(
        &gw.url("/x"),
        &[("authorization", &bearer(&token))],
    ))
    .await;
    assert_eq!(bearer_only.status, 401, "only the configured sources count");

    // A second copy an upstream would read is refused, however it is spelt.
    let forged = sign(
        Algorithm::HS256,
        &json!({ "sub": "root", "exp": now() + 600 }),
    );
    for (url, cookie) in [
        (
            format!("/x?access_token={token};access_token={forged}"),
            String::new(),
        ),
        (
            format!("/x?access_token={token}&access.token={forged}"),
            String::new(),
        ),
        (
            "/x".to_string(),
            format!("session={token}; session ={forged}"),
        ),
    ] {
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("cookie", cookie.as_str())]
        };
        let reply = send(request(&gw.url(&url), &headers)).await;
        assert_eq!(reply.status, 401, "{url} {cookie}");
    }
}

#[tokio::test]
async fn a_jwks_can_come_from_an_upstream_pool() {
    let idp = JwksServer::start(jwks(vec![jwk("ed25519", Algorithm::EdDSA, "k1")])).await;
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["auth"]);
    let pool = format!(
        "  idp:\n    targets: [{{ url: \"http://{}\" }}]\n",
        idp.addr
    );
    let set =
        "{ algorithms: [EdDSA], jwks_upstream: { upstream: idp, path: /.well-known/jwks.json } }";
    let gw = guarded(&plugins, &svc, "pooled", set, &pool);
    let token = ann("ed25519", Algorithm::EdDSA, "k1");
    assert!(
        eventually(&gw.url("/"), &token, 200).await,
        "fetched through the pool"
    );
    assert!(idp.fetches() >= 1);
}

#[tokio::test]
async fn a_jwks_file_is_read_again_when_it_changes() {
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["auth"]);
    let folder = tempfile::tempdir().expect("temp dir");
    let file = folder.path().join("jwks.json");
    std::fs::write(&file, jwks(vec![jwk("ed25519", Algorithm::EdDSA, "a")])).expect("write");
    let set = format!(
        "{{ algorithms: [EdDSA, RS256], jwks_file: \"{}\" }}",
        file.display()
    );
    let gw = guarded(&plugins, &svc, "local", &set, "");
    let url = gw.url("/");
    let a = ann("ed25519", Algorithm::EdDSA, "a");
    let b = ann("rsa", Algorithm::RS256, "b");
    assert!(eventually(&url, &a, 200).await);
    assert_eq!(
        send(request(&url, &[("authorization", &bearer(&b))]))
            .await
            .status,
        401
    );

    // Written whole elsewhere and renamed in, as deploy tools do.
    let staged = folder.path().join("jwks.json.new");
    std::fs::write(&staged, jwks(vec![jwk("rsa", Algorithm::RS256, "b")])).expect("write");
    std::fs::rename(&staged, &file).expect("rename");
    assert!(
        eventually(&url, &b, 200).await,
        "the new file's key verifies"
    );
    assert!(
        eventually(&url, &a, 401).await,
        "the removed key no longer does"
    );

    // A broken file keeps the keys in use.
    std::fs::write(&file, "{ not json").expect("write");
    gw.log_with(&["key file unreadable"]).await;
    assert_eq!(
        send(request(&url, &[("authorization", &bearer(&b))]))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn key_sets_are_granted_and_checked_at_load() {
    let plugins = PluginDir::with(&["auth"]);
    let route = "upstreams:\n  svc:\n    targets: [{ url: \"http://127.0.0.1:9\" }]\nroutes:\n  - name: api\n    upstream: svc\n    plugins: [{ name: auth, config: { jwt: { key_sets: [hs] } } }]\n";
    let hs = format!("key_sets:\n  hs: {{ algorithms: [HS256], secret: \"{SECRET}\" }}\n");
    let set = |lines: &str| format!("key_sets:\n  hs:\n{lines}");
    let granted = "  grants: { auth: { keys: [hs] } }\n";
    // (key sets, grants, valid?, what `gateway validate` must say)
    let cases = [
        (
            hs.clone(),
            "",
            false,
            "imports gateway:plugin/keys, which it is not granted; grant it under plugins.grants.auth.keys",
        ),
        (
            hs.clone(),
            "  grants: { auth: { keys: [hs, partners] } }\n",
            false,
            "plugins.grants.auth.keys: no key set named \"partners\"; key_sets has: hs",
        ),
        (
            set("    algorithms: [RS256, HS256]\n    pem_files: [\"/nonexistent.pem\"]\n"),
            granted,
            false,
            "FILE:3: key_sets.hs.algorithms[1]: HS256: HMAC algorithms need a `secret`",
        ),
        (
            set("    algorithms: [RS256]\n    jwks_url: http://127.0.0.1:9/jwks.json\n"),
            granted,
            true,
            "key_sets.hs.jwks_url: keys are fetched over plain HTTP",
        ),
        (
            set("    algorithms: [HS256]\n    secret: short\n"),
            granted,
            false,
            "key_sets.hs.secret: an HMAC secret for these algorithms must be at least 32 bytes",
        ),
        (
            set("    algorithms: [RS256]\n    pem_files: [\"/nonexistent/key.pem\"]\n"),
            granted,
            false,
            "key_sets.hs.pem_files: cannot read /nonexistent/key.pem",
        ),
        (
            format!("{hs}  other: {{ algorithms: [HS256], secret: \"{SECRET}\" }}\n"),
            "  grants: { auth: { keys: [other] } }\n",
            false,
            "jwt.key_sets[0]: key set \"hs\" is not granted to this plugin",
        ),
    ];
    for (sets, grants, valid, says) in cases {
        let (ok, text) = plugins.validate(&format!("{sets}{}{route}", plugins.section(grants)));
        assert_eq!(ok, valid, "{text}");
        // A set that failed to load has its own error, not a second one about its grant.
        assert!(!text.contains("no key set named \"hs\""), "{text}");
        assert!(text.contains(says), "wanted {says:?} in:\n{text}");
    }
}
