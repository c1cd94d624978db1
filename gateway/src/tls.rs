//! TLS on both sides of the gateway: the certificates listeners serve and
//! the handshake with clients (`certificates`, `accept`), and the checked
//! connections to `https://` upstream targets (`origin`). One crypto
//! provider for all of it (see `provider`).

pub mod accept;
pub mod certificates;
pub mod origin;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use accept::Acceptor;
pub use certificates::CertificateSet;

/// The crypto provider: aws-lc-rs, which cost the server 9-39% less per
/// handshake than ring and 2-10% less per AES-GCM record
/// (bench/tls-providers, BENCHMARKS.md), and offers post-quantum key
/// exchange (X25519MLKEM768) to clients that do.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// What a client's TLS session was, for plugins and forwarding headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The name the client asked for (SNI), lowercase.
    pub server_name: Option<String>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The protocol agreed by ALPN (`h2`, `http/1.1`).
    pub alpn: Option<String>,
}

impl Session {
    pub fn of(connection: &rustls::ServerConnection) -> Self {
        Self {
            server_name: connection.server_name().map(str::to_ascii_lowercase),
            version: match connection.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                _ => "TLSv1.2",
            },
            alpn: connection
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }
}
