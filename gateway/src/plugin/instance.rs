//! One sandboxed plugin instance: its store, and `init` and hook calls
//! under its limits, with failures sorted into what they were.
//!
//! Calls are synchronous, except for plugins importing a host call that
//! waits on the network (`LoadedPlugin::waits`): theirs run on a fiber
//! (wasmtime's async path) that is suspended while the host awaits, so the
//! gateway's thread serves other requests meanwhile. Synchronous calls cost
//! less (see docs/plugins.md, "Host calls that wait").

use std::sync::Arc;

use wasmtime::component::{ComponentType, Lift, TypedFunc};
use wasmtime::{Store, Trap};

use super::PluginError;
use super::bindings::{self, Capabilities, RequestAction, ResponseAction};
use super::exchange::{Exchange, WrongHook};
use super::host::HostState;
use super::limits::{CallClock, Limits, Overrun};
use super::runtime::LoadedPlugin;
use super::services::state::TooManyWaits;
use super::services::{Granted, NotGranted};
use super::wasi::WouldBlock;

/// An instantiated plugin with its own store; used by one hook call at a time.
pub struct Instance {
    store: Store<HostState>,
    plugin: bindings::Plugin,
    limits: Limits,
    /// Calls run on the async path.
    waits: bool,
}

impl Instance {
    pub async fn new(
        loaded: &LoadedPlugin,
        route: &Arc<str>,
        limits: Limits,
        granted: Arc<Granted>,
    ) -> Result<Self, PluginError> {
        let state = HostState::new(&loaded.name, route, limits, granted);
        let mut store = Store::new(loaded.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut cx| Ok(cx.data_mut().clock.update()));
        start_call(&mut store, limits.for_init(), 0);
        let plugin = if loaded.waits {
            loaded.pre.instantiate_async(&mut store).await
        } else {
            loaded.pre.instantiate(&mut store)
        };
        let plugin = plugin
            .map_err(|e| classify(&store, e, |e| PluginError::Instantiate(format!("{e:#}"))))?;
        Ok(Self {
            store,
            plugin,
            limits,
            waits: loaded.waits,
        })
    }

    /// Passes the route's config; the plugin may refuse it.
    pub async fn init(&mut self, config: &str) -> Result<Capabilities, PluginError> {
        start_call(&mut self.store, self.limits.for_init(), 0);
        let hooks = self.plugin.gateway_plugin_hooks();
        let result = if self.waits {
            let init = hooks.func_init();
            init.call_async(&mut self.store, (config,))
                .await
                .map(|(r,)| r)
        } else {
            hooks.call_init(&mut self.store, config)
        };
        self.outcome(result)?
            .map_err(|refused| PluginError::Refused {
                field: refused.field,
                message: refused.message,
            })
    }

    /// Runs the request hook over `exchange`, which the plugin reads and
    /// edits through its imports while the call lasts.
    pub async fn on_request(
        &mut self,
        exchange: &mut Exchange,
    ) -> Result<RequestAction, PluginError> {
        let hook = self.plugin.gateway_plugin_hooks().func_on_request();
        self.hook(exchange, hook).await
    }

    /// Runs the response hook over `exchange`, as `on_request` does.
    pub async fn on_response(
        &mut self,
        exchange: &mut Exchange,
    ) -> Result<ResponseAction, PluginError> {
        let hook = self.plugin.gateway_plugin_hooks().func_on_response();
        self.hook(exchange, hook).await
    }

    /// One hook call over `exchange`, on the path this plugin takes.
    async fn hook<R>(
        &mut self,
        exchange: &mut Exchange,
        hook: TypedFunc<(), (R,)>,
    ) -> Result<R, PluginError>
    where
        R: ComponentType + Lift + Send + Sync + 'static,
    {
        self.lend(exchange);
        let result = if self.waits {
            hook.call_async(&mut self.store, ()).await
        } else {
            hook.call(&mut self.store, ())
        };
        self.take_back(exchange);
        self.outcome(result.map(|(r,)| r))
    }

    /// Lends `exchange` to the store for one hook call under the limits.
    fn lend(&mut self, exchange: &mut Exchange) {
        start_call(&mut self.store, self.limits, MAX_WAITS_PER_HOOK);
        std::mem::swap(&mut self.store.data_mut().exchange, exchange);
    }

    fn take_back(&mut self, exchange: &mut Exchange) {
        std::mem::swap(&mut self.store.data_mut().exchange, exchange);
    }

    fn outcome<R>(&self, result: wasmtime::Result<R>) -> Result<R, PluginError> {
        result.map_err(|e| classify(&self.store, e, |e| PluginError::Trap(trap_message(&e))))
    }
}

/// Host calls that wait (a Redis decision) one hook call may make: the
/// rate-limit plugin makes one. Waits are not charged to the deadlines, so
/// this bounds a hook's time to its wall deadline plus this many store
/// timeouts.
pub const MAX_WAITS_PER_HOOK: u32 = 4;

/// A call starts now: its clock, the waits it may make, and a first
/// deadline check one tick away.
fn start_call(store: &mut Store<HostState>, limits: Limits, waits: u32) {
    let state = store.data_mut();
    state.clock = CallClock::start(limits);
    state.waits_left = waits;
    // A growth refused in an earlier call that still succeeded says nothing
    // about this one.
    state.limiter.denied = false;
    store.set_epoch_deadline(1);
}

/// Time, memory, or another trap.
fn classify(
    store: &Store<HostState>,
    error: wasmtime::Error,
    otherwise: impl FnOnce(wasmtime::Error) -> PluginError,
) -> PluginError {
    let state = store.data();
    let limits = state.clock.limits();
    if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        match state.clock.overrun() {
            Some(Overrun::Wall) => PluginError::WallDeadline(limits.wall_deadline),
            _ => PluginError::Deadline(limits.deadline),
        }
    } else if state.limiter.denied {
        PluginError::Memory(state.limiter.max)
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
            .or_else(|| e.downcast_ref::<NotGranted>().map(ToString::to_string))
            .or_else(|| e.downcast_ref::<TooManyWaits>().map(ToString::to_string))
    });
    if let Some(refused) = refused_call {
        return refused;
    }
    // The trap's kind (a panic is `unreachable`); the rest of wasmtime's text
    // is a backtrace. The SDK logs a panic's own message before it traps.
    if let Some(trap) = error.chain().find_map(|e| e.downcast_ref::<Trap>()) {
        return trap.to_string();
    }
    let text = format!("{error:#}");
    text.lines().next().unwrap_or("unknown trap").to_string()
}
