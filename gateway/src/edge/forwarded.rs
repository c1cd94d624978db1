//! What upstreams are told about the client: `X-Forwarded-For`, `-Proto`,
//! `-Host`. Only a peer listed in `server.trusted_proxies` may pass on what
//! an earlier proxy said (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`); from
//! anyone else those headers are replaced, so a client cannot forge the
//! address a backend or an IP rule trusts.

use std::fmt;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("`{text}` is not an address or block; write it like 10.0.0.0/8 or ::1");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    prefix == 0 || (a ^ b) >> (128 - u32::from(prefix)) == 0
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Sets the forwarding headers for a request from `client_ip` to `host`,
/// over TLS when `https`. From a trusted proxy the chain is extended and
/// its `-Proto`/`-Host` kept; from anyone else every forwarding header is
/// replaced.
pub fn set_forwarding(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    host: &str,
    trusted: bool,
    https: bool,
) {
    // One pass over the names first: most requests carry none of these,
    // and each removal would cost a hash lookup.
    let forwarding = [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REAL_IP,
        &header::FORWARDED,
    ];
    if !trusted && headers.keys().any(|name| forwarding.contains(&name)) {
        for name in forwarding {
            headers.remove(name);
        }
    }
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(slot) => {
            slot.insert(client_ip.clone());
        }
        header::Entry::Occupied(mut previous) => {
            let ip = client_ip.to_str().unwrap_or("unknown");
            let earlier: Vec<&str> = previous.iter().filter_map(|v| v.to_str().ok()).collect();
            let chain = format!("{}, {ip}", earlier.join(", "));
            if let Ok(value) = HeaderValue::from_str(&chain) {
                previous.insert(value);
            }
        }
    }
    if let header::Entry::Vacant(slot) = headers.entry(&X_FORWARDED_PROTO) {
        slot.insert(HeaderValue::from_static(if https {
            "https"
        } else {
            "http"
        }));
    }
    if let header::Entry::Vacant(slot) = headers.entry(&X_FORWARDED_HOST)
        && let Ok(host) = HeaderValue::from_str(host)
    {
        slot.insert(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::headers::test_headers as headers;

    #[test]
    fn blocks_contain_their_addresses() {
        let ip = |t: &str| t.parse::<IpAddr>().expect("ip");
        let ten = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(ten.contains(ip("10.1.2.3")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "v4-mapped");
        assert!(!ten.contains(ip("11.0.0.1")));
        let one = Cidr::parse("127.0.0.1").expect("cidr");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("cidr")
                .contains(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_gets_every_forwarding_header_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
        ]);
        set_forwarding(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            "api:80",
            false,
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api:80");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));
        let mut over_tls = headers(&[("x-forwarded-proto", "http")]);
        let ip = HeaderValue::from_static("10.0.0.1");
        set_forwarding(&mut over_tls, &ip, "api", false, true);
        assert_eq!(over_tls["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_trusted_proxy_extends_the_chain() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.1.1.1"),
        ]);
        set_forwarding(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            "api",
            true,
            false,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api");
        assert_eq!(h["x-real-ip"], "1.1.1.1");
    }
}
