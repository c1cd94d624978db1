//! The one body type that flows through the proxy, and buffering with a limit.

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

/// A body as it crosses the gateway: streamed from a peer, or held whole
/// (the gateway's own answers, bodies plugins asked for, retries).
pub type Body = Either<Incoming, Full<Bytes>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    Either::Right(Full::new(Bytes::new()))
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
