//! One sandboxed plugin instance: its store (memory limit, empty WASI), and
//! hook calls bounded by a deadline.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::wasi;

use super::PluginError;
use super::bindings::{self, Capabilities, Header, RequestAction, ResponseAction};
use super::exchange::{Exchange, WrongHook};
use super::runtime::{EPOCH_TICK, LoadedPlugin};
use super::wasi::WouldBlock;
use crate::config::ByteSize;

/// What a store carries: the plugin's identity for logs, its WASI context
/// (no files, network or environment), and its memory limiter.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimit,
    plugin: Arc<str>,
    route: Arc<str>,
    /// The message the hook in progress reads and edits.
    exchange: Exchange,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The types interface has no functions; its host side is empty.
impl bindings::gateway::plugin::types::Host for HostState {}

impl bindings::gateway::plugin::log::Host for HostState {
    fn write(&mut self, level: bindings::Level, message: String) -> wasmtime::Result<()> {
        let (plugin, route) = (&*self.plugin, &*self.route);
        match level {
            bindings::Level::Trace => tracing::trace!(plugin, route, "{message}"),
            bindings::Level::Debug => tracing::debug!(plugin, route, "{message}"),
            bindings::Level::Info => tracing::info!(plugin, route, "{message}"),
            bindings::Level::Warn => tracing::warn!(plugin, route, "{message}"),
            bindings::Level::Error => tracing::error!(plugin, route, "{message}"),
        }
        Ok(())
    }
}

impl bindings::gateway::plugin::message::Host for HostState {
    fn get_header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.exchange.header(&name))
    }
    fn get_header_values(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.exchange.header_all(&name))
    }
    fn get_headers(&mut self) -> wasmtime::Result<Vec<Header>> {
        let lines = self.exchange.header_lines();
        Ok(lines
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect())
    }
    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_header(&name, value, false)?)
    }
    fn append_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_header(&name, value, true)?)
    }
    fn remove_header(&mut self, name: String) -> wasmtime::Result<bool> {
        Ok(self.exchange.remove_header(&name)?)
    }
    fn get_body(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.exchange.body())
    }
    fn set_body(&mut self, body: Vec<u8>) -> wasmtime::Result<()> {
        self.exchange.set_body(body);
        Ok(())
    }
}

impl bindings::gateway::plugin::request::Host for HostState {
    fn method(&mut self) -> wasmtime::Result<String> {
        Ok(self.exchange.method()?)
    }
    fn set_method(&mut self, method: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_method(&method)?)
    }
    fn path(&mut self) -> wasmtime::Result<String> {
        Ok(self.exchange.path()?)
    }
    fn set_path(&mut self, path: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_path(&path)?)
    }
    fn query(&mut self) -> wasmtime::Result<String> {
        Ok(self.exchange.query()?)
    }
    fn set_query(&mut self, query: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_query(&query)?)
    }
}

impl bindings::gateway::plugin::response::Host for HostState {
    fn status(&mut self) -> wasmtime::Result<u16> {
        Ok(self.exchange.status()?)
    }
    fn set_status(&mut self, status: u16) -> wasmtime::Result<()> {
        Ok(self.exchange.set_status(status)?)
    }
}

/// Outside a request (in `init`) the context is the route alone.
impl bindings::gateway::plugin::context::Host for HostState {
    fn route(&mut self) -> wasmtime::Result<String> {
        Ok(self.route.to_string())
    }
    fn request_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.context()?.request_id())
    }
    fn client_address(&mut self) -> wasmtime::Result<String> {
        Ok(self.context()?.client_address())
    }
    fn params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.context()?.params().clone())
    }
}

impl HostState {
    fn context(&self) -> Result<&super::exchange::HookContext, WrongHook> {
        self.exchange
            .context
            .as_ref()
            .ok_or(WrongHook("the request context"))
    }
}

/// The clock plugins see: always zero. Time will come as a granted host
/// service (rate limiting needs it); until then a plugin cannot read it.
#[derive(Clone, Copy)]
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Adds the imports a plugin may use to `linker`.
pub fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    wasi::link(linker)?;
    bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// Refuses memory growth past the limit and remembers that it did, so the
/// trap that follows can be reported as what it is.
struct MemoryLimit {
    max: ByteSize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired as u64 <= self.max.0;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The per-call and per-instance limits of one chain entry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Duration,
    pub memory: ByteSize,
}

impl Limits {
    /// Instantiation and `init` may parse a large config: at least a second.
    fn init_deadline(&self) -> Duration {
        self.deadline.max(Duration::from_secs(1))
    }
}

