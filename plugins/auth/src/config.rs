//! The plugin's config, checked when a route loads it.

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accept JWTs checked against the gateway's key sets.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Accept API keys.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// Header carrying the consumer (the JWT's `consumer_claim`, or the API
    /// key's consumer) to the upstream. A client's own copy is always removed.
    #[serde(default = "default_consumer_header", deserialize_with = "header_name")]
    pub consumer_header: String,
    /// Forward the credential (the `Authorization` header, the API key's
    /// header or query parameter) to the upstream. Off by default.
    #[serde(default)]
    pub keep_credentials: bool,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Key sets (`key_sets:` in the gateway config, granted to this plugin
    /// under `plugins.grants.auth.keys`) tried in order: a name, or
    /// `{ set: NAME, issuer: ISS }` to accept from that set only tokens of
    /// that issuer (one or a list), so that one signer cannot speak for another.
    #[serde(deserialize_with = "non_empty")]
    pub key_sets: Vec<KeySetRef>,
    /// Where the token is looked for, in order; default the
    /// `Authorization: Bearer` header.
    #[serde(default = "default_token_sources")]
    pub from: Vec<Source>,
    /// Accepted `iss` values; the token's must be one of them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Accepted audiences; the token's `aud` (a string or a list) must name one.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Seconds of clock difference allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Claims a token must have. Default `[exp]`: a token without expiry is
    /// refused unless this is set to `[]`.
    #[serde(default = "default_required")]
    pub required_claims: Vec<String>,
    /// Rules on claims; a token breaking one gets 403.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Claims copied to upstream headers: `{ sub: x-user-id }`.
    #[serde(default, deserialize_with = "header_map")]
    pub claims_to_headers: Vec<(String, String)>,
    /// Claims put in the request context as `claims.<name>`, for later plugins.
    #[serde(default)]
    pub claims_to_context: Vec<String>,
    /// The claim naming the consumer (context `consumer`, `consumer_header`).
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
}

/// One entry of `jwt.key_sets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetRef {
    pub set: String,
    /// Issuers this set's tokens may name; empty: the route's `issuer`.
    pub issuer: Vec<String>,
}

impl<'de> Deserialize<'de> for KeySetRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Full(Full),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            set: String,
            #[serde(default, deserialize_with = "one_or_many")]
            issuer: Vec<String>,
        }
        Ok(match Form::deserialize(d)? {
            Form::Name(set) => Self {
                set,
                issuer: Vec::new(),
            },
            Form::Full(full) => Self {
                set: full.set,
                issuer: full.issuer,
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Where the key is looked for, in order; default the `x-api-key` header.
    #[serde(default = "default_key_sources")]
    pub from: Vec<Source>,
    #[serde(deserialize_with = "non_empty")]
    pub keys: Vec<ApiKey>,
}

/// A consumer and the SHA-256 of its key (`printf %s KEY | sha256sum`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub consumer: String,
    #[serde(deserialize_with = "sha256_hex")]
    pub sha256: [u8; 32],
}

/// Where a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A header; for `authorization` the `Bearer ` scheme is expected.
    Header(#[serde(deserialize_with = "header_name")] String),
    Cookie(String),
    Query(String),
}

/// A condition on a claim. `claim` is a name (`scope`) or a dotted path
/// into objects (`realm_access.roles`); a name with dots is tried whole first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub claim: String,
    /// A list claim (or a space-separated string, like `scope`) holds this.
    #[serde(default)]
    pub contains: Option<String>,
    /// The claim is exactly this (strings, numbers and booleans compare as text).
    #[serde(default)]
    pub equals: Option<String>,
    /// The claim (or one of its items) is one of these.
    #[serde(default)]
    pub any_of: Option<Vec<String>>,
}

