//! Turning a key set's source (a secret, PEM files, a JWKS document) into
//! the keys tokens are checked with. Only public keys and HMAC secrets are
//! accepted, and each key keeps its family so that a token can only be
//! checked with a key of its algorithm's family.

use std::path::Path;

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// Largest JWKS document or PEM file read.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most keys one set holds.
pub const MAX_KEYS: usize = 100;

/// One key of a set.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The algorithm the key's publisher pinned it to (JWK `alg`), if any.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    pub decoding: DecodingKey,
    /// What tells one version of the key from another, for change logs.
    pub fingerprint: String,
}

impl Key {
    /// Whether a token naming `alg` may be checked with this key.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

pub fn from_secret(secret: &str) -> Result<Key, String> {
    Ok(Key {
        kid: None,
        alg: None,
        family: AlgorithmFamily::Hmac,
        decoding: DecodingKey::from_secret(secret.as_bytes())
            .map_err(|e| format!("not a usable secret: {e}"))?,
        fingerprint: "secret".into(),
    })
}

/// A public key in PEM (`-----BEGIN PUBLIC KEY-----`): RSA, EC or Ed25519.
/// Its `kid` is the file name without `.pem`.
pub fn from_pem_file(path: &Path) -> Result<Key, String> {
    let pem = read_bounded(path)?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY") {
        return Err(format!(
            "{} holds a private key; give the gateway the public key only",
            path.display()
        ));
    }
    let (family, decoding) = [
        (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem(&pem)),
        (AlgorithmFamily::Ec, DecodingKey::from_ec_pem(&pem)),
        (AlgorithmFamily::Ed, DecodingKey::from_ed_pem(&pem)),
    ]
    .into_iter()
    .find_map(|(family, key)| key.ok().map(|key| (family, key)))
    .ok_or_else(|| {
        format!(
            "{} is not a PEM public key (RSA, EC or Ed25519)",
            path.display()
        )
    })?;
    let kid = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned());
    Ok(Key {
        fingerprint: format!("{:x}", sha2_digest(&pem)),
        kid,
        alg: None,
        family,
        decoding,
    })
}

/// The signing keys of a JWKS document. Encryption keys (`use: enc`) and
/// key types the gateway does not verify with are left out; HMAC keys
/// (`kty: oct`) are refused, since a JWKS is published.
pub fn from_jwks(document: &[u8]) -> Result<Vec<Key>, String> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the JWKS is larger than {} KiB",
            MAX_DOCUMENT_BYTES >> 10
        ));
    }
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    if set.keys.len() > MAX_KEYS {
        return Err(format!("the JWKS holds more than {MAX_KEYS} keys"));
    }
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            // RSA-OAEP and the like encrypt; they sign nothing.
            Some(key_alg) => match Algorithm::try_from(key_alg) {
                Ok(alg) => Some(alg),
                Err(_) => continue,
            },
        };
        let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        if decoding.family() == AlgorithmFamily::Hmac {
            return Err(format!(
                "key {} is a shared secret (kty oct); a published JWKS holds public keys only",
                jwk.common.key_id.as_deref().unwrap_or("without kid")
            ));
        }
        // The key and its pin: a changed `alg` is a changed key.
        let fingerprint = serde_json::to_vec(&(&jwk.algorithm, &jwk.common.key_algorithm))
            .map(|bytes| format!("{:x}", sha2_digest(&bytes)))
            .unwrap_or_default();
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            family: decoding.family(),
            decoding,
            fingerprint,
        });
    }
    // An empty answer (a provider mid-deploy, say) must not replace good keys.
    if keys.is_empty() {
        return Err(format!(
            "the JWKS holds no signing key the gateway can use ({} keys, none RSA, EC or Ed25519 for signing)",
            set.keys.len()
        ));
    }
    Ok(keys)
}

pub fn from_jwks_file(path: &Path) -> Result<Vec<Key>, String> {
    from_jwks(&read_bounded(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "{} is larger than {} KiB",
            path.display(),
            MAX_DOCUMENT_BYTES >> 10
        ));
    }
    Ok(bytes)
}

fn sha2_digest(bytes: &[u8]) -> impl std::fmt::LowerHex {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_gives_its_signing_keys_and_refuses_secrets() {
        let jwks = br#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let keys = from_jwks(jwks).unwrap_or_else(|e| panic!("{e}"));
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("ed"), Some("ec")]);
        assert!(keys[1].fits(Algorithm::ES256));
        assert!(!keys[1].fits(Algorithm::ES384), "pinned by its alg");
        assert!(!keys[0].fits(Algorithm::HS256));
        let secret = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(from_jwks(secret).is_err_and(|e| e.contains("shared secret")));
        assert!(from_jwks(b"[1,2]").is_err());
        assert!(
            from_jwks(br#"{"keys":[]}"#).is_err_and(|e| e.contains("no signing key")),
            "an empty set is a failure, not a rotation to nothing"
        );
    }
}
