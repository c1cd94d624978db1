//! What a client sent, checked before routing: one unambiguous host and
//! body framing the gateway and every backend read the same way.

pub mod forwarded;
pub mod framing;
pub mod path;
pub mod rewind;
pub mod stall;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Version, header};
use hyper::body::Incoming;

use crate::body::{StreamError, Streamed};
use crate::config::ServerConfig;
use crate::error::ProxyError;
use forwarded::Cidr;
use framing::Findings;
use path::EscapedSlashes;

/// The edge rules every connection of a listener follows (`server:`).
#[derive(Debug, Clone)]
pub struct Rules {
    /// Longest wait between two pieces of a client's request body.
    pub body_idle: Duration,
    pub escaped_slashes: EscapedSlashes,
    pub trusted_proxies: Vec<Cidr>,
    /// An upgraded connection with no byte either way this long is closed.
    pub websocket_idle: Duration,
}

impl Rules {
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            body_idle: server.body_idle_timeout.0,
            escaped_slashes: server.escaped_slashes,
            trusted_proxies: server.trusted_proxies.clone(),
            websocket_idle: server.websocket_idle_timeout.0,
        }
    }
}

/// Who is on the other end of a connection, worked out once per connection.
#[derive(Debug)]
pub struct Client {
    pub ip: IpAddr,
    /// The IP as header text, for `X-Forwarded-For` and plugins.
    pub ip_text: HeaderValue,
    /// A proxy listed in `server.trusted_proxies`: its forwarding headers are kept.
    pub trusted: bool,
    /// What the framing scanner found on this HTTP/1 connection.
    pub framing: Option<Arc<Findings>>,
    pub rules: Arc<Rules>,
    /// What this connection holds while open (its place under the limits,
    /// its drain guard), held by an upgraded (WebSocket) tunnel too.
    pub held: Option<Arc<crate::connection::Held>>,
    /// The TLS session, on a TLS listener.
    pub tls: Option<Arc<crate::tls::Session>>,
}

impl Client {
    pub fn new(
        addr: SocketAddr,
        rules: Arc<Rules>,
        framing: Option<Arc<Findings>>,
        held: Option<Arc<crate::connection::Held>>,
        tls: Option<Arc<crate::tls::Session>>,
    ) -> Self {
        let ip = addr.ip();
        let ip_text = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            ip,
            ip_text,
            trusted: rules.trusted_proxies.iter().any(|block| block.contains(ip)),
            framing,
            rules,
            held,
            tls,
        }
    }
}

/// A request that passed the edge: one host, a normalised path, and a body
/// whose framing was checked.
pub struct Admitted {
    pub request: Request<Streamed>,
    pub host: String,
}

/// Checks a client's request before anything routes or reads it: framing,
/// host, path (normalised in place), and a chunked upload's first chunk.
pub async fn admit(request: Request<Incoming>, client: &Client) -> Result<Admitted, ProxyError> {
    if let Some(framing) = &client.framing
        && request.version() <= Version::HTTP_11
        && framing.next_request_is_ambiguous()
    {
        return Err(ProxyError::BadRequest(
            "the request has both Content-Length and Transfer-Encoding".into(),
        ));
    }
    let host = host(&request)?.into_owned();
    let (mut head, body) = request.into_parts();
    // Plugins read the host the router used, from the Host header, whether
    // the client sent it there, as an absolute-form target or as `:authority`.
    if !head.headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(&host)
        && !host.is_empty()
    {
        head.headers.insert(header::HOST, value);
    }
    normalize_path(&mut head.uri, client.rules.escaped_slashes)?;
    let mut body = Streamed::new(body, client.rules.body_idle);
    if let Some(crate::access_log::BytesIn(counter)) = head.extensions.remove() {
        body.count_into(counter);
    }
    // Not when the client waits for `100 Continue`: reading would send it
    // before routing and plugins decide whether the body is wanted.
    if is_chunked_http1(&head.headers, head.version) && !head.headers.contains_key(header::EXPECT) {
        body.read_ahead()
            .await
            .map_err(|error| ProxyError::ClientBody {
                idle: matches!(error, StreamError::Idle(_)),
                reason: error.to_string(),
            })?;
    }
    Ok(Admitted {
        request: Request::from_parts(head, body),
        host,
    })
}

