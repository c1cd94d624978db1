//! The config's TLS settings: where the gateway listens (plain or TLS, with
//! the certificates each TLS listener serves), and how it talks TLS to
//! `https://` upstream targets. Files are read when a snapshot is built
//! (`crate::tls`); here only their names and the settings' ranges.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::duration::HumanDuration;

/// `listen`: one address (plain HTTP, as before TLS existed) or a list of
/// listeners, each plain or TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen(pub Vec<ListenerConfig>);

/// One address the gateway accepts clients on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// Present: clients speak TLS here (HTTPS); absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Chosen by the name a client asks for (SNI); the first one serves
    /// clients that ask for no name, or for a name none of them has.
    pub certificates: Vec<CertificateFiles>,
    /// A client must finish its TLS handshake within this time.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: HumanDuration,
}

fn default_handshake_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// A PEM certificate chain (the certificate first, then intermediates)
/// and its PEM private key, relative to the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `tls:` of an upstream: how `https://` targets are checked and reached.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the certificate authorities trusted for these targets;
    /// default: the operating system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name sent by SNI and checked against the target's certificate;
    /// default: the target URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// A certificate the gateway shows to targets that ask for one (mTLS).
    #[serde(default)]
    pub client_certificate: Option<CertificateFiles>,
    /// Offer HTTP/2 by ALPN and use it where the target picks it.
    #[serde(default)]
    pub http2: bool,
}

impl Listen {
    pub fn one(address: SocketAddr) -> Self {
        Self(vec![ListenerConfig { address, tls: None }])
    }

    /// Problems, by field below `listen`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.0.is_empty() {
            problems.push((String::new(), "needs at least one listener".into()));
        }
        for (i, listener) in self.0.iter().enumerate() {
            let taken = self.0[..i]
                .iter()
                .any(|other| other.address == listener.address);
            if taken && listener.address.port() != 0 {
                problems.push((
                    format!("[{i}].address"),
                    format!("{} is listed twice", listener.address),
                ));
            }
            let Some(tls) = &listener.tls else { continue };
            if tls.certificates.is_empty() {
                problems.push((
                    format!("[{i}].tls.certificates"),
                    "a TLS listener needs at least one certificate".into(),
                ));
            }
            let timeout = tls.handshake_timeout.0;
            if timeout.is_zero() || timeout > Duration::from_secs(60) {
                problems.push((
                    format!("[{i}].tls.handshake_timeout"),
                    "must be more than 0 and at most 60s".into(),
                ));
            }
        }
        problems
    }
}

impl UpstreamTls {
    /// Problems, by field below the upstream's `tls`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(name) = &self.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            problems.push((
                "server_name".into(),
                format!("`{name}` is not a host name or an IP address"),
            ));
        }
        problems
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenVisitor;
        impl<'de> Visitor<'de> for ListenVisitor {
            type Value = Listen;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address like 0.0.0.0:8080, or a list of listeners like [{ address: 0.0.0.0:8443, tls: { certificates: [...] } }]")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Listen, E> {
                text.parse().map(Listen::one).map_err(|_| {
                    E::custom(format!(
                        "`{text}` is not an address; write it like 0.0.0.0:8080"
                    ))
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Listen, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Listen)
            }
        }
        deserializer.deserialize_any(ListenVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(yaml: &str) -> Result<Listen, String> {
        let config = crate::config::parse(
            &format!(
                "{yaml}\nupstreams: {{ a: {{ targets: [{{ url: \"http://127.0.0.1:1\" }}] }} }}\n"
            ),
            &|_| None,
        );
        config
            .map(|c| c.listen)
            .map_err(|p| format!("{}: {}", p[0].field, p[0].message))
    }

    #[test]
    fn one_address_or_a_list() {
        assert_eq!(
            listen("listen: 127.0.0.1:80"),
            Ok(Listen::one("127.0.0.1:80".parse().expect("addr")))
        );
        let both = listen(
            "listen:\n  - address: 127.0.0.1:80\n  - address: 127.0.0.1:443\n    tls:\n      certificates: [{ cert: a.pem, key: a.key }]\n",
        )
        .expect("two listeners");
        assert_eq!(both.0.len(), 2);
        assert!(both.0[0].tls.is_none());
        let tls = both.0[1].tls.as_ref().expect("tls");
        assert_eq!(tls.certificates[0].cert, PathBuf::from("a.pem"));
        assert_eq!(tls.handshake_timeout.0, Duration::from_secs(10));
    }

    #[test]
    fn mistakes_are_named_by_field() {
        assert!(listen("listen: localhost").is_err_and(|e| e.contains("not an address")));
        assert!(
            listen("listen: [{ address: 127.0.0.1:80, tls: { certificates: [] } }]")
                .is_err_and(|e| e.starts_with("listen[0].tls.certificates:"))
        );
        assert!(
            listen("listen: [{ address: 127.0.0.1:80 }, { address: 127.0.0.1:80 }]")
                .is_err_and(|e| e.starts_with("listen[1].address:"))
        );
        assert!(listen("listen: [{ addres: 127.0.0.1:80 }]").is_err_and(|e| e.contains("addres")));
        assert!(listen("listen: []").is_err_and(|e| e.contains("at least one")));
    }
}
