//! WebAssembly plugins: one wasmtime engine, components loaded from the
//! plugin folder, and per-route chains of request and response hooks.
//!
//! A request meets plugins in `chain`: the route's request hooks in order,
//! then (after the upstream, or after a plugin or the gateway answered) its
//! response hooks in reverse, all over one `exchange` holding the message and
//! the request's `request_context`. Each hook runs on a pooled `instance`
//! under its `limits` (memory; CPU time with a wall-clock ceiling). The
//! `runtime` owns the engine and loads `.wasm` files, refusing a component
//! built for another contract version or importing what no config grants.
//!
//! What a plugin can call is what the runtime's linker holds: WASI with
//! nothing granted (`wasi`), the basic imports every plugin has (`host` and
//! `host/`: the message, the request, the response, the request's context,
//! the log), and host services (`services`, which link themselves). A host service is something an operator grants per
//! plugin in config (`plugins.grants.<plugin>.<service>`), denied by default.
//! Each lives in one file under `services/` as a `HostService`: the config
//! key that grants it, the WIT interface it provides, its host functions,
//! and what it builds from a grant once per snapshot (a key set, a Redis
//! client, the names a plugin may read). That reaches its host functions
//! through the store (`services::shared::<S>(&state.granted)`). Registering it is one line in
//! `services::ALL`; the chain and the proxy pipeline never change for a new
//! service. A component's imports are read once, at load: a plugin that
//! imports a service it was not granted is refused then, naming the config
//! key that would grant it, never at its first call.

pub mod bindings;
pub mod chain;
pub mod code_cache;
pub mod exchange;
pub mod host;
pub mod instance;
pub mod limits;
pub mod request_context;
pub mod runtime;
pub mod services;
pub mod wasi;

pub use chain::{Chain, HookFailure, RequestFlow};
pub use request_context::RequestContext;
pub use runtime::PluginRuntime;

/// Why a plugin could not be loaded or did not complete a hook.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly component: {reason}")]
    NotAComponent { path: String, reason: String },
    #[error("{path} is not a gateway plugin: it exports no `gateway:plugin/hooks` interface")]
    NotAPlugin { path: String },
    #[error(
        "{path} was built for gateway:plugin@{found}; this gateway runs plugins built for gateway:plugin@{supported}"
    )]
    WrongVersion {
        path: String,
        found: String,
        supported: String,
    },
    #[error("{path} needs an import the gateway does not grant: {reason}")]
    Link { path: String, reason: String },
    #[error("{path} imports {interface}, which the gateway never grants to plugins")]
    NeverGranted { path: String, interface: String },
    /// `field` is where in the plugin's config, as `origins[2]`; empty for the whole.
    #[error("refused its config: {message}")]
    Refused { field: String, message: String },
    #[error("ran past its {}ms deadline", .0.as_millis())]
    Deadline(std::time::Duration),
    #[error("ran past its {}ms wall-clock ceiling", .0.as_millis())]
    WallDeadline(std::time::Duration),
    #[error("exceeded its memory limit of {0}")]
    Memory(crate::config::ByteSize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("sent the gateway an invalid {0}")]
    BadOutput(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}