/// Replaces the URI's path with its normal form (the query is kept as sent).
fn normalize_path(uri: &mut http::Uri, escaped_slashes: EscapedSlashes) -> Result<(), ProxyError> {
    let bad = |reason: String| ProxyError::BadRequest(reason);
    let path = match path::normalize(uri.path(), escaped_slashes) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(path)) => path,
        Err(error) => return Err(bad(error.to_string())),
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| bad(format!("the path is not valid: {e}")))?,
    );
    *uri = http::Uri::from_parts(parts).map_err(|e| bad(format!("the path is not valid: {e}")))?;
    Ok(())
}

/// The client's host: the URI authority (HTTP/2 `:authority`, absolute-form
/// targets) or the `Host` header. Two `Host` headers, or a `Host` that
/// disagrees with the authority, are refused: a backend reading the other
/// one would route the request differently from the gateway.
pub fn host<B>(request: &Request<B>) -> Result<Cow<'_, str>, ProxyError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header".into()));
    }
    let header = header
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("the Host header is not valid text".into()))
        })
        .transpose()?;
    let authority = request.uri().authority().map(|a| a.as_str());
    if header
        .into_iter()
        .chain(authority)
        .any(|h| !is_host_text(h))
    {
        return Err(ProxyError::BadRequest(
            "the host is not a host name or address (with a port)".into(),
        ));
    }
    match (request.uri().authority(), header) {
        (Some(authority), Some(header)) if !authority.as_str().eq_ignore_ascii_case(header) => Err(
            ProxyError::BadRequest("the Host header disagrees with the request target".into()),
        ),
        (Some(authority), _) => Ok(Cow::Borrowed(authority.as_str())),
        (None, Some(header)) => Ok(Cow::Borrowed(header)),
        (None, None) if request.version() == Version::HTTP_11 => Err(ProxyError::BadRequest(
            "HTTP/1.1 requests need a Host header".into(),
        )),
        (None, None) => Ok(Cow::Borrowed("")),
    }
}

/// RFC 3986 host characters (a name, an IPv4 or bracketed IPv6 address) and
/// a port: no `#`, `/`, `?`, `@` or spaces for a backend building links from
/// it to misread.
fn is_host_text(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
}

/// The host as routes see it: lower case, without port.
pub fn routing_host(host: &str) -> Cow<'_, str> {
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// True for an HTTP/1 request whose body is chunked: its first chunk is read
/// before anything is forwarded, so a malformed one is refused with 400
/// before a backend sees the request.
fn is_chunked_http1(headers: &HeaderMap, version: Version) -> bool {
    version <= Version::HTTP_11 && headers.contains_key(header::TRANSFER_ENCODING)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn one_host_from_the_authority_or_the_header() {
        assert_eq!(
            host(&request("/", &["a.example"])).ok().as_deref(),
            Some("a.example")
        );
        assert_eq!(
            host(&request("http://a.example/", &[])).ok().as_deref(),
            Some("a.example")
        );
        assert_eq!(
            host(&request("http://A.example/", &["a.EXAMPLE"]))
                .ok()
                .as_deref(),
            Some("A.example"),
            "case does not make hosts differ"
        );
    }

    #[test]
    fn ambiguous_hosts_are_refused() {
        assert!(host(&request("/", &["a", "b"])).is_err());
        assert!(host(&request("/", &["a", "a"])).is_err(), "even when equal");
        assert!(host(&request("http://a/", &["b"])).is_err());
        assert!(host(&request("/", &[])).is_err(), "HTTP/1.1 needs a Host");
        assert!(host(&request("/", &["evil.test#.example.com"])).is_err());
        assert!(host(&request("/", &["a b"])).is_err());
        assert!(host(&request("/", &["[::1]:8080"])).is_ok());
        assert!(
            host(&request("http://victim.example@evil.example/", &[])).is_err(),
            "userinfo"
        );
    }

    #[test]
    fn routing_host_drops_port_and_case() {
        assert_eq!(routing_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(routing_host("api.example.com"), "api.example.com");
        assert_eq!(routing_host("[::1]:8080"), "[::1]");
        assert_eq!(routing_host(""), "");
    }
}
