//! An upstream pool as the proxy uses it: balancer, pooled client, timeouts,
//! and the retry rule for a failed attempt.

mod breaker;
pub mod headers;
mod health_check;
mod pool;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;

use crate::balance::health::{Circuit, Ejection, ErrorRate, Outcome, Transition};
use crate::balance::{Pool, RequestInfo};
use crate::body;
use crate::body::Body;
use crate::config::{HealthCheckConfig, UpstreamConfig};
use crate::error::ProxyError;
use crate::metrics::{PoolState, TargetMetrics, TargetState};

use breaker::Breaker;
pub use health_check::spawn_health_checks;
use pool::{ConnectionPool, TargetAddress};

#[derive(Debug)]
pub struct Upstream {
    pub name: std::sync::Arc<str>,
    pub pool: Pool,
    connections: std::sync::Arc<ConnectionPool>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest wait between two pieces of a response body.
    pub body_idle: Duration,
    pub preserve_host: bool,
    pub health_check: Option<HealthCheckConfig>,
    /// What this upstream was built from: a reload keeps it (connections,
    /// health) when the new config has the same.
    pub config: UpstreamConfig,
    /// How https targets are reached, as loaded from its files.
    pub origin: Option<crate::tls::origin::Origin>,
    health_checks_started: AtomicBool,
    /// Places in flight, the line for them, and the retry budget.
    breaker: Breaker,
    /// Per target, in the pool's order.
    metrics: Vec<TargetMetrics>,
}

/// How one attempt failed, which decides the status and whether to retry.
#[derive(Debug)]
pub enum AttemptError {
    /// Nothing reached the target (refused, unreachable, connect timeout).
    Connect { reason: String, timed_out: bool },
    /// The connection failed after the request was (maybe) sent: reset, closed.
    Broken(String),
    /// No response head within the request timeout.
    Timeout(Duration),
    /// The client's body failed on the way: malformed, cut off, or idle
    /// past `server.body_idle_timeout`. Not the target's fault.
    ClientBody { reason: String, idle: bool },
}

