//! The key a request is counted under.
//!
//! The parts of the route's `key` become a JSON list of `[tag, value]`
//! pairs (`[["ip","1.2.3.4"],["h:x-api-key","k1"]]`), so no choice of
//! values can make two different requests spell the same key. A header or
//! context value that is missing (or empty) falls back to the client's
//! address, written as `["ip", ADDRESS]` in place of the value: a list,
//! where a value that is there is a string, so a client cannot send a
//! header that reads like another client's fallback. A header value is
//! always replaced by `sha256:` and its SHA-256 in hex (it may be an API
//! key, which the store should not hold), as is any other value over 64
//! bytes (71 bytes, so it cannot be a value that was kept as it is).
//!
//! Each limit then appends its own suffix (`|100/60000/20`), see
//! [`LimitRule::key_suffix`](crate::config::LimitRule::key_suffix).

use plugin_sdk::Request;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::KeyPart;

/// The longest key the host accepts.
pub const MAX_KEY_BYTES: usize = 512;
/// The longest limit suffix: `|`, three u64 of up to 20 digits, two `/`.
pub const MAX_SUFFIX_BYTES: usize = 1 + 3 * 20 + 2;
/// A request's key longer than this is replaced by its SHA-256, so that any
/// limit's suffix fits. The bound does not depend on the route's limits: a
/// request gets the same key on every route with the same `key`.
pub const MAX_BASE_BYTES: usize = MAX_KEY_BYTES - MAX_SUFFIX_BYTES;
/// Longer values are replaced by their SHA-256.
pub const MAX_VALUE_BYTES: usize = 64;

/// The key `request` is counted under, before a limit's suffix: at most
/// [`MAX_BASE_BYTES`].
pub fn request_key(parts: &[KeyPart], request: &Request) -> String {
    // Asked of the host at most once, and only when needed.
    let mut address: Option<String> = None;
    let mut client = || {
        address
            .get_or_insert_with(|| request.client_address())
            .clone()
    };
    let mut pairs = Vec::with_capacity(parts.len());
    for part in parts {
        // Header values may be credentials (an API key): only their hash
        // is stored, so a Redis dump holds none.
        let (tag, found, secret) = match part {
            KeyPart::ClientIp => ("ip".to_string(), Some(client()), false),
            KeyPart::Route => ("route".to_string(), Some(request.route()), false),
            KeyPart::Header(name) => (format!("h:{name}"), request.headers().get(name), true),
            KeyPart::Context(name) => (format!("c:{name}"), request.context().get(name), false),
        };
        let value = match found.filter(|v| !v.is_empty()) {
            Some(value) if secret => Value::String(hashed(&value)),
            Some(value) => Value::String(bounded(value)),
            None => json!(["ip", bounded(client())]),
        };
        pairs.push(json!([tag, value]));
    }
    let key = Value::Array(pairs).to_string();
    if key.len() > MAX_BASE_BYTES {
        hashed(&key)
    } else {
        key
    }
}

/// `value`, or its SHA-256 when it is longer than [`MAX_VALUE_BYTES`].
fn bounded(value: String) -> String {
    if value.len() > MAX_VALUE_BYTES {
        hashed(&value)
    } else {
        value
    }
}

