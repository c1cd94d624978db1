//! The one wasmtime engine of the process and the loading of plugin files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::bindings::PluginPre;
use super::code_cache::CodeCache;
use super::host::{self, HostState};
use super::limits::EPOCH_TICK;
use super::services::{self, Import};

/// The WIT package version this gateway implements (see `wit/plugin.wit`).
pub const WIT_VERSION: &str = "0.3.0";

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub sha256: String,
    pub loaded_at: std::time::SystemTime,
    pub pre: PluginPre<HostState>,
    /// Grant keys of the host services the component imports.
    pub services: Vec<&'static str>,
    /// One of them may wait on the network: hooks run on the async path.
    pub waits: bool,
    /// Cleared when the plugin says it has no such hook; it is then skipped.
    pub request_hook: std::sync::atomic::AtomicBool,
    pub response_hook: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The engine, the linker with the imports plugins may use, and the plugins
/// loaded so far (by name and content hash, so an unchanged file is not
/// compiled again).
pub struct PluginRuntime {
    engine: Engine,
    /// Compiled code kept on disk between starts.
    code: CodeCache,
    linker: Linker<HostState>,
    loaded: Mutex<HashMap<(String, String), Arc<LoadedPlugin>>>,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Starts the engine with room for `max_instances` plugin instances;
    /// compiled code is cached in `cache_dir`.
    pub fn new(cache_dir: &Path, max_instances: u32) -> Result<Self, PluginError> {
        let engine_error = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(max_instances)
            .total_core_instances(max_instances.saturating_mul(4))
            .total_memories(max_instances.saturating_mul(2))
            .total_tables(max_instances.saturating_mul(4))
            // A stack per call on the async path: at most one call per instance.
            .total_stacks(max_instances)
            .max_memory_size(crate::config::MAX_PLUGIN_MEMORY.0 as usize);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Slots sized to the largest allowed plugin memory, not wasm's 4 GiB,
            // so a thousand instances reserve well under a terabyte of address space.
            .memory_reservation(crate::config::MAX_PLUGIN_MEMORY.0)
            .memory_guard_size(32 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(engine_error)?;
        services::link(&mut linker).map_err(engine_error)?;

        // Deadlines need time to move: advance the epoch on a thread of its own.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;
        let (code, warning) = CodeCache::open(cache_dir);
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            engine,
            code,
            linker,
            loaded: Mutex::new(HashMap::new()),
            ticker_stop,
        })
    }

    /// The default cache folder: `$XDG_CACHE_HOME/gateway`, `~/.cache/gateway`,
    /// or a folder of this user's under the system temp dir.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("gateway");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(home).join(".cache/gateway");
        }
        let uid = rustix::process::getuid().as_raw();
        std::env::temp_dir().join(format!("gateway-cache-{uid}"))
    }

    /// Loads `path` as plugin `name`: checks it is a component built for this
    /// WIT version, compiles it (or takes it from the cache) and links it.
    pub fn load(&self, name: &str, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: shown.clone(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let key = (name.to_string(), sha256.clone());
        if let Some(loaded) = self
            .loaded
            .lock()
            .ok()
            .and_then(|map| map.get(&key).cloned())
        {
            return Ok(loaded);
        }
        let component =
            self.code
                .component(&self.engine, &bytes)
                .map_err(|e| PluginError::NotAComponent {
                    path: shown.clone(),
                    reason: format!("{e:#}"),
                })?;
        self.check_version(&component, &shown)?;
        let services = self.check_imports(&component, &shown)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link {
                path: shown.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre = PluginPre::new(pre).map_err(|e| PluginError::NotAPlugin {
            path: format!("{shown} ({e:#})"),
        })?;
        let loaded = Arc::new(LoadedPlugin {
            name: name.into(),
            path: path.to_path_buf(),
            sha256,
            loaded_at: std::time::SystemTime::now(),
            pre,
            waits: services.iter().any(|key| services::waits(key)),
            services,
            request_hook: std::sync::atomic::AtomicBool::new(true),
            response_hook: std::sync::atomic::AtomicBool::new(true),
        });
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(key, loaded.clone());
        }
        Ok(loaded)
    }

    /// Forgets compiled plugins `keep` rejects, so code no snapshot uses is
    /// freed once the last request on an older snapshot finishes.
    pub fn retain(&self, keep: impl Fn(&LoadedPlugin) -> bool) {
        if let Ok(mut map) = self.loaded.lock() {
            map.retain(|_, loaded| keep(loaded));
        }
    }

    /// Refuses a plugin built for another major WIT version with a clear message.
    fn check_version(&self, component: &Component, path: &str) -> Result<(), PluginError> {
        let ty = component.component_type();
        let hooks = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .find(|name| name.starts_with("gateway:plugin/hooks"))
            .ok_or_else(|| PluginError::NotAPlugin {
                path: path.to_string(),
            })?;
        let found = hooks.split_once('@').map_or("unversioned", |(_, v)| v);
        if compatible(found, WIT_VERSION) {
            Ok(())
        } else {
            Err(PluginError::WrongVersion {
                path: path.to_string(),
                found: found.to_string(),
                supported: WIT_VERSION.to_string(),
            })
        }
    }
}

impl PluginRuntime {
    /// Refuses a component importing what no config grants; returns the
    /// grant keys of the host services it imports (whether they are granted
    /// depends on the config, and is checked with the snapshot).
    fn check_imports(
        &self,
        component: &Component,
        path: &str,
    ) -> Result<Vec<&'static str>, PluginError> {
        let mut services = Vec::new();
        for (name, _) in component.component_type().imports(&self.engine) {
            match services::classify(name) {
                Import::Basic => {}
                Import::Service(key) => services.push(key),
                Import::Never => {
                    return Err(PluginError::NeverGranted {
                        path: path.to_string(),
                        interface: name.to_string(),
                    });
                }
            }
        }
        Ok(services)
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Semver compatibility: same major; for 0.x, same minor.
fn compatible(found: &str, supported: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(found), parts(supported)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compatible_by_semver() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.3", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.4.0", "1.0.0"));
        assert!(!compatible("unversioned", "0.1.0"));
        // 0.3 changed `init`'s error and what `request` reads in a response
        // hook: a 0.2 plugin is refused rather than misread.
        assert!(!compatible("0.2.0", WIT_VERSION));
    }

    #[test]
    fn the_supported_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(wit.contains(&format!("package gateway:plugin@{WIT_VERSION};")));
    }
}
