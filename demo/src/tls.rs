//! The demo's HTTPS: a certificate authority and a certificate for
//! localhost made at each start, and the smoke test's request over TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Writes `ca.pem`, `localhost.pem` (with the CA after it) and
/// `localhost.key` into `dir`; returns the CA certificate (DER).
pub fn make_certificates(dir: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gateway demo CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca)?;
    let write = |file: &str, text: String| {
        std::fs::write(dir.join(file), text).with_context(|| format!("writing {file}"))
    };
    write("ca.pem", ca.pem())?;
    write("localhost.pem", format!("{}{}", cert.pem(), ca.pem()))?;
    write("localhost.key", key.serialize_pem())?;
    Ok(ca.der().to_vec())
}

/// One GET over HTTPS, checked: the certificate (for localhost, from the
/// demo's CA), HTTP/2 by ALPN, and the answer through the plugins.
pub async fn smoke_test(addr: SocketAddr, ca: &[u8], token: &str) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.to_vec().into())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake with the demo's certificate")?;
    ensure!(
        stream.get_ref().1.alpn_protocol() == Some(b"h2"),
        "HTTP/2 agreed by ALPN"
    );
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let request = Request::get(format!("https://localhost:{}/api/users", addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    ensure!(
        status == 200 && body["service"] == "users",
        "GET https://localhost/api/users: {status} {body}"
    );
    Ok(())
}
