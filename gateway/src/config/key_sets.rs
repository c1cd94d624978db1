//! `key_sets:`: named sets of keys that signed tokens are verified with,
//! and where each set's keys come from. Plugins reach a set only through the
//! `keys` host service (`plugins.grants.<plugin>.keys: [NAME]`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Deserializer};

use super::duration::HumanDuration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetConfig {
    /// The `alg` values a token may name; any other is refused, `none` always.
    pub algorithms: Vec<JwtAlgorithm>,
    /// An HMAC secret (usually `${ENV_VAR}`); for HS256/384/512.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Public keys in PEM files (RSA, EC or Ed25519); each file's name
    /// without `.pem` is its `kid`. Relative to the config file.
    #[serde(default)]
    pub pem_files: Vec<PathBuf>,
    /// A JWKS document on disk, re-read when it changes. Relative to the config file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document fetched over HTTPS (or HTTP).
    #[serde(default)]
    pub jwks_url: Option<JwksUrl>,
    /// The certificate authorities an HTTPS `jwks_url` is trusted with (a
    /// PEM bundle, relative to the config file); default the web's (Mozilla's list).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A JWKS document fetched from a path on a named upstream pool.
    #[serde(default)]
    pub jwks_upstream: Option<JwksUpstream>,
    /// How often a fetched JWKS is fetched again.
    #[serde(default = "default_refresh")]
    pub refresh: HumanDuration,
    /// Shortest time between two fetches asked for by tokens naming an
    /// unknown `kid` (and between retries after a failed fetch).
    #[serde(default = "default_min_refresh")]
    pub min_refresh_interval: HumanDuration,
    /// Longest wait for a JWKS fetch.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: HumanDuration,
    /// Verified tokens remembered (until they expire, at most `cache_ttl`),
    /// so a client sending one token many times costs one signature check.
    /// 0 turns the cache off.
    #[serde(default = "default_cache_tokens")]
    pub cache_tokens: usize,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: HumanDuration,
}

/// Where a set's keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Secret,
    PemFiles,
    JwksFile,
    JwksUrl,
    JwksUpstream,
}

impl SourceKind {
    pub fn field(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::PemFiles => "pem_files",
            Self::JwksFile => "jwks_file",
            Self::JwksUrl => "jwks_url",
            Self::JwksUpstream => "jwks_upstream",
        }
    }

    /// Fetched over the network, so refreshed on an interval.
    pub fn is_fetched(self) -> bool {
        matches!(self, Self::JwksUrl | Self::JwksUpstream)
    }
}

impl KeySetConfig {
    /// The sources given, in field order; a valid set has exactly one.
    pub fn sources(&self) -> Vec<SourceKind> {
        let mut kinds = Vec::new();
        if self.secret.is_some() {
            kinds.push(SourceKind::Secret);
        }
        if !self.pem_files.is_empty() {
            kinds.push(SourceKind::PemFiles);
        }
        if self.jwks_file.is_some() {
            kinds.push(SourceKind::JwksFile);
        }
        if self.jwks_url.is_some() {
            kinds.push(SourceKind::JwksUrl);
        }
        if self.jwks_upstream.is_some() {
            kinds.push(SourceKind::JwksUpstream);
        }
        kinds
    }

    /// The field of a source fetched without TLS, if this set has one.
    /// `upstream_is_https` says whether every target of a pool is https.
    pub fn insecure_source(
        &self,
        upstream_is_https: impl Fn(&str) -> bool,
    ) -> Option<&'static str> {
        if self.jwks_url.as_ref().is_some_and(|u| !u.is_https()) {
            Some("jwks_url")
        } else if self
            .jwks_upstream
            .as_ref()
            .is_some_and(|from| !upstream_is_https(&from.upstream))
        {
            Some("jwks_upstream")
        } else {
            None
        }
    }

    /// The rules no single field can check: one source, algorithms that
    /// fit it. Problems come back as (field below the set, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let sources = self.sources();
        let source = match sources.as_slice() {
            [one] => Some(*one),
            [] => {
                problems.push((
                    String::new(),
                    "a key set needs one of secret, pem_files, jwks_file, jwks_url or jwks_upstream".into(),
                ));
                None
            }
            [_, second, ..] => {
                problems.push((
                    second.field().into(),
                    format!(
                        "a key set has one source; this one has {}",
                        sources
                            .iter()
                            .map(|s| s.field())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                ));
                None
            }
        };
        if self.algorithms.is_empty() {
            problems.push((
                "algorithms".into(),
                "list the algorithms tokens may use, like [RS256]".into(),
            ));
        }
        if let Some(source) = source {
            let hmac = source == SourceKind::Secret;
            for (i, alg) in self.algorithms.iter().enumerate() {
                let is_hmac = alg.0.family() == AlgorithmFamily::Hmac;
                if is_hmac != hmac {
                    let why = if hmac {
                        "a secret verifies HS256, HS384 or HS512 only"
                    } else {
                        // The algorithm-confusion attack: an HMAC token
                        // "signed" with a public key everyone has.
                        "HMAC algorithms need a `secret`; public keys never verify HS tokens"
                    };
                    problems.push((format!("algorithms[{i}]"), format!("{}: {why}", alg)));
                }
            }
        }
        // RFC 7518 3.2: an HMAC key at least as long as the hash.
        let needed = self
            .algorithms
            .iter()
            .map(|a| match a.0 {
                Algorithm::HS384 => 48,
                Algorithm::HS512 => 64,
                _ => 32,
            })
            .max()
            .unwrap_or(32);
        if let Some(secret) = &self.secret
            && secret.0.len() < needed
        {
            problems.push((
                "secret".into(),
                format!(
                    "an HMAC secret for these algorithms must be at least {needed} bytes; this one has {}",
                    secret.0.len()
                ),
            ));
        }
        if self.ca_file.is_some() && !self.jwks_url.as_ref().is_some_and(JwksUrl::is_https) {
            problems.push((
                "ca_file".into(),
                "only an https jwks_url uses a ca_file".into(),
            ));
        }
        if let Some(upstream) = &self.jwks_upstream
            && (!upstream.path.starts_with('/')
                || upstream.path.parse::<http::uri::PathAndQuery>().is_err())
        {
            problems.push(("jwks_upstream.path".into(), "must start with /".into()));
        }
        // Floors, so that no setting makes the gateway hammer a provider.
        for (field, duration, floor) in [
            ("refresh", self.refresh, "1s"),
            ("min_refresh_interval", self.min_refresh_interval, "1s"),
            ("fetch_timeout", self.fetch_timeout, "100ms"),
            ("cache_ttl", self.cache_ttl, "1s"),
        ] {
            let floor = HumanDuration::parse(floor).map_or(std::time::Duration::ZERO, |d| d.0);
            if duration.0 < floor {
                problems.push((field.into(), format!("must be at least {floor:?}")));
            }
        }
        if self.cache_tokens > MAX_CACHED_TOKENS {
            problems.push((
                "cache_tokens".into(),
                format!("must be at most {MAX_CACHED_TOKENS}"),
            ));
        }
        problems
    }
}

