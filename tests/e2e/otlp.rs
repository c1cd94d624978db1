//! OTLP span export (built with `--features otlp`): each sampled request
//! becomes a server span with the ids the upstream saw in `traceparent`,
//! POSTed as OTLP/HTTP JSON to the collector; a collector that is down
//! costs a warning, never a request.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use crate::support::{Backend, Gateway, get, send, upstream};

/// An OTLP/HTTP receiver on loopback: keeps every span POSTed to
/// `/v1/traces` as JSON.
struct Collector {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let json = request
                            .headers()
                            .get("content-type")
                            .is_some_and(|t| t == "application/json");
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let export: Value = body
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or(Value::Null);
                        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                        if path != "/v1/traces" || !json || export.is_null() {
                            *response.status_mut() = http::StatusCode::BAD_REQUEST;
                            return Ok::<_, Infallible>(response);
                        }
                        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                                for span in scope["spans"].as_array().into_iter().flatten() {
                                    let mut span = span.clone();
                                    span["resource"] = resource["resource"].clone();
                                    if let Ok(mut kept) = kept.lock() {
                                        kept.push(span);
                                    }
                                }
                            }
                        }
                        Ok(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, spans }
    }

    /// Waits up to 10 s for a span of trace `trace_id`.
    async fn span_of(&self, trace_id: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .spans
                .lock()
                .ok()
                .and_then(|spans| spans.iter().find(|s| s["traceId"] == trace_id).cloned());
            if let Some(span) = found {
                return span;
            }
            assert!(Instant::now() < until, "no span of trace {trace_id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn count(&self) -> usize {
        self.spans.lock().map(|s| s.len()).unwrap_or(0)
    }
}

fn config(svc: &Backend, endpoint: &str) -> String {
    format!(
        "trace:\n  otlp: {{ endpoint: \"{endpoint}\", service_name: checkout, timeout: 2s }}\nupstreams:\n{}routes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: svc }}\n",
        upstream("svc", &[svc], "")
    )
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["key"] == key))
        .map(|a| &a["value"])
        .unwrap_or(&Value::Null)
}

/// The `traceparent` the backend received, split into its fields.
fn upstream_traceparent(reply: &crate::support::client::Reply) -> Vec<String> {
    reply
        .upstream_header("traceparent")
        .expect("a traceparent upstream")
        .split('-')
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn each_sampled_request_is_exported_as_a_span_with_the_ids_the_upstream_saw() {
    let collector = Collector::start().await;
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(&svc, &format!("http://{}", collector.addr)));

    // Continued from the client's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let reply = send(
        Request::get(gw.url("/api/users?page=2"))
            .header("traceparent", format!("00-{trace_id}-{parent}-01"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let sent = upstream_traceparent(&reply);
    let span = collector.span_of(trace_id).await;
    assert_eq!(span["spanId"], sent[2], "the parent the upstream saw");
    assert_eq!(span["parentSpanId"], parent);
    assert_eq!(span["name"], "GET api");
    assert_eq!(span["kind"], 2);
    assert_eq!(
        attribute(&span, "http.request.method")["stringValue"],
        "GET"
    );
    assert_eq!(attribute(&span, "url.path")["stringValue"], "/api/users");
    assert_eq!(
        attribute(&span, "http.response.status_code")["intValue"],
        "200"
    );
    assert_eq!(attribute(&span, "gateway.route")["stringValue"], "api");
    assert_eq!(
        attribute(&span, "gateway.request_id")["stringValue"],
        reply.request_id()
    );
    let start: u128 = span["startTimeUnixNano"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("start");
    let end: u128 = span["endTimeUnixNano"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("end");
    assert!(start > 0 && end >= start);
    let service = &span["resource"]["attributes"][0];
    assert_eq!(service["key"], "service.name");
    assert_eq!(service["value"]["stringValue"], "checkout");

    // Started by the gateway: a new trace, no parent.
    let reply = get(&gw.url("/api/orders")).await;
    let sent = upstream_traceparent(&reply);
    let span = collector.span_of(&sent[1]).await;
    assert_eq!(span["spanId"], sent[2]);
    assert!(span.get("parentSpanId").is_none(), "{span}");

    // An unrouted request is a span too, marked as an error only for a 5xx.
    let reply = get(&gw.url("/nowhere")).await;
    assert_eq!(reply.status, 404);

    // A client that asked for no sampling gets no span.
    let before = collector.count();
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    send(
        Request::get(gw.url("/api/quiet"))
            .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = collector
        .spans
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    assert!(
        spans.iter().all(|s| s["traceId"] != unsampled),
        "an unsampled request was exported"
    );
    assert!(collector.count() >= before);
    assert!(
        spans.iter().any(|s| s["name"] == "GET"
            && attribute(s, "http.response.status_code")["intValue"] == "404"),
        "the 404 was exported without a route"
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_a_warning_not_a_request() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", gone.local_addr().expect("addr"));
    drop(gone);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(&svc, &endpoint));
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/api/x")).await.status, 200);
    }
    let log = gw.log_with(&["OTLP export failed"]).await;
    assert!(log.contains("OTLP export failed"), "{log}");
    assert_eq!(get(&gw.url("/api/y")).await.status, 200);
}
