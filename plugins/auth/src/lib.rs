//! The auth plugin: a route answers only requests with a valid JWT or API
//! key; the upstream gets the identity in headers it can trust, and later
//! plugins get it in the request context.
//!
//! ```yaml
//! key_sets:                                  # in the gateway config
//!   users: { algorithms: [RS256], jwks_url: "https://idp.example.com/.well-known/jwks.json" }
//! plugins:
//!   grants: { auth: { keys: [users] } }      # the plugin may use this set
//! routes:
//!   - name: orders
//!     plugins:
//!       - name: auth
//!         config:
//!           jwt:
//!             key_sets: [users]              # tried in order
//!             from: [{ header: authorization }, { cookie: session }, { query: access_token }]
//!             issuer: https://idp.example.com   # one or a list; default any
//!             audience: orders-api              # one or a list; default any
//!             leeway_seconds: 60                # on exp and nbf; default 60
//!             required_claims: [exp, sub]       # default [exp]
//!             rules:                            # each must hold, else 403
//!               - { claim: scope, contains: "orders:read" }
//!             claims_to_headers: { sub: x-user-id, email: x-user-email }
//!             claims_to_context: [scope]        # as claims.scope
//!             consumer_claim: sub               # default sub
//!           api_keys:
//!             from: [{ header: x-api-key }]     # the default
//!             keys:
//!               - { consumer: billing-batch, sha256: "<printf %s KEY | sha256sum>" }
//!           consumer_header: x-consumer         # the default
//!           keep_credentials: false             # the default
//!           realm: orders                       # default gateway
//! ```
//!
//! A request with a token (from the first `from` source holding one) is
//! judged by it alone; one without a token may show an API key; one with
//! neither gets `401`. Signatures are checked by the gateway host against
//! the key sets (`alg` pinned per set, `none` never); this plugin checks
//! what the claims must say. Every header this plugin sets is removed from
//! the client's request first, so it cannot be spoofed; the credential is
//! removed too unless `keep_credentials` (a cookie stays: it shares its
//! header with other cookies).
//!
//! Refusals: `401` with `WWW-Authenticate: Bearer realm=.., error="invalid_token",
//! error_description=".."` (`ApiKey realm=..` for keys), `403` with
//! `error="insufficient_scope"` when a rule fails; the body is the gateway's
//! JSON error. The reason goes to the log with the request id; tokens and
//! keys never do.

pub mod api_keys;
pub mod claims;
pub mod config;
pub mod credentials;

use plugin_sdk::prelude::*;
use serde_json::{Map, Value};

use claims::Denial;
pub use config::Config;
use credentials::Found;

/// A token the host verified: its claims.
pub type Verified = Result<String, String>;

/// Checks a token's signature with a key set: the host's `keys` service in
/// the gateway, anything in unit tests.
pub trait Verifier {
    /// The claims (JSON text) of `token` if `key_set` verifies it, else why not.
    fn verify(&self, key_set: &str, token: &str) -> Verified;
}

/// The gateway's key sets.
pub struct HostKeys;

impl Verifier for HostKeys {
    fn verify(&self, key_set: &str, token: &str) -> Verified {
        use plugin_sdk::keys::{VerifyError, verify_jwt};
        verify_jwt(key_set, token)
            .map(|verified| verified.claims)
            .map_err(|error| match error {
                VerifyError::Malformed(why) => why,
                VerifyError::AlgorithmNotAllowed(alg) => format!("algorithm {alg} is not accepted"),
                VerifyError::UnknownKey(kid) => format!("no key {kid}"),
                VerifyError::BadSignature => "the signature does not match".into(),
                VerifyError::Unavailable(why) => {
                    // Which sets exist is the operator's business, not the
                    // client's; the host logs failed fetches itself.
                    log::debug(&why);
                    "the token cannot be checked now".into()
                }
            })
    }
}

pub struct Auth {
    cfg: Config,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub consumer: Option<String>,
    /// The verified claims, when a JWT said who.
    pub claims: Option<Map<String, Value>>,
    /// What proved it, removed before forwarding.
    pub credential: Found,
}

/// A refused request: status, error code, message and which scheme refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    scheme: Scheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// No credential at all: every configured scheme is offered.
    None,
    Bearer,
    ApiKey,
}

