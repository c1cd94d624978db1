//! The request pipeline, top to bottom: route, plugin request hooks, prepare,
//! balance and forward, plugin response hooks, answer. Each arrow of the
//! README's request-flow diagram is one call in `proxy`.
//!
//! Once a route matched, every answer passes through its chain's response
//! hooks, the gateway's own errors included (so a CORS plugin's headers reach
//! a browser on a 502 too); errors before routing (400, 404) have no chain.

use std::borrow::Cow;

use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Either;
use hyper::body::Incoming;

use std::time::Instant;

use crate::access_log::{BytesIn, Entry, Logged};
use crate::body::{Body, Streamed};
use crate::edge::{self, Admitted, Client, forwarded};
use crate::error::ProxyError;
use crate::metrics::RouteMetrics;
use crate::plugin::request_context::RequestHead;
use crate::plugin::{HookFailure, RequestContext, RequestFlow};
use crate::routing::{Matched, rewrite};
use crate::snapshot::Snapshot;
use crate::trace::TraceContext;
use crate::tunnel;
use crate::upstream::Upstream;
use crate::upstream::headers::{self, X_REQUEST_ID};

/// An answer as the client gets it: with its access log line written once
/// it is sent, when this request is logged.
pub type Served = Either<Body, Logged<Body>>;

/// Handles one client request on the given snapshot; never fails: errors
/// become the gateway's JSON error responses.
pub async fn handle(
    snapshot: &Snapshot,
    mut request: Request<Incoming>,
    client: &Client,
) -> Response<Served> {
    let started = Instant::now();
    let request_id = headers::ensure_request_id(request.headers_mut());
    let ids = Ids {
        request: request_id,
        trace: TraceContext::propagate(request.headers_mut()),
    };
    let mut entry = logged(snapshot).then(|| {
        let mut entry = Entry::start(
            started,
            client.ip,
            request.method().as_str(),
            request.uri().path(),
        );
        entry.request_id = ids.request.to_str().unwrap_or("").to_string();
        entry.trace_id = ids.trace.trace_id_hex();
        request
            .extensions_mut()
            .insert(BytesIn(entry.bytes_in.clone()));
        Box::new(entry)
    });
    let method = request.method().clone();
    #[cfg(feature = "otlp")]
    let span_path = (ids.trace.sampled && crate::otlp::wanted()).then(|| {
        let path = request.uri().path();
        crate::access_log::shortened(path, crate::access_log::MAX_PATH).to_string()
    });
    let head_request = method == Method::HEAD;
    let http1 = request.version() <= Version::HTTP_11;
    let trail = entry.as_deref_mut();
    let mut counted = &snapshot.unrouted;
    let mut response = match proxy(snapshot, request, client, &ids, trail, &mut counted).await {
        Ok(response) => response,
        Err(error) => error_response(&error, &ids),
    };
    counted.observe(&method, response.status(), started.elapsed());
    #[cfg(feature = "otlp")]
    if let Some(path) = span_path {
        let now = std::time::SystemTime::now();
        crate::otlp::record(crate::otlp::Span {
            trace: ids.trace,
            method: method.to_string(),
            path,
            route: counted.route().map(str::to_string),
            status: response.status().as_u16(),
            client: client.ip.to_string(),
            request_id: ids.request.to_str().unwrap_or("").to_string(),
            started: now.checked_sub(started.elapsed()).unwrap_or(now),
            ended: now,
        });
    }
    frame(&mut response, head_request);
    if http1
        && client.framing.as_ref().is_some_and(|f| f.lost())
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        // Requests after this one could not be checked for smuggling.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.headers_mut().insert(&X_REQUEST_ID, ids.request);
    match entry {
        None => response.map(Either::Left),
        Some(mut entry) => {
            entry.status = response.status().as_u16();
            let bodiless = head_request
                || matches!(
                    response.status(),
                    StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
                );
            response.map(|body| Either::Right(Logged::new(body, entry, bodiless)))
        }
    }
}

/// Whether this request goes into the access log (`access_log.sample`).
fn logged(snapshot: &Snapshot) -> bool {
    match snapshot.access_sample {
        None => false,
        Some(share) => share >= 1.0 || fastrand::f64() < share,
    }
}

/// What names a request in logs and headers: its `x-request-id`, and the
/// trace it is part of (continued from the client's `traceparent` or new).
struct Ids {
    request: HeaderValue,
    trace: TraceContext,
}

