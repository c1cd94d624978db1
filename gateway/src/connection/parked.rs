//! The socket of an HTTP/1.1 connection, as hyper sees it: it tells the
//! connection's `Activity` what moves through it, and can be taken back
//! from hyper between two requests. Parked, a kept-alive connection holds
//! only this: hyper's read and write buffers (8 KiB each, kept while it
//! waits) are dropped with hyper's connection, and a new one is made when
//! the client's next bytes arrive, starting with those bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

use super::activity::Activity;
use crate::edge::rewind::Ahead;

#[derive(Debug)]
pub struct Parkable<IO> {
    io: IO,
    /// Bytes read while parked, handed to hyper first.
    ahead: Ahead,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Parkable<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Self {
        Self {
            io,
            ahead: Ahead::default(),
            activity,
        }
    }

    /// Puts bytes hyper had read but not used back in front.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.ahead.unread(bytes);
    }

    /// Waits, holding no buffer, until the client sends its next bytes
    /// (kept for hyper), and says whether it did rather than close.
    pub async fn wait_for_bytes(&mut self) -> bool {
        if !self.ahead.rest().is_empty() {
            return true;
        }
        // A request head's first bytes; hyper reads the rest itself.
        let mut first = [0u8; 64];
        match self.io.read(&mut first).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.activity.saw_read(n);
                self.activity.woke();
                self.ahead = Ahead::new(first[..n].to_vec());
                true
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Parkable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.take_into(buf) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.activity.saw_read(buf.filled().len() - before);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Parkable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.saw(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.saw(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            this.activity.saw_flush();
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.activity.saw_shutdown();
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO> Parkable<IO> {
    fn saw(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) => self.activity.saw_write(Poll::Ready(*n)),
            Poll::Pending => self.activity.saw_write(Poll::Pending),
            Poll::Ready(Err(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn bytes_read_while_parked_come_first_and_count_once() {
        let (client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut parked = Parkable::new(server, activity.clone());
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(parked.wait_for_bytes().await);
        parked.unread(b"xx");
        client.write_all(b"Host: a\r\n\r\n").await.expect("write");
        let mut head = vec![0u8; 2 + 16 + 11];
        parked.read_exact(&mut head).await.expect("read");
        assert_eq!(head, b"xxGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(!activity.at_rest(), "a request's bytes were read");
        drop(client);
        assert!(!parked.wait_for_bytes().await, "the client closed");
    }
}