impl Upstream {
    /// `origin` is needed when a target is `https://`; a target's host that
    /// no certificate could be checked against is an error. Each of the
    /// `workers` keeps idle connections of its own.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        origin: Option<crate::tls::origin::Origin>,
        workers: usize,
    ) -> Result<Self, String> {
        let rules = &config.passive_health;
        let ejection = Ejection {
            max_fails: rules.max_fails,
            max_5xx: rules.max_5xx,
            error_rate: rules.error_rate.as_ref().map(|rate| ErrorRate {
                threshold: rate.threshold,
                window: rate.window.0,
                min_requests: rate.min_requests,
            }),
            cooldown: rules.cooldown.0,
        };
        let pool = Pool::new(
            &config.targets,
            config.balance,
            config.hash_on.clone(),
            ejection,
        );
        let targets: Vec<_> = config
            .targets
            .iter()
            .map(|t| TargetAddress {
                authority: t.url.authority.clone(),
                https: t.url.https,
            })
            .collect();
        let connections = ConnectionPool::new(
            &targets,
            origin.as_ref(),
            config.timeouts.connect.0,
            config.keepalive.idle_timeout.0,
            config.keepalive.max_idle_per_target,
            workers,
        )?;
        let metrics = config
            .targets
            .iter()
            .map(|t| TargetMetrics::new(name, &target_url(t)))
            .collect();
        Ok(Self {
            name: name.into(),
            connections: std::sync::Arc::new(connections),
            pool,
            request_timeout: config.timeouts.request.0,
            connect_timeout: config.timeouts.connect.0,
            body_idle: config.timeouts.body_idle.0,
            preserve_host: config.preserve_host,
            health_check: config.health_check.clone(),
            config: config.clone(),
            origin,
            health_checks_started: AtomicBool::new(false),
            breaker: Breaker::new(&config.circuit_breaker),
            metrics,
        })
    }

    /// Chooses a target, or says that none is healthy.
    pub fn pick(&self, request: &RequestInfo, exclude: Option<usize>) -> Result<usize, ProxyError> {
        self.pool
            .pick(request, exclude)
            .ok_or_else(|| ProxyError::NoHealthyTarget(self.name.to_string()))
    }

    /// Picks a target and sends; a request that failed at the connection level
    /// is tried once more on another target when that is safe: an idempotent
    /// method with no body (a streamed body cannot be sent twice).
    /// `answered` is set to the target the answer came from.
    pub async fn forward(
        &self,
        request: Request<Body>,
        client_ip: IpAddr,
        timeout: Duration,
        answered: &mut Option<usize>,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.forward_within(request, client_ip, timeout, true, answered)
            .await
    }

    /// The URL of target `index`, as configured.
    pub fn target_url(&self, index: usize) -> Option<String> {
        self.config.targets.get(index).map(target_url)
    }

    /// Its targets' health and load, as `/metrics` shows them.
    pub fn state(&self) -> PoolState {
        let now = crate::balance::health::now_ms();
        PoolState {
            upstream: self.name.to_string(),
            targets: self
                .pool
                .targets()
                .iter()
                .zip(&self.config.targets)
                .map(|(target, configured)| TargetState {
                    url: target_url(configured),
                    available: target.health.is_available(now),
                    in_flight: target.in_flight(),
                    circuit: match target.health.circuit(now) {
                        Circuit::Closed => 0,
                        Circuit::Open => 1,
                        Circuit::HalfOpen => 2,
                    },
                })
                .collect(),
        }
    }

    /// `forward` for a plugin's outbound call: a timeout shorter than the
    /// pool's own (which the plugin, or a client through it, chose) does
    /// not count against the target's health, so no caller can get healthy
    /// targets ejected by asking for answers faster than the pool promises.
    pub async fn forward_call(
        &self,
        request: Request<Body>,
        client_ip: IpAddr,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let judged = timeout >= self.request_timeout;
        self.forward_within(request, client_ip, timeout, judged, &mut None)
            .await
    }

    async fn forward_within(
        &self,
        request: Request<Body>,
        client_ip: IpAddr,
        timeout: Duration,
        timeout_counts: bool,
        answered: &mut Option<usize>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let place = self
            .breaker
            .admit(timeout)
            .await
            .map_err(|_| self.overloaded())?;
        // Time spent waiting for a place comes off the attempt's; an attempt
        // left with less than its whole timeout is not judged on timing out.
        let timeout_counts = timeout_counts && place.waited.is_zero();
        let timeout = timeout.saturating_sub(place.waited);
        let info = RequestInfo {
            headers: request.headers(),
            client_ip,
        };
        let first = self.pick(&info, None)?;
        if self.pool.targets().len() > 1 {
            // Only a pool with somewhere else to go retries.
            self.breaker.sent();
        }
        let second_try = retryable(&request, self).then(|| bodiless_copy(&request));
        let error = match self
            .send_within(first, request, timeout, timeout_counts)
            .await
        {
            Ok(response) => {
                *answered = Some(first);
                return Ok(response);
            }
            Err(error @ AttemptError::Timeout(_)) => return Err(self.error_for(first, error)),
            Err(error) => error,
        };
        let Some(again) = second_try else {
            return Err(self.error_for(first, error));
        };
        let info = RequestInfo {
            headers: again.headers(),
            client_ip,
        };
        // (A retry's pick moves no balancer state, so one over the budget
        // costs nothing.)
        let Some(second) = self.pool.pick(&info, Some(first)) else {
            return Err(self.error_for(first, error));
        };
        let within_budget = self.breaker.may_retry();
        crate::metrics::metrics().retry(&self.name, within_budget);
        if !within_budget {
            tracing::debug!(upstream = %self.name, ?error, "not retried: over the retry budget");
            return Err(self.error_for(first, error));
        }
        tracing::debug!(upstream = %self.name, ?error, "retrying on another target");
        let response = self
            .send_within(second, again, timeout, timeout_counts)
            .await
            .map_err(|e| self.error_for(second, e))?;
        *answered = Some(second);
        Ok(response)
    }

    fn overloaded(&self) -> ProxyError {
        crate::metrics::metrics().overloaded(&self.name);
        ProxyError::Overloaded(self.name.to_string())
    }

    /// Sends one attempt to `target` and waits for the response head.
    /// `request` must carry an origin-form path; the Host header defaults
    /// to the target's authority.
    pub async fn send(
        &self,
        target: usize,
        request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, AttemptError> {
        self.send_within(target, request, timeout, true).await
    }

    /// `send`; a timeout counts against the target only if `timeout_counts`.
    async fn send_within(
        &self,
        target: usize,
        request: Request<Body>,
        timeout: Duration,
        timeout_counts: bool,
    ) -> Result<Response<Incoming>, AttemptError> {
        let in_flight = self.pool.start_request(target);
        let started = std::time::Instant::now();
        let mut request = request;
        let body_sent = match request.body_mut() {
            Either::Left(streamed) => Some(streamed.track()),
            Either::Right(_) => None,
        };
        let sending = self.connections.send(target, request);
        let result = match tokio::time::timeout(timeout, sending).await {
            Err(_) => Err(AttemptError::Timeout(timeout)),
            Ok(result) => result,
        };
        // Only what the target did counts toward its health: not a client
        // whose body failed, nor a timeout or a cut connection while the
        // target was waiting on the client's body (a trickled upload). A
        // refused connect, or a target that stopped reading, still counts.
        let client_behind = body_sent.is_some_and(|sent| sent.waiting_on_peer());
        let outcome = match &result {
            Ok(response) => {
                self.metrics[target].answered(started.elapsed());
                if response.status().is_server_error() && self.pool.ejection().counts_5xx() {
                    Some(Outcome::ServerError)
                } else {
                    Some(Outcome::Answered)
                }
            }
            Err(error) => {
                self.metrics[target].failed(error.kind());
                match error {
                    AttemptError::ClientBody { .. } => None,
                    AttemptError::Timeout(_) | AttemptError::Broken(_) if client_behind => None,
                    AttemptError::Timeout(_) if !timeout_counts => None,
                    _ => Some(Outcome::NoAnswer),
                }
            }
        };
        let transition =
            outcome.and_then(|outcome| self.pool.record(target, outcome, in_flight.is_probe()));
        let authority = &self.pool.targets()[target].authority;
        match transition {
            Some(Transition::Opened) => {
                self.metrics[target].ejected();
                let after = match outcome {
                    Some(Outcome::ServerError) => "a 5xx answer",
                    _ => "a request without an answer",
                };
                tracing::warn!(
                    upstream = %self.name,
                    target = %authority,
                    cooldown_ms = self.pool.ejection().cooldown.as_millis() as u64,
                    "target ejected after {after}; after the cool-down one probe request decides its return"
                );
            }
            Some(Transition::Closed) => tracing::info!(
                upstream = %self.name,
                target = %authority,
                "target back in the pool: its probe was answered"
            ),
            None => {}
        }
        result
    }

    /// One request outside the proxy path (health checks): no passive
    /// health accounting, no retry.
    pub async fn probe(
        &self,
        target: usize,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, String> {
        self.connections
            .send(target, request)
            .await
            .map_err(|e| match e {
                AttemptError::Connect { reason, .. } | AttemptError::Broken(reason) => reason,
                AttemptError::Timeout(after) => format!("no answer within {after:?}"),
                AttemptError::ClientBody { reason, .. } => reason,
            })
    }

    /// True the first time only: health checks start once per upstream,
    /// however many snapshots share it.
    pub fn claim_health_checks(&self) -> bool {
        !self.health_checks_started.swap(true, Ordering::Relaxed)
    }

    /// The error a client sees for a failed attempt.
    pub fn error_for(&self, target: usize, error: AttemptError) -> ProxyError {
        let target = self.pool.targets()[target].authority.to_string();
        let upstream = self.name.to_string();
        match error {
            AttemptError::Timeout(timeout) => ProxyError::UpstreamTimeout {
                upstream,
                target,
                timeout,
            },
            AttemptError::Connect {
                timed_out: true, ..
            } => ProxyError::UpstreamTimeout {
                upstream,
                target,
                timeout: self.connect_timeout,
            },
            AttemptError::ClientBody { reason, idle } => ProxyError::ClientBody { reason, idle },
            AttemptError::Connect { reason, .. } | AttemptError::Broken(reason) => {
                ProxyError::UpstreamUnavailable {
                    upstream,
                    target,
                    reason,
                }
            }
        }
    }
}

impl AttemptError {
    /// The `reason` label of `gateway_upstream_failures_total`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Broken(_) => "broken",
            Self::Timeout(_) => "timeout",
            Self::ClientBody { .. } => "client_body",
        }
    }
}

fn target_url(target: &crate::config::TargetConfig) -> String {
    format!(
        "{}://{}",
        if target.url.https { "https" } else { "http" },
        target.url.authority
    )
}

fn retryable(request: &Request<Body>, upstream: &Upstream) -> bool {
    // With one target there is nowhere else to go: skip copying the headers.
    upstream.pool.targets().len() > 1
        && request.method().is_idempotent()
        && request.body().is_end_stream()
}

fn bodiless_copy(request: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}