/// `sha256:` and the SHA-256 of `text` in hex.
fn hashed(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitRule;

    fn key(parts: &[KeyPart], request: &Request) -> String {
        let key = request_key(parts, request);
        assert!(key.len() <= MAX_BASE_BYTES, "{key}");
        key
    }

    fn header(name: &str) -> KeyPart {
        KeyPart::Header(name.into())
    }

    fn context(name: &str) -> KeyPart {
        KeyPart::Context(name.into())
    }

    #[test]
    fn each_part_is_tagged_with_its_kind() {
        let request = Request::new("GET", "/").with_header("x-api-key", "k1");
        request.context().set("consumer", "ann");
        assert_eq!(
            key(
                &[
                    KeyPart::ClientIp,
                    KeyPart::Route,
                    header("x-api-key"),
                    context("consumer")
                ],
                &request
            ),
            format!(
                r#"[["ip","127.0.0.1"],["route","test"],["h:x-api-key","{}"],["c:consumer","ann"]]"#,
                hashed("k1")
            )
        );
    }

    #[test]
    fn a_missing_part_falls_back_to_the_client_address() {
        let request = Request::new("GET", "/").with_header("x-api-key", "");
        let parts = [header("x-api-key"), context("consumer")];
        assert_eq!(
            key(&parts, &request),
            r#"[["h:x-api-key",["ip","127.0.0.1"]],["c:consumer",["ip","127.0.0.1"]]]"#
        );
    }

    #[test]
    fn no_header_value_spells_another_clients_fallback() {
        let parts = [header("x-api-key")];
        let without = key(&parts, &Request::new("GET", "/"));
        for forged in [r#"["ip","127.0.0.1"]"#, "?ip:127.0.0.1", "127.0.0.1"] {
            let with = key(
                &parts,
                &Request::new("GET", "/").with_header("x-api-key", forged),
            );
            assert_ne!(with, without, "{forged}");
        }
        // Nor do values that would break out of their pair.
        let sneaky = key(
            &[header("a"), header("b")],
            &Request::new("GET", "/")
                .with_header("a", r#"x"],["h:b","y"#)
                .with_header("b", "z"),
        );
        let plain = key(
            &[header("a"), header("b")],
            &Request::new("GET", "/")
                .with_header("a", "x")
                .with_header("b", "y"),
        );
        assert_ne!(sneaky, plain);
    }

    #[test]
    fn the_first_header_value_counts() {
        let request = Request::new("GET", "/")
            .with_header("x-api-key", "k1")
            .with_header("x-api-key", "k2");
        assert_eq!(
            key(&[header("x-api-key")], &request),
            format!(r#"[["h:x-api-key","{}"]]"#, hashed("k1"))
        );
    }

    #[test]
    fn header_values_are_stored_hashed_and_long_values_too() {
        // A header may carry an API key: the store never holds it.
        let request = Request::new("GET", "/").with_header("x-api-key", "secret-key");
        let key_of_header = key(&[header("x-api-key")], &request);
        assert!(!key_of_header.contains("secret-key"), "{key_of_header}");
        assert_eq!(hashed("k").len(), 71);
        // Other values are kept up to 64 bytes, then hashed.
        let edge = "c".repeat(64);
        let long = "c".repeat(65);
        let with = |value: &str| {
            let request = Request::new("GET", "/");
            request.context().set("consumer", value);
            key(&[context("consumer")], &request)
        };
        assert!(with(&edge).contains(&edge));
        assert_eq!(
            with(&long),
            format!(r#"[["c:consumer","{}"]]"#, hashed(&long))
        );
    }

    #[test]
    fn a_long_key_is_hashed_whole_and_fits_with_any_suffix() {
        let name = "x".repeat(100);
        let parts: Vec<KeyPart> = (0..8).map(|i| header(&format!("{name}{i}"))).collect();
        let mut request = Request::new("GET", "/");
        for i in 0..8 {
            request = request.with_header(&format!("{name}{i}"), &"v".repeat(64));
        }
        let base = key(&parts, &request);
        assert!(base.starts_with("sha256:") && base.len() == 71, "{base}");
        let widest = LimitRule {
            requests: u64::MAX,
            period_ms: u64::MAX,
            burst: u64::MAX,
        };
        assert_eq!(widest.key_suffix().len(), MAX_SUFFIX_BYTES);
        // The longest key kept as it is still fits with the widest suffix.
        assert!(MAX_BASE_BYTES + widest.key_suffix().len() <= MAX_KEY_BYTES);
    }

    #[test]
    fn hashes_are_lower_case_hex() {
        // printf %s abc | sha256sum
        assert_eq!(
            hashed("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
