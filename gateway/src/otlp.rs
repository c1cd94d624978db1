//! OTLP span export (the `otlp` cargo feature, `trace.otlp` in the config):
//! one server span per sampled request, with the ids the upstream saw in
//! its `traceparent`, batched (up to 512 spans or one second) and POSTed as
//! OTLP/HTTP JSON to `{endpoint}/v1/traces`. A full queue drops spans
//! rather than slow a request; a collector that is down costs a warning
//! every 30 seconds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::trace::OtlpConfig;
use crate::trace::{TraceContext, hex};

/// Spans waiting for export; past it new ones are dropped.
const QUEUE: usize = 4096;
/// Most spans in one export.
const BATCH: usize = 512;
/// Longest a span waits for its batch.
const LINGER: Duration = Duration::from_secs(1);
/// One warning per this long while exports fail.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One finished request, as its span.
#[derive(Debug)]
pub struct Span {
    pub trace: TraceContext,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub status: u16,
    pub client: String,
    pub request_id: String,
    pub started: SystemTime,
    pub ended: SystemTime,
}

struct Exporter {
    queue: mpsc::Sender<Span>,
    dropped: AtomicU64,
    sample: f64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Starts exporting to `config`'s collector (once per process: a reload
/// that changes `trace` needs a restart).
pub fn start(config: &OtlpConfig) -> Result<(), String> {
    let url = config.traces_url()?;
    let client = crate::keys::fetch::outbound_client::<Full<Bytes>>(
        url.scheme_str() == Some("https"),
        None,
        config.timeout.0,
    )?;
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        headers.insert(name, value);
    }
    let (queue, spans) = mpsc::channel(QUEUE);
    let exporter = Exporter {
        queue,
        dropped: AtomicU64::new(0),
        sample: config.sample,
    };
    if EXPORTER.set(exporter).is_err() {
        return Ok(());
    }
    let target = Target {
        client,
        url,
        headers,
        timeout: config.timeout.0,
        resource: json!({
            "attributes": [attribute("service.name", json!({ "stringValue": config.service_name }))]
        }),
    };
    tokio::spawn(export(spans, target));
    Ok(())
}

/// Whether this sampled request's span is exported (`trace.otlp.sample`
/// of them), so other requests skip building one.
pub fn wanted() -> bool {
    EXPORTER
        .get()
        .is_some_and(|e| e.sample >= 1.0 || fastrand::f64() < e.sample)
}

/// Queues a finished request's span; dropped when the queue is full.
pub fn record(span: Span) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    if exporter.queue.try_send(span).is_err() {
        exporter.dropped.fetch_add(1, Relaxed);
    }
}

struct Target {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    headers: HeaderMap,
    timeout: Duration,
    resource: Value,
}

async fn export(mut spans: mpsc::Receiver<Span>, target: Target) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut warned: Option<Instant> = None;
    while let Some(first) = spans.recv().await {
        batch.push(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            tokio::select! {
                next = spans.recv() => match next {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let count = batch.len();
        if let Err(reason) = send(&target, &batch).await {
            let dropped = EXPORTER.get().map_or(0, |e| e.dropped.load(Relaxed));
            if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                tracing::warn!(
                    collector = %target.url,
                    spans = count,
                    dropped_when_full = dropped,
                    "OTLP export failed: {reason}"
                );
                warned = Some(Instant::now());
            }
        }
        batch.clear();
    }
}

async fn send(target: &Target, batch: &[Span]) -> Result<(), String> {
    let body = json!({
        "resourceSpans": [{
            "resource": target.resource,
            "scopeSpans": [{
                "scope": { "name": "gateway", "version": env!("CARGO_PKG_VERSION") },
                "spans": batch.iter().map(span_json).collect::<Vec<_>>(),
            }],
        }],
    });
    let mut request = Request::post(target.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "gateway-otlp")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    request.headers_mut().extend(target.headers.clone());
    let response = tokio::time::timeout(target.timeout, target.client.request(request))
        .await
        .map_err(|_| format!("no answer within {}ms", target.timeout.as_millis()))?
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", response.status()))
    }
}

/// A span in OTLP's JSON mapping: ids in hex, times in nanoseconds as
/// strings, kind 2 (server), status 2 (error) for a 5xx answer.
fn span_json(span: &Span) -> Value {
    // Names stay few: a method outside HTTP's own is `_OTHER`, as
    // OpenTelemetry's conventions say.
    let method = match span.method.as_str() {
        known @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "CONNECT"
        | "TRACE") => known,
        _ => "_OTHER",
    };
    let name = match &span.route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let mut attributes = vec![
        attribute("http.request.method", json!({ "stringValue": method })),
        attribute("url.path", json!({ "stringValue": span.path })),
        attribute(
            "http.response.status_code",
            json!({ "intValue": span.status.to_string() }),
        ),
        attribute("client.address", json!({ "stringValue": span.client })),
        attribute(
            "gateway.request_id",
            json!({ "stringValue": span.request_id }),
        ),
    ];
    if method == "_OTHER" {
        attributes.push(attribute(
            "http.request.method_original",
            json!({ "stringValue": span.method }),
        ));
    }
    if let Some(route) = &span.route {
        attributes.push(attribute("gateway.route", json!({ "stringValue": route })));
    }
    let mut value = json!({
        "traceId": hex(&span.trace.trace_id),
        "spanId": hex(&span.trace.span_id),
        "name": name,
        "kind": 2,
        "startTimeUnixNano": nanos(span.started),
        "endTimeUnixNano": nanos(span.ended),
        "attributes": attributes,
    });
    if let Some(parent) = span.trace.parent_id {
        value["parentSpanId"] = json!(hex(&parent));
    }
    if span.status >= 500 {
        value["status"] = json!({ "code": 2 });
    }
    value
}

fn attribute(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value })
}

fn nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_carries_the_ids_the_upstream_saw() {
        let trace = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            sampled: true,
            parent_id: Some([0x02; 8]),
        };
        let started = UNIX_EPOCH + Duration::from_secs(1);
        let span = Span {
            trace,
            method: "GET".into(),
            path: "/users/7".into(),
            route: Some("users".into()),
            status: 502,
            client: "10.0.0.1".into(),
            request_id: "abc".into(),
            started,
            ended: started + Duration::from_millis(5),
        };
        let value = span_json(&span);
        assert_eq!(value["traceId"], "ab".repeat(16));
        assert_eq!(value["spanId"], "0101010101010101");
        assert_eq!(value["parentSpanId"], "0202020202020202");
        assert_eq!(value["name"], "GET users");
        assert_eq!(value["startTimeUnixNano"], "1000000000");
        assert_eq!(value["endTimeUnixNano"], "1005000000");
        assert_eq!(value["status"]["code"], 2);
        let odd = Span {
            method: "X-PURGE-EVERYTHING".into(),
            route: None,
            ..span
        };
        assert_eq!(span_json(&odd)["name"], "_OTHER");
    }
}
