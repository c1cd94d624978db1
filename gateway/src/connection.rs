//! One client connection from accept to close: its first bytes within the
//! header timeout, the send timeout on its socket, the TLS handshake on a
//! TLS listener, the framing scanner, hyper serving it (an HTTP/1.1 one
//! parked between requests), and its end: idle (no request for
//! `idle_timeout`), shutdown (graceful), or the client leaving. What it
//! holds while open (its place under `max_connections` and the per-address
//! limit, and a drain guard) passes to a WebSocket tunnel it becomes.

mod activity;
mod parked;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use self::activity::{Activity, Tracked, own_header_values};
use self::parked::Parkable;
use crate::edge::{self, framing};
use crate::proxy;
use crate::snapshot::Snapshot;
use crate::tls;

/// What every connection of a listener shares.
pub struct Listener {
    /// The snapshot new requests start on (the gateway's current one).
    pub snapshot: Box<dyn Fn() -> Arc<Snapshot> + Send + Sync>,
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    pub rules: Arc<edge::Rules>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    /// How long a connection asked to close may take to finish.
    pub close_grace: Duration,
    pub max_head: usize,
    pub drain: Drain,
    pub per_address: PerAddress,
}

/// What an open connection holds, released when it and any tunnel it
/// became have closed.
#[derive(Debug)]
pub struct Held {
    _slot: OwnedSemaphorePermit,
    _address: AddressGuard,
    _drain: DrainGuard,
    _open: crate::metrics::OpenConnection,
}

