//! Checking a compact JWS (a JWT) against a set's keys: the signature only.
//! What the claims must say (expiry, issuer, audience, scopes) is the
//! plugin's policy; the host answers with the verified header and claims.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;

use super::load::Key;

/// Longest token looked at; real ones are well under 4 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most keys tried for one token (keys sharing its `kid`).
const MAX_TRIED: usize = 4;

/// A token whose signature one of the set's keys made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The JOSE header, JSON text.
    pub header: String,
    /// The claims, JSON text (an object).
    pub claims: String,
}

/// Why a token was not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    #[error("no key with kid {0:?}")]
    UnknownKey(String),
    #[error("the signature does not match")]
    BadSignature,
    #[error("{0}")]
    Unavailable(String),
}

/// The parts of a token, split and decoded.
struct Parts<'a> {
    /// `header.payload`, what the signature covers.
    signed: &'a str,
    signature: &'a str,
    header: String,
    payload: &'a str,
    alg: Algorithm,
    kid: Option<String>,
}

fn split<'a>(token: &'a str, allowed: &[Algorithm]) -> Result<Parts<'a>, VerifyError> {
    let malformed = |why: &str| VerifyError::Malformed(why.to_string());
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed("longer than 16 KiB"));
    }
    let mut pieces = token.split('.');
    let (Some(header64), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header64)
        .map_err(|_| malformed("the header is not base64url"))?;
    let header = String::from_utf8(header).map_err(|_| malformed("the header is not UTF-8"))?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&header).map_err(|_| malformed("the header is not a JSON object"))?;
    let Some(alg) = fields.get("alg").and_then(|a| a.as_str()) else {
        return Err(malformed("the header has no alg"));
    };
    // Extensions the signer says must be understood: none are.
    if fields.contains_key("crit") {
        return Err(malformed("the header has crit extensions"));
    }
    let alg = match alg.parse::<Algorithm>() {
        Ok(alg) if allowed.contains(&alg) => alg,
        _ => return Err(VerifyError::AlgorithmNotAllowed(printable(alg))),
    };
    let kid = match fields.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed("the kid is not a string")),
    };
    Ok(Parts {
        signed: &token[..header64.len() + 1 + payload.len()],
        signature,
        header,
        payload,
        alg,
        kid,
    })
}

/// At most 64 characters of something a client sent, for messages.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Checks `token`'s signature with `keys`, allowing `allowed` algorithms.
pub fn verify(token: &str, keys: &[Key], allowed: &[Algorithm]) -> Result<Verified, VerifyError> {
    let parts = split(token, allowed)?;
    let fitting: Vec<&Key> = match &parts.kid {
        Some(kid) => {
            let named: Vec<&Key> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            // A secret, or a key published without kid, checks any kid.
            let candidates = if named.is_empty() {
                keys.iter().filter(|k| k.kid.is_none()).collect()
            } else {
                named
            };
            if candidates.is_empty() {
                return Err(VerifyError::UnknownKey(printable(kid)));
            }
            candidates
                .into_iter()
                .filter(|k| k.fits(parts.alg))
                .collect()
        }
        None => keys.iter().filter(|k| k.fits(parts.alg)).collect(),
    };
    if fitting.is_empty() {
        // An HS256 token naming an RSA key's kid, say: algorithm confusion.
        return Err(VerifyError::AlgorithmNotAllowed(format!(
            "{:?} with {} key",
            parts.alg,
            if parts.kid.is_some() { "this" } else { "any" }
        )));
    }
    // Each try is a public-key operation: a token that names no key gets
    // one only when the set leaves no choice.
    if parts.kid.is_none() && fitting.len() > 1 {
        return Err(VerifyError::Malformed(
            "the token names no kid and the key set holds several keys".into(),
        ));
    }
    if fitting.len() > MAX_TRIED {
        return Err(VerifyError::Malformed(format!(
            "more than {MAX_TRIED} keys share the token's kid"
        )));
    }
    let mut checked = false;
    for key in fitting {
        match jsonwebtoken::crypto::verify(
            parts.signature,
            parts.signed.as_bytes(),
            &key.decoding,
            parts.alg,
        ) {
            Ok(true) => {
                let claims = decode_claims(parts.payload)?;
                return Ok(Verified {
                    header: parts.header,
                    claims,
                });
            }
            Ok(false) => checked = true,
            Err(_) => {}
        }
    }
    if checked {
        Err(VerifyError::BadSignature)
    } else {
        Err(VerifyError::Malformed(
            "the signature is not base64url".into(),
        ))
    }
}

fn decode_claims(payload: &str) -> Result<String, VerifyError> {
    let malformed = |why: &str| VerifyError::Malformed(why.to_string());
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed("the claims are not base64url"))?;
    let text = String::from_utf8(bytes).map_err(|_| malformed("the claims are not UTF-8"))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        _ => Err(malformed("the claims are not a JSON object")),
    }
}

/// Tokens already verified against one version of a set's keys, each kept
/// until its `exp` (or the set's `cache_ttl`, whichever comes first).
///
/// Bounded by count and by bytes; a full cache is emptied at once rather
/// than searched for room, so each new token costs O(1) amortised, and
/// tokens over `MAX_CACHED_TOKEN_BYTES` are checked every time instead.
pub struct TokenCache {
    capacity: usize,
    ttl_secs: u64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Box<str>, (Verified, u64)>,
    bytes: usize,
}

