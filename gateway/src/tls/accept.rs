//! The server side of TLS: one rustls configuration per listener whose
//! certificate is looked up per handshake in the current snapshot, so a
//! reload swaps certificates for new handshakes while those in flight keep
//! the one they started with.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::{CertificateSet, Session};

/// The current certificates of one listener.
pub type Certificates = Arc<dyn Fn() -> Option<Arc<CertificateSet>> + Send + Sync>;

/// Accepts TLS clients for one listener.
#[derive(Clone)]
pub struct Acceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// TLS sessions a listener remembers for TLS 1.2 resumption by session ID
/// (TLS 1.3 resumes from tickets, which the server does not store).
const SESSION_CACHE: usize = 10_000;

impl Acceptor {
    /// TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`, session tickets with
    /// keys rotated every six hours, and certificates from `certificates`.
    pub fn new(
        certificates: Certificates,
        handshake_timeout: Duration,
    ) -> Result<Self, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(certificates)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
        })
    }

    /// Completes the handshake within the listener's handshake timeout.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, Session), String>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.acceptor.accept(io);
        let metrics = crate::metrics::metrics();
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Err(_) => {
                metrics.tls_handshake("timeout");
                Err(format!(
                    "no TLS handshake within {}ms",
                    self.handshake_timeout.as_millis()
                ))
            }
            Ok(Err(error)) => {
                metrics.tls_handshake("failed");
                Err(format!("TLS handshake failed: {error}"))
            }
            Ok(Ok(stream)) => {
                metrics.tls_handshake("ok");
                let session = Session::of(stream.get_ref().1);
                Ok((stream, session))
            }
        }
    }
}

struct Resolver(Certificates);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        (self.0)()?.choose(hello.server_name(), hello.signature_schemes())
    }
}
