//! Keep-alive connections to an upstream's targets: HTTP/1.1, over TLS for
//! `https://` targets, and HTTP/2 where a TLS target picks it by ALPN.
//!
//! hyper-util's pooled client cost about a quarter of the proxy's user-space
//! instructions per request (callgrind): a hashed pool key and a lock on
//! checkout and return, and a task spawned per request to put the connection
//! back once the response body is done. Here an HTTP/1 connection goes back
//! into its target's list as soon as the response head arrives, and checkout
//! takes the first one that is ready for a new request, passing over those
//! still streaming a body. No hashing, no task per request. An HTTP/2
//! connection is shared by every request to its target. One task per pool
//! closes connections left idle longer than the idle timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::AttemptError;
use crate::body::Body;
use crate::tls::origin::Origin;

/// Connections to each target of one upstream, in the pool's target order.
#[derive(Debug)]
pub struct ConnectionPool {
    targets: Vec<TargetConnections>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    reaper_started: AtomicBool,
}

/// One target of a pool: where it is and how it is reached.
#[derive(Debug, Clone)]
pub struct TargetAddress {
    pub authority: Authority,
    /// `https://`: TLS, checked as `origin` says.
    pub https: bool,
}

#[derive(Debug)]
struct TargetConnections {
    /// `host:port` to connect to (port 80 when the URL has none).
    address: String,
    /// The Host header sent when the request has none.
    host: HeaderValue,
    /// How TLS is spoken to this target; `None` for plain HTTP.
    tls: Option<(Origin, rustls::pki_types::ServerName<'static>)>,
    /// Each worker's idle connections, by `workers::current()`: a worker
    /// takes only those it opened, which its own runtime drives, so a
    /// request and its connection never wake each other across threads.
    idle: Box<[Mutex<Vec<Pooled>>]>,
    /// The HTTP/2 connection every request shares, once one is open.
    shared: Mutex<Option<Pooled2>>,
    /// Held while connecting to a target that may pick HTTP/2, so requests
    /// arriving together share the one connection instead of opening many.
    connecting: tokio::sync::Mutex<()>,
    /// The target answered an offer of HTTP/2 with HTTP/1.1 the last time:
    /// connections are not shared, so they are opened without waiting for
    /// each other.
    picks_http1: AtomicBool,
    /// When and why the last connect under `connecting` failed: requests
    /// that waited for it fail at once with it (and may be retried on
    /// another target) rather than each trying in turn.
    last_failure: Mutex<Option<(Instant, String, bool)>>,
}

#[derive(Debug)]
struct Pooled {
    sender: http1::SendRequest<Body>,
    returned: Instant,
}

#[derive(Debug)]
struct Pooled2 {
    sender: http2::SendRequest<Body>,
    used: Instant,
}

/// A connection ready for one request.
enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

impl TargetConnections {
    /// The idle connections of the worker running this code.
    fn idle_here(&self) -> &Mutex<Vec<Pooled>> {
        &self.idle[crate::workers::current() % self.idle.len()]
    }
}

impl ConnectionPool {
    /// A pool for `targets`; `origin` says how `https://` ones are reached
    /// (a target's host it cannot check a certificate against is an error).
    pub fn new(
        targets: &[TargetAddress],
        origin: Option<&Origin>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        workers: usize,
    ) -> Result<Self, String> {
        let targets = targets
            .iter()
            .map(|target| {
                let authority = &target.authority;
                let tls = match (target.https, origin) {
                    (false, _) => None,
                    (true, None) => {
                        return Err(format!("{authority}: https needs TLS settings"));
                    }
                    (true, Some(origin)) => {
                        Some((origin.clone(), origin.server_name(authority.host())?))
                    }
                };
                Ok(TargetConnections {
                    address: format!(
                        "{}:{}",
                        authority.host(),
                        authority.port_u16().unwrap_or(80)
                    ),
                    host: HeaderValue::from_str(authority.as_str())
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    tls,
                    idle: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
                    shared: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                    picks_http1: AtomicBool::new(false),
                    last_failure: Mutex::new(None),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            targets,
            connect_timeout,
            idle_timeout,
            max_idle,
            reaper_started: AtomicBool::new(false),
        })
    }

    /// Sends `request` (origin-form) to `target` and waits for the response
    /// head. A request that a pooled connection hands back unsent (the
    /// target had closed it while idle) goes out again on another one.
    pub async fn send(
        self: &Arc<Self>,
        target: usize,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let connections = &self.targets[target];
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, connections.host.clone());
        }
        // An upgrade (WebSocket) needs an HTTP/1.1 connection of its own.
        let upgrade = request.headers().contains_key(UPGRADE);
        loop {
            let (sender, reused) = match self.checkout(connections, upgrade) {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, TLS, handshake) is the rare path,
                // and its large future would otherwise be part of every
                // request's, and copied each time that one moves.
                None => Box::pin(self.connect_or_share(connections, upgrade)).await?,
            };
            let unsent = match sender {
                Sender::Http1(mut sender) => match sender.try_send_request(request).await {
                    Ok(response) => {
                        self.checkin(connections, sender);
                        return Ok(response);
                    }
                    Err(mut error) => match error.take_message() {
                        Some(unsent) if reused => unsent,
                        _ => return Err(attempt_error(&error.into_error())),
                    },
                },
                Sender::Http2(mut sender) => {
                    let request = absolute_form(request, &connections.host);
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok(response),
                        Err(mut error) => match error.take_message() {
                            Some(unsent) if reused => {
                                if let Ok(mut shared) = connections.shared.lock() {
                                    *shared = None;
                                }
                                // It may go out next on an HTTP/1.1 connection.
                                origin_form(unsent)
                            }
                            _ => return Err(attempt_error(&error.into_error())),
                        },
                    }
                }
            };
            request = unsent;
        }
    }

    /// The shared HTTP/2 connection, or the first idle HTTP/1 one ready
    /// for a request; closed and expired ones are dropped on the way.
    fn checkout(&self, connections: &TargetConnections, upgrade: bool) -> Option<Sender> {
        if !upgrade
            && let Ok(mut shared) = connections.shared.lock()
            && let Some(pooled) = shared.as_mut()
        {
            if pooled.sender.is_closed() {
                *shared = None;
            } else {
                pooled.used = Instant::now();
                return Some(Sender::Http2(pooled.sender.clone()));
            }
        }
        let mut idle = connections.idle_here().lock().ok()?;
        self.take_ready(&mut idle).map(Sender::Http1)
    }

    /// The most recently returned connection that is ready, dropping closed
    /// and expired ones met on the way. Not a sweep of the whole list on
    /// every request: the reaper sweeps the rest.
    fn take_ready(&self, idle: &mut Vec<Pooled>) -> Option<http1::SendRequest<Body>> {
        let now = Instant::now();
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            let connection = &idle[at];
            if !self.usable(connection, now) {
                // What moves into `at` was already looked at.
                idle.swap_remove(at);
            } else if connection.sender.is_ready() {
                return Some(idle.swap_remove(at).sender);
            }
        }
        None
    }

    /// Back into the list at once: busy until its response body is read,
    /// then ready for the next checkout. Each worker keeps up to `max_idle`.
    fn checkin(&self, connections: &TargetConnections, sender: http1::SendRequest<Body>) {
        if let Ok(mut idle) = connections.idle_here().lock()
            && idle.len() < self.max_idle
        {
            idle.push(Pooled {
                sender,
                returned: Instant::now(),
            });
        }
    }

    fn drop_expired(&self, idle: &mut Vec<Pooled>) {
        let now = Instant::now();
        idle.retain(|c| self.usable(c, now));
    }

    /// Open, and returned less than the idle timeout before `now`.
    fn usable(&self, connection: &Pooled, now: Instant) -> bool {
        !connection.sender.is_closed() && now - connection.returned < self.idle_timeout
    }

    /// Closes idle connections past the idle timeout, every half timeout,
    /// for as long as the pool exists (a reload may drop it).
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                for target in &pool.targets {
                    for idle in &target.idle {
                        if let Ok(mut idle) = idle.lock() {
                            pool.drop_expired(&mut idle);
                        }
                    }
                    // Requests still streaming on it hold their own handle.
                    if let Ok(mut shared) = target.shared.lock()
                        && shared.as_ref().is_some_and(|p| {
                            p.sender.is_closed() || p.used.elapsed() >= pool.idle_timeout
                        })
                    {
                        *shared = None;
                    }
                }
            }
        });
    }

    #[cfg(test)]
    fn idle_count(&self, target: usize) -> usize {
        self.targets[target]
            .idle_here()
            .lock()
            .map_or(0, |idle| idle.len())
    }

    /// A new connection; or, towards a target that may pick HTTP/2, the
    /// one another request has just opened, once it is open.
    async fn connect_or_share(
        self: &Arc<Self>,
        connections: &TargetConnections,
        upgrade: bool,
    ) -> Result<(Sender, bool), AttemptError> {
        let may_share = !upgrade
            && connections
                .tls
                .as_ref()
                .is_some_and(|(origin, _)| origin.http2.is_some())
            && !connections.picks_http1.load(Ordering::Relaxed);
        if !may_share {
            return Ok((self.connect(connections, upgrade).await?, false));
        }
        let asked = Instant::now();
        let turn = connections.connecting.lock().await;
        if let Some(sender) = self.checkout(connections, upgrade) {
            return Ok((sender, true));
        }
        let failed_meanwhile = connections
            .last_failure
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .filter(|(at, _, _)| *at >= asked);
        if let Some((_, reason, timed_out)) = failed_meanwhile {
            return Err(AttemptError::Connect { reason, timed_out });
        }
        if connections.picks_http1.load(Ordering::Relaxed) {
            drop(turn); // Not shared after all: no need to wait for each other.
        }
        match self.connect(connections, upgrade).await {
            Ok(sender) => Ok((sender, false)),
            Err(error) => {
                if let (AttemptError::Connect { reason, timed_out }, Ok(mut last)) =
                    (&error, connections.last_failure.lock())
                {
                    *last = Some((Instant::now(), reason.clone(), *timed_out));
                }
                Err(error)
            }
        }
    }

    /// A new connection: TCP, then TLS for an https target, all within the
    /// connect timeout; then HTTP/2 if TLS agreed on it, else HTTP/1.1.
    async fn connect(
        self: &Arc<Self>,
        connections: &TargetConnections,
        upgrade: bool,
    ) -> Result<Sender, AttemptError> {
        self.start_reaper();
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let timed_out = || AttemptError::Connect {
            reason: format!(
                "no connection within {}ms",
                self.connect_timeout.as_millis()
            ),
            timed_out: true,
        };
        let connecting = TcpStream::connect(&connections.address);
        let stream = match tokio::time::timeout_at(deadline, connecting).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(error)) => {
                return Err(AttemptError::Connect {
                    timed_out: error.kind() == std::io::ErrorKind::TimedOut,
                    reason: error.to_string(),
                });
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let Some((origin, server_name)) = &connections.tls else {
            return http1_over(stream).await.map(Sender::Http1);
        };
        let connector = match &origin.http2 {
            Some(http2) if !upgrade => http2,
            _ => &origin.http1,
        };
        let handshake = connector.connect(server_name.clone(), stream);
        let stream = match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(error)) => {
                return Err(AttemptError::Connect {
                    reason: format!("TLS handshake failed: {error}"),
                    timed_out: false,
                });
            }
            Ok(Ok(stream)) => stream,
        };
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            if !upgrade && origin.http2.is_some() {
                connections.picks_http1.store(true, Ordering::Relaxed);
            }
            return http1_over(stream).await.map(Sender::Http1);
        }
        connections.picks_http1.store(false, Ordering::Relaxed);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // A connection that went silent (a dropped NAT entry, a dead
            // host) is found and closed, so the next request opens another.
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            // A client that stops reading its answer holds one stream's
            // window (256 KiB), not the whole connection's.
            .initial_stream_window_size(256 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            // As much head as an HTTP/1.1 answer may have.
            .max_header_list_size(400 * 1024)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AttemptError::Broken(innermost(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
        });
        if let Ok(mut shared) = connections.shared.lock() {
            *shared = Some(Pooled2 {
                sender: sender.clone(),
                used: Instant::now(),
            });
        }
        Ok(Sender::Http2(sender))
    }
}