impl Listener {
    /// Serves one accepted connection to its end; `tls` is the listener's
    /// acceptor on a TLS listener.
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        tls: Option<Arc<tls::Acceptor>>,
        slot: OwnedSemaphorePermit,
        drain: DrainGuard,
    ) {
        let Some(address) = self.per_address.enter(client.ip()) else {
            tracing::debug!(%client, "per-address connection limit reached; closed");
            return;
        };
        let held = Arc::new(Held {
            _slot: slot,
            _address: address,
            _drain: drain,
            _open: crate::metrics::metrics().connection_opened(),
        });
        // A client that sends nothing is closed after the header timeout,
        // before hyper's own timer (which starts once a protocol is known).
        let Some(http2) = first_bytes(&stream, self.header_timeout).await else {
            return;
        };
        // What a connection waits on next is boxed, sized for itself: the
        // task holds only this function's own small state, so an idle plain
        // connection does not carry room for a TLS handshake.
        let stream = edge::stall::SendTimeout::new(stream, self.send_timeout);
        let Some(acceptor) = tls else {
            return Box::pin(self.serve_http(stream, client, None, held, http2)).await;
        };
        let (stream, session) = match Box::pin(acceptor.accept(stream)).await {
            Ok(accepted) => accepted,
            Err(reason) => {
                tracing::debug!(%client, %reason, "TLS handshake failed");
                return;
            }
        };
        // As on plain connections, an HTTP/2 preface must arrive whole
        // within the header timeout (hyper would wait for it forever).
        let first = Box::pin(edge::rewind::first_bytes(
            stream,
            PREFACE,
            self.header_timeout,
        ));
        match first.await {
            Some(stream) => {
                let http2 = stream.ahead() == PREFACE;
                let session = Some(Arc::new(session));
                Box::pin(self.serve_http(stream, client, session, held, http2)).await
            }
            None => tracing::debug!(%client, "no request within the header timeout; closed"),
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 (`http2`: its preface came) on `io` to its end.
    async fn serve_http<IO>(
        self: Arc<Self>,
        io: IO,
        client: SocketAddr,
        tls: Option<Arc<tls::Session>>,
        held: Arc<Held>,
        http2: bool,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (stream, framing) = framing::watch(io, self.max_head);
        let scanned = framing.clone();
        let peer = Arc::new(edge::Client::new(
            client,
            self.rules.clone(),
            Some(framing),
            Some(held),
            tls,
        ));
        let activity = Activity::new();
        let service = {
            let listener = self.clone();
            let activity = activity.clone();
            service_fn(move |request| {
                // Each request runs to the end on the snapshot it started with.
                let snapshot = (listener.snapshot)();
                let peer = peer.clone();
                let busy = activity.request();
                async move {
                    let mut response = proxy::handle(&snapshot, request, &peer).await;
                    if http2 {
                        own_header_values(response.headers_mut());
                    }
                    // On HTTP/2 a request is busy until its answer's head:
                    // a stream a client never opens its window for must not
                    // keep the connection from ever being idle.
                    let busy = (!http2).then_some(busy);
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy, http2)))
                }
            })
        };
        let mut shutdown = self.drain.signal();
        if http2 {
            let mut connection =
                Box::pin(self.http2.serve_connection(TokioIo::new(stream), service));
            let end = self
                .run(
                    connection.as_mut(),
                    |c| c.graceful_shutdown(),
                    &activity,
                    &mut shutdown,
                    client,
                    None,
                )
                .await;
            debug_assert!(matches!(end, End::Closed));
            return;
        }
        // HTTP/1.1: hyper serves while requests come; a connection at rest
        // between requests is parked (hyper's connection dropped, only the
        // socket kept) until the client's next bytes, the idle timeout or
        // shutdown.
        let mut io = Parkable::new(stream, activity.clone());
        let mut park = Park {
            after: PARK_AFTER.min(self.header_timeout / 2),
            answered: 0,
        };
        loop {
            let mut connection = Box::new(
                self.http1
                    .serve_connection(TokioIo::new(io), service.clone())
                    .with_upgrades(),
            );
            let end = self
                .run(
                    Pin::new(&mut *connection),
                    |c| c.graceful_shutdown(),
                    &activity,
                    &mut shutdown,
                    client,
                    Some((park, &|| activity.at_rest() && scanned.between_requests())),
                )
                .await;
            let parts = match (end, connection.into_parts()) {
                (End::AtRest, Some(parts)) => parts,
                _ => return,
            };
            // The bytes hyper read ahead share its whole read buffer: they
            // are copied out (if any) and the buffer dropped before waiting.
            let http1::Parts {
                io: tokio_io,
                read_buf,
                ..
            } = parts;
            io = tokio_io.into_inner();
            if !read_buf.is_empty() {
                // hyper had read the start of a next head with the last
                // answer's bytes: a new hyper goes on from it at once, and is
                // not parked before an answer, so a trickled head cannot
                // restart its header timeout again and again.
                io.unread(&read_buf);
                park.answered = activity.answered() + 1;
                continue;
            }
            drop(read_buf);
            let _parked = crate::metrics::metrics().connection_parked();
            let woke = tokio::select! {
                more = io.wait_for_bytes() => Some(more),
                _ = shutdown.wait_for(|stop| *stop) => None,
                () = activity.idle_for(self.idle_timeout) => {
                    tracing::debug!(%client, "idle connection closed");
                    None
                }
            };
            match woke {
                Some(true) => {}
                Some(false) => return,
                None => return close(io).await,
            }
        }
    }

    /// Runs hyper's `connection` until it ends, or (with `park`) until it
    /// may be parked. Asked to close (idle
    /// for `idle_timeout`, or shutdown), it gets `close_grace` to finish
    /// what is in flight; a client that stalls the goodbye (no ack of
    /// HTTP/2's last ping, a stream window left at zero) is dropped after it.
    async fn run<C>(
        &self,
        mut connection: Pin<&mut C>,
        close_gracefully: impl Fn(Pin<&mut C>),
        activity: &Activity,
        shutdown: &mut watch::Receiver<bool>,
        client: SocketAddr,
        park: Option<(Park, &(dyn Fn() -> bool + Sync))>,
    ) -> End
    where
        C: Future<Output = hyper::Result<()>>,
    {
        let idle = activity.idle_for(self.idle_timeout);
        tokio::pin!(idle);
        let rest_for = park.map_or(self.idle_timeout, |(park, _)| park.after);
        let rest = activity.idle_for(rest_for);
        tokio::pin!(rest);
        let mut closing: Option<Instant> = None;
        loop {
            // Only awaited while closing (the branch below is off otherwise).
            let give_up = closing.unwrap_or_else(Instant::now);
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%client, %error, "connection ended with an error");
                    }
                    return End::Closed;
                }
                _ = shutdown.wait_for(|stop| *stop), if closing.is_none() => {
                    close_gracefully(connection.as_mut());
                    closing = Some(Instant::now() + self.close_grace);
                }
                () = &mut idle, if closing.is_none() => {
                    tracing::debug!(%client, "idle connection closed");
                    close_gracefully(connection.as_mut());
                    closing = Some(Instant::now() + self.close_grace);
                }
                () = &mut rest, if closing.is_none() && park.is_some() => {
                    if park.is_some_and(|(park, at_rest)| {
                        at_rest() && activity.answered() >= park.answered
                    }) {
                        return End::AtRest;
                    }
                    // Checked again a quarter of `park.after` later.
                    rest.set(activity.idle_for(rest_for));
                }
                () = tokio::time::sleep_until(give_up), if closing.is_some() => {
                    tracing::debug!(%client, "connection did not close in time; dropped");
                    return End::Closed;
                }
            }
        }
    }
}

