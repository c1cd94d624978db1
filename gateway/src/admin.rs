//! The admin listener, JSON in and out (and Prometheus metrics at
//! `/metrics`): what runs (`/admin/config`,
//! `/admin/routes`, `/admin/pools`, `/admin/plugins`, `/admin/state`), what
//! reloads did (`/admin/reloads`), and `POST /admin/reload`. With
//! `admin.token`, every request needs `Authorization: Bearer TOKEN`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::connection::first_bytes_within;
use crate::reloads::ReloadRecord;
use crate::server::Gateway;

/// An admin client must send its first bytes, and each request head,
/// within this time.
const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Admin connections open at once; more wait in the backlog.
const ADMIN_CONNECTIONS: usize = 64;

/// Longest an admin connection stays open (a reload waits at most 60 s).
const ADMIN_CONNECTION_LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

/// How long `POST /admin/reload` waits for the reload it asked for.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the admin API on `listener` until `shutdown` resolves; with a
/// `token`, only to requests that bear it.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        let (slot, stream, _) = tokio::select! {
            accepted = crate::server::accept(&listener, &slots) => accepted,
            () = &mut shutdown => return,
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if !first_bytes_within(&stream, ADMIN_HEADER_TIMEOUT).await {
                return;
            }
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move {
                    // Read per request: a reload may have changed it.
                    let token = gateway.admin_token();
                    // Without a token, nothing stops a web page the operator
                    // opens from calling a loopback port: refuse browsers.
                    let answer = if token.is_none() && from_a_browser(&request) {
                        from_a_web_page()
                    } else if bearer_ok(&request, token.as_deref()) {
                        answer(&gateway, &request).await
                    } else {
                        unauthorized()
                    };
                    Ok::<_, Infallible>(answer)
                }
            });
            // HTTP/1 only: the admin API has no use for HTTP/2's long-lived
            // connections, nor their limits to tune.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT);
            // A client that stops reading an answer holds a slot no longer.
            let serving = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(ADMIN_CONNECTION_LIMIT, serving).await;
        });
    }
}

/// Whether `request` bears the admin token (always, when none is set);
/// compared in constant time.
fn bearer_ok<B>(request: &Request<B>, token: Option<&str>) -> bool {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let Some(token) = token else { return true };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, credentials)| credentials.trim());
    // Digests compared in constant time: neither the token's bytes nor its
    // length show in how long a refusal takes.
    let given = sha2::Sha256::digest(given.as_bytes());
    let expected = sha2::Sha256::digest(token.as_bytes());
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &error(
            401,
            "unauthorized",
            "the admin API needs `Authorization: Bearer TOKEN` (admin.token)",
        ),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"gateway admin\""),
    );
    response
}

/// Whether `request` comes from a web page rather than a tool: a browser
/// sends `Origin` (or `Sec-Fetch-Site`) with cross-site requests, and a page
/// reaching a loopback port through DNS rebinding names its own host. The
/// admin API answers neither (CSRF on `POST /admin/reload`, reads of pools).
fn from_a_browser<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    if headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|site| site != "same-origin" && site != "none")
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    !(name.is_empty() || name == "localhost" || name.parse::<std::net::IpAddr>().is_ok())
}

fn from_a_web_page() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::FORBIDDEN,
        &error(
            403,
            "forbidden",
            "without admin.token the admin API answers tools (curl, scripts), not web pages: no Origin header, and a Host that is an IP address or localhost",
        ),
    )
}

