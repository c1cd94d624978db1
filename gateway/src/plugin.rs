//! WebAssembly plugins: one wasmtime engine, components loaded from the
//! plugin folder, and per-route chains of request and response hooks.
//!
//! `runtime` owns the engine and loads `.wasm` files; `instance` runs one
//! sandboxed instance with its deadline and memory limit; `exchange` is the
//! message a hook reads and edits through host calls; `chain` runs a route's
//! hooks in order.

pub mod bindings;
pub mod chain;
pub mod exchange;
pub mod instance;
pub mod runtime;
pub mod wasi;

pub use chain::{Chain, RequestFlow};
pub use exchange::HookContext;
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
    #[error("refused its config: {0}")]
    Refused(String),
    #[error("ran past its {}ms deadline", .0.as_millis())]
    Deadline(std::time::Duration),
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
