//! Host services: imports beyond the basic ones, which a plugin may use
//! only when the operator grants them in config (`plugins.grants`).
//!
//! Each service is one `HostService` in a file of its own under
//! `services/`: it names its config key and WIT interface, links its host
//! functions, and turns an operator's grant into the value its functions
//! use. `ALL` lists them; adding a service is its file and one line there.
//! Nothing in the chain or the pipeline changes.
//!
//! Which imports a component really has is read once, at load
//! (`classify`): the basic imports are always allowed, a service's import
//! needs its grant (checked when a snapshot is built, see `check_grants`),
//! and any other import (WASI sockets or HTTP, say) is refused outright.

pub mod env;
pub mod keys;
pub mod outbound;
pub mod state;

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use wasmtime::component::Linker;

pub use super::host::Granted;
use super::host::HostState;
use crate::config::join_field;
use crate::keys::KeySet;
use crate::state::StateStore;

/// A service a plugin must be granted.
pub trait HostService: 'static {
    /// The key under `plugins.grants.<plugin>` that grants it.
    const GRANT: &'static str;
    /// The WIT interface it provides, without version (`gateway:plugin/env`).
    const INTERFACE: &'static str;
    /// Whether its calls may wait on the network: a plugin importing it then
    /// runs its hooks on the async path (see `Instance`).
    const WAITS: bool = false;
    /// What the operator writes under the key.
    type Grant: DeserializeOwned;
    /// Built once per snapshot from one plugin's grant; shared by that
    /// plugin's instances.
    type Shared: Send + Sync + 'static;

    /// Adds the service's host functions to the linker.
    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    /// Checks a grant and builds what the host functions use.
    fn configure(grant: Self::Grant, resources: &Resources) -> Result<Self::Shared, String>;
}

/// What a snapshot offers that grants may name.
#[derive(Debug, Default)]
pub struct Resources {
    /// `key_sets:`, by name.
    pub key_sets: BTreeMap<String, Arc<KeySet>>,
    /// Key sets in the config that could not be built (already reported).
    pub broken_key_sets: Vec<String>,
    /// The shared counters (`state:`); `None` when it could not be built.
    pub state: Option<Arc<StateStore>>,
    /// `upstreams:`, which outbound calls may be granted.
    pub upstreams: Vec<Arc<crate::upstream::Upstream>>,
}

/// Every host service the gateway offers.
pub static ALL: &[&dyn Service] = &[
    &Registered::<env::Env>(PhantomData),
    &Registered::<keys::Keys>(PhantomData),
    &Registered::<state::State>(PhantomData),
    &Registered::<outbound::Outbound>(PhantomData),
];

/// A `HostService` with its types erased, so that `ALL` can list them.
pub trait Service: Sync {
    fn grant_key(&self) -> &'static str;
    fn interface(&self) -> &'static str;
    fn waits(&self) -> bool;
    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    /// The grant's problem, with the path inside it (`[2]`) when there is one.
    fn configure(
        &self,
        grant: &serde_json::Value,
        resources: &Resources,
    ) -> Result<Arc<dyn Any + Send + Sync>, (String, String)>;
}

struct Registered<S>(PhantomData<fn() -> S>);

impl<S: HostService> Service for Registered<S> {
    fn grant_key(&self) -> &'static str {
        S::GRANT
    }
    fn interface(&self) -> &'static str {
        S::INTERFACE
    }
    fn waits(&self) -> bool {
        S::WAITS
    }
    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        S::link(linker)
    }
    fn configure(
        &self,
        grant: &serde_json::Value,
        resources: &Resources,
    ) -> Result<Arc<dyn Any + Send + Sync>, (String, String)> {
        let grant: S::Grant = serde_path_to_error::deserialize(grant).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, e.inner().to_string())
        })?;
        let shared = S::configure(grant, resources).map_err(|message| (String::new(), message))?;
        Ok(Arc::new(shared))
    }
}

/// What service `S` uses, if the plugin whose store holds `granted` was
/// granted it.
pub fn shared<S: HostService>(granted: &Granted) -> Option<&S::Shared> {
    granted
        .get(S::GRANT)
        .and_then(|shared| shared.downcast_ref())
}

/// Adds every service's host functions to the linker (granted or not:
/// whether a plugin may import one is decided at load).
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for service in ALL {
        service.link(linker)?;
    }
    Ok(())
}

