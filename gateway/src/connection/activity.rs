//! What one client connection is doing: answers in progress (a request
//! counts from its head until its answer's last byte was handed to hyper),
//! when the last one ended, and what its socket has moved since, so the
//! connection knows when it is idle and when it is at rest between requests.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

#[derive(Debug)]
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Answers ended so far.
    answered: AtomicU64,
    last_ms: AtomicU64,
    /// Bytes read from the client so far, and how many had been read when
    /// the last answer ended: more since means a next request has begun.
    read: AtomicU64,
    read_at_rest: AtomicU64,
    /// Bytes handed to the socket and not yet flushed, or a write the socket
    /// could not take: hyper still holds part of an answer.
    unflushed: AtomicBool,
    write_blocked: AtomicBool,
    /// hyper began closing the connection (a `Connection: close` answer,
    /// an HTTP/1.0 client): it must end, never be parked.
    closing: AtomicBool,
}

/// One answer in progress; dropped when its body has ended (or was dropped).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.started.elapsed().as_millis() as u64;
        activity.last_ms.store(now, Ordering::Relaxed);
        activity
            .read_at_rest
            .store(activity.read.load(Ordering::Relaxed), Ordering::Relaxed);
        activity.answered.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            read: AtomicU64::new(0),
            read_at_rest: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        })
    }

    pub fn request(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves once no answer has been in progress for `idle` (checked four
    /// times per `idle`).
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            tokio::time::sleep(idle / 4).await;
            if self.idle_since().is_some_and(|since| since >= idle) {
                return;
            }
        }
    }

    fn idle_since(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(since))
    }

    /// Answers ended so far on this connection.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Between two requests: no answer in progress or unsent, and no byte of
    /// a next request read.
    pub fn at_rest(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.read.load(Ordering::Relaxed) == self.read_at_rest.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.closing.load(Ordering::Relaxed)
    }

    /// A parked connection's client sent its next bytes: its idle time
    /// starts again, so a request begun just before the idle timeout is not
    /// cut off by it.
    pub(super) fn woke(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    pub(super) fn saw_read(&self, bytes: usize) {
        self.read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn saw_write(&self, written: Poll<usize>) {
        match written {
            Poll::Ready(n) => {
                self.write_blocked.store(false, Ordering::Relaxed);
                if n > 0 {
                    self.unflushed.store(true, Ordering::Relaxed);
                }
            }
            Poll::Pending => self.write_blocked.store(true, Ordering::Relaxed),
        }
    }

    pub(super) fn saw_shutdown(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub(super) fn saw_flush(&self) {
        self.unflushed.store(false, Ordering::Relaxed);
    }
}

/// An answer's body that (on HTTP/1.1) keeps its request counted as in
/// progress until its last frame was taken (or it was dropped): a streamed
/// answer is activity, not a connection at rest.
///
/// On HTTP/2, small data frames are also copied out of the buffer they were
/// read into: h2 keeps a connection's last data frame after sending it, and
/// a frame cut from an upstream connection's read buffer would keep that
/// whole buffer (8 KiB or more) alive for as long as the client idles.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _busy: Option<Busy>,
    copy_small_frames: bool,
}

/// Frames up to this size are copied on HTTP/2; larger ones are most of
/// their buffer anyway.
const SMALL_FRAME: usize = 16 * 1024;

/// Gives an HTTP/2 answer's header values buffers of their own: h2's HPACK
/// table keeps the values it indexed for the connection's life, and a value
/// hyper cut from an upstream connection's read buffer would keep that
/// whole buffer alive with it.
pub fn own_header_values(headers: &mut http::HeaderMap) {
    for value in headers.values_mut() {
        if let Ok(owned) = http::HeaderValue::from_bytes(value.as_bytes()) {
            let sensitive = value.is_sensitive();
            *value = owned;
            value.set_sensitive(sensitive);
        }
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, busy: Option<Busy>, copy_small_frames: bool) -> Self {
        Self {
            body,
            _busy: busy,
            copy_small_frames,
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if !this.copy_small_frames {
            return polled;
        }
        polled.map_ok(|frame| match frame.into_data() {
            Ok(data) if data.len() <= SMALL_FRAME => Frame::data(Bytes::copy_from_slice(&data)),
            Ok(data) => Frame::data(data),
            Err(frame) => frame,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_rest_only_between_requests_with_everything_sent() {
        let activity = Activity::new();
        assert!(activity.at_rest(), "a new connection");
        let busy = activity.request();
        assert!(!activity.at_rest(), "an answer in progress");
        activity.saw_read(100);
        activity.saw_write(Poll::Ready(50));
        drop(busy);
        assert!(!activity.at_rest(), "written, not flushed");
        activity.saw_flush();
        assert!(activity.at_rest(), "answered and flushed");
        activity.saw_write(Poll::Pending);
        assert!(!activity.at_rest(), "a write the socket could not take");
        activity.saw_write(Poll::Ready(0));
        activity.saw_read(3);
        assert!(!activity.at_rest(), "a next request's first bytes");
        let busy = activity.request();
        drop(busy);
        assert!(activity.at_rest());
    }

    #[tokio::test]
    async fn idle_counts_from_the_end_of_the_last_answer() {
        let activity = Activity::new();
        let busy = activity.request();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(Duration::from_millis(200)).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "busy is not idle");
        drop(busy);
        let ended = Instant::now();
        waiting.await.expect("idle");
        assert!(ended.elapsed() >= Duration::from_millis(200));
    }
}
