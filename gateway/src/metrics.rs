//! The gateway's Prometheus metrics: one registry for the process, handles
//! that routes, targets and plugins resolve when a snapshot is built (so a
//! request never looks up labels or allocates), and the text exposition
//! `GET /metrics` serves on the admin listener.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`exposition`] writes (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Request and upstream latency buckets, in seconds: 0.5 ms to 30 s.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Plugin hook buckets, in seconds: 20 µs to 1 s.
const HOOK_BUCKETS: [f64; 14] = [
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];

type Histograms<L> = Family<L, Latency, fn() -> Latency>;

fn latency() -> Latency {
    Latency::new(&LATENCY_BUCKETS)
}

fn hook_latency() -> Latency {
    Latency::new(&HOOK_BUCKETS)
}

/// A latency histogram of atomic counts: observing is two atomic adds
/// (prometheus-client's own histogram takes a lock, which every thread
/// serving one route would share).
#[derive(Clone, Debug)]
pub struct Latency(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is past every bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Latency {
    fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.0.bounds.partition_point(|bound| *bound < seconds);
        self.0.counts[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder sums the buckets itself and adds `+Inf` (the total).
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .zip(self.0.counts.iter().map(|count| count.load(Relaxed)))
            .collect();
        let total = self.0.counts.iter().map(|count| count.load(Relaxed)).sum();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Every metric the gateway keeps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<RouteLabels>,
    upstream_duration: Histograms<TargetLabels>,
    upstream_failures: Family<TargetReasonLabels, Counter>,
    upstream_ejections: Family<TargetLabels, Counter>,
    upstream_overloaded: Family<UpstreamLabels, Counter>,
    upstream_retries: Family<RetryLabels, Counter>,
    target_available: Family<TargetLabels, Gauge>,
    target_in_flight: Family<TargetLabels, Gauge>,
    target_circuit: Family<TargetLabels, Gauge>,
    hook_duration: Histograms<HookLabels>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    rate_limit_decisions: Family<DecisionLabels, Counter>,
    rate_limit_store_errors: Family<BackendLabels, Counter>,
    connections_open: Gauge,
    connections_parked: Gauge,
    connections_accepted: Counter,
    tls_handshakes: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReasonLabels {
    upstream: String,
    target: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    plugin: String,
    route: String,
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFailureLabels {
    plugin: String,
    route: String,
    hook: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    backend: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

/// The process's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            upstream_duration: Family::new_with_constructor(latency),
            upstream_failures: Family::default(),
            upstream_ejections: Family::default(),
            upstream_overloaded: Family::default(),
            upstream_retries: Family::default(),
            target_available: Family::default(),
            target_in_flight: Family::default(),
            target_circuit: Family::default(),
            hook_duration: Family::new_with_constructor(hook_latency),
            plugin_failures: Family::default(),
            reloads: Family::default(),
            rate_limit_decisions: Family::default(),
            rate_limit_store_errors: Family::default(),
            connections_open: Gauge::default(),
            connections_parked: Gauge::default(),
            connections_accepted: Counter::default(),
            tls_handshakes: Family::default(),
        };
        metrics.registered()
    }

    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "gateway_requests",
            "Requests answered, by route, method and status class",
            self.requests.clone(),
        );
        r.register(
            "gateway_request_duration_seconds",
            "From the request head read to the response head ready, by route",
            self.request_duration.clone(),
        );
        r.register(
            "gateway_upstream_duration_seconds",
            "From sending to a target to its response head, by upstream and target",
            self.upstream_duration.clone(),
        );
        r.register(
            "gateway_upstream_failures",
            "Attempts to a target that got no response head, by reason (connect, timeout, broken)",
            self.upstream_failures.clone(),
        );
        r.register(
            "gateway_upstream_ejections",
            "Times a target was taken out of its pool by its outlier rules",
            self.upstream_ejections.clone(),
        );
        r.register(
            "gateway_upstream_overloaded",
            "Requests refused with 503 because the pool's max_in_flight and max_pending were full",
            self.upstream_overloaded.clone(),
        );
        r.register(
            "gateway_upstream_retries",
            "Second attempts on another target, by result (sent, or refused by the retry budget)",
            self.upstream_retries.clone(),
        );
        r.register(
            "gateway_upstream_target_available",
            "1 when a target may receive requests (active checks up, not ejected)",
            self.target_available.clone(),
        );
        r.register(
            "gateway_upstream_target_in_flight",
            "Requests sent to a target whose response head has not arrived",
            self.target_in_flight.clone(),
        );
        r.register(
            "gateway_upstream_target_circuit",
            "A target's circuit: 0 closed, 1 open (ejected), 2 half-open (one probe request)",
            self.target_circuit.clone(),
        );
        r.register(
            "gateway_plugin_hook_duration_seconds",
            "Wall time of one plugin hook call, by plugin, route and hook",
            self.hook_duration.clone(),
        );
        r.register(
            "gateway_plugin_failures",
            "Plugin hook calls that failed, by reason (trap, deadline, wall_deadline, memory, bad_output, error)",
            self.plugin_failures.clone(),
        );
        r.register(
            "gateway_reloads",
            "Config and plugin reload attempts, by result",
            self.reloads.clone(),
        );
        r.register(
            "gateway_rate_limit_decisions",
            "Rate-limit decisions of the state store, by backend and decision",
            self.rate_limit_decisions.clone(),
        );
        r.register(
            "gateway_rate_limit_store_errors",
            "Rate-limit decisions the state store could not make (unreachable, timed out)",
            self.rate_limit_store_errors.clone(),
        );
        r.register(
            "gateway_connections_open",
            "Client connections open on the proxy listeners",
            self.connections_open.clone(),
        );
        r.register(
            "gateway_connections_parked",
            "Idle HTTP/1.1 client connections parked between requests (holding no buffers)",
            self.connections_parked.clone(),
        );
        r.register(
            "gateway_connections_accepted",
            "Client connections accepted on the proxy listeners",
            self.connections_accepted.clone(),
        );
        r.register(
            "gateway_tls_handshakes",
            "TLS handshakes on the proxy listeners, by result (ok, failed, timeout)",
            self.tls_handshakes.clone(),
        );
        self
    }

    /// A reload attempt ended.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// A client connection was accepted; it counts as open until the guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_accepted.inc();
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// An HTTP/1.1 connection parked between requests, until the guard is
    /// dropped.
    pub fn connection_parked(&self) -> OpenConnection {
        self.connections_parked.inc();
        OpenConnection(self.connections_parked.clone())
    }

    /// A TLS handshake ended: `ok`, `failed` or `timeout`.
    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A pool refused a request: its in-flight and pending limits were full.
    pub fn overloaded(&self, upstream: &str) {
        let labels = UpstreamLabels {
            upstream: upstream.to_string(),
        };
        self.upstream_overloaded.get_or_create(&labels).inc();
    }

    /// A second attempt was sent, or refused by the retry budget.
    pub fn retry(&self, upstream: &str, sent: bool) {
        let labels = RetryLabels {
            upstream: upstream.to_string(),
            result: if sent { "sent" } else { "over_budget" },
        };
        self.upstream_retries.get_or_create(&labels).inc();
    }

    /// The state store's counters for `backend` (`memory` or `redis`).
    pub fn rate_limits(&self, backend: &'static str) -> RateLimitMetrics {
        let decision = |decision| {
            self.rate_limit_decisions
                .get_or_create_owned(&DecisionLabels { backend, decision })
        };
        RateLimitMetrics {
            allowed: decision("allowed"),
            limited: decision("limited"),
            errors: self
                .rate_limit_store_errors
                .get_or_create_owned(&BackendLabels { backend }),
        }
    }

    /// The whole registry in the Prometheus text format, with the pools'
    /// gauges read from `pools` first (targets no longer configured drop out).
    pub fn exposition(&self, pools: &[PoolState]) -> String {
        // Scrapes at once would otherwise see each other's half-filled gauges.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock();
        self.target_available.clear();
        self.target_in_flight.clear();
        self.target_circuit.clear();
        for pool in pools {
            for target in &pool.targets {
                let labels = TargetLabels {
                    upstream: pool.upstream.clone(),
                    target: target.url.clone(),
                };
                let gauge = |family: &Family<TargetLabels, Gauge>, value: i64| {
                    family.get_or_create(&labels).set(value);
                };
                gauge(&self.target_available, i64::from(target.available));
                gauge(
                    &self.target_in_flight,
                    i64::try_from(target.in_flight).unwrap_or(i64::MAX),
                );
                gauge(&self.target_circuit, target.circuit);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// A pool's targets as `/metrics` shows them.
pub struct PoolState {
    pub upstream: String,
    pub targets: Vec<TargetState>,
}

pub struct TargetState {
    pub url: String,
    pub available: bool,
    pub in_flight: usize,
    /// 0 closed, 1 open, 2 half-open.
    pub circuit: i64,
}

/// Keeps a connection counted as open (or parked) until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The state store's decision and error counters.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    pub allowed: Counter,
    pub limited: Counter,
    pub errors: Counter,
}

/// Method labels: the common ones by name, the rest as `other`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// The route label of requests no route matched (404) or that were
/// refused before routing (400).
pub const UNROUTED: &str = "(unrouted)";

/// One route's request counters and latency histogram. A counter series
/// appears with the first request of its method and status class.
pub struct RouteMetrics {
    route: Arc<str>,
    requests: [[OnceLock<Counter>; CLASSES.len()]; METHODS.len()],
    duration: Latency,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        Self {
            route: route.into(),
            requests: Default::default(),
            duration: metrics()
                .request_duration
                .get_or_create_owned(&RouteLabels {
                    route: route.to_string(),
                }),
        }
    }

    /// The route's name; `None` for requests no route matched.
    pub fn route(&self) -> Option<&str> {
        (&*self.route != UNROUTED).then_some(&*self.route)
    }

    /// Counts one answered request and its time.
    pub fn observe(&self, method: &Method, status: StatusCode, took: Duration) {
        let (m, c) = (method_index(method), class_index(status));
        self.requests[m][c]
            .get_or_init(|| {
                metrics().requests.get_or_create_owned(&RequestLabels {
                    route: self.route.to_string(),
                    method: METHODS[m],
                    class: CLASSES[c],
                })
            })
            .inc();
        self.duration.observe(took);
    }
}

/// One upstream target's latency histogram, and what names its failures.
pub struct TargetMetrics {
    labels: TargetLabels,
    duration: Latency,
}

impl std::fmt::Debug for TargetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetMetrics")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl TargetMetrics {
    pub fn new(upstream: &str, target: &str) -> Self {
        let labels = TargetLabels {
            upstream: upstream.to_string(),
            target: target.to_string(),
        };
        Self {
            duration: metrics().upstream_duration.get_or_create_owned(&labels),
            labels,
        }
    }

    /// A response head arrived after `took`.
    pub fn answered(&self, took: Duration) {
        self.duration.observe(took);
    }

    /// An attempt got no response head: `connect`, `timeout` or `broken`.
    pub fn failed(&self, reason: &'static str) {
        let labels = TargetReasonLabels {
            upstream: self.labels.upstream.clone(),
            target: self.labels.target.clone(),
            reason,
        };
        metrics().upstream_failures.get_or_create(&labels).inc();
    }

    /// The target was ejected from its pool.
    pub fn ejected(&self) {
        metrics()
            .upstream_ejections
            .get_or_create(&self.labels)
            .inc();
    }
}

/// Which hook a plugin call ran.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    Request,
    Response,
}