/// An HTTP/1.1 connection over `io`, its task spawned.
async fn http1_over<IO>(io: IO) -> Result<http1::SendRequest<Body>, AttemptError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| AttemptError::Broken(innermost(&e)))?;
    tokio::spawn(async move {
        // Upgrades: a WebSocket response hands the socket to the tunnel.
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    sender
        .ready()
        .await
        .map_err(|e| AttemptError::Broken(innermost(&e)))?;
    Ok(sender)
}

/// HTTP/2 carries the scheme and authority in the request itself (HTTP/2
/// is only spoken over TLS here): the origin-form URI becomes
/// `https://HOST/path`, with the Host header as authority, or the target's
/// own where the Host is not one.
fn absolute_form(mut request: Request<Body>, target: &HeaderValue) -> Request<Body> {
    let host = request.headers_mut().remove(HOST);
    let authority = host
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .or_else(|| Authority::try_from(target.as_bytes()).ok());
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// `absolute_form` undone, for a request HTTP/2 handed back unsent.
fn origin_form(mut request: Request<Body>) -> Request<Body> {
    if let Some(authority) = request.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(HOST, host);
    }
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    request
}

/// A failed exchange: the client's body failing (malformed, aborted, idle)
/// is told apart from the connection to the target failing.
fn attempt_error(error: &hyper::Error) -> AttemptError {
    if error.is_user() {
        AttemptError::ClientBody {
            idle: crate::body::is_idle(error),
            reason: innermost(error),
        }
    } else {
        AttemptError::Broken(innermost(error))
    }
}

/// The innermost cause, which is the one that says what happened ("Connection reset by peer").
fn innermost(error: &hyper::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A target that answers every request on a connection with a short 200
    /// and reports when the gateway closes the connection.
    async fn target() -> (Authority, tokio::sync::mpsc::Receiver<&'static str>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let authority = listener
            .local_addr()
            .expect("addr")
            .to_string()
            .parse()
            .expect("authority");
        let (events, seen) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let events = events.clone();
                tokio::spawn(async move {
                    let _ = events.send("accepted").await;
                    let mut buf = [0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if socket.write_all(reply).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = events.send("closed").await;
                });
            }
        });
        (authority, seen)
    }

    fn plain_pool(authority: Authority, idle_timeout: Duration) -> ConnectionPool {
        let target = TargetAddress {
            authority,
            https: false,
        };
        ConnectionPool::new(&[target], None, Duration::from_secs(1), idle_timeout, 8, 1)
            .expect("pool")
    }

    async fn get(pool: &Arc<ConnectionPool>) -> http::StatusCode {
        let request = Request::get("/")
            .body(crate::body::empty())
            .expect("request");
        let response = pool.send(0, request).await.expect("response");
        let status = response.status();
        let body = crate::body::Streamed::new(response.into_body(), Duration::from_secs(5));
        crate::body::buffer(http_body_util::Either::Left(body), 1024)
            .await
            .expect("body");
        status
    }

    #[tokio::test]
    async fn connections_are_reused_then_closed_when_idle_too_long() {
        let (authority, mut seen) = target().await;
        let pool = Arc::new(plain_pool(authority, Duration::from_millis(300)));
        for _ in 0..3 {
            assert_eq!(get(&pool).await, http::StatusCode::OK);
        }
        assert_eq!(seen.recv().await, Some("accepted"));
        assert!(seen.try_recv().is_err(), "one connection served all three");
        assert_eq!(pool.idle_count(0), 1);
        let closed = tokio::time::timeout(Duration::from_secs(3), seen.recv()).await;
        assert_eq!(closed, Ok(Some("closed")), "the idle connection was closed");
        assert_eq!(pool.idle_count(0), 0);
    }

    #[test]
    fn http2_requests_carry_the_host_as_authority_and_go_back_to_http1_form() {
        let target = HeaderValue::from_static("10.0.0.7:8443");
        let request = |host: Option<&str>| {
            let mut request = Request::get("/a?b=1")
                .body(crate::body::empty())
                .expect("request");
            if let Some(host) = host {
                request
                    .headers_mut()
                    .insert(HOST, HeaderValue::from_str(host).expect("value"));
            }
            request
        };
        let h2 = absolute_form(request(Some("api.test")), &target);
        assert_eq!(h2.uri(), "https://api.test/a?b=1");
        assert!(!h2.headers().contains_key(HOST));
        let back = origin_form(h2);
        assert_eq!(back.uri(), "/a?b=1");
        assert_eq!(back.headers()[HOST], "api.test");
        // A Host that is no authority: the target's own.
        let odd = absolute_form(request(Some("a:1:2")), &target);
        assert_eq!(odd.uri(), "https://10.0.0.7:8443/a?b=1");
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let authority: Authority = format!("127.0.0.1:{port}").parse().expect("authority");
        let pool = Arc::new(plain_pool(authority, Duration::from_secs(60)));
        let request = Request::get("/")
            .body(crate::body::empty())
            .expect("request");
        match pool.send(0, request).await {
            Err(AttemptError::Connect { reason, timed_out }) => {
                assert!(reason.contains("refused"), "{reason}");
                assert!(!timed_out);
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