/// An instantiated plugin with its own store; used by one request at a time.
pub struct Instance {
    store: Store<HostState>,
    plugin: bindings::Plugin,
    limits: Limits,
    /// `limits.deadline` in epoch ticks, worked out once rather than per hook.
    hook_ticks: u64,
}

impl Instance {
    pub fn new(
        loaded: &LoadedPlugin,
        route: &Arc<str>,
        limits: Limits,
    ) -> Result<Self, PluginError> {
        let state = HostState {
            // Nothing from the host: no preopened folders, no environment,
            // no network; stdio goes nowhere. std starts fine without them.
            wasi: wasi::context(FrozenClock),
            table: ResourceTable::new(),
            limiter: MemoryLimit {
                max: limits.memory,
                denied: false,
            },
            plugin: loaded.name.clone(),
            route: route.clone(),
            exchange: Exchange::default(),
        };
        let mut store = Store::new(loaded.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(ticks(limits.init_deadline()));
        store.epoch_deadline_trap();
        let plugin = loaded.pre.instantiate(&mut store).map_err(|e| {
            classify(&store, e, limits, |e| {
                PluginError::Instantiate(format!("{e:#}"))
            })
        })?;
        Ok(Self {
            store,
            plugin,
            limits,
            hook_ticks: ticks(limits.deadline),
        })
    }

    /// Passes the route's config; the plugin may refuse it.
    pub fn init(&mut self, config: &str) -> Result<Capabilities, PluginError> {
        let deadline = self.limits.init_deadline();
        self.store.set_epoch_deadline(ticks(deadline));
        let result = self
            .plugin
            .gateway_plugin_hooks()
            .call_init(&mut self.store, config);
        self.outcome(result, deadline)?
            .map_err(PluginError::Refused)
    }

    /// Runs the request hook over `exchange`, which the plugin reads and
    /// edits through its imports while the call lasts.
    pub fn on_request(&mut self, exchange: &mut Exchange) -> Result<RequestAction, PluginError> {
        self.hook(exchange, |plugin, store| {
            plugin.gateway_plugin_hooks().call_on_request(store)
        })
    }

    /// Runs the response hook over `exchange`, as `on_request` does.
    pub fn on_response(&mut self, exchange: &mut Exchange) -> Result<ResponseAction, PluginError> {
        self.hook(exchange, |plugin, store| {
            plugin.gateway_plugin_hooks().call_on_response(store)
        })
    }

    /// Lends `exchange` to the store for one hook call under the deadline.
    fn hook<R>(
        &mut self,
        exchange: &mut Exchange,
        call: impl FnOnce(&bindings::Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.store.set_epoch_deadline(self.hook_ticks);
        std::mem::swap(&mut self.store.data_mut().exchange, exchange);
        let result = call(&self.plugin, &mut self.store);
        std::mem::swap(&mut self.store.data_mut().exchange, exchange);
        self.outcome(result, self.limits.deadline)
    }

    fn outcome<R>(
        &self,
        result: wasmtime::Result<R>,
        deadline: Duration,
    ) -> Result<R, PluginError> {
        let limits = Limits {
            deadline,
            ..self.limits
        };
        result.map_err(|e| {
            classify(&self.store, e, limits, |e| {
                PluginError::Trap(trap_message(&e))
            })
        })
    }
}

/// Epoch ticks that cover `deadline`, rounded up, plus one for the tick in progress.
fn ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    (deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
}

/// Deadline, memory, or another trap.
fn classify(
    store: &Store<HostState>,
    error: wasmtime::Error,
    limits: Limits,
    otherwise: impl FnOnce(wasmtime::Error) -> PluginError,
) -> PluginError {
    if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        PluginError::Deadline(limits.deadline)
    } else if store.data().limiter.denied {
        PluginError::Memory(limits.memory)
    } else {
        otherwise(error)
    }
}

/// The trap and, when the plugin panicked, the first line of its message;
/// for a host call the hook may not make, or one that would wait, which call
/// it was.
fn trap_message(error: &wasmtime::Error) -> String {
    let refused_call = error.chain().find_map(|e| {
        e.downcast_ref::<WrongHook>()
            .map(ToString::to_string)
            .or_else(|| e.downcast_ref::<WouldBlock>().map(ToString::to_string))
    });
    if let Some(refused) = refused_call {
        return refused;
    }
    let text = format!("{error:#}");
    text.lines().next().unwrap_or("unknown trap").to_string()
}
