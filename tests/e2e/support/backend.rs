//! A real HTTP server on loopback standing in for an upstream service.
//!
//! Every answer is JSON describing what the backend received, so tests can
//! see exactly what the gateway forwarded. Special paths:
//! - `/healthz`: 200, or 503 after `set_healthy(false)`;
//! - `/slow?ms=N`: answers after N milliseconds;
//! - `/upload`: reads the whole body and answers with its length (streaming);
//! - `/download?bytes=N`: streams N bytes;
//! - `/hop`: answers with hop-by-hop headers the gateway must strip;
//! - `/ws`: a WebSocket echo;
//! - any path given to `serve`: the fixed answer given there.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Serves HTTPS (its answers add `tls_server_name`, what SNI asked for).
    pub https: bool,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    name: String,
    healthy: AtomicBool,
    /// Requests served, health checks not counted.
    served: AtomicUsize,
    health_checks: AtomicUsize,
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// Added to every answer but health checks.
    delay_ms: AtomicUsize,
    connections: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Fixed answers by path, set with `serve`: (status, content type, body).
    fixed: std::sync::Mutex<BTreeMap<String, (StatusCode, String, Bytes)>>,
}

type Body = BoxBody<Bytes, Infallible>;

impl Backend {
    /// Starts a backend called `name` on a free loopback port.
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0").await
    }

    /// Starts on a given address (to bring a stopped backend back on its port).
    pub async fn start_on(name: &str, addr: &str) -> Backend {
        Self::start_with(name, addr, None).await
    }

    /// Starts an HTTPS backend (HTTP/1.1 and HTTP/2 as the acceptor's ALPN
    /// allows) on a free loopback port.
    pub async fn start_tls(name: &str, tls: tokio_rustls::TlsAcceptor) -> Backend {
        Self::start_with(name, "127.0.0.1:0", Some(tls)).await
    }

    async fn start_with(name: &str, addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let https = tls.is_some();
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(State {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            ..State::default()
        });
        let accept_state = state.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.accepted.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                let tls = tls.clone();
                let connection = tokio::spawn(async move {
                    let serve = |sni: Option<String>| {
                        service_fn(move |mut req: Request<Incoming>| {
                            let state = state.clone();
                            req.extensions_mut().insert(Sni(sni.clone()));
                            async move { Ok::<_, Infallible>(answer(&state, req).await) }
                        })
                    };
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), serve(None))
                                .await;
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_string);
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), serve(sni))
                                .await;
                        }
                    }
                });
                if let Ok(mut list) = accept_state.connections.lock() {
                    list.push(connection);
                }
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            https,
            state,
            accept_loop,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    pub fn connections_accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now (served and not yet closed).
    pub fn connections_open(&self) -> usize {
        self.state
            .connections
            .lock()
            .map_or(0, |list| list.iter().filter(|c| !c.is_finished()).count())
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    /// From now on answers `path` (query ignored) with `status`, a
    /// `content-type` of `content_type` and `body`, instead of the echo;
    /// the delay still applies.
    pub fn serve(&self, path: &str, status: u16, content_type: &str, body: impl Into<Bytes>) {
        let status = StatusCode::from_u16(status).expect("a status code");
        if let Ok(mut fixed) = self.state.fixed.lock() {
            fixed.insert(
                path.to_string(),
                (status, content_type.to_string(), body.into()),
            );
        }
    }

    /// Stops listening and cuts every open connection, like a crashed process.
    pub fn stop(&self) {
        self.accept_loop.abort();
        if let Ok(mut list) = self.state.connections.lock() {
            for connection in list.drain(..) {
                connection.abort();
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The name a TLS client asked for, on an HTTPS backend's requests.
#[derive(Clone)]
struct Sni(Option<String>);

async fn answer(state: &State, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if path == "/healthz" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if state.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return full(status, "{}");
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst) as u64
        + query
            .get("ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|_| path == "/slow")
            .unwrap_or(0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fixed = state
        .fixed
        .lock()
        .ok()
        .and_then(|fixed| fixed.get(&path).cloned());
    if let Some((status, content_type, body)) = fixed {
        let mut response = Response::new(Full::new(body).boxed());
        *response.status_mut() = status;
        response.headers_mut().insert(
            "content-type",
            content_type.parse().expect("a content type"),
        );
        return response;
    }
    match path.as_str() {
        "/ws" => return websocket_echo(&mut req),
        "/download" => {
            let bytes: u64 = query.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
            return download(bytes);
        }
        _ => {}
    }
    let headers: BTreeMap<String, Vec<String>> = req
        .headers()
        .keys()
        .map(|k| {
            let values = req
                .headers()
                .get_all(k)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (k.as_str().to_string(), values)
        })
        .collect();
    let sni = req.extensions().get::<Sni>().and_then(|s| s.0.clone());
    let (method, version, uri) = (
        req.method().to_string(),
        format!("{:?}", req.version()),
        req.uri().to_string(),
    );
    // Read the body a frame at a time: nothing is held but a running count.
    let mut body = req.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map(|d| d.len() as u64).unwrap_or(0),
            Err(_) => return full(StatusCode::BAD_REQUEST, "{\"error\":\"body read failed\"}"),
        }
    }
    let echo = serde_json::json!({
        "backend": state.name,
        "method": method,
        "version": version,
        "uri": uri,
        "path": path,
        "headers": headers,
        "body_bytes": body_bytes,
        "tls_server_name": sni,
    });
    let mut response = full(StatusCode::OK, &echo.to_string());
    if path == "/hop" {
        let h = response.headers_mut();
        h.insert("connection", "x-backend-secret".parse().expect("value"));
        h.insert("x-backend-secret", "leak".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("proxy-authenticate", "Basic".parse().expect("value"));
        h.insert("x-backend-visible", "yes".parse().expect("value"));
    }
    response
}

fn full(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    response
}

/// Streams `bytes` bytes in 64 KiB chunks, made as they are sent.
fn download(bytes: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let stream = futures_util::stream::unfold(bytes, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert("content-length", bytes.to_string().parse().expect("value"));
    response
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return full(
            StatusCode::BAD_REQUEST,
            "{\"error\":\"not a websocket request\"}",
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
            if message.is_text() || message.is_binary() {
                let _ = ws.send(message).await;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert("connection", "upgrade".parse().expect("value"));
    h.insert("upgrade", "websocket".parse().expect("value"));
    h.insert("sec-websocket-accept", accept.parse().expect("value"));
    response
}
