//! The one body type that flows through the proxy, and buffering with a limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// A body as it crosses the gateway: streamed from a peer, or held whole
/// (the gateway's own answers, bodies plugins asked for, retries).
pub type Body = Either<Streamed, Full<Bytes>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    Either::Right(Full::new(Bytes::new()))
}

/// A body streamed from a peer (a client's upload, an upstream's answer)
/// that fails when the peer sends nothing for `idle`: a stalled peer must
/// not hold a connection, and the one on the other side, forever.
#[derive(Debug)]
pub struct Streamed {
    inner: Incoming,
    /// A frame read before the body was handed on (`read_ahead`).
    ahead: Option<Frame<Bytes>>,
    idle: Duration,
    /// Made on the first wait and re-armed on each later one.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Where the body stands, for whoever sends it on (`track`).
    progress: Option<Arc<Progress>>,
    /// Bytes read so far, for the access log (`count_into`).
    counted: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Whether a tracked body's last read was left waiting on its sender.
#[derive(Debug, Default)]
pub struct Progress {
    waiting_on_peer: AtomicBool,
}

impl Progress {
    pub fn waiting_on_peer(&self) -> bool {
        self.waiting_on_peer.load(Ordering::Relaxed)
    }

    fn set(&self, waiting: bool) {
        self.waiting_on_peer.store(waiting, Ordering::Relaxed);
    }
}

/// Why a streamed body ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Peer(#[from] hyper::Error),
    #[error("nothing arrived for {}ms", .0.as_millis())]
    Idle(Duration),
}

impl Streamed {
    pub fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            ahead: None,
            idle,
            timer: None,
            waiting: false,
            progress: None,
            counted: None,
        }
    }

    /// Where the body stands as it is sent on: a request that failed while
    /// its client was still sending (the upstream was waiting on the
    /// client, not the other way round) is not the upstream's fault.
    /// Adds the length of every data frame read to `counter` (the access
    /// log's bytes in).
    pub fn count_into(&mut self, counter: Arc<std::sync::atomic::AtomicU64>) {
        self.counted = Some(counter);
    }

    pub fn track(&mut self) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.progress = Some(progress.clone());
        progress
    }

    /// Reads the first frame now and keeps it to hand on first, so a body
    /// that is malformed from its first byte is refused before anything is
    /// forwarded.
    pub async fn read_ahead(&mut self) -> Result<(), StreamError> {
        if self.ahead.is_some() {
            return Ok(());
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await;
        self.ahead = frame.transpose()?;
        Ok(())
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.ahead.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if let Some(progress) = &this.progress {
                    progress.set(false);
                }
                if let (Some(counter), Some(Ok(frame))) = (&this.counted, &frame)
                    && let Some(data) = frame.data_ref()
                {
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(StreamError::Peer)))
            }
            Poll::Pending => {
                if let Some(progress) = &this.progress {
                    progress.set(true);
                }
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(StreamError::Idle(this.idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self
            .ahead
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(ahead));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the body could not be read: {0}")]
    Read(String),
}

/// Reads a whole body, refusing one larger than `limit` bytes.
pub async fn buffer(body: Body, limit: u64) -> Result<Bytes, BufferError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BufferError::TooLarge(limit))
        }
        Err(e) => Err(BufferError::Read(e.to_string())),
    }
}

/// Whether `error`, or an error it wraps, is a streamed body that went idle.
pub fn is_idle(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(StreamError::Idle(_)) = error.downcast_ref::<StreamError>() {
            return true;
        }
        cause = error.source();
    }
    false
}
