//! `gateway:plugin/outbound`: HTTP calls from a plugin to named upstream
//! pools, through the same balancing, health, timeouts and connections as
//! routes. Granted as `plugins.grants.<plugin>.outbound: { pools: [NAME],
//! max_body: 1MiB }`; no other address can be reached.
//!
//! A batch's calls run at once, and the hook waits for them on its fiber
//! (like `state` on Redis): no gateway thread is held meanwhile.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use serde::Deserialize;
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};

use super::{HostService, NotGranted, Resources};
use crate::body::{self, BufferError};
use crate::config::ByteSize;
use crate::error::ProxyError;
use crate::plugin::bindings::gateway::plugin::outbound;
use crate::plugin::bindings::gateway::plugin::types::Header;
use crate::plugin::exchange::parse_header;
use crate::plugin::host::HostState;
use crate::plugin::instance::MAX_WAITS_PER_HOOK;
use crate::plugin::services::state::TooManyWaits;
use crate::upstream::Upstream;
use crate::upstream::headers::remove_hop_by_hop;

pub struct Outbound;

/// Most calls in one batch.
pub const MAX_CALLS: usize = 16;
/// Largest `max_body` a grant may set.
const MAX_BODY: ByteSize = ByteSize::mib(64);
/// Headers of the request being handled that every call carries on.
const PASSED_ON: &[&str] = &["x-request-id", "traceparent", "tracestate"];
/// Headers a plugin's call may not set: the gateway frames the call, sends
/// it to the pool's own host, and passes on the ones above itself.
const SET_BY_THE_GATEWAY: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "x-request-id",
    "traceparent",
    "tracestate",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundGrant {
    /// The pools the plugin may call, by name.
    pools: Vec<String>,
    /// Largest answer body read per call.
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
    /// Batches waiting at once; more fail at once (each waiting request
    /// holds a plugin instance, so slow pools cannot take them all).
    #[serde(default = "default_max_waiting")]
    max_waiting: usize,
}

fn default_max_waiting() -> usize {
    256
}

fn default_max_body() -> ByteSize {
    ByteSize::mib(1)
}

/// The pools one plugin may call, and how much of an answer it may read.
pub struct Granted {
    pools: Vec<Arc<Upstream>>,
    max_body: u64,
    waiting: Semaphore,
    max_waiting: usize,
}

impl HostService for Outbound {
    const GRANT: &'static str = "outbound";
    const INTERFACE: &'static str = "gateway:plugin/outbound";
    const WAITS: bool = true;
    type Grant = OutboundGrant;
    type Shared = Granted;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        outbound::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn configure(grant: OutboundGrant, resources: &Resources) -> Result<Granted, String> {
        if grant.max_body.0 == 0 || grant.max_body.0 > MAX_BODY.0 {
            return Err("max_body must be more than 0 and at most 64MiB".into());
        }
        if !(1..=10_000).contains(&grant.max_waiting) {
            return Err("max_waiting must be between 1 and 10000".into());
        }
        let mut pools = Vec::with_capacity(grant.pools.len());
        for name in &grant.pools {
            let Some(pool) = resources.upstreams.iter().find(|u| *u.name == **name) else {
                let known: Vec<&str> = resources.upstreams.iter().map(|u| &*u.name).collect();
                return Err(format!(
                    "no upstream named \"{name}\"; upstreams has: {}",
                    known.join(", ")
                ));
            };
            pools.push(pool.clone());
        }
        Ok(Granted {
            pools,
            max_body: grant.max_body.0,
            waiting: Semaphore::new(grant.max_waiting),
            max_waiting: grant.max_waiting,
        })
    }
}

impl outbound::Host for HostState {
    fn granted(&mut self, pool: String) -> wasmtime::Result<bool> {
        self.outbound_granted(&pool)
    }

    async fn send_all(
        &mut self,
        calls: Vec<outbound::Call>,
        batch_timeout_ms: u32,
    ) -> wasmtime::Result<Vec<Result<outbound::Reply, outbound::CallError>>> {
        let granted =
            super::shared::<Outbound>(&self.granted).ok_or(NotGranted(Outbound::INTERFACE))?;
        if calls.len() > MAX_CALLS {
            return Err(wasmtime::Error::msg(format!(
                "send-all takes at most {MAX_CALLS} calls, not {}",
                calls.len()
            )));
        }
        self.waits_left = self
            .waits_left
            .checked_sub(1)
            .ok_or(TooManyWaits(MAX_WAITS_PER_HOOK))?;
        let Ok(_permit) = granted.waiting.try_acquire() else {
            let busy = format!(
                "{} batches of this plugin are already waiting (outbound.max_waiting)",
                granted.max_waiting
            );
            return Ok(calls
                .iter()
                .map(|_| Err(outbound::CallError::Unavailable(busy.clone())))
                .collect());
        };
        let passed_on = self.passed_on();
        let client_ip = self.client_ip();
        let deadline = Instant::now() + Duration::from_millis(u64::from(batch_timeout_ms));
        let max_body = granted.max_body;
        let sends = calls.into_iter().map(|call| {
            let prepared = prepare(granted, call, &passed_on, deadline);
            async move {
                let (pool, request, timeout) = prepared?;
                send(&pool, request, client_ip, timeout, max_body).await
            }
        });
        let paused = self.clock.pause();
        let results = futures_util::future::join_all(sends).await;
        self.clock.resume(paused);
        Ok(results)
    }
}