impl Plugin for Auth {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, String> {
        cfg.check()?;
        // Only the gateway can say which sets are granted (not `cargo test`).
        #[cfg(target_arch = "wasm32")]
        if let Some(jwt) = &cfg.jwt {
            for (i, set) in jwt.key_sets.iter().enumerate() {
                if !plugin_sdk::keys::granted(&set.set) {
                    return Err(format!(
                        "jwt.key_sets[{i}]: key set \"{}\" is not granted to this plugin; list it under plugins.grants.<this plugin>.keys (and under key_sets)",
                        set.set
                    ));
                }
            }
        }
        Ok(Self { cfg })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        self.forget_identity(req);
        match self.authenticate(req, &HostKeys, now()) {
            Ok(identity) => {
                self.forward(req, &identity);
                Action::Continue
            }
            Err(refusal) => {
                log::info(&format!(
                    "request {}: {} {}: {}",
                    req.request_id(),
                    refusal.status,
                    refusal.code,
                    refusal.message
                ));
                Action::Respond(self.refuse(req, &refusal))
            }
        }
    }
}

impl Auth {
    /// Removes every header this plugin sets, whatever the client sent
    /// (spelt with `_` too: CGI-style upstreams read `x_consumer` as
    /// `x-consumer`), and the context values it sets.
    pub fn forget_identity(&self, req: &mut Request) {
        let mut names = vec![self.cfg.consumer_header.as_str()];
        if let Some(jwt) = &self.cfg.jwt {
            names.extend(jwt.claims_to_headers.iter().map(|(_, h)| h.as_str()));
        }
        credentials::remove_headers(req, &names);
        let context = req.context();
        context.remove("consumer");
        context.remove("auth");
        if let Some(jwt) = &self.cfg.jwt {
            for claim in &jwt.claims_to_context {
                context.remove(&format!("claims.{claim}"));
            }
        }
    }

    /// Who the request comes from, or why it is refused. `now` is unix seconds.
    pub fn authenticate(
        &self,
        req: &Request,
        keys: &dyn Verifier,
        now: u64,
    ) -> Result<Identity, Refusal> {
        let bearer = |message: String| Refusal {
            status: 401,
            code: "invalid_token",
            message,
            scheme: Scheme::Bearer,
        };
        if let Some(jwt) = &self.cfg.jwt {
            let token = credentials::find(req, &jwt.from).map_err(bearer)?;
            if let Some(token) = token {
                let claims = verify(jwt, keys, &token.value).map_err(bearer)?;
                claims::check(&claims, jwt, now).map_err(|denial| match denial {
                    Denial::Unauthorized(message) => bearer(message),
                    Denial::Forbidden(message) => Refusal {
                        status: 403,
                        code: "insufficient_scope",
                        message,
                        scheme: Scheme::Bearer,
                    },
                })?;
                let consumer = claims::lookup(&claims, &jwt.consumer_claim).and_then(claims::text);
                return Ok(Identity {
                    consumer,
                    claims: Some(claims),
                    credential: token,
                });
            }
        }
        if let Some(api_keys) = &self.cfg.api_keys {
            let invalid = |message: String| Refusal {
                status: 401,
                code: "invalid_api_key",
                message,
                scheme: Scheme::ApiKey,
            };
            if let Some(key) = credentials::find(req, &api_keys.from).map_err(invalid)? {
                let consumer = api_keys::consumer(&api_keys.keys, &key.value)
                    .ok_or_else(|| invalid("the API key is not valid".into()))?;
                return Ok(Identity {
                    consumer: Some(consumer.to_string()),
                    claims: None,
                    credential: key,
                });
            }
        }
        Err(Refusal {
            status: 401,
            code: "missing_credentials",
            message: "this route needs a token or an API key".into(),
            scheme: Scheme::None,
        })
    }

    /// Passes the identity on: headers for the upstream, context for later
    /// plugins; the credential removed unless kept.
    pub fn forward(&self, req: &mut Request, identity: &Identity) {
        let context = req.context();
        if let Some(consumer) = &identity.consumer {
            if let Some(value) = header_safe(consumer) {
                req.headers_mut().insert(&self.cfg.consumer_header, value);
            }
            context.set("consumer", bounded(consumer));
        }
        context.set(
            "auth",
            if identity.claims.is_some() {
                "jwt"
            } else {
                "api-key"
            },
        );
        if let (Some(jwt), Some(claims)) = (&self.cfg.jwt, &identity.claims) {
            for (claim, header) in &jwt.claims_to_headers {
                if let Some(value) = claims::lookup(claims, claim).and_then(as_header_text)
                    && let Some(value) = header_safe(&value)
                {
                    req.headers_mut().insert(header, value);
                }
            }
            for claim in &jwt.claims_to_context {
                if let Some(value) = claims::lookup(claims, claim).and_then(as_header_text) {
                    context.set(&format!("claims.{claim}"), bounded(&value));
                }
            }
        }
        // Every credential this route reads, not only the one used: an
        // unchecked second one must not reach the upstream either.
        if !self.cfg.keep_credentials {
            if let Some(jwt) = &self.cfg.jwt {
                credentials::remove_all(req, &jwt.from);
            }
            if let Some(api_keys) = &self.cfg.api_keys {
                credentials::remove_all(req, &api_keys.from);
            }
        }
    }