/// The gateway frames every answer itself: a `Content-Length` a plugin set,
/// or one an upstream sent beside `Transfer-Encoding`, is never written as
/// given (hyper writes the body's real length, or chunks), so a wrong length
/// cannot leave bytes on a kept-alive connection to be read as the next
/// answer. And an HTTP/1.1 client gets HTTP/1.1 whatever the upstream spoke.
fn frame(response: &mut Response<Body>, head_request: bool) {
    *response.version_mut() = Version::HTTP_11;
    // A HEAD or 304 answer has no body; its length describes the GET's.
    if !head_request && response.status() != StatusCode::NOT_MODIFIED {
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
}

/// The gateway's JSON answer for `error`, logged.
fn error_response(error: &ProxyError, ids: &Ids) -> Response<Body> {
    let (status, _) = error.status_and_code();
    let request_id = &ids.request;
    if status.is_server_error() {
        let trace_id = ids.trace.trace_id_hex();
        tracing::warn!(request_id = ?request_id, %trace_id, %error, "request failed");
    } else {
        tracing::debug!(request_id = ?request_id, %error, "request refused");
    }
    let id = request_id.to_str().unwrap_or("");
    let mut response = error.to_response(id).map(Either::Right);
    if matches!(error, ProxyError::BadRequest(_)) {
        // What follows a request the gateway could not read is not trusted
        // to be the next request (HTTP/2 drops this header itself).
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The pipeline itself. `counted` is set to the metrics of the route the
/// request matched.
async fn proxy<'s>(
    snapshot: &'s Snapshot,
    request: Request<Incoming>,
    client: &Client,
    ids: &Ids,
    mut trail: Option<&mut Entry>,
    counted: &mut &'s RouteMetrics,
) -> Result<Response<Body>, ProxyError> {
    let Admitted { request, host } = edge::admit(request, client).await?;
    let mut request = request.map(Either::Left);
    let matched = snapshot
        .router
        .route(
            &edge::routing_host(&host),
            request.method(),
            request.uri().path(),
            request.headers(),
        )
        .ok_or_else(|| ProxyError::NoRoute {
            method: request.method().clone(),
            host: host.clone(),
            path: request.uri().path().to_string(),
        })?;
    let route = matched.route;
    *counted = &route.metrics;
    let upstream = snapshot.upstream(route.upstream)?;
    if let Some(entry) = trail.as_deref_mut() {
        entry.route = Some(route.name.clone());
        entry.upstream = Some(upstream.name.clone());
    }
    // Plugins see the request as it will be forwarded.
    headers::remove_hop_by_hop(request.headers_mut());
    forwarded::set_forwarding(
        request.headers_mut(),
        &client.ip_text,
        &host,
        client.trusted,
        client.tls.is_some(),
    );
    let client_upgrade =
        headers::is_websocket_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let plugins = &route.plugins;
    let target = Target {
        matched: &matched,
        upstream,
        client,
        host: &host,
        client_upgrade,
    };
    if plugins.is_empty() {
        return target.exchange(request, false, None, trail).await;
    }
    // Boxed: the hooks' futures are large, and without the box every
    // request's future would be as large, copied each time it moves.
    Box::pin(through_plugins(target, request, plugins, ids, trail)).await
}

/// The rest of the pipeline for a route with plugins: request hooks, the
/// exchange unless a hook answered, then response hooks in reverse.
async fn through_plugins(
    target: Target<'_>,
    request: Request<Body>,
    plugins: &crate::plugin::Chain,
    ids: &Ids,
    mut trail: Option<&mut Entry>,
) -> Result<Response<Body>, ProxyError> {
    let mut context = RequestContext::new(
        &ids.request,
        &target.client.ip_text,
        target.client.tls.clone(),
        &target.matched.params,
        &target.upstream.name,
    );
    let hooks = trail.is_some().then(Instant::now);
    let flow = plugins.on_request(request, &mut context).await;
    let mut in_hooks = hooks.map(|started| started.elapsed());
    let (response, ran) = match flow {
        Ok(RequestFlow::Forward { request, path_set }) => {
            let sent = target.exchange(
                request,
                path_set,
                Some((plugins, &mut context)),
                trail.as_deref_mut(),
            );
            match sent.await {
                Ok(response) => (response, plugins.len()),
                Err(error) => (error_response(&error, ids), plugins.len()),
            }
        }
        Ok(RequestFlow::Respond { response, ran }) => (response, ran),
        Err(HookFailure { error, ran }) => (error_response(&error, ids), ran),
    };
    let hooks = trail.is_some().then(Instant::now);
    let response = plugins.on_response(response, ran, &mut context).await;
    if let (Some(entry), Some(started)) = (trail, hooks) {
        in_hooks = in_hooks.map(|before| before + started.elapsed());
        entry.plugins_time = in_hooks.unwrap_or_default();
    }
    response
}

/// Where a routed request goes, and what it needs to get there.
struct Target<'a> {
    matched: &'a Matched<'a>,
    upstream: &'a Upstream,
    client: &'a Client,
    host: &'a str,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Target<'_> {
    /// Prepares the request for the upstream, sends it, and takes the
    /// response (joining the two sides of an accepted WebSocket upgrade).
    /// With plugins, the request as sent is kept for their response hooks.
    async fn exchange(
        self,
        request: Request<Body>,
        path_set: bool,
        plugins: Option<(&crate::plugin::Chain, &mut RequestContext)>,
        trail: Option<&mut Entry>,
    ) -> Result<Response<Body>, ProxyError> {
        let route = self.matched.route;
        let timeout = route.timeout.unwrap_or(self.upstream.request_timeout);
        let (mut parts, body) = request.into_parts();
        let prepared =
            prepare_upstream_request(&mut parts, self.matched, path_set, self.upstream, self.host);
        if let Some((chain, context)) = plugins {
            // Kept even when preparing failed: response hooks run on that 400 too.
            chain.keep_request(context, || RequestHead::of_parts(&parts));
        }
        prepared?;
        let outgoing = Request::from_parts(parts, body);
        let sent = trail.is_some().then(Instant::now);
        let mut answered = None;
        let forwarded = self
            .upstream
            .forward(outgoing, self.client.ip, timeout, &mut answered)
            .await;
        let nothing_sent = matches!(
            forwarded,
            Err(ProxyError::NoHealthyTarget(_) | ProxyError::Overloaded(_))
        );
        if let (Some(entry), Some(sent)) = (trail, sent)
            && !nothing_sent
        {
            entry.upstream_time = Some(sent.elapsed());
            entry.target = answered.and_then(|i| self.upstream.target_url(i));
        }
        let mut response = forwarded?;
        if let Some(client_upgrade) = self.client_upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let idle = self.client.rules.websocket_idle;
            let held = self.client.held.clone();
            tunnel::spawn(
                client_upgrade,
                hyper::upgrade::on(&mut response),
                idle,
                held,
            );
        }
        headers::remove_hop_by_hop(response.headers_mut());
        let body_idle = self.upstream.body_idle;
        Ok(response.map(|body| Either::Left(Streamed::new(body, body_idle))))
    }
}

/// Makes the request what the upstream gets: rewritten path (unless a plugin
/// set one), Host rule. Hop-by-hop headers are gone already: the client's
/// before routing, any a plugin added after its hooks.
fn prepare_upstream_request(
    parts: &mut http::request::Parts,
    matched: &Matched,
    path_set_by_plugin: bool,
    upstream: &Upstream,
    host: &str,
) -> Result<(), ProxyError> {
    let path = if path_set_by_plugin {
        Cow::Borrowed(parts.uri.path())
    } else {
        rewrite::upstream_path(matched.route, parts.uri.path(), &matched.params)
    };
    parts.uri = match path {
        // Unchanged: reuse the parsed path and query (no copy, no re-parse).
        Cow::Borrowed(same) if same == parts.uri.path() => {
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            http::Uri::from_parts(uri)
                .map_err(|e| ProxyError::BadRequest(format!("the path is not valid: {e}")))?
        }
        path => {
            let path_and_query = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.into_owned(),
            };
            path_and_query.parse().map_err(|e| {
                ProxyError::BadRequest(format!("the rewritten path is not valid: {e}"))
            })?
        }
    };
    parts.version = Version::HTTP_11;
    if upstream.preserve_host && !host.is_empty() {
        let value = HeaderValue::from_str(host)
            .map_err(|_| ProxyError::BadRequest("the Host is not a valid header value".into()))?;
        parts.headers.insert(header::HOST, value);
    } else {
        // The client then sends the target's own authority as Host.
        parts.headers.remove(header::HOST);
    }
    Ok(())
}
