//! The client side of TLS, towards `https://` upstream targets: whose
//! certificates are trusted (the system's roots or a configured CA), the
//! name checked (the target's host or `server_name`), an optional client
//! certificate, and ALPN (`h2` offered only when the upstream asks for it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use sha2::{Digest as _, Sha256};

use rustls::sign::SingleCertAndKey;

use super::certificates::{read_chain, read_pair};
use crate::config::tls::UpstreamTls;

/// How one upstream's https targets are reached.
#[derive(Clone)]
pub struct Origin {
    /// Offers `http/1.1` only (upgrades, and upstreams without `http2`).
    pub http1: tokio_rustls::TlsConnector,
    /// Offers `h2` then `http/1.1`, when the upstream has `http2: true`.
    pub http2: Option<tokio_rustls::TlsConnector>,
    server_name: Option<ServerName<'static>>,
    /// A digest of the files read, so a reload rebuilds the upstream's
    /// connections when a CA or client certificate changed on disk.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("http2", &self.http2.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// A setting that could not be used: the field below `tls` and why.
pub type OriginError = (&'static str, String);

impl Origin {
    pub fn new(tls: &UpstreamTls, base: &Path) -> Result<Self, OriginError> {
        let mut digest = Sha256::new();
        let roots = match &tls.ca_file {
            Some(file) => {
                let path = base.join(file);
                let mut roots = RootCertStore::empty();
                for cert in read_chain(&path).map_err(|e| ("ca_file", e))? {
                    digest.update(&cert);
                    roots.add(cert).map_err(|e| {
                        (
                            "ca_file",
                            format!("{}: not a usable CA certificate ({e})", path.display()),
                        )
                    })?;
                }
                Arc::new(roots)
            }
            None => system_roots().map_err(|e| ("ca_file", e))?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ("ca_file", e.to_string()))?
            .with_root_certificates(roots);
        let config = match &tls.client_certificate {
            None => builder.with_no_client_auth(),
            Some(files) => {
                let pair = read_pair(&base.join(&files.cert), &base.join(&files.key)).map_err(
                    |e| match e.field {
                        "cert" => ("client_certificate.cert", e.message),
                        _ => ("client_certificate.key", e.message),
                    },
                )?;
                // The chain and the public key: a changed file changes one.
                pair.cert.iter().for_each(|c| digest.update(c));
                if let Some(public) = pair.key.public_key() {
                    digest.update(&public);
                }
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(pair)))
            }
        };
        let connector = |alpn: &[&[u8]]| {
            let mut config = config.clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        let server_name = match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| ("server_name", format!("`{name}` is not a host name")))?,
            ),
            None => None,
        };
        Ok(Self {
            http1: connector(&[b"http/1.1"]),
            http2: tls.http2.then(|| connector(&[b"h2", b"http/1.1"])),
            server_name,
            fingerprint: digest.finalize().into(),
        })
    }

    /// The name to send by SNI and check the certificate against, for a
    /// target at `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        // An IPv6 authority's host is bracketed.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|_| format!("`{host}` is not a name a certificate can be checked against"))
    }

    /// The files an upstream's `tls` reads, for watching.
    pub fn files(tls: &UpstreamTls, base: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = tls.ca_file.iter().map(|f| base.join(f)).collect();
        if let Some(pair) = &tls.client_certificate {
            files.push(base.join(&pair.cert));
            files.push(base.join(&pair.key));
        }
        files
    }
}

/// The operating system's trusted roots, read once found (until then,
/// each load looks again: installing them fixes the next reload).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(roots) = ROOTS.get() {
        return Ok(roots.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no trusted root certificates found on this system ({}); install the ca-certificates package or set ca_file",
            found
                .errors
                .first()
                .map_or("none in the usual places".to_string(), |e| e.to_string())
        ));
    }
    Ok(ROOTS.get_or_init(|| Arc::new(roots)).clone())
}