    /// The answer to a refused request.
    pub fn refuse(&self, req: &Request, refusal: &Refusal) -> Response {
        let realm = &self.cfg.realm;
        let description = refusal.message.replace(['"', '\\'], "'");
        let mut challenges = Vec::new();
        match refusal.scheme {
            Scheme::None => {
                if self.cfg.jwt.is_some() {
                    challenges.push(format!("Bearer realm=\"{realm}\""));
                }
                if self.cfg.api_keys.is_some() {
                    challenges.push(format!("ApiKey realm=\"{realm}\""));
                }
            }
            Scheme::Bearer => {
                let error = if refusal.status == 403 {
                    "insufficient_scope"
                } else {
                    "invalid_token"
                };
                challenges.push(format!(
                    "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{description}\""
                ));
            }
            Scheme::ApiKey => challenges.push(format!("ApiKey realm=\"{realm}\"")),
        }
        let mut response = Response::error_for(req, refusal.status, refusal.code, &refusal.message);
        for challenge in challenges {
            response = response.with_header("www-authenticate", &challenge);
        }
        response
    }
}

/// The claims of `token` from the first key set that verifies it and may
/// issue its `iss` (a set's own `issuer`, else the route's); when none
/// does, the first set's reason.
fn verify(
    jwt: &config::JwtConfig,
    keys: &dyn Verifier,
    token: &str,
) -> Result<Map<String, Value>, String> {
    let mut first_error = None;
    for set in &jwt.key_sets {
        let outcome = keys.verify(&set.set, token).and_then(|claims| {
            let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(&claims) else {
                return Err("the claims are not a JSON object".to_string());
            };
            let issuers = if set.issuer.is_empty() {
                &jwt.issuer
            } else {
                &set.issuer
            };
            claims::check_issuer(&claims, issuers)?;
            Ok(claims)
        });
        match outcome {
            Ok(claims) => return Ok(claims),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| "no key set to check it with".into()))
}

/// A claim as header text: scalars as text, a list of scalars joined by commas.
fn as_header_text(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) => {
            let texts: Option<Vec<String>> = items.iter().map(claims::text).collect();
            texts.map(|t| t.join(","))
        }
        other => claims::text(other),
    }
}

/// `value` if a header may carry it as is (visible ASCII and spaces, at most
/// 4 KiB); a claim that is not is left out rather than failing the request.
fn header_safe(value: &str) -> Option<&str> {
    (value.len() <= 4096
        && value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()))
    .then_some(value)
}

