//! Keep-alive HTTP/1 connections to an upstream's targets.
//!
//! hyper-util's pooled client cost about a quarter of the proxy's user-space
//! instructions per request (callgrind): a hashed pool key and a lock on
//! checkout and return, and a task spawned per request to put the connection
//! back once the response body is done. Here a connection goes back into its
//! target's list as soon as the response head arrives, and checkout takes
//! the first one that is ready for a new request, passing over those still
//! streaming a body. No hashing, no task per request. One task per pool
//! closes connections left idle longer than the idle timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::AttemptError;
use crate::body::Body;

/// Connections to each target of one upstream, in the pool's target order.
#[derive(Debug)]
pub struct ConnectionPool {
    targets: Vec<TargetConnections>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    reaper_started: AtomicBool,
}

#[derive(Debug)]
struct TargetConnections {
    /// `host:port` to connect to (port 80 when the URL has none).
    address: String,
    /// The Host header sent when the request has none.
    host: HeaderValue,
    idle: Mutex<Vec<Pooled>>,
}

#[derive(Debug)]
struct Pooled {
    sender: SendRequest<Body>,
    returned: Instant,
}

impl ConnectionPool {
    pub fn new(
        targets: &[Authority],
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let targets = targets
            .iter()
            .map(|authority| TargetConnections {
                address: format!(
                    "{}:{}",
                    authority.host(),
                    authority.port_u16().unwrap_or(80)
                ),
                host: HeaderValue::from_str(authority.as_str())
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        Self {
            targets,
            connect_timeout,
            idle_timeout,
            max_idle,
            reaper_started: AtomicBool::new(false),
        }
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
        loop {
            let (mut sender, reused) = match self.checkout(connections) {
                Some(sender) => (sender, true),
                None => (self.connect(connections).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(connections, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(attempt_error(&error.into_error())),
                },
            }
        }
    }

    /// The first idle connection ready for a request; closed and expired
    /// ones are dropped on the way.
    fn checkout(&self, connections: &TargetConnections) -> Option<SendRequest<Body>> {
        let mut idle = connections.idle.lock().ok()?;
        self.drop_expired(&mut idle);
        let ready = idle.iter().position(|c| c.sender.is_ready())?;
        Some(idle.swap_remove(ready).sender)
    }

    /// Back into the list at once: busy until its response body is read,
    /// then ready for the next checkout.
    fn checkin(&self, connections: &TargetConnections, sender: SendRequest<Body>) {
        if let Ok(mut idle) = connections.idle.lock()
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
        idle.retain(|c| !c.sender.is_closed() && now - c.returned < self.idle_timeout);
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
                    if let Ok(mut idle) = target.idle.lock() {
                        pool.drop_expired(&mut idle);
                    }
                }
            }
        });
    }

    #[cfg(test)]
    fn idle_count(&self, target: usize) -> usize {
        self.targets[target]
            .idle
            .lock()
            .map_or(0, |idle| idle.len())
    }

    async fn connect(
        self: &Arc<Self>,
        connections: &TargetConnections,
    ) -> Result<SendRequest<Body>, AttemptError> {
        self.start_reaper();
        let connecting = TcpStream::connect(&connections.address);
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(AttemptError::Connect {
                    reason: format!(
                        "no connection within {}ms",
                        self.connect_timeout.as_millis()
                    ),
                    timed_out: true,
                });
            }
            Ok(Err(error)) => {
                return Err(AttemptError::Connect {
                    timed_out: error.kind() == std::io::ErrorKind::TimedOut,
                    reason: error.to_string(),
                });
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
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
        let pool = Arc::new(ConnectionPool::new(
            &[authority],
            Duration::from_secs(1),
            Duration::from_millis(300),
            8,
        ));
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

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let authority: Authority = format!("127.0.0.1:{port}").parse().expect("authority");
        let pool = Arc::new(ConnectionPool::new(
            &[authority],
            Duration::from_secs(1),
            Duration::from_secs(60),
            8,
        ));
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
