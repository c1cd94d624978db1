//! Compiled plugin code on disk, so a restart does not recompile unchanged
//! plugins. Native code loaded from disk runs unchecked, so:
//! - the folder must be the gateway user's alone: created `0700`, and refused
//!   (with a warning, plugins then compile each start) when another user owns
//!   it or others may write to it;
//! - every file carries an HMAC-SHA256 under a key kept in the folder
//!   (`0600`) and checked before the code is loaded: a planted or damaged
//!   file is compiled afresh and replaced, never run.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags};

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
    /// The folder, opened once and checked as opened.
    folder: OwnedFd,
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
        let file = format!("{}.cwasm", hex(&name.finalize()));
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
    /// Opens the folder once, without following a link, and checks the
    /// handle, not the path: everything after goes through that handle, so
    /// swapping the path afterwards changes nothing.
    fn open(dir: &Path) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let folder = fs::open(
            dir,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open it as a folder, not a link: {e}"))?;
        let me = rustix::process::geteuid().as_raw();
        let stat = fs::fstat(&folder).map_err(|e| e.to_string())?;
        if stat.st_uid != me {
            return Err("another user owns it".into());
        }
        if stat.st_mode & 0o022 != 0 {
            return Err("other users may write to it; chmod 700 it".into());
        }
        let key = read_key(&folder, me)?;
        Ok(Self { folder, key })
    }

    /// The code in `name` when its MAC is right.
    fn verified(&self, name: &str) -> Option<Vec<u8>> {
        let file = fs::openat(
            &self.folder,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .ok()?;
        let stat = fs::fstat(&file).ok()?;
        if !FileType::from_raw_mode(stat.st_mode).is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        std::fs::File::from(file).read_to_end(&mut bytes).ok()?;
        if bytes.len() < 32 {
            return None;
        }
        let code = bytes.split_off(32);
        let expected = hmac(&self.key, name.as_bytes(), &code);
        constant_time_eq(&bytes, &expected).then_some(code)
    }

    /// Writes `code` with its MAC, via a new file renamed into place.
    fn save(&self, name: &str, code: &[u8]) {
        let mac = hmac(&self.key, name.as_bytes(), code);
        let temp = format!("{name}.tmp{}", std::process::id());
        let written = fs::openat(
            &self.folder,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(std::io::Error::from)
        .and_then(|file| {
            let mut file = std::fs::File::from(file);
            file.write_all(&mac)?;
            file.write_all(code)
        })
        .and_then(|()| {
            fs::renameat(&self.folder, temp.as_str(), &self.folder, name).map_err(Into::into)
        });
        if let Err(error) = written {
            let _ = fs::unlinkat(&self.folder, temp.as_str(), AtFlags::empty());
            tracing::warn!(%error, file = name, "cannot write to the plugin cache");
        }
    }
}

/// The folder's key: a regular file of 32 bytes that only this user can
/// read, made when missing.
fn read_key(folder: &OwnedFd, me: u32) -> Result<[u8; 32], String> {
    let opened = fs::openat(
        folder,
        KEY_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    );
    let file = match opened {
        Ok(file) => file,
        Err(rustix::io::Errno::NOENT) => return new_key(folder),
        Err(e) => return Err(format!("cannot open its key file: {e}")),
    };
    let stat = fs::fstat(&file).map_err(|e| e.to_string())?;
    if !FileType::from_raw_mode(stat.st_mode).is_file() || stat.st_size != 32 {
        return Err("its key file is not 32 bytes of a plain file".into());
    }
    if stat.st_uid != me || stat.st_mode & 0o077 != 0 {
        return Err("its key file is another user's or readable by others".into());
    }
    let mut key = [0u8; 32];
    std::fs::File::from(file)
        .read_exact(&mut key)
        .map_err(|e| format!("cannot read its key file: {e}"))?;
    Ok(key)
}

/// A new random key, written `0600` (never over an existing file).
fn new_key(folder: &OwnedFd) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("no randomness for its key: {e}"))?;
    fs::openat(
        folder,
        KEY_FILE,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(std::io::Error::from)
    .and_then(|file| std::fs::File::from(file).write_all(&key))
    .map_err(|e| format!("cannot write its key: {e}"))?;
    Ok(key)
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
        store.save("abc.cwasm", b"native code");
        assert_eq!(
            store.verified("abc.cwasm").as_deref(),
            Some(&b"native code"[..])
        );
        let file = cache_dir.join("abc.cwasm");
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).expect("write");
        assert_eq!(store.verified("abc.cwasm"), None, "a changed byte");
        std::fs::write(&file, [0u8; 64]).expect("write");
        assert_eq!(store.verified("abc.cwasm"), None, "a planted file");
        // A link where the cache file should be is not followed.
        std::fs::remove_file(&file).expect("remove");
        std::os::unix::fs::symlink("/etc/hostname", &file).expect("link");
        assert_eq!(store.verified("abc.cwasm"), None, "a link");
    }

    #[test]
    fn a_linked_folder_or_a_strange_key_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let real = dir.path().join("real");
        Store::open(&real).expect("a private folder is used");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        assert!(
            Store::open(&link).is_err(),
            "the folder itself must not be a link"
        );
        std::fs::write(real.join(KEY_FILE), b"short").expect("write");
        assert!(Store::open(&real).is_err_and(|e| e.contains("32 bytes")));
    }

    #[test]
    fn a_folder_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let (cache, warning) = CodeCache::open(&shared);
        assert!(cache.store.is_none());
        assert!(warning.is_some_and(|w| w.contains("other users may write")));
    }
}
