//! Host-side bindings generated from `wit/plugin.wit`.

// Hooks are called asynchronously: WASI's blocking operations (a plugin's
// panic message being flushed to stderr, say) must not block a Tokio worker.
// Imports may trap: a request-only call made from a response hook, say.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
});

pub use self::gateway::plugin::log::Level;
pub use self::gateway::plugin::types::{
    Capabilities, Header, RequestAction, Response, ResponseAction,
};