/// How long an HTTP/1.1 connection is at rest before it is parked: long
/// enough that a client sending request after request never is.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// When `Listener::run` may park an HTTP/1.1 connection: at rest (its
/// answers sent, its requests read whole, nothing of a next one come, not
/// closing) for `after`, once `answered` answers have ended on it.
#[derive(Clone, Copy)]
struct Park {
    after: Duration,
    answered: u64,
}

/// Why `Listener::run` returned.
enum End {
    Closed,
    AtRest,
}

/// Closes a parked connection: nothing is in flight, so it only says
/// goodbye (TLS's close_notify, TCP's FIN), within a second.
async fn close<IO: AsyncWrite + Unpin>(mut io: IO) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Connections (and tunnels) still open, and the signal that asks them to
/// finish.
#[derive(Debug, Clone)]
pub struct Drain {
    open: Arc<(AtomicUsize, Notify)>,
    stop: Arc<watch::Sender<bool>>,
}

#[derive(Debug)]
pub struct DrainGuard(Arc<(AtomicUsize, Notify)>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.1.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            open: Arc::new((AtomicUsize::new(0), Notify::new())),
            stop: Arc::new(watch::channel(false).0),
        }
    }
}

impl Drain {
    /// Counts a connection as open until the guard is dropped; taken in the
    /// accept loop, so a shutdown right after an accept still waits for it.
    pub fn guard(&self) -> DrainGuard {
        self.open.0.fetch_add(1, Ordering::AcqRel);
        DrainGuard(self.open.clone())
    }

    fn signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn open(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    /// Asks every connection to finish its requests and close, and waits
    /// until all have (tunnels included).
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        loop {
            let notified = self.open.1.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Open connections per client address, when `max_connections_per_address`
/// is set.
#[derive(Debug, Default)]
pub struct PerAddress {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

#[derive(Debug)]
pub struct AddressGuard {
    ip: IpAddr,
    open: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if let Some(open) = &self.open
            && let Ok(mut open) = open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl PerAddress {
    /// `max` 0 is no limit.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    fn enter(&self, ip: IpAddr) -> Option<AddressGuard> {
        let ip = counted_as(ip);
        if self.max == 0 {
            return Some(AddressGuard { ip, open: None });
        }
        let mut open = self.open.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressGuard {
            ip,
            open: Some(self.open.clone()),
        })
    }
}

/// The address a connection counts against: an IPv4 address, or an IPv6
/// one's /64 (one host usually holds a whole /64, so per-address counting
/// would not hold it back).
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// What an HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the client sends its first bytes, or says it never did. An
/// HTTP/2 preface that arrives in pieces is waited for whole, since hyper
/// would read it with no time limit.
pub async fn first_bytes_within(stream: &TcpStream, limit: Duration) -> bool {
    first_bytes(stream, limit).await.is_some()
}

/// As `first_bytes_within`, saying whether they were HTTP/2's preface.
async fn first_bytes(stream: &TcpStream, limit: Duration) -> Option<bool> {
    let deadline = Instant::now() + limit;
    let mut seen = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) if n == PREFACE.len() => return Some(seen[..] == *PREFACE),
            Ok(Ok(n)) if seen[..n] != PREFACE[..n] => return Some(false),
            // Waiting longer each time: peek cannot wait for *more* bytes.
            Ok(Ok(_)) => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(pause))
                    .await
                    .is_err()
                {
                    return None;
                }
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_address_limit_counts_and_releases() {
        let limit = PerAddress::new(2);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = limit.enter(ip);
        let b = limit.enter(ip);
        assert!(a.is_some() && b.is_some());
        assert!(limit.enter(ip).is_none(), "a third is refused");
        assert!(
            limit.enter("10.0.0.2".parse().expect("ip")).is_some(),
            "others are not"
        );
        drop(a);
        assert!(limit.enter(ip).is_some(), "a closed one frees its place");
        assert!(PerAddress::new(0).enter(ip).is_some(), "0 is no limit");
        let v6 = PerAddress::new(1);
        let _first = v6.enter("2001:db8:1:2::1".parse().expect("ip"));
        assert!(
            v6.enter("2001:db8:1:2::ffff".parse().expect("ip"))
                .is_none(),
            "same /64"
        );
        assert!(
            v6.enter("2001:db8:1:3::1".parse().expect("ip")).is_some(),
            "another /64"
        );
    }
}
