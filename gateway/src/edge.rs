//! What a client sent, checked before routing: one unambiguous host and
//! body framing the gateway and every backend read the same way.

pub mod framing;

use std::borrow::Cow;

use http::{HeaderMap, Request, Version, header};

use crate::error::ProxyError;

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
pub fn is_chunked_http1(headers: &HeaderMap, version: Version) -> bool {
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
    }

    #[test]
    fn routing_host_drops_port_and_case() {
        assert_eq!(routing_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(routing_host("api.example.com"), "api.example.com");
        assert_eq!(routing_host("[::1]:8080"), "[::1]");
        assert_eq!(routing_host(""), "");
    }
}
