//! The admin API: what runs (config version, routes, pools with per-target
//! health, plugins), `POST /admin/reload`, and its bearer token.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::{Backend, Gateway, get, send, upstream};

const TOKEN: &str = "a-long-admin-token-for-tests";

fn config(svc: &Backend, admin: &str) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0{admin} }}\nreload: {{ watch: false }}\nupstreams:\n{}routes:\n  - name: users\n    match: {{ path_prefix: /users, methods: [GET] }}\n    upstream: svc\n",
        upstream(
            "svc",
            &[svc],
            "    passive_health: { max_fails: 2, cooldown: 30s }\n"
        )
    )
}

async fn call(method: Method, url: &str, token: Option<&str>) -> crate::support::client::Reply {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request.body(Full::new(Bytes::new())).expect("request")).await
}

#[tokio::test]
async fn the_admin_api_shows_the_config_routes_and_pools_it_runs() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(&svc, ""));
    let running = get(&gw.admin_url("/admin/config")).await.json();
    let text = std::fs::read_to_string(&gw.config_path).expect("config");
    let digest = {
        use sha2::Digest as _;
        sha2::Sha256::digest(text.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(running["version"], digest, "{running}");
    assert_eq!(running["file"], gw.config_path.display().to_string());

    let routes = get(&gw.admin_url("/admin/routes")).await.json();
    let users = &routes["routes"][0];
    assert_eq!(users["name"], "users");
    assert_eq!(users["path"], "/users");
    assert_eq!(users["path_match"], "prefix");
    assert_eq!(users["methods"][0], "GET");
    assert_eq!(users["upstream"], "svc");

    let pools = get(&gw.admin_url("/admin/pools")).await.json();
    let target = &pools["pools"][0]["targets"][0];
    assert_eq!(pools["pools"][0]["name"], "svc");
    assert_eq!(pools["pools"][0]["balance"], "round_robin");
    assert_eq!(target["url"], svc.url());
    assert_eq!(target["available"], true);
    assert_eq!(target["ejected_for_ms"], 0);
    // Two failures in a row eject the target: the pool says so.
    svc.stop();
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/users")).await.status, 502);
    }
    let pools = get(&gw.admin_url("/admin/pools")).await.json();
    let target = &pools["pools"][0]["targets"][0];
    assert_eq!(target["available"], false, "{pools}");
    assert!(
        target["ejected_for_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 20_000),
        "{pools}"
    );
    assert_eq!(target["failures_in_a_row"], 2);
}

#[tokio::test]
async fn post_reload_applies_the_file_or_says_why_not() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(&svc, ""));
    let before = get(&gw.admin_url("/admin/config")).await.json()["version"].clone();
    gw.replace_config(&config(&svc, "").replace("/users", "/people"));
    // No watcher here: nothing changes until asked.
    assert_eq!(get(&gw.url("/people")).await.status, 404);
    let done = call(Method::POST, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.json()["ok"], true);
    assert_eq!(done.json()["trigger"], "POST /admin/reload");
    assert_eq!(get(&gw.url("/people")).await.status, 200);
    let after = get(&gw.admin_url("/admin/config")).await.json()["version"].clone();
    assert_ne!(before, after, "a new version");

    gw.replace_config("routes: [ { name: broken } ]\n");
    let refused = call(Method::POST, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream")),
        "{}",
        refused.json()
    );
    assert_eq!(
        get(&gw.url("/people")).await.status,
        200,
        "still the last good config"
    );

    // A web page (CSRF, DNS rebinding) is refused without a token.
    let page = send(
        Request::post(gw.admin_url("/admin/reload"))
            .header("origin", "https://evil.example")
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(page.status, 403);
    let rebound = send(
        Request::get(gw.admin_url("/admin/pools"))
            .header("host", "rebound.evil.example")
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(rebound.status, 403);
    let wrong = call(Method::GET, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.headers["allow"], "POST");
    let wrong = call(Method::DELETE, &gw.admin_url("/admin/routes"), None).await;
    assert_eq!(wrong.status, 405);
}

#[tokio::test]
async fn with_a_token_every_admin_request_must_bear_it() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_with_env(
        &config(&svc, ", token: \"${ADMIN_TOKEN}\""),
        &[("ADMIN_TOKEN", TOKEN)],
    );
    for path in [
        "/admin/config",
        "/admin/pools",
        "/admin/plugins",
        "/admin/reloads",
    ] {
        let none = call(Method::GET, &gw.admin_url(path), None).await;
        assert_eq!(none.status, 401, "{path}");
        assert!(
            none.headers["www-authenticate"]
                .to_str()
                .is_ok_and(|v| v.starts_with("Bearer"))
        );
        let wrong = call(
            Method::GET,
            &gw.admin_url(path),
            Some("a-long-admin-token-for-test"),
        )
        .await;
        assert_eq!(wrong.status, 401, "{path}");
        let right = call(Method::GET, &gw.admin_url(path), Some(TOKEN)).await;
        assert_eq!(right.status, 200, "{path}");
    }
    // The scheme is case-insensitive, as HTTP's are.
    let lower = send(
        Request::get(gw.admin_url("/admin/config"))
            .header("authorization", format!("bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(lower.status, 200);
    let reload = call(Method::POST, &gw.admin_url("/admin/reload"), None).await;
    assert_eq!(reload.status, 401, "no reload without the token");
    assert_eq!(
        call(Method::POST, &gw.admin_url("/admin/reload"), Some(TOKEN))
            .await
            .status,
        200
    );
}

#[test]
fn a_short_token_is_refused_and_an_open_admin_listener_is_warned_about() {
    let (_dir, path) = crate::support::gateway::write_config(
        "admin: { listen: 127.0.0.1:0, token: short }\nupstreams: { a: { targets: [{ url: \"http://127.0.0.1:1\" }] } }\n",
    );
    let out = std::process::Command::new(crate::support::gateway::binary())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains(":1: admin.token: must be at least 16 characters"),
        "{text}"
    );
    let (_dir, path) = crate::support::gateway::write_config(
        "admin: { listen: 0.0.0.0:0 }\nupstreams: { a: { targets: [{ url: \"http://127.0.0.1:1\" }] } }\n",
    );
    let out = std::process::Command::new(crate::support::gateway::binary())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && text.contains("warning: admin.listen: 0.0.0.0:0 is reachable beyond this machine"),
        "{text}"
    );
}

#[tokio::test]
async fn a_reload_that_changes_the_token_applies_it_at_once() {
    // A leaked token is revoked by editing the config, no restart needed.
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(&svc, &format!(", token: {TOKEN}")));
    let next = "a-new-admin-token-after-the-leak";
    gw.replace_config(&config(&svc, &format!(", token: {next}")));
    let reload = call(Method::POST, &gw.admin_url("/admin/reload"), Some(TOKEN)).await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    let old = call(Method::GET, &gw.admin_url("/admin/config"), Some(TOKEN)).await;
    assert_eq!(old.status, 401, "the old token is refused");
    let new = call(Method::GET, &gw.admin_url("/admin/config"), Some(next)).await;
    assert_eq!(new.status, 200);
    // A config without `admin:` keeps the last token (and the listener).
    gw.replace_config(&config(&svc, &format!(", token: {next}")).replace(
        &format!("admin: {{ listen: 127.0.0.1:0, token: {next} }}\n"),
        "",
    ));
    let reload = call(Method::POST, &gw.admin_url("/admin/reload"), Some(next)).await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    assert!(
        String::from_utf8_lossy(&reload.body).contains("admin removed"),
        "{:?}",
        reload.body
    );
    let open = call(Method::GET, &gw.admin_url("/admin/config"), None).await;
    assert_eq!(open.status, 401, "still closed");
}
