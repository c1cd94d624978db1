//! What a plugin's store holds (`HostState`, with the host services it was
//! granted), and the imports every plugin is linked with: WASI without
//! grants and the basic `gateway:plugin` interfaces. Host services link
//! themselves (`services::link`).

mod context;
mod log;
mod message;

use std::any::Any;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::exchange::Exchange;
use super::limits::{CallClock, Limits, MemoryLimit};
use super::wasi;

/// One instance's store: its WASI context (no files, network or
/// environment), limits, identity for logs, the host services it was
/// granted, and the message of the hook in progress.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimit,
    /// The call in progress, for its deadline.
    pub clock: CallClock,
    plugin: Arc<str>,
    route: Arc<str>,
    /// The message the hook in progress reads and edits.
    pub exchange: Exchange,
    pub granted: Arc<Granted>,
    /// Calls that wait on the host the call in progress may still make
    /// (none in `init`): each wait is not counted against its deadlines,
    /// so their number is what bounds a hook's time.
    pub waits_left: u32,
}

/// The host services one plugin was granted, each as its service built it
/// from the grant (see `services`), by grant key.
#[derive(Default)]
pub struct Granted(Vec<(&'static str, Arc<dyn Any + Send + Sync>)>);

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Granted {
    pub fn new(services: Vec<(&'static str, Arc<dyn Any + Send + Sync>)>) -> Self {
        Self(services)
    }

    /// What the service granted by `key` built, if it was granted.
    pub fn get(&self, key: &str) -> Option<&(dyn Any + Send + Sync)> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, shared)| shared.as_ref())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The grant keys, for the admin API.
    pub fn keys(&self) -> Vec<&'static str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Most WASI resources (streams, pollables) one instance may hold at once;
/// what a plugin leaks stays in its pooled instance, so it is bounded here.
const MAX_RESOURCES: usize = 1024;

impl HostState {
    pub fn new(plugin: &Arc<str>, route: &Arc<str>, limits: Limits, granted: Arc<Granted>) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            // Nothing from the host: no preopened folders, no environment,
            // no network; stdio goes nowhere. std starts fine without them.
            wasi: wasi::context(),
            table,
            limiter: MemoryLimit::new(limits.memory),
            clock: CallClock::idle(),
            plugin: plugin.clone(),
            route: route.clone(),
            exchange: Exchange::default(),
            granted,
            waits_left: 0,
        }
    }
}

impl HostState {
    /// The plugin's name: host services keep its data apart under it.
    pub fn plugin_name(&self) -> &Arc<str> {
        &self.plugin
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn this(state: &mut HostState) -> &mut HostState {
    state
}

/// Adds WASI and the basic imports to `linker`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use bindings::gateway::plugin as wit;
    wasi::link(linker)?;
    wit::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, this)?;
    wit::message::add_to_linker::<HostState, HasSelf<HostState>>(linker, this)?;
    wit::request::add_to_linker::<HostState, HasSelf<HostState>>(linker, this)?;
    wit::response::add_to_linker::<HostState, HasSelf<HostState>>(linker, this)?;
    wit::context::add_to_linker::<HostState, HasSelf<HostState>>(linker, this)?;
    wit::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, this)?;
    Ok(())
}