impl HostState {
    fn outbound_granted(&self, pool: &str) -> wasmtime::Result<bool> {
        let granted =
            super::shared::<Outbound>(&self.granted).ok_or(NotGranted(Outbound::INTERFACE))?;
        Ok(granted.pools.iter().any(|p| *p.name == *pool))
    }

    /// `x-request-id` and trace headers of the request being handled.
    fn passed_on(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for name in PASSED_ON {
            if let Ok(Some(value)) = self.exchange.request_header(name)
                && let Ok((name, value)) = parse_header(name, value)
            {
                headers.insert(name, value);
            }
        }
        headers
    }

    fn client_ip(&self) -> IpAddr {
        self.exchange
            .context
            .as_ref()
            .and_then(|c| c.client_address().parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

/// The pool, request and timeout of one call, or why it cannot be sent.
fn prepare(
    granted: &Granted,
    call: outbound::Call,
    passed_on: &HeaderMap,
    deadline: Instant,
) -> Result<(Arc<Upstream>, Request<body::Body>, Duration), outbound::CallError> {
    let bad = |what: String| outbound::CallError::BadCall(what);
    let Some(pool) = granted.pools.iter().find(|p| *p.name == *call.pool) else {
        return Err(outbound::CallError::NotGranted(format!(
            "pool \"{}\" is not granted to this plugin",
            call.pool.chars().take(64).collect::<String>()
        )));
    };
    let method = Method::from_bytes(call.method.as_bytes())
        .map_err(|_| bad(format!("`{}` is not a method", call.method)))?;
    if !call.path_and_query.starts_with('/') {
        return Err(bad("the path must start with /".into()));
    }
    let uri: Uri = call
        .path_and_query
        .parse()
        .map_err(|_| bad("the path is not a valid request target".into()))?;
    let mut headers = passed_on.clone();
    for Header { name, value } in call.headers {
        let (name, value) = parse_header(&name, value).map_err(bad)?;
        // The gateway frames the call and sends it to the pool's host, and
        // sets the request id and trace headers itself.
        if SET_BY_THE_GATEWAY.contains(&name.as_str()) {
            continue;
        }
        headers.append(name, value);
    }
    remove_hop_by_hop(&mut headers);
    if call.timeout_ms == 0 {
        return Err(bad("timeout-ms must be at least 1".into()));
    }
    let mut request = Request::new(body::full(Bytes::from(call.body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let timeout = Duration::from_millis(u64::from(call.timeout_ms))
        .min(pool.request_timeout)
        .min(deadline.saturating_duration_since(Instant::now()));
    Ok((pool.clone(), request, timeout))
}

/// Sends one call and reads its answer, all within `timeout`.
async fn send(
    pool: &Upstream,
    request: Request<body::Body>,
    client_ip: IpAddr,
    timeout: Duration,
    max_body: u64,
) -> Result<outbound::Reply, outbound::CallError> {
    let request_id = request
        .headers()
        .get("x-request-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let answer = async {
        let response = pool
            .forward_call(request, client_ip, timeout)
            .await
            .map_err(|e| match e {
                ProxyError::UpstreamTimeout { .. } => outbound::CallError::TimedOut,
                // What the plugin may pass on to its client: no target
                // address or OS error (the gateway's log has them).
                other => {
                    tracing::warn!(request_id = %request_id, error = %other, "outbound call failed");
                    outbound::CallError::Unavailable(other.public_message())
                }
            })?;
        let (parts, incoming) = response.into_parts();
        let streamed = http_body_util::Either::Left(body::Streamed::new(incoming, pool.body_idle));
        let body = body::buffer(streamed, max_body)
            .await
            .map_err(|e| match e {
                BufferError::TooLarge(limit) => outbound::CallError::TooLarge(limit),
                BufferError::Read(why) => {
                    tracing::warn!(request_id = %request_id, error = %why, "outbound answer cut off");
                    outbound::CallError::Unavailable("the upstream's answer was cut off".into())
                }
            })?;
        let mut headers = parts.headers;
        remove_hop_by_hop(&mut headers);
        Ok(outbound::Reply {
            status: parts.status.as_u16(),
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.as_str().to_string(),
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                })
                .collect(),
            body: Vec::from(body),
        })
    };
    tokio::time::timeout(timeout, answer)
        .await
        .unwrap_or(Err(outbound::CallError::TimedOut))
}
