//! Key sets: the keys signed tokens are verified with, by name, as
//! `key_sets:` in config describes them. The host holds the keys and checks
//! signatures; plugins ask through the `keys` host service and keep the
//! policy (which claims a route needs).
//!
//! A set's keys come from one source. A secret or PEM files are read when
//! the config is loaded. A JWKS file is read then and again whenever it
//! changes on disk. A fetched JWKS (a URL or a path on an upstream pool) is
//! fetched when the gateway starts, every `refresh`, and when a token names
//! a `kid` the set does not have, at most once per `min_refresh_interval`;
//! while the source is down the last good keys keep serving. Every change
//! of keys is logged by `kid`, never with key material.

pub(crate) mod fetch;
pub mod load;
mod refresh;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use tokio::sync::Notify;

use crate::config::key_sets::{KeySetConfig, SourceKind};
use crate::upstream::Upstream;
use load::Key;
pub use verify::{Verified, VerifyError};

/// One named key set, shared by every plugin granted it.
pub struct KeySet {
    pub name: Arc<str>,
    /// What it was built from: a reload keeps a fetched set (and its last
    /// good keys) when the new config has the same.
    pub config: KeySetConfig,
    base_dir: PathBuf,
    algorithms: Vec<Algorithm>,
    current: ArcSwap<Current>,
    /// Where a fetched JWKS comes from.
    fetcher: Option<fetch::Fetcher>,
    /// A token named a `kid` the set does not have.
    wanted: Arc<Notify>,
    /// The set was dropped: its background task ends.
    stop: Arc<Notify>,
    started: AtomicBool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("name", &self.name)
            .field("keys", &self.kids())
            .finish()
    }
}

/// The keys in use and the tokens verified with them.
struct Current {
    keys: Vec<Key>,
    cache: verify::TokenCache,
}

impl KeySet {
    /// Builds set `name`, reading its secret or files now (a file that
    /// cannot be read is an error). A fetched set starts with the keys
    /// `previous` fetched from the same place (a reload changing, say, its
    /// `refresh`), else empty; `start` fetches it. `upstreams` resolves
    /// `jwks_upstream`.
    pub fn new(
        name: &str,
        config: &KeySetConfig,
        base_dir: PathBuf,
        upstreams: &[Arc<Upstream>],
        previous: Option<&KeySet>,
    ) -> Result<Self, String> {
        let source = config
            .sources()
            .first()
            .copied()
            .ok_or_else(|| "no source".to_string())?;
        let keys = match source {
            SourceKind::Secret | SourceKind::PemFiles | SourceKind::JwksFile => {
                read_files(config, &base_dir)?
            }
            SourceKind::JwksUrl | SourceKind::JwksUpstream => previous
                .filter(|p| p.same_source(config, &base_dir, upstreams))
                .map(|p| p.current.load().keys.clone())
                .unwrap_or_default(),
        };
        Ok(Self {
            name: name.into(),
            config: config.clone(),
            fetcher: fetch::Fetcher::new(config, &base_dir, upstreams)?,
            base_dir,
            algorithms: config.algorithms.iter().map(|a| a.0).collect(),
            current: ArcSwap::from_pointee(Current::new(keys, config)),
            wanted: Arc::new(Notify::new()),
            stop: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
        })
    }

    /// Whether a reload may keep this set for `config`: a fetched set with
    /// the same config (its files, if any, are re-read instead).
    pub fn can_keep(
        &self,
        config: &KeySetConfig,
        base_dir: &std::path::Path,
        upstreams: &[Arc<Upstream>],
    ) -> bool {
        self.config == *config
            && self.source().is_some_and(SourceKind::is_fetched)
            && self.same_source(config, base_dir, upstreams)
    }

    /// Whether this set fetched its keys from where `config` fetches, trusted
    /// the same way: same URL and CA file, or the same pool, configured the
    /// same (a pool repointed after a compromise is a new source).
    fn same_source(
        &self,
        config: &KeySetConfig,
        base_dir: &std::path::Path,
        upstreams: &[Arc<Upstream>],
    ) -> bool {
        self.config.jwks_url == config.jwks_url
            && self.config.jwks_upstream == config.jwks_upstream
            && self.config.ca_file == config.ca_file
            && self.base_dir == base_dir
            && self
                .fetcher
                .as_ref()
                .is_some_and(|f| f.same_pool(upstreams))
    }