const MAX_CACHED_TOKENS: usize = 1_000_000;

fn default_refresh() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}

fn default_min_refresh() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn default_fetch_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

fn default_cache_tokens() -> usize {
    10_000
}

fn default_cache_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(300))
}

/// A JWS algorithm name as tokens carry it (`RS256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtAlgorithm(pub Algorithm);

impl<'de> Deserialize<'de> for JwtAlgorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Algorithm::from_str(&text).map(Self).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an algorithm the gateway verifies; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
            ))
        })
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A secret from config; never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `http[s]://host[:port]/path`, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl(pub http::Uri);

impl<'de> Deserialize<'de> for JwksUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        JwksUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JwksUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("`{text}` must start with https:// or http://"));
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("`{text}` has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}`: credentials in the URL are not supported"
            ));
        }
        Ok(Self(uri))
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksUpstream {
    /// The name of a pool under `upstreams`.
    pub upstream: String,
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: serde_json::Value) -> KeySetConfig {
        serde_json::from_value(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_set_has_one_source_and_algorithms_that_fit_it() {
        let secret = "s".repeat(32);
        assert!(
            set(serde_json::json!({"algorithms": ["HS256"], "secret": secret}))
                .problems()
                .is_empty()
        );
        let none = set(serde_json::json!({"algorithms": ["RS256"]})).problems();
        assert!(none[0].1.contains("needs one of"), "{none:?}");
        let two =
            set(serde_json::json!({"algorithms": ["RS256"], "jwks_file": "a", "pem_files": ["b"]}))
                .problems();
        assert_eq!(two[0].0, "jwks_file", "{two:?}");
        let confused =
            set(serde_json::json!({"algorithms": ["RS256", "HS256"], "jwks_file": "a"})).problems();
        assert_eq!(confused.len(), 1);
        assert_eq!(confused[0].0, "algorithms[1]");
        let short = set(serde_json::json!({"algorithms": ["HS256"], "secret": "short"})).problems();
        assert!(short[0].1.contains("at least 32 bytes"), "{short:?}");
        let hs512 =
            set(serde_json::json!({"algorithms": ["HS512"], "secret": "s".repeat(40)})).problems();
        assert!(hs512[0].1.contains("at least 64 bytes"), "{hs512:?}");
        let hammer = set(serde_json::json!({"algorithms": ["RS256"], "jwks_file": "a", "min_refresh_interval": "10ms"}))
            .problems();
        assert_eq!(hammer[0].0, "min_refresh_interval", "{hammer:?}");
    }

    #[test]
    fn algorithm_names_are_checked_and_none_is_not_one() {
        for bad in ["none", "rs256", "HS1"] {
            let parsed: Result<KeySetConfig, _> =
                serde_json::from_value(serde_json::json!({"algorithms": [bad], "jwks_file": "a"}));
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn jwks_urls_are_https_or_http_without_credentials() {
        let url =
            JwksUrl::parse("https://idp.example.com/keys.json").unwrap_or_else(|e| panic!("{e}"));
        assert!(url.is_https());
        assert!(JwksUrl::parse("http://idp.internal:8080/keys").is_ok_and(|u| !u.is_https()));
        assert!(JwksUrl::parse("ftp://idp/keys").is_err());
        assert!(JwksUrl::parse("/keys").is_err());
        assert!(JwksUrl::parse("http://user:pw@idp/keys").is_err());
        let stray = set(
            serde_json::json!({"algorithms": ["RS256"], "jwks_file": "a", "ca_file": "ca.pem"}),
        )
        .problems();
        assert_eq!(stray[0].0, "ca_file", "{stray:?}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let secret = Secret("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