/// A service a plugin uses without having been granted it.
#[derive(Debug, thiserror::Error)]
#[error("{0} was not granted to this plugin")]
pub struct NotGranted(pub &'static str);

/// What one import of a component is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Import {
    /// Every plugin may have it.
    Basic,
    /// Host service with this grant key.
    Service(&'static str),
    /// No config grants it.
    Never,
}

/// Interfaces every plugin may import. WASI's filesystem and cli are linked
/// empty (no folder, no environment, stdio to nowhere) because Rust's std
/// imports them whether a plugin uses them or not.
const BASIC: &[&str] = &[
    "gateway:plugin/types",
    "gateway:plugin/message",
    "gateway:plugin/request",
    "gateway:plugin/response",
    "gateway:plugin/context",
    "gateway:plugin/log",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:io/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// Sorts a component import (`wasi:sockets/tcp@0.2.6`) into what it is.
pub fn classify(import: &str) -> Import {
    let interface = import.split_once('@').map_or(import, |(name, _)| name);
    let basic = BASIC.iter().any(|allowed| match allowed.strip_suffix('/') {
        Some(package) => interface
            .strip_prefix(package)
            .is_some_and(|rest| rest.starts_with('/')),
        None => interface == *allowed,
    });
    if basic {
        return Import::Basic;
    }
    ALL.iter()
        .find(|s| s.interface() == interface)
        .map_or(Import::Never, |s| Import::Service(s.grant_key()))
}

/// The service granted under `key`.
fn by_key(key: &str) -> Option<&'static dyn Service> {
    ALL.iter().copied().find(|s| s.grant_key() == key)
}

/// The interface of the service granted by `key`.
pub fn interface_of(key: &str) -> Option<&'static str> {
    by_key(key).map(|s| s.interface())
}

/// Whether the service granted by `key` may wait on the network.
pub fn waits(key: &str) -> bool {
    by_key(key).is_some_and(|s| s.waits())
}

/// Builds one plugin's grants from `plugins.grants.<plugin>`; problems come
/// back as (path below the plugin's key, message).
pub fn configure(
    grants: &BTreeMap<String, serde_json::Value>,
    resources: &Resources,
) -> Result<Granted, Vec<(String, String)>> {
    let mut granted = Vec::new();
    let mut problems = Vec::new();
    for (key, grant) in grants {
        let Some(service) = by_key(key) else {
            let offered: Vec<&str> = ALL.iter().map(|s| s.grant_key()).collect();
            problems.push((
                key.clone(),
                format!(
                    "no host service is named \"{key}\"; the gateway grants: {}",
                    offered.join(", ")
                ),
            ));
            continue;
        };
        match service.configure(grant, resources) {
            Ok(shared) => granted.push((service.grant_key(), shared)),
            Err((path, message)) => problems.push((join_field(key, &path), message)),
        }
    }
    if problems.is_empty() {
        Ok(Granted::new(granted))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_basic_granted_or_never() {
        assert_eq!(classify("gateway:plugin/message@0.3.0"), Import::Basic);
        assert_eq!(classify("wasi:cli/environment@0.2.6"), Import::Basic);
        assert_eq!(classify("wasi:filesystem/preopens@0.2.6"), Import::Basic);
        assert_eq!(classify("gateway:plugin/env@0.3.0"), Import::Service("env"));
        assert_eq!(
            classify("gateway:plugin/keys@0.3.0"),
            Import::Service("keys")
        );
        assert_eq!(
            classify("gateway:plugin/state@0.3.0"),
            Import::Service("state")
        );
        assert_eq!(classify("wasi:sockets/tcp@0.2.6"), Import::Never);
        assert_eq!(classify("wasi:http/outgoing-handler@0.2.6"), Import::Never);
        assert_eq!(
            classify("wasi:clis/x@0.2.6"),
            Import::Never,
            "a package prefix is not enough"
        );
        assert_eq!(classify("gateway:plugin/types-extra@0.3.0"), Import::Never);
    }

    #[test]
    fn grants_are_checked_by_the_service_they_name() {
        let grants = |json: serde_json::Value| -> BTreeMap<String, serde_json::Value> {
            serde_json::from_value(json).unwrap_or_default()
        };
        let none = Resources::default();
        let ok = configure(&grants(serde_json::json!({ "env": ["HOME"] })), &none);
        assert!(ok.is_ok_and(|g| g.has("env") && shared::<env::Env>(&g).is_some()));
        let unknown = configure(&grants(serde_json::json!({ "counters": {} })), &none);
        let problems = unknown.err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "counters");
        assert!(
            problems[0]
                .1
                .contains("the gateway grants: env, keys, state, outbound"),
            "{problems:?}"
        );
        let bad = configure(&grants(serde_json::json!({ "env": ["OK", 7] })), &none);
        let problems = bad.err().unwrap_or_default();
        assert_eq!(problems[0].0, "env[1]", "{problems:?}");
        // `state` takes `{}` and says so for anything else.
        for wrong in [
            serde_json::json!(null),
            serde_json::json!([]),
            serde_json::json!({ "x": 1 }),
        ] {
            let problems = configure(&grants(serde_json::json!({ "state": wrong })), &none)
                .err()
                .unwrap_or_default();
            assert!(problems[0].1.contains("write `state: {}`"), "{problems:?}");
        }
    }
}
