//! One client connection from accept to close: its first bytes within the
//! header timeout, the send timeout on its socket, the TLS handshake on a
//! TLS listener, the framing scanner, hyper serving it, and its end: idle (no request for `idle_timeout`),
//! shutdown (graceful), or the client leaving. What it holds while open (its
//! place under `max_connections` and the per-address limit, and a drain
//! guard) passes to a WebSocket tunnel it becomes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use crate::edge::{self, framing};
use crate::proxy;
use crate::snapshot::Snapshot;
use crate::tls;

/// What every connection of a listener shares.
pub struct Listener {
    /// The snapshot new requests start on (the gateway's current one).
    pub snapshot: Box<dyn Fn() -> Arc<Snapshot> + Send + Sync>,
    pub builder: auto::Builder<TokioExecutor>,
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
        if !first_bytes_within(&stream, self.header_timeout).await {
            return;
        }
        let stream = edge::stall::SendTimeout::new(stream, self.send_timeout);
        let Some(acceptor) = tls else {
            return self.serve_http(stream, client, None, held).await;
        };
        let (stream, session) = match acceptor.accept(stream).await {
            Ok(accepted) => accepted,
            Err(reason) => {
                tracing::debug!(%client, %reason, "TLS handshake failed");
                return;
            }
        };
        // As on plain connections, an HTTP/2 preface must arrive whole
        // within the header timeout (hyper would wait for it forever).
        match edge::rewind::first_bytes(stream, PREFACE, self.header_timeout).await {
            Some(stream) => {
                self.serve_http(stream, client, Some(Arc::new(session)), held)
                    .await
            }
            None => tracing::debug!(%client, "no request within the header timeout; closed"),
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 (by its preface) on `io` to its end.
    async fn serve_http<IO>(
        self: Arc<Self>,
        io: IO,
        client: SocketAddr,
        tls: Option<Arc<tls::Session>>,
        held: Arc<Held>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (stream, framing) = framing::watch(io, self.max_head);
        let peer = Arc::new(edge::Client::new(
            client,
            self.rules.clone(),
            Some(framing),
            Some(held),
            tls,
        ));
        let activity = Arc::new(Activity::new());
        let service = {
            let listener = self.clone();
            let activity = activity.clone();
            service_fn(move |request| {
                // Each request runs to the end on the snapshot it started with.
                let snapshot = (listener.snapshot)();
                let peer = peer.clone();
                let activity = activity.clone();
                async move {
                    let _busy = activity.request();
                    Ok::<_, Infallible>(proxy::handle(&snapshot, request, &peer).await)
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut shutdown = self.drain.signal();
        // Once asked to close, a connection gets a while to finish what is in
        // flight; a client that stalls the goodbye (no ack of HTTP/2's last
        // ping, a stream window left at zero) is dropped after it.
        let mut closing: Option<Instant> = None;
        loop {
            // Only awaited while closing (the branch below is off otherwise).
            let give_up = closing.unwrap_or_else(Instant::now);
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%client, %error, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.wait_for(|stop| *stop), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + self.close_grace);
                }
                () = activity.idle_for(self.idle_timeout), if closing.is_none() => {
                    tracing::debug!(%client, "idle connection closed");
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + self.close_grace);
                }
                () = tokio::time::sleep_until(give_up), if closing.is_some() => {
                    tracing::debug!(%client, "connection did not close in time; dropped");
                    return;
                }
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let now = self.0.started.elapsed().as_millis() as u64;
        self.0.last_ms.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn request(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Resolves once no request has been in flight for `idle` (checked four
    /// times per `idle`).
    async fn idle_for(&self, idle: Duration) {
        loop {
            tokio::time::sleep(idle / 4).await;
            let since = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0
                && self.started.elapsed().saturating_sub(since) >= idle
            {
                return;
            }
        }
    }
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
/// HTTP/2 preface that arrives in pieces is waited for whole, since hyper's
/// protocol sniffing reads it with no time limit.
pub async fn first_bytes_within(stream: &TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut seen = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) if n == PREFACE.len() || seen[..n] != PREFACE[..n] => return true,
            // Waiting longer each time: peek cannot wait for *more* bytes.
            Ok(Ok(_)) => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(pause))
                    .await
                    .is_err()
                {
                    return false;
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
