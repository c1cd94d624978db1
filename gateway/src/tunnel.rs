//! Upgraded connections (WebSocket): the client's and the upstream's
//! sockets joined byte for byte, and closed when neither side sends anything
//! for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Joins the two sides once both upgrades complete, in a task of its own
/// that holds the client connection's `slot` under `max_connections`.
pub fn spawn<Slot: Send + 'static>(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    slot: Slot,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = Counted::new(TokioIo::new(client), &moved);
        let mut upstream = Counted::new(TokioIo::new(upstream), &moved);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(error) = copied {
                    tracing::debug!(%error, "upgraded connection closed with an error");
                }
            }
            () = until_idle(&moved, idle) => {
                tracing::debug!(idle_ms = idle.as_millis(), "upgraded connection closed when idle");
            }
        }
    });
}

/// Resolves once `moved` has not changed for `idle` (checked four times
/// per `idle`, so within a quarter more).
async fn until_idle(moved: &AtomicU64, idle: Duration) {
    let mut last = moved.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(idle / 4).await;
        let now = moved.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= idle {
            return;
        }
    }
}

/// A socket that counts the bytes read from it into a shared total.
struct Counted<IO> {
    io: IO,
    moved: Arc<AtomicU64>,
}

impl<IO> Counted<IO> {
    fn new(io: IO, moved: &Arc<AtomicU64>) -> Self {
        Self {
            io,
            moved: moved.clone(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.moved.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
