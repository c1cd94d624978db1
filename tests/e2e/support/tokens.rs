//! Signed tokens for auth tests, from the test key pairs in `tests/keys`,
//! and a JWKS server whose keys a test changes while the gateway runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The HMAC secret of the tests' `hs` key sets.
pub const SECRET: &str = "test-secret-long-enough-for-hs512-which-needs-sixty-four-bytes!!";

/// The folder of the test key pairs.
pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/keys")
}

/// The private key that signs for `alg` (`rsa`, `ec256`, `ec384`, `ed25519`).
pub fn key_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hs",
        Algorithm::ES256 => "ec256",
        Algorithm::ES384 => "ec384",
        Algorithm::EdDSA => "ed25519",
        _ => "rsa",
    }
}

/// The signing key of a test key pair.
pub fn signing_key(name: &str) -> EncodingKey {
    if name == "hs" {
        return EncodingKey::from_secret(SECRET.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    let pem = std::fs::read(keys_dir().join(format!("{name}-private.pem")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let key = if name.starts_with("rsa") {
        EncodingKey::from_rsa_pem(&pem)
    } else if name.starts_with("ec") {
        EncodingKey::from_ec_pem(&pem)
    } else {
        EncodingKey::from_ed_pem(&pem)
    };
    key.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A token for `claims` signed with `key` under `alg`, naming `kid`.
pub fn sign_with(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).unwrap_or_else(|e| panic!("{e}"))
}

/// A token for `claims` signed with the test key for `alg`, naming that key.
pub fn sign(alg: Algorithm, claims: &Value) -> String {
    let name = key_name(alg);
    let kid = (name != "hs").then_some(name);
    sign_with(&signing_key(name), alg, kid, claims)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The public JWK of test key pair `name` for `alg`, published as `kid`.
pub fn jwk(name: &str, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&signing_key(name), alg).unwrap_or_else(|e| panic!("{e}"));
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

pub fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap_or_else(|e| panic!("{e}"))
}

/// An HTTP(S) server answering every GET with its JWKS document (or `503`
/// while down), counting the fetches.
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<JwksState>,
    accept_loop: JoinHandle<()>,
    https: bool,
}

struct JwksState {
    document: Mutex<String>,
    up: AtomicBool,
    fetches: AtomicUsize,
}

impl JwksServer {
    /// Over plain HTTP.
    pub async fn start(document: String) -> JwksServer {
        Self::serve(document, None).await
    }

    /// Over HTTPS, with `tls-server.pem` (issued by `tls-ca.pem`, for 127.0.0.1).
    pub async fn start_https(document: String) -> JwksServer {
        let read = |name: &str| std::fs::read(keys_dir().join(name)).expect(name);
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(&read("tls-server.pem"))
                .collect::<Result<_, _>>()
                .expect("server certificate");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read("tls-server-private.pem"))
            .expect("server key");
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .expect("TLS config");
        Self::serve(
            document,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn serve(document: String, tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let https = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server");
        let addr = listener.local_addr().expect("JWKS address");
        let state = Arc::new(JwksState {
            document: Mutex::new(document),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
        });
        let serving = state.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let state = state.clone();
                        async move {
                            state.fetches.fetch_add(1, Ordering::SeqCst);
                            let response = if state.up.load(Ordering::SeqCst) {
                                let body =
                                    state.document.lock().map(|d| d.clone()).unwrap_or_default();
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                            } else {
                                Response::builder()
                                    .status(StatusCode::SERVICE_UNAVAILABLE)
                                    .body(Full::new(Bytes::new()))
                            };
                            Ok::<_, Infallible>(response.expect("response"))
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        JwksServer {
            addr,
            state,
            accept_loop,
            https,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/jwks.json", self.addr)
    }

    pub fn publish(&self, document: String) {
        if let Ok(mut current) = self.state.document.lock() {
            *current = document;
        }
    }

    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
