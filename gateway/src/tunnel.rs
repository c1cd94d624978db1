//! Upgraded connections (WebSocket): the client's and the upstream's
//! sockets joined byte for byte, and closed when neither side sends anything
//! for the idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::observed::{Observed, Observer};

/// Joins the two sides once both upgrades complete, in a task of its own
/// that keeps what the client connection `held` (its place under the
/// connection limits, its drain guard) until the tunnel closes.
pub fn spawn<Held: Send + 'static>(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    held: Held,
) {
    tokio::spawn(async move {
        let _held = held;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = Observed::new(TokioIo::new(client), Counter(moved.clone()));
        let mut upstream = Observed::new(TokioIo::new(upstream), Counter(moved.clone()));
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

/// Adds the bytes read from a socket to a total shared by both sides.
struct Counter(Arc<AtomicU64>);

impl Observer for Counter {
    fn saw(&mut self, bytes: &[u8]) {
        self.0.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
}