impl Config {
    /// Cross-field checks; the message starts with the field.
    pub fn check(&self) -> Result<(), String> {
        if self.jwt.is_none() && self.api_keys.is_none() {
            return Err("configure `jwt`, `api_keys` or both".into());
        }
        // Names compared as upstreams compare them (any case, `_` for `-`).
        use crate::credentials::normal;
        // Headers that carry credentials, or that the gateway or upstreams
        // rely on: an identity header may be none of them.
        let mut reserved: Vec<String> = RESERVED_HEADERS.iter().map(|h| normal(h)).collect();
        for sources in [
            self.jwt.as_ref().map(|j| &j.from),
            self.api_keys.as_ref().map(|k| &k.from),
        ]
        .into_iter()
        .flatten()
        {
            for source in sources {
                if let Source::Header(name) = source {
                    reserved.push(normal(name));
                }
            }
        }
        let mut identity = vec![("consumer_header".to_string(), &self.consumer_header)];
        if let Some(jwt) = &self.jwt {
            for (claim, header) in &jwt.claims_to_headers {
                identity.push((format!("jwt.claims_to_headers.{claim}"), header));
            }
        }
        let mut taken: Vec<String> = Vec::new();
        for (field, header) in identity {
            let name = normal(header);
            if reserved.contains(&name) || name.starts_with("x-forwarded-") {
                return Err(format!(
                    "{field}: `{header}` carries credentials or routing facts; the plugin sets and removes identity headers, so pick another name"
                ));
            }
            if taken.contains(&name) {
                return Err(format!(
                    "{field}: `{header}` is set from another claim or the consumer already"
                ));
            }
            taken.push(name);
        }
        if let Some(jwt) = &self.jwt {
            // A set bound to its issuers: no other set may issue in their name.
            let bound: Vec<&String> = jwt.key_sets.iter().flat_map(|s| &s.issuer).collect();
            let unbound = jwt.key_sets.iter().any(|s| s.issuer.is_empty());
            if !bound.is_empty() && unbound {
                if jwt.issuer.is_empty() {
                    return Err("jwt.issuer: some key sets name their issuer; give the others theirs here (or in their entries), or any issuer would pass with them".into());
                }
                if let Some(shared) = jwt.issuer.iter().find(|iss| bound.contains(iss)) {
                    return Err(format!(
                        "jwt.issuer: `{shared}` is bound to a key set of its own; listing it here lets the other sets issue it too"
                    ));
                }
            }
        }
        if let Some(jwt) = &self.jwt {
            if jwt.leeway_seconds > MAX_LEEWAY_SECONDS {
                return Err(format!(
                    "jwt.leeway_seconds: at most {MAX_LEEWAY_SECONDS} (an hour)"
                ));
            }
            for (i, rule) in jwt.rules.iter().enumerate() {
                let given = [
                    rule.contains.is_some(),
                    rule.equals.is_some(),
                    rule.any_of.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(format!(
                        "jwt.rules[{i}]: a rule has one of contains, equals or any_of"
                    ));
                }
            }
        }
        if let Some(keys) = &self.api_keys {
            for (i, key) in keys.keys.iter().enumerate() {
                if key.consumer.trim().is_empty() {
                    return Err(format!(
                        "api_keys.keys[{i}].consumer: a key needs a consumer name"
                    ));
                }
            }
        }
        if self.realm.contains(['"', '\\'])
            || !self.realm.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err("realm: printable ASCII without quotes or backslashes".into());
        }
        Ok(())
    }
}

const MAX_LEEWAY_SECONDS: u64 = 3600;

/// Headers an identity header may not be named after.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "forwarded",
    "x-real-ip",
    "x-request-id",
];

fn default_consumer_header() -> String {
    "x-consumer".into()
}

fn default_realm() -> String {
    "gateway".into()
}

fn default_token_sources() -> Vec<Source> {
    vec![Source::Header("authorization".into())]
}

fn default_key_sources() -> Vec<Source> {
    vec![Source::Header("x-api-key".into())]
}

fn default_leeway() -> u64 {
    60
}

fn default_required() -> Vec<String> {
    vec!["exp".into()]
}

fn default_consumer_claim() -> String {
    "sub".into()
}

fn non_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let list = Vec::deserialize(d)?;
    if list.is_empty() {
        return Err(D::Error::custom("must list at least one"));
    }
    Ok(list)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if !is_header_name(&name) {
        return Err(D::Error::custom(format!("`{name}` is not a header name")));
    }
    Ok(name.to_ascii_lowercase())
}

fn header_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let map = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    map.into_iter()
        .map(|(claim, header)| {
            if is_header_name(&header) {
                Ok((claim, header.to_ascii_lowercase()))
            } else {
                Err(D::Error::custom(format!("`{header}` is not a header name")))
            }
        })
        .collect()
}

fn sha256_hex<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let text = String::deserialize(d)?;
    let bad = || {
        D::Error::custom(
            "a SHA-256 is 64 hex digits (`printf %s KEY | sha256sum`); the key itself is never written in config",
        )
    };
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}