async fn answer(gateway: &Gateway, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::POST, "/admin/reload") => return reload(gateway).await,
        (_, "/admin/reload") => return not_allowed("POST"),
        (&Method::GET, _) => {}
        _ => return not_allowed("GET"),
    }
    match path {
        "/metrics" => metrics(gateway),
        "/admin/config" => json_response(StatusCode::OK, &config(gateway)),
        "/admin/routes" => json_response(StatusCode::OK, &routes(gateway)),
        "/admin/pools" => json_response(StatusCode::OK, &pools(gateway)),
        "/admin/plugins" => json_response(StatusCode::OK, &plugins(gateway)),
        "/admin/reloads" => json_response(StatusCode::OK, &reloads(gateway)),
        "/admin/state" => json_response(StatusCode::OK, &state(gateway)),
        path => json_response(
            StatusCode::NOT_FOUND,
            &error(
                404,
                "not_found",
                &format!(
                    "no admin endpoint {path}; try /metrics, /admin/config, /admin/routes, /admin/pools, /admin/plugins, /admin/reloads, /admin/state, or POST /admin/reload"
                ),
            ),
        ),
    }
}

fn not_allowed(allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &error(405, "method_not_allowed", &format!("use {allowed} here")),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    response
}

/// Reloads now (as SIGHUP would) and answers with the attempt's record:
/// 200 when it loaded, 422 with the errors when it did not.
async fn reload(gateway: &Gateway) -> Response<Full<Bytes>> {
    let Some(answer) = gateway.reloads.request() else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &error(
                503,
                "reload_unavailable",
                "this gateway has no reloader running",
            ),
        );
    };
    match tokio::time::timeout(RELOAD_WAIT, answer).await {
        Ok(Ok(done)) => {
            let status = if done.ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json_response(status, &record(&done))
        }
        _ => json_response(
            StatusCode::GATEWAY_TIMEOUT,
            &error(
                504,
                "reload_pending",
                "the reload did not finish within 60s; see GET /admin/reloads",
            ),
        ),
    }
}