/// At most 1 KiB of a context value: the request context is bounded.
fn bounded(value: &str) -> &str {
    let mut end = value.len().min(1024);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

export_plugin!(Auth);

#[cfg(test)]
mod tests {
    use super::*;

    /// Verifies tokens of the form `good:<claims json>`.
    struct Fake;

    impl Verifier for Fake {
        fn verify(&self, _: &str, token: &str) -> Verified {
            token
                .strip_prefix("good:")
                .map(String::from)
                .ok_or_else(|| "the signature does not match".into())
        }
    }

    fn auth(config: Value) -> Auth {
        let cfg: Config = serde_json::from_value(config).unwrap_or_else(|e| panic!("{e}"));
        Auth::new(cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_valid_token_forwards_trusted_identity_and_drops_spoofed_headers() {
        let plugin = auth(serde_json::json!({
            "jwt": { "key_sets": ["k"], "claims_to_headers": { "sub": "x-user-id" }, "claims_to_context": ["scope"] }
        }));
        let token = format!(
            "good:{{\"sub\":\"ann\",\"exp\":{},\"scope\":\"a b\"}}",
            NOW + 60
        );
        let mut req = Request::new("GET", "/")
            .with_header("authorization", &format!("Bearer {token}"))
            .with_header("x-user-id", "admin")
            .with_header("x_user_id", "admin")
            .with_header("x-consumer", "admin");
        req.context().set("consumer", "admin");
        plugin.forget_identity(&mut req);
        let identity = plugin
            .authenticate(&req, &Fake, NOW)
            .unwrap_or_else(|r| panic!("{r:?}"));
        plugin.forward(&mut req, &identity);
        assert_eq!(req.headers().get_all("x-user-id"), ["ann"]);
        assert_eq!(req.headers().get("x_user_id"), None);
        assert_eq!(req.headers().get_all("x-consumer"), ["ann"]);
        assert_eq!(req.headers().get("authorization"), None);
        assert_eq!(req.context().get("consumer").as_deref(), Some("ann"));
        assert_eq!(req.context().get("claims.scope").as_deref(), Some("a b"));
    }

    #[test]
    fn refusals_say_why_in_the_challenge() {
        let plugin = auth(serde_json::json!({
            "jwt": { "key_sets": ["k"], "rules": [{ "claim": "scope", "contains": "w" }] },
            "api_keys": { "keys": [{ "consumer": "c", "sha256": "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }] },
            "realm": "orders"
        }));
        let missing = plugin.authenticate(&Request::new("GET", "/"), &Fake, NOW);
        let missing = missing.err().unwrap_or_else(|| panic!("accepted"));
        let answer = plugin.refuse(&Request::new("GET", "/"), &missing);
        assert_eq!(answer.status(), 401);
        assert_eq!(
            answer.headers().get_all("www-authenticate"),
            ["Bearer realm=\"orders\"", "ApiKey realm=\"orders\""]
        );
        let req = Request::new("GET", "/").with_header("authorization", "Bearer bad");
        let bad = plugin
            .authenticate(&req, &Fake, NOW)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!((bad.status, bad.code), (401, "invalid_token"));
        let token = format!("good:{{\"exp\":{},\"scope\":\"r\"}}", NOW + 60);
        let req = Request::new("GET", "/").with_header("authorization", &format!("Bearer {token}"));
        let scope = plugin
            .authenticate(&req, &Fake, NOW)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!((scope.status, scope.code), (403, "insufficient_scope"));
        let answer = plugin.refuse(&req, &scope);
        let challenge = answer.headers().get("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        // "secret" hashes to the configured key.
        let req = Request::new("GET", "/").with_header("x-api-key", "secret");
        let identity = plugin
            .authenticate(&req, &Fake, NOW)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(identity.consumer.as_deref(), Some("c"));
        let req = Request::new("GET", "/").with_header("x-api-key", "wrong");
        let wrong = plugin
            .authenticate(&req, &Fake, NOW)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!((wrong.status, wrong.code), (401, "invalid_api_key"));
    }

    #[test]
    fn a_key_set_may_speak_for_its_own_issuer_only() {
        let plugin = auth(serde_json::json!({
            "jwt": { "key_sets": [{ "set": "partner", "issuer": "partner-idp" }, "users"], "issuer": "users-idp" }
        }));
        struct PartnerOnly;
        impl Verifier for PartnerOnly {
            fn verify(&self, set: &str, token: &str) -> Verified {
                match (set, token.strip_prefix("good:")) {
                    ("partner", Some(claims)) => Ok(claims.to_string()),
                    _ => Err("no".into()),
                }
            }
        }
        let as_users = format!("good:{{\"iss\":\"users-idp\",\"exp\":{}}}", NOW + 60);
        let req =
            Request::new("GET", "/").with_header("authorization", &format!("Bearer {as_users}"));
        assert!(
            plugin.authenticate(&req, &PartnerOnly, NOW).is_err(),
            "the partner's key cannot mint users-idp tokens"
        );
        let as_partner = format!("good:{{\"iss\":\"partner-idp\",\"exp\":{}}}", NOW + 60);
        let req =
            Request::new("GET", "/").with_header("authorization", &format!("Bearer {as_partner}"));
        assert!(plugin.authenticate(&req, &PartnerOnly, NOW).is_ok());
    }

    #[test]
    fn identity_headers_may_not_be_credential_headers() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "api_keys": { "keys": [{ "consumer": "c", "sha256": "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }] },
            "consumer_header": "x-api-key"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(Auth::new(cfg).is_err_and(|e| e.contains("carries credentials")));
    }

    #[test]
    fn a_config_without_a_scheme_is_refused() {
        let cfg: Config =
            serde_json::from_value(serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert!(Auth::new(cfg).is_err());
        let bad_hash: Result<Config, _> = serde_json::from_value(serde_json::json!({
            "api_keys": { "keys": [{ "consumer": "c", "sha256": "plaintext-key" }] }
        }));
        assert!(bad_hash.is_err_and(|e| e.to_string().contains("64 hex digits")));
    }
}
