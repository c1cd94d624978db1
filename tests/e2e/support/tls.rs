//! A test certificate authority, certificates it issues (ECDSA, Ed25519 or
//! RSA), and TLS clients and servers that trust it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::client::Reply;

/// The key type of a certificate.
#[derive(Debug, Clone, Copy)]
pub enum KeyType {
    Ecdsa,
    Ed25519,
    Rsa,
}

/// A certificate authority whose files live in a temporary folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and key file the PKI issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// The `{ cert, key }` entry of a config.
    pub fn yaml(&self) -> String {
        format!(
            "{{ cert: \"{}\", key: \"{}\" }}",
            self.cert.display(),
            self.key.display()
        )
    }

    /// The DER of the certificate (to compare with what a handshake showed).
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::pem_file_iter(&self.cert)
            .expect("cert file")
            .next()
            .expect("a certificate")
            .expect("PEM")
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Pki {
    /// A new authority named `name`; its certificate is `ca.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Pki { dir, ca }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// An ECDSA certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_key(file, names, KeyType::Ecdsa)
    }

    pub fn issue_key(&self, file: &str, names: &[&str], key_type: KeyType) -> Issued {
        self.issue_with(file, names, key_type, None)
    }

    /// An ECDSA certificate valid from `days.0` to `days.1` days from now.
    pub fn issue_valid(&self, file: &str, names: &[&str], days: (i64, i64)) -> Issued {
        self.issue_with(file, names, KeyType::Ecdsa, Some(days))
    }

    fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        key_type: KeyType,
        days: Option<(i64, i64)>,
    ) -> Issued {
        let key = match key_type {
            KeyType::Ecdsa => rcgen::KeyPair::generate().expect("key"),
            KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key"),
            KeyType::Rsa => rsa_key(self.dir.path()),
        };
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        if let Some((from, to)) = days {
            params.not_before = rcgen::date_time_ymd(1970, 1, 1) + days_from_now(from);
            params.not_after = rcgen::date_time_ymd(1970, 1, 1) + days_from_now(to);
        }
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        // The chain: the certificate, then the CA (as servers usually send it).
        std::fs::write(&issued.cert, format!("{}{}", cert.pem(), self.ca.pem())).expect("write");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write");
        issued
    }

    /// A client trusting this authority, offering `alpn`.
    pub fn client(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    /// A server acceptor with `issued`, offering `alpn`, asking clients
    /// for a certificate of this authority when `client_auth`.
    pub fn acceptor(
        &self,
        issued: &Issued,
        alpn: &[&str],
        client_auth: bool,
    ) -> tokio_rustls::TlsAcceptor {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&issued.cert)
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("PEM");
        let key = PrivateKeyDer::from_pem_file(&issued.key).expect("key");
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der().clone()).expect("CA root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// `days` from now, as time since 1970.
fn days_from_now(days: i64) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    std::time::Duration::from_secs(u64::try_from(now + days * 86_400).expect("after 1970"))
}

/// An RSA-2048 key from `openssl` (rcgen cannot make RSA keys with ring).
fn rsa_key(dir: &Path) -> rcgen::KeyPair {
    let path = dir.join(format!("rsa-{}.key", fastrand::u64(..)));
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pem = std::fs::read_to_string(&path).expect("RSA key");
    rcgen::KeyPair::from_pem(&pem).expect("RSA key")
}

/// One TLS connection to the gateway, for requests one after another.
pub struct TlsConnection {
    pub alpn: Option<String>,
    pub version: Option<rustls::ProtocolVersion>,
    pub resumed: bool,
    /// The certificate the server showed.
    pub peer: CertificateDer<'static>,
    sender: Sender,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsConnection {
    /// Connects to `addr` asking for `sni` (none for an IP address).
    pub async fn open(
        addr: std::net::SocketAddr,
        sni: &str,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<TlsConnection, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let alpn = session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let version = session.protocol_version();
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let peer = session
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no server certificate")?;
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some("h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(TlsConnection {
            alpn,
            version,
            resumed,
            peer,
            sender,
        })
    }

    /// GET `path` on this connection, with `host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, String> {
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                let request = Request::get(path)
                    .header("host", host)
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                let request = Request::get(format!("https://{host}{path}"))
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}
