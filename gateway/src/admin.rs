//! The admin listener: `GET /admin/plugins` and `GET /admin/reloads`, as JSON.

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

/// Serves the admin API on `listener` until `shutdown` resolves.
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
                async move { Ok::<_, Infallible>(answer(&gateway, &request)) }
            });
            // HTTP/1 only: the admin API has no use for HTTP/2's long-lived
            // connections, nor their limits to tune.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(gateway: &Gateway, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &error(
                405,
                "method_not_allowed",
                "the admin API is read-only: use GET",
            ),
        );
    }
    match request.uri().path() {
        "/admin/plugins" => json_response(StatusCode::OK, &plugins(gateway)),
        "/admin/reloads" => json_response(StatusCode::OK, &reloads(gateway)),
        "/admin/state" => json_response(StatusCode::OK, &state(gateway)),
        path => json_response(
            StatusCode::NOT_FOUND,
            &error(
                404,
                "not_found",
                &format!(
                    "no admin endpoint {path}; try /admin/plugins, /admin/reloads or /admin/state"
                ),
            ),
        ),
    }
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
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_321_200_250);
        assert_eq!(rfc3339(t), "2026-11-22T04:20:00.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