/// Prometheus metrics, in its text format.
fn metrics(gateway: &Gateway) -> Response<Full<Bytes>> {
    let snapshot = gateway.snapshot();
    let pools: Vec<_> = snapshot.upstreams().iter().map(|u| u.state()).collect();
    let text = crate::metrics::metrics().exposition(&pools);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// The running config: its file, version (a digest of its text) and when
/// it was loaded.
fn config(gateway: &Gateway) -> Value {
    let snapshot = gateway.snapshot();
    let (_, attempts) = gateway.reloads.recent();
    json!({
        "file": snapshot.source.file.display().to_string(),
        "version": snapshot.source.version,
        "loaded_at": rfc3339(snapshot.source.loaded_at),
        "reload_attempts": attempts,
        "warnings": snapshot.warnings,
    })
}

/// Each route in match order: what it matches, where it sends, its plugins.
fn routes(gateway: &Gateway) -> Value {
    let snapshot = gateway.snapshot();
    let list: Vec<Value> = snapshot
        .router
        .routes()
        .map(|route| {
            let (kind, path) = match &route.path {
                crate::routing::PathMatch::Any => ("any", None),
                crate::routing::PathMatch::Exact(p) => ("exact", Some(p.as_str())),
                crate::routing::PathMatch::Prefix(p) => ("prefix", Some(p.as_str())),
            };
            json!({
                "name": route.name,
                "host": route.host.as_ref().map(ToString::to_string),
                "path": path,
                "path_match": kind,
                "methods": route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "headers": route.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
                "priority": route.priority,
                "upstream": snapshot.upstream(route.upstream).map(|u| u.name.to_string()).ok(),
                "plugins": route.plugins.plugin_names(),
            })
        })
        .collect();
    json!({ "routes": list })
}

/// Each pool: its balancing and, per target, health, ejection and load.
fn pools(gateway: &Gateway) -> Value {
    let snapshot = gateway.snapshot();
    let now = crate::balance::health::now_ms();
    let list: Vec<Value> = snapshot
        .upstreams()
        .iter()
        .map(|upstream| {
            let targets: Vec<Value> = upstream
                .pool
                .targets()
                .iter()
                .enumerate()
                .map(|(i, target)| {
                    let ejected_for = target.health.ejected_for(now);
                    let (failures, server_errors) = target.health.in_a_row();
                    json!({
                        "url": upstream.target_url(i),
                        "weight": target.weight,
                        "available": target.health.is_available(now),
                        "active_health": if upstream.health_check.is_some() {
                            Value::from(if target.health.is_active_up() { "up" } else { "down" })
                        } else {
                            Value::Null
                        },
                        "circuit": target.health.circuit(now).name(),
                        "ejected_for_ms": ejected_for.as_millis() as u64,
                        "failures_in_a_row": failures,
                        "5xx_in_a_row": server_errors,
                        "in_flight": target.in_flight(),
                    })
                })
                .collect();
            json!({
                "name": &*upstream.name,
                "balance": upstream.pool.algorithm_name(),
                "targets": targets,
            })
        })
        .collect();
    json!({ "pools": list })
}

/// Each plugin in use: name, file, sha256, when it was loaded, and the
/// result of the last reload attempt.
fn plugins(gateway: &Gateway) -> Value {
    let snapshot = gateway.snapshot();
    let (records, _) = gateway.reloads.recent();
    let last = records.first().map(record);
    let list: Vec<Value> = snapshot
        .plugins
        .iter()
        .map(|(name, in_use)| {
            json!({
                "name": name,
                "file": in_use.loaded.path.display().to_string(),
                "file_present": in_use.file_present,
                "sha256": in_use.loaded.sha256,
                "loaded_at": rfc3339(in_use.loaded.loaded_at),
                "routes": in_use.routes,
                "grants": in_use.granted.keys(),
                // Hooks the plugin turned out not to have are skipped.
                "request_hook": in_use.loaded.request_hook.load(std::sync::atomic::Ordering::Relaxed),
                "response_hook": in_use.loaded.response_hook.load(std::sync::atomic::Ordering::Relaxed),
                "last_reload": last,
            })
        })
        .collect();
    json!({ "plugins": list, "warnings": snapshot.warnings })
}

/// The shared counters' store: backend, decisions, refusals, failures.
fn state(gateway: &Gateway) -> Value {
    gateway
        .snapshot()
        .state
        .as_ref()
        .map_or(Value::Null, |store| store.status())
}

fn reloads(gateway: &Gateway) -> Value {
    let (records, total) = gateway.reloads.recent();
    json!({ "attempts": total, "reloads": records.iter().map(record).collect::<Vec<_>>() })
}

fn record(r: &ReloadRecord) -> Value {
    json!({
        "at": rfc3339(r.at),
        "trigger": r.trigger,
        "ok": r.ok,
        "error": r.error,
        "warnings": r.warnings,
        "duration_ms": r.duration.as_secs_f64() * 1000.0,
    })
}

fn error(status: u16, code: &str, message: &str) -> Value {
    json!({ "error": { "status": status, "code": code, "message": message } })
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `2026-11-22T06:20:00.123Z`, UTC.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn web_pages_are_told_apart_from_tools() {
        let request = |pairs: &[(&str, &str)]| {
            let mut builder = Request::get("/admin/pools");
            for (name, value) in pairs {
                builder = builder.header(*name, *value);
            }
            builder.body(()).expect("request")
        };
        for tool in [
            &[("host", "127.0.0.1:9901")][..],
            &[("host", "localhost:9901")][..],
            &[("host", "[::1]:9901")][..],
            &[("host", "10.0.0.5")][..],
            &[][..],
            &[("host", "127.0.0.1:9901"), ("sec-fetch-site", "none")][..],
        ] {
            assert!(!from_a_browser(&request(tool)), "{tool:?}");
        }
        for page in [
            &[
                ("host", "127.0.0.1:9901"),
                ("origin", "https://evil.example"),
            ][..],
            &[("host", "rebound.evil.example:9901")][..],
            &[("host", "127.0.0.1:9901"), ("sec-fetch-site", "cross-site")][..],
        ] {
            assert!(from_a_browser(&request(page)), "{page:?}");
        }
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_321_200_250);
        assert_eq!(rfc3339(t), "2026-11-22T04:20:00.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
