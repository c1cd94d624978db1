//! The first bytes of a TLS connection, read ahead of hyper within the
//! header timeout and handed back to it first. On a plain connection the
//! gateway peeks at the socket for them; decrypted bytes cannot be peeked.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// `io` with `ahead` read from it already.
#[derive(Debug)]
pub struct Rewind<IO> {
    ahead: Ahead,
    io: IO,
}

/// Bytes read from a socket before their reader was ready for them, handed
/// to it first (here, and by a parked HTTP/1.1 connection).
#[derive(Debug, Default)]
pub struct Ahead {
    bytes: Vec<u8>,
    offset: usize,
}

impl Ahead {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, offset: 0 }
    }

    /// What is left to hand on.
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }

    /// Puts `bytes` in front of what is left.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut ahead = bytes.to_vec();
        ahead.extend_from_slice(self.rest());
        *self = Self::new(ahead);
    }

    /// Fills `buf` from what is left; false when nothing is (read the
    /// socket then). The buffer is freed once handed on whole.
    pub fn take_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let rest = self.rest();
        if rest.is_empty() {
            return false;
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.offset += n;
        if self.offset == self.bytes.len() {
            *self = Self::default();
        }
        true
    }
}

/// Reads the client's first bytes within `limit`: at least one, and all of
/// `preface` when they start like it (an HTTP/2 preface trickled in would
/// otherwise hold the connection with no timer running). `None` when the
/// client sent nothing in time or closed.
pub async fn first_bytes<IO>(mut io: IO, preface: &[u8], limit: Duration) -> Option<Rewind<IO>>
where
    IO: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut ahead = vec![0u8; preface.len()];
    let mut filled = 0;
    loop {
        let read = tokio::time::timeout_at(deadline, io.read(&mut ahead[filled..])).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => filled += n,
        }
        if filled == preface.len() || ahead[..filled] != preface[..filled] {
            ahead.truncate(filled);
            return Some(Rewind {
                ahead: Ahead::new(ahead),
                io,
            });
        }
    }
}

impl<IO> Rewind<IO> {
    /// The bytes read ahead and not yet handed on.
    pub fn ahead(&self) -> &[u8] {
        self.ahead.rest()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ahead.take_into(buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[tokio::test]
    async fn bytes_read_ahead_are_read_again_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut rewound = first_bytes(server, PREFACE, Duration::from_secs(1))
            .await
            .expect("bytes came");
        client.write_all(b"\r\n").await.expect("write");
        drop(client);
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_preface_must_arrive_whole_in_time() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&PREFACE[..10]).await.expect("write");
        let waited = first_bytes(server, PREFACE, Duration::from_millis(100)).await;
        assert!(waited.is_none(), "half a preface is not enough");
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(PREFACE).await.expect("write");
        let whole = first_bytes(server, PREFACE, Duration::from_millis(100)).await;
        assert!(whole.is_some());
    }
}
