//! Benchmark only: the other way to check a JWT, inside the plugin with
//! `jsonwebtoken` built for wasm (its pure-Rust crypto), the key in the
//! route config. It does what the auth plugin's JWT path does on a valid
//! token (signature, `exp` with leeway, `sub` to a header, the token
//! removed) so `bench/run` can compare the two per algorithm. The auth
//! plugin keeps keys in the host instead; BENCHMARKS.md says why.
//!
//! ```yaml
//! - name: jwt-in-plugin
//!   config: { algorithm: RS256, key: "-----BEGIN PUBLIC KEY-----..." }  # or an HMAC secret
//! ```

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use plugin_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    algorithm: String,
    /// A PEM public key, or the HMAC secret for HS algorithms.
    key: String,
}

pub struct JwtInPlugin {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Plugin for JwtInPlugin {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, String> {
        let alg: Algorithm = cfg
            .algorithm
            .parse()
            .map_err(|e| format!("algorithm: {e}"))?;
        let pem = cfg.key.as_bytes();
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                DecodingKey::from_secret(pem).map_err(|e| format!("key: {e}"))?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                DecodingKey::from_ec_pem(pem).map_err(|e| format!("key: {e}"))?
            }
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem).map_err(|e| format!("key: {e}"))?,
            _ => DecodingKey::from_rsa_pem(pem).map_err(|e| format!("key: {e}"))?,
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 60;
        validation.validate_aud = false;
        Ok(Self { key, validation })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string));
        let claims = token.and_then(|token| {
            jsonwebtoken::decode::<Claims>(&token, &self.key, &self.validation).ok()
        });
        match claims {
            Some(data) => {
                req.headers_mut().remove("authorization");
                req.headers_mut().insert("x-user-id", &data.claims.sub);
                Action::Continue
            }
            None => Action::Respond(Response::error_for(
                req,
                401,
                "invalid_token",
                "the token is not valid",
            )),
        }
    }
}

export_plugin!(JwtInPlugin);