impl Hook {
    fn label(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// One chain entry's hook histograms, and what names its failures.
pub struct HookMetrics {
    plugin: String,
    route: String,
    request: Latency,
    response: Latency,
}

impl std::fmt::Debug for HookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookMetrics")
            .field("plugin", &self.plugin)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl HookMetrics {
    pub fn new(plugin: &str, route: &str) -> Self {
        let histogram = |hook: Hook| {
            metrics().hook_duration.get_or_create_owned(&HookLabels {
                plugin: plugin.to_string(),
                route: route.to_string(),
                hook: hook.label(),
            })
        };
        Self {
            plugin: plugin.to_string(),
            route: route.to_string(),
            request: histogram(Hook::Request),
            response: histogram(Hook::Response),
        }
    }

    /// A hook call took `took`.
    pub fn ran(&self, hook: Hook, took: Duration) {
        match hook {
            Hook::Request => &self.request,
            Hook::Response => &self.response,
        }
        .observe(took);
    }

    /// A hook call failed for `reason`.
    pub fn failed(&self, hook: Hook, reason: &'static str) {
        let labels = PluginFailureLabels {
            plugin: self.plugin.clone(),
            route: self.route.clone(),
            hook: hook.label(),
            reason,
        };
        metrics().plugin_failures.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_fall_into_their_labels() {
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(METHODS[method_index(&Method::CONNECT)], "other");
        let custom = Method::from_bytes(b"PURGE").expect("a method");
        assert_eq!(METHODS[method_index(&custom)], "other");
        assert_eq!(CLASSES[class_index(StatusCode::OK)], "2xx");
        assert_eq!(CLASSES[class_index(StatusCode::SWITCHING_PROTOCOLS)], "1xx");
        assert_eq!(CLASSES[class_index(StatusCode::NOT_FOUND)], "4xx");
        assert_eq!(CLASSES[class_index(StatusCode::BAD_GATEWAY)], "5xx");
        let odd = StatusCode::from_u16(599).expect("a status");
        assert_eq!(CLASSES[class_index(odd)], "5xx");
    }

    #[test]
    fn a_route_counts_its_requests_in_one_series_per_method_and_class() {
        let route = RouteMetrics::new("metrics-unit-test");
        for _ in 0..3 {
            route.observe(&Method::GET, StatusCode::OK, Duration::from_millis(2));
        }
        route.observe(&Method::POST, StatusCode::BAD_GATEWAY, Duration::ZERO);
        let text = metrics().exposition(&[]);
        assert!(
            text.contains(
                "gateway_requests_total{route=\"metrics-unit-test\",method=\"GET\",class=\"2xx\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gateway_requests_total{route=\"metrics-unit-test\",method=\"POST\",class=\"5xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("gateway_request_duration_seconds_count{route=\"metrics-unit-test\"} 4"),
            "{text}"
        );
        // Cumulative buckets: the instant one in the first, the 2ms ones by 2.5ms.
        for (le, count) in [("0.0005", 1), ("0.001", 1), ("0.0025", 4), ("+Inf", 4)] {
            let line = format!(
                "gateway_request_duration_seconds_bucket{{route=\"metrics-unit-test\",le=\"{le}\"}} {count}"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            text.contains(
                "gateway_request_duration_seconds_sum{route=\"metrics-unit-test\"} 0.006"
            ),
            "{text}"
        );
    }
}
