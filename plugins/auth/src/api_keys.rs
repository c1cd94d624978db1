//! API keys: config holds each consumer's key as a SHA-256, and a presented
//! key is hashed and compared with every one in constant time, so neither
//! the config nor the timing gives a key away.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::ApiKey;

/// The consumer whose key `presented` is.
pub fn consumer<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a str> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Every key is compared, whichever matches: no early exit to time.
    let mut found = subtle::Choice::from(0);
    let mut index = 0u32;
    for (i, key) in keys.iter().enumerate() {
        let same = key.sha256.ct_eq(&digest);
        index.conditional_assign(&(i as u32), same);
        found |= same;
    }
    bool::from(found)
        .then(|| keys.get(index as usize))
        .flatten()
        .map(|key| key.consumer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(consumer: &str, secret: &str) -> ApiKey {
        ApiKey {
            consumer: consumer.into(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    #[test]
    fn a_key_names_its_consumer_and_nothing_else_does() {
        let keys = [key("alice", "k-alice"), key("bob", "k-bob")];
        assert_eq!(consumer(&keys, "k-bob"), Some("bob"));
        assert_eq!(consumer(&keys, "k-alice"), Some("alice"));
        assert_eq!(consumer(&keys, "k-carol"), None);
        assert_eq!(consumer(&keys, ""), None);
    }
}
