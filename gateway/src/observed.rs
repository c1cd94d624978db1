//! A socket whose inbound bytes are shown to an observer as they are read
//! (the framing scanner, a tunnel's idle clock); writes pass through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees every byte read from an `Observed` socket, in order.
pub trait Observer {
    fn saw(&mut self, bytes: &[u8]);
}

#[derive(Debug)]
pub struct Observed<IO, O> {
    io: IO,
    observer: O,
}

impl<IO, O> Observed<IO, O> {
    pub fn new(io: IO, observer: O) -> Self {
        Self { io, observer }
    }
}

impl<IO: AsyncRead + Unpin, O: Observer + Unpin> AsyncRead for Observed<IO, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            this.observer.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin, O: Unpin> AsyncWrite for Observed<IO, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
