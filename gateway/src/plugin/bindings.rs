//! Host-side bindings generated from `wit/plugin.wit`.

// Hooks are called synchronously (see `wasi.rs` for why WASI allows it),
// except those of plugins importing a host call that waits on the network
// (`state`), which run on a fiber (see `instance.rs`). Imports may trap: a
// request-only call made from a response hook, say.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "gateway:plugin/state.check-limits": async | trappable,
        "gateway:plugin/outbound.send-all": async | trappable,
        default: trappable,
    },
});

pub use self::gateway::plugin::log::Level;
pub use self::gateway::plugin::types::{
    Capabilities, Header, RequestAction, Response, ResponseAction,
};