/// Largest token remembered, claims included.
const MAX_CACHED_TOKEN_BYTES: usize = 8 * 1024;
/// Most bytes of tokens and claims one set's cache holds.
const MAX_CACHE_BYTES: usize = 16 << 20;

impl TokenCache {
    pub fn new(capacity: usize, ttl: std::time::Duration) -> Self {
        Self {
            capacity,
            ttl_secs: ttl.as_secs().max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    pub fn get(&self, token: &str, now: u64) -> Option<Verified> {
        if self.capacity == 0 || token.len() > MAX_CACHED_TOKEN_BYTES {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        match entries.map.get(token) {
            Some((verified, until)) if now < *until => Some(verified.clone()),
            _ => None,
        }
    }

    /// Remembers a verified token, unless it has already expired.
    pub fn put(&self, token: &str, verified: &Verified, now: u64) {
        let size = token.len() + verified.header.len() + verified.claims.len();
        if self.capacity == 0 || size > MAX_CACHED_TOKEN_BYTES {
            return;
        }
        let exp = serde_json::from_str::<serde_json::Value>(&verified.claims)
            .ok()
            .and_then(|claims| claims.get("exp").and_then(|e| e.as_f64()));
        let mut until = now.saturating_add(self.ttl_secs);
        if let Some(exp) = exp {
            if exp <= now as f64 {
                return;
            }
            until = until.min(exp as u64);
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let full = entries.map.len() >= self.capacity || entries.bytes + size > MAX_CACHE_BYTES;
        // Freed after the lock is released.
        let _dropped = full.then(|| std::mem::take(&mut *entries));
        entries.bytes += size;
        if let Some((old, _)) = entries.map.insert(token.into(), (verified.clone(), until)) {
            entries.bytes -= token.len() + old.header.len() + old.claims.len();
        }
        drop(entries);
    }

    /// Tokens remembered now.
    pub fn remembered(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::load;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn sign(header: &str, claims: &str, secret: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256)
            .unwrap_or_else(|e| panic!("{e}"));
        format!("{signed}.{signature}")
    }

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() {
        let keys = [load::from_secret(SECRET).unwrap_or_else(|e| panic!("{e}"))];
        let token = sign(r#"{"alg":"HS256"}"#, r#"{"sub":"ann"}"#, SECRET);
        let verified = verify(&token, &keys, &[Algorithm::HS256]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verified.claims, r#"{"sub":"ann"}"#);
        let other = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"ann"}"#,
            &SECRET.replace('0', "1"),
        );
        assert_eq!(
            verify(&other, &keys, &[Algorithm::HS256]),
            Err(VerifyError::BadSignature)
        );
        assert!(matches!(
            verify(&token, &keys, &[Algorithm::HS384]),
            Err(VerifyError::AlgorithmNotAllowed(_))
        ));
    }

    #[test]
    fn none_crit_and_broken_tokens_are_refused() {
        let keys = [load::from_secret(SECRET).unwrap_or_else(|e| panic!("{e}"))];
        let allowed = [Algorithm::HS256];
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"ann"}"#)
        );
        assert_eq!(
            verify(&none, &keys, &allowed),
            Err(VerifyError::AlgorithmNotAllowed("none".into()))
        );
        let crit = sign(r#"{"alg":"HS256","crit":["x"]}"#, "{}", SECRET);
        assert!(matches!(
            verify(&crit, &keys, &allowed),
            Err(VerifyError::Malformed(_))
        ));
        let array = sign(r#"{"alg":"HS256"}"#, "[1]", SECRET);
        assert!(matches!(
            verify(&array, &keys, &allowed),
            Err(VerifyError::Malformed(_))
        ));
        for broken in ["a.b", "a.b.c.d", "!!.e30.x", ""] {
            assert!(
                matches!(
                    verify(broken, &keys, &allowed),
                    Err(VerifyError::Malformed(_))
                ),
                "{broken}"
            );
        }
    }

    #[test]
    fn the_cache_keeps_tokens_no_longer_than_they_live_and_stays_bounded() {
        let cache = TokenCache::new(2, std::time::Duration::from_secs(300));
        let verified = |exp: u64| Verified {
            header: "{}".into(),
            claims: format!(r#"{{"exp":{exp}}}"#),
        };
        cache.put("a", &verified(1_010), 1_000);
        assert!(cache.get("a", 1_009).is_some());
        assert!(cache.get("a", 1_010).is_none(), "expired with the token");
        cache.put("gone", &verified(900), 1_000);
        assert!(
            cache.get("gone", 1_000).is_none(),
            "an expired token is not kept"
        );
        cache.put("b", &verified(5_000), 1_000);
        cache.put("c", &verified(5_000), 1_000);
        assert!(cache.remembered() <= 2);
        assert!(cache.get("c", 1_001).is_some());
        assert!(cache.get("c", 1_299).is_some());
        assert!(cache.get("c", 1_300).is_none(), "no longer than the ttl");
    }
}
