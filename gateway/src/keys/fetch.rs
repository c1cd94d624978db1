//! Getting a JWKS document: from a URL (HTTPS with the web's certificate
//! authorities or the set's `ca_file`, or plain HTTP), or from a path on a
//! pool under `upstreams`. One GET, bounded in time and size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::load;
use crate::balance::RequestInfo;
use crate::config::key_sets::{JwksUrl, KeySetConfig};
use crate::upstream::Upstream;

/// Where a fetched set's JWKS comes from.
pub enum Fetcher {
    Url {
        client: Box<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
        url: http::Uri,
    },
    /// A pool under `upstreams`; a reload may replace it.
    Pool {
        upstream: ArcSwap<Upstream>,
        path: String,
    },
}

impl Fetcher {
    /// The fetcher for `config`'s source, if it is fetched.
    pub fn new(
        config: &KeySetConfig,
        base_dir: &Path,
        upstreams: &[Arc<Upstream>],
    ) -> Result<Option<Self>, String> {
        if let Some(url) = &config.jwks_url {
            let ca_file = config.ca_file.as_ref().map(|f| base_dir.join(f));
            return Ok(Some(Self::Url {
                client: Box::new(client(url, ca_file.as_deref(), config.fetch_timeout.0)?),
                url: url.0.clone(),
            }));
        }
        if let Some(fetch) = &config.jwks_upstream {
            return Ok(Some(Self::Pool {
                upstream: ArcSwap::new(pool(upstreams, &fetch.upstream)?),
                path: fetch.path.clone(),
            }));
        }
        Ok(None)
    }

    /// Points a pool fetcher at the pool of that name in a new snapshot.
    pub fn use_upstreams(&self, upstreams: &[Arc<Upstream>]) -> Result<(), String> {
        if let Self::Pool { upstream, .. } = self {
            upstream.store(pool(upstreams, &upstream.load().name)?);
        }
        Ok(())
    }

    /// Whether `upstreams` holds this fetcher's pool with the same config
    /// (always, for a URL).
    pub fn same_pool(&self, upstreams: &[Arc<Upstream>]) -> bool {
        match self {
            Self::Url { .. } => true,
            Self::Pool { upstream, .. } => {
                let current = upstream.load();
                upstreams
                    .iter()
                    .any(|u| u.name == current.name && u.config == current.config)
            }
        }
    }

    /// The keys of the JWKS fetched now.
    pub async fn fetch(&self, timeout: Duration) -> Result<Vec<load::Key>, String> {
        let limit = load::MAX_DOCUMENT_BYTES;
        let answer = async {
            let (status, bytes) = match self {
                Self::Url { client, url } => {
                    let request = get(url.clone())?
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    let response = client.request(request).await.map_err(|e| {
                        // The cause (refused, certificate unknown) is in the chain.
                        let mut text = e.to_string();
                        let mut source = std::error::Error::source(&e);
                        while let Some(cause) = source {
                            text = format!("{text}: {cause}");
                            source = cause.source();
                        }
                        text
                    })?;
                    let status = response.status();
                    let body = Limited::new(response.into_body(), limit)
                        .collect()
                        .await
                        .map_err(|e| format!("reading the JWKS: {e}"))?;
                    (status, body.to_bytes())
                }
                Self::Pool { upstream, path } => from_pool(&upstream.load(), path, timeout).await?,
            };
            if !status.is_success() {
                return Err(format!("the JWKS source answered {status}"));
            }
            load::from_jwks(&bytes)
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(result) => result,
            Err(_) => Err(format!("no JWKS within {timeout:?}")),
        }
    }
}

fn get(uri: http::Uri) -> Result<http::request::Builder, String> {
    Ok(Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "gateway-jwks"))
}

fn pool(upstreams: &[Arc<Upstream>], name: &str) -> Result<Arc<Upstream>, String> {
    upstreams
        .iter()
        .find(|u| *u.name == *name)
        .cloned()
        .ok_or_else(|| format!("no upstream named \"{name}\""))
}

/// A client for `url`: HTTPS checked against `ca_file`'s authorities, or
/// the web's (webpki-roots, Mozilla's list) when there is none.
fn client(
    url: &JwksUrl,
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, String> {
    outbound_client(url.is_https(), ca_file, connect_timeout)
}

/// A client for the gateway's own calls (key sets, trace export): HTTPS
/// only when `https_only`, checked against `ca_file`'s authorities or the
/// web's (webpki-roots, Mozilla's list).
pub(crate) fn outbound_client<B>(
    https_only: bool,
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{} holds no certificate", file.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring has no post-quantum key exchange (hence the deprecation); public
    // keys fetched and refreshed in the open do not need it, and ring builds
    // without cmake. Server-side TLS will choose the gateway's provider.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let connector = if https_only {
        builder.https_only().enable_http1().wrap_connector(http)
    } else {
        builder.https_or_http().enable_http1().wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// One GET of `path` on a target of `upstream`.
async fn from_pool(
    upstream: &Upstream,
    path: &str,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), String> {
    let headers = http::HeaderMap::new();
    let info = RequestInfo {
        headers: &headers,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let target = upstream.pick(&info, None).map_err(|e| e.to_string())?;
    let authority = upstream.pool.targets()[target].authority.to_string();
    let request = get(path.parse().map_err(|e| format!("{path}: {e}"))?)?
        .header(http::header::HOST, authority)
        .body(crate::body::empty())
        .map_err(|e| e.to_string())?;
    let response = upstream
        .send(target, request, timeout)
        .await
        .map_err(|e| upstream.error_for(target, e).to_string())?;
    let status = response.status();
    let body =
        http_body_util::Either::Left(crate::body::Streamed::new(response.into_body(), timeout));
    let bytes = crate::body::buffer(body, load::MAX_DOCUMENT_BYTES as u64)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, bytes))
}
