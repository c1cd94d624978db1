//! The demo's backend services: tiny JSON APIs that say which instance answered.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Which service an instance plays.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    Users,
    Orders,
    Payments,
}

/// Binds `addr` and serves `service` as `instance` until the process ends.
pub async fn spawn(
    service: Service,
    instance: &'static str,
    addr: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let handler = service_fn(move |req| async move {
                    Ok::<_, Infallible>(answer(service, instance, req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(service: Service, instance: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let via_gateway = req
        .headers()
        .get("x-gateway")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, data) = match (service, method.as_str(), segments.as_slice()) {
        (_, "GET", ["healthz"]) => (StatusCode::OK, json!("ok")),
        (Service::Users, "GET", ["users"]) => (
            StatusCode::OK,
            json!([{ "id": 1, "name": "Ada" }, { "id": 2, "name": "Grace" }]),
        ),
        (Service::Users, "GET", ["users", id]) => (
            StatusCode::OK,
            json!({ "id": id, "name": format!("user {id}") }),
        ),
        (Service::Users, "POST", ["users"]) => {
            (StatusCode::CREATED, json!({ "created": parse(&body) }))
        }
        (Service::Orders, "GET", ["orders"]) => (
            StatusCode::OK,
            json!({ "user": user, "orders": [{ "id": 7, "total": 42.5 }] }),
        ),
        (Service::Payments, "GET", ["balance", user]) => (
            StatusCode::OK,
            json!({ "user": user, "balance": 120.5, "currency": "EUR" }),
        ),
        (Service::Payments, "POST", ["payments"]) => (
            StatusCode::ACCEPTED,
            json!({ "payment": parse(&body), "state": "pending" }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({ "error": format!("{method} {path} is not here") }),
        ),
    };
    let mut body = json!({ "service": format!("{service:?}").to_lowercase(), "instance": instance, "data": data });
    if let Some(tag) = via_gateway {
        // Shows the transform plugin's request edit arriving.
        body["x-gateway"] = json!(tag);
    }
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}
