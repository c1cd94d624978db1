//! An upstream pool as the proxy uses it: balancer, pooled client, timeouts,
//! and the retry rule for a failed attempt.

pub mod headers;
mod health_check;

use std::error::Error as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balance::health::Ejection;
use crate::balance::{Pool, RequestInfo};
use crate::body::Body;
use crate::config::{HealthCheckConfig, UpstreamConfig};
use crate::error::ProxyError;

pub use health_check::spawn_health_checks;

pub type HttpClient = Client<HttpConnector, Body>;

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub pool: Pool,
    client: HttpClient,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub preserve_host: bool,
    pub health_check: Option<HealthCheckConfig>,
    /// What this upstream was built from: a reload keeps it (connections,
    /// health) when the new config has the same.
    pub config: UpstreamConfig,
    health_checks_started: AtomicBool,
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
}

impl Upstream {
    pub fn new(name: &str, config: &UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.connect.0));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.keepalive.idle_timeout.0)
            .pool_max_idle_per_host(config.keepalive.max_idle_per_target)
            .build(connector);
        let ejection = Ejection {
            max_fails: config.passive_health.max_fails,
            cooldown: config.passive_health.cooldown.0,
        };
        Self {
            name: name.to_string(),
            pool: Pool::new(
                &config.targets,
                config.balance,
                config.hash_on.clone(),
                ejection,
            ),
            client,
            request_timeout: config.timeouts.request.0,
            connect_timeout: config.timeouts.connect.0,
            preserve_host: config.preserve_host,
            health_check: config.health_check.clone(),
            config: config.clone(),
            health_checks_started: AtomicBool::new(false),
        }
    }

    /// Chooses a target, or says that none is healthy.
    pub fn pick(&self, request: &RequestInfo, exclude: Option<usize>) -> Result<usize, ProxyError> {
        self.pool
            .pick(request, exclude)
            .ok_or_else(|| ProxyError::NoHealthyTarget(self.name.clone()))
    }

    /// Sends one attempt to `target` and waits for the response head.
    /// `request` must carry an origin-form path; the target's authority is added here.
    pub async fn send(
        &self,
        target: usize,
        mut request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, AttemptError> {
        let authority = self.pool.targets()[target].authority.clone();
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority);
        *request.uri_mut() = http::Uri::from_parts(parts)
            .map_err(|e| AttemptError::Broken(format!("cannot build the upstream URI: {e}")))?;
        let _in_flight = self.pool.start_request(target);
        let result = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(AttemptError::Timeout(timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(AttemptError::Connect {
                timed_out: is_timeout(&e),
                reason: describe(&e),
            }),
            Ok(Err(e)) => Err(AttemptError::Broken(describe(&e))),
        };
        match &result {
            Ok(_) => self.pool.record_success(target),
            Err(_) => self.pool.record_failure(target),
        }
        result
    }

    /// True the first time only: health checks start once per upstream,
    /// however many snapshots share it.
    pub fn claim_health_checks(&self) -> bool {
        !self.health_checks_started.swap(true, Ordering::Relaxed)
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// The error a client sees for a failed attempt.
    pub fn error_for(&self, target: usize, error: AttemptError) -> ProxyError {
        let target = self.pool.targets()[target].authority.to_string();
        let upstream = self.name.clone();
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

/// The innermost cause, which is the one that says what happened ("Connection refused").
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn is_timeout(error: &hyper_util::client::legacy::Error) -> bool {
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cause = e.source();
    }
    false
}