    /// Points a `jwks_upstream` set at the pool of that name in the
    /// snapshot being built (a reload may have rebuilt it).
    pub fn use_upstreams(&self, upstreams: &[Arc<Upstream>]) -> Result<(), String> {
        match &self.fetcher {
            Some(fetcher) => fetcher.use_upstreams(upstreams),
            None => Ok(()),
        }
    }

    fn source(&self) -> Option<SourceKind> {
        self.config.sources().first().copied()
    }

    /// Starts the background work the source needs (fetching, watching a
    /// file), once; it ends when the set is dropped. Needs a Tokio runtime.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        match self.source() {
            Some(SourceKind::JwksUrl | SourceKind::JwksUpstream) => refresh::spawn_fetcher(self),
            Some(SourceKind::JwksFile | SourceKind::PemFiles) => refresh::spawn_file_watch(self),
            _ => {}
        }
    }

    /// Checks `token`'s signature against the set, from the cache when the
    /// same token was verified before with the same keys.
    pub fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        let current = self.current.load();
        let now = unix_now();
        if let Some(hit) = current.cache.get(token, now) {
            return Ok(hit);
        }
        if current.keys.is_empty() {
            self.wanted.notify_one();
            return Err(VerifyError::Unavailable(format!(
                "key set \"{}\" has no keys yet",
                self.name
            )));
        }
        let result = verify::verify(token, &current.keys, &self.algorithms);
        match &result {
            Ok(verified) => current.cache.put(token, verified, now),
            // Maybe the issuer rotated its keys: fetch again (rate-limited).
            Err(VerifyError::UnknownKey(_)) => self.wanted.notify_one(),
            Err(_) => {}
        }
        result
    }

    /// The `kid`s of the keys in use (`-` for a key without one).
    pub fn kids(&self) -> Vec<String> {
        self.current
            .load()
            .keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_else(|| "-".into()))
            .collect()
    }

    /// Swaps in `keys` if they differ from those in use, logging what changed.
    fn replace(&self, keys: Vec<Key>, source: &str) {
        let current = self.current.load();
        let before = fingerprints(&current.keys);
        let after = fingerprints(&keys);
        if before == after {
            return;
        }
        let added: Vec<&str> = after
            .iter()
            .filter(|k| !before.contains(k))
            .map(|(kid, _)| kid.as_str())
            .collect();
        let removed: Vec<&str> = before
            .iter()
            .filter(|k| !after.contains(k))
            .map(|(kid, _)| kid.as_str())
            .collect();
        tracing::info!(
            key_set = %self.name,
            %source,
            keys = after.len(),
            added = %added.join(","),
            removed = %removed.join(","),
            "key set changed"
        );
        self.current
            .store(Arc::new(Current::new(keys, &self.config)));
    }
}

impl Drop for KeySet {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl Current {
    fn new(keys: Vec<Key>, config: &KeySetConfig) -> Self {
        Self {
            keys,
            cache: verify::TokenCache::new(config.cache_tokens, config.cache_ttl.0),
        }
    }
}

/// (kid, fingerprint) of each key, sorted.
fn fingerprints(keys: &[Key]) -> Vec<(String, String)> {
    let mut prints: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            (
                k.kid.clone().unwrap_or_else(|| "-".into()),
                k.fingerprint.clone(),
            )
        })
        .collect();
    prints.sort();
    prints
}

/// The keys of a set whose source is config or files.
fn read_files(config: &KeySetConfig, base_dir: &std::path::Path) -> Result<Vec<Key>, String> {
    if let Some(secret) = &config.secret {
        return Ok(vec![load::from_secret(&secret.0)?]);
    }
    if let Some(file) = &config.jwks_file {
        return load::from_jwks_file(&base_dir.join(file));
    }
    config
        .pem_files
        .iter()
        .map(|file| load::from_pem_file(&base_dir.join(file)))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
