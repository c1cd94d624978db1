//! Compiled plugin code on disk, so a restart does not recompile unchanged
//! plugins. Native code loaded from disk runs unchecked, so:
//! - the folder must be the gateway user's alone: created `0700`, and refused
//!   (with a warning, plugins then compile each start) when another user owns
//!   it or others may write to it;
//! - every file carries an HMAC-SHA256 under a key kept in the folder
//!   (`0600`) and checked before the code is loaded: a planted or damaged
//!   file is compiled afresh and replaced, never run.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of compiled components, or none when the folder was refused.
#[derive(Debug)]
pub struct CodeCache {
    store: Option<Store>,
}

#[derive(Debug)]
struct Store {
    dir: PathBuf,
    key: [u8; 32],
}

const KEY_FILE: &str = "key";

impl CodeCache {
    /// Opens (creating it `0700`) the cache folder `dir`; a folder that is
    /// not safe to load code from is not used, and the warning says why.
    pub fn open(dir: &Path) -> (Self, Option<String>) {
        match Store::open(dir) {
            Ok(store) => (Self { store: Some(store) }, None),
            Err(why) => (
                Self { store: None },
                Some(format!(
                    "plugin cache {} not used ({why}); plugins are compiled at every start",
                    dir.display()
                )),
            ),
        }
    }

    /// `wasm` compiled for `engine`: from the cache when a file there is
    /// this code's and its MAC holds, else compiled now and stored.
    pub fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(store) = &self.store else {
            return Component::new(engine, wasm);
        };
        // Keyed by the engine's settings too: another wasmtime or config
        // never finds this code.
        let mut settings = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut settings);
        let mut name = Sha256::new();
        name.update(settings.finish().to_be_bytes());
        name.update(wasm);
        let file = store.dir.join(format!("{}.cwasm", hex(&name.finalize())));
        if let Some(code) = store.verified(&file)
            && let Ok(component) = deserialize(engine, code)
        {
            return Ok(component);
        }
        let component = Component::new(engine, wasm)?;
        if let Ok(code) = component.serialize() {
            store.save(&file, &code);
        }
        Ok(component)
    }
}

/// Loads native code the gateway compiled and signed itself.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: Vec<u8>) -> wasmtime::Result<Component> {
    // SAFETY: `code` is what `Component::serialize` wrote for this engine's
    // configuration (the file name holds its compatibility hash), read back
    // from a folder only this user can write and checked against an HMAC
    // only this user can compute; wasmtime checks the header's version too.
    unsafe { Component::deserialize(engine, code) }
}

impl Store {
    fn open(dir: &Path) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let key_path = dir.join(KEY_FILE);
        let key = match std::fs::read(&key_path) {
            Ok(key) => key,
            Err(_) => new_key(&key_path)?,
        };
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| "its key file is damaged".to_string())?;
        let folder = std::fs::metadata(dir).map_err(|e| e.to_string())?;
        let key_file = std::fs::metadata(&key_path).map_err(|e| e.to_string())?;
        // The key file is ours (we wrote or can read it): so must the folder be.
        if folder.uid() != key_file.uid() || key_file.uid() != own_uid(dir)? {
            return Err("another user owns it".into());
        }
        if folder.permissions().mode() & 0o022 != 0 {
            return Err("other users may write to it; chmod 700 it".into());
        }
        if key_file.permissions().mode() & 0o077 != 0 {
            return Err("its key file is readable by others; chmod 600 it".into());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The code in `file` when its MAC is right.
    fn verified(&self, file: &Path) -> Option<Vec<u8>> {
        let mut bytes = std::fs::read(file).ok()?;
        if bytes.len() < 32 {
            return None;
        }
        let code = bytes.split_off(32);
        let expected = hmac(&self.key, file_name(file), &code);
        constant_time_eq(&bytes, &expected).then_some(code)
    }

    /// Writes `code` with its MAC, via a temporary file renamed into place.
    fn save(&self, file: &Path, code: &[u8]) {
        let mac = hmac(&self.key, file_name(file), code);
        let temp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut out| {
                out.write_all(&mac)?;
                out.write_all(code)
            })
            .and_then(|()| std::fs::rename(&temp, file));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            tracing::warn!(%error, file = %file.display(), "cannot write to the plugin cache");
        }
    }
}

fn file_name(file: &Path) -> &[u8] {
    file.file_name().map_or(&[], |n| n.as_encoded_bytes())
}

/// A new random key, written `0600` (never over an existing file).
fn new_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut key))
        .map_err(|e| format!("no randomness for its key: {e}"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut out| out.write_all(&key))
        .map_err(|e| format!("cannot write its key: {e}"))?;
    Ok(key)
}

/// This process's user, as the owner of a file it creates.
fn own_uid(dir: &Path) -> Result<u32, String> {
    let probe = dir.join(format!(".owner{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|file| file.metadata())
        .map(|meta| meta.uid());
    let _ = std::fs::remove_file(&probe);
    created.map_err(|e| format!("cannot write to it: {e}"))
}

/// HMAC-SHA256 (RFC 2104) of `name` then `code`.
fn hmac(key: &[u8; 32], name: &[u8], code: &[u8]) -> [u8; 32] {
    let mut inner_pad = [0x36u8; 64];
    let mut outer_pad = [0x5cu8; 64];
    for (i, byte) in key.iter().enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update((name.len() as u64).to_be_bytes())
        .chain_update(name)
        .chain_update(code)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_shape_and_detects_changes() {
        let key = [7u8; 32];
        let mac = hmac(&key, b"a.cwasm", b"code");
        assert_eq!(mac, hmac(&key, b"a.cwasm", b"code"));
        assert_ne!(mac, hmac(&key, b"a.cwasm", b"codf"));
        assert_ne!(
            mac,
            hmac(&key, b"b.cwasm", b"code"),
            "bound to the file name"
        );
        assert_ne!(mac, hmac(&[8u8; 32], b"a.cwasm", b"code"));
    }

    #[test]
    fn a_planted_or_damaged_file_is_not_trusted() {
        let dir = tempfile::tempdir().expect("dir");
        let cache_dir = dir.path().join("cache");
        let store = Store::open(&cache_dir).expect("a private folder is used");
        let file = cache_dir.join("abc.cwasm");
        store.save(&file, b"native code");
        assert_eq!(store.verified(&file).as_deref(), Some(&b"native code"[..]));
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).expect("write");
        assert_eq!(store.verified(&file), None, "a changed byte");
        std::fs::write(&file, [0u8; 64]).expect("write");
        assert_eq!(store.verified(&file), None, "a planted file");
    }

    #[test]
    fn a_folder_others_may_write_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let (cache, warning) = CodeCache::open(&shared);
        assert!(cache.store.is_none());
        assert!(warning.is_some_and(|w| w.contains("other users may write")));
    }
}
