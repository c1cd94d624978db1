//! Write gateway plugins in plain Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`]
//! and built with `cargo build --release --target wasm32-wasip2` into a
//! `.wasm` component that the gateway loads from its plugin folder.
//!
//! ```
//! use plugin_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     header: String,
//! }
//!
//! struct AddHeader {
//!     cfg: Config,
//! }
//!
//! impl Plugin for AddHeader {
//!     type Config = Config;
//!     fn new(cfg: Config) -> Result<Self, String> {
//!         Ok(Self { cfg })
//!     }
//!     fn on_request(&self, req: &mut Request) -> Action {
//!         req.headers_mut().insert(&self.cfg.header, &req.request_id());
//!         req.context().set("checked", "yes");
//!         Action::Continue
//!     }
//!     fn on_response(&self, resp: &mut Response) {
//!         if let Some(origin) = resp.request().header("origin") {
//!             resp.headers().insert("x-seen-origin", &origin);
//!         }
//!     }
//! }
//! export_plugin!(AddHeader);
//! ```
//!
//! In a hook, the request or response stays in the gateway: each read or
//! edit through [`Request`], [`Response`], [`Headers`] and [`Context`] is a
//! call into it, so a plugin pays only for what it touches. Keep the logic in
//! plain functions over these types and it can be unit-tested with
//! `cargo test` on the host, on values built with [`Request::new`],
//! [`Response::new`] and [`Response::with_request`]: only [`log`],
//! [`env`](mod@env), [`keys`], [`state`] and [`outbound`] need the real gateway.

#![deny(missing_docs)]

mod context;
mod duration;
mod headers;
mod message;

pub use context::{Context, TlsSession};
pub use duration::{DurationRule, parse_duration};
pub use headers::Headers;
pub use message::{Request, RequestHead, Response};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "plugin_sdk::bindings",
    });
}

/// Everything a plugin usually needs, plus serde's `Deserialize` for its config.
pub mod prelude {
    pub use crate::{
        Action, Capabilities, Context, Headers, Plugin, Request, RequestHead, Response, TlsSession,
        export_plugin, log,
    };
    pub use serde::Deserialize;
}

/// What a request hook decides.
#[derive(Debug)]
pub enum Action {
    /// Go on to the next plugin and then the upstream, with any edits made
    /// to the request.
    Continue,
    /// Answer the client with this response now. Later plugins' request
    /// hooks and the upstream are skipped; response hooks still run for the
    /// plugins that already ran, this one included.
    Respond(Response),
}

/// What a plugin asks of the host, decided once when it is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Buffer request bodies (up to the gateway's `max_body_bytes`, else 413)
    /// and pass them in [`Request::body`].
    pub request_body: bool,
    /// Buffer response bodies and pass them in [`Response::body`].
    pub response_body: bool,
}

/// A gateway plugin. One value is created per route that uses the plugin,
/// from that route's `config`, and then serves its requests.
pub trait Plugin: Sized + 'static {
    /// The route's `config:` block, deserialised from JSON with serde.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config; an `Err` refuses the config and
    /// the gateway refuses to load it, quoting the message. (A config that
    /// does not deserialise into `Config` is refused before this, with the
    /// path of the field at fault, which the gateway maps to its YAML line.)
    fn new(config: Self::Config) -> Result<Self, String>;

    /// What the plugin needs from the host. By default: no bodies, so bodies
    /// stream past the plugin untouched.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Runs before the request goes upstream, in chain order. A plugin that
    /// keeps this default is not called for requests at all.
    fn on_request(&self, request: &mut Request) -> Action {
        let _ = request;
        __runtime::default_hook_ran();
        Action::Continue
    }

    /// Runs on the response, in reverse chain order: the upstream's, a
    /// plugin's early answer, or the gateway's own error answer after
    /// routing (see the plugin guide for which hooks see which). The request
    /// it answers is [`Response::request`]. A plugin that keeps this default
    /// is not called for responses at all.
    fn on_response(&self, response: &mut Response) {
        let _ = response;
        __runtime::default_hook_ran();
    }
}

/// Writes to the gateway's log, tagged with the plugin's and route's names.
///
/// Only works inside the gateway: off-wasm (in `cargo test`) these panic.
pub mod log {
    use crate::bindings::gateway::plugin::log::{Level, write};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        write(Level::Trace, message);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        write(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// Environment variables of the gateway process, by name: a host service a
/// plugin must be granted (`plugins.grants.<plugin>.env: [NAME, ...]`). Only
/// the names granted can be read; others read as `None`.
///
/// Only works inside the gateway: off-wasm (in `cargo test`) this panics.
/// A plugin that never calls it does not import it and needs no grant.
pub mod env {
    /// The value of environment variable `name`, if the plugin was granted
    /// it and it is set.
    pub fn get(name: &str) -> Option<String> {
        crate::bindings::gateway::plugin::env::get(name)
    }
}

/// Signature checks against the operator's key sets (`key_sets:` in the
/// gateway's config): a host service a plugin must be granted
/// (`plugins.grants.<plugin>.keys: [SET, ...]`). The keys stay in the
/// gateway, which fetches, refreshes and caches them; the plugin gets the
/// verified header and claims and decides what they must say.
///
/// Only works inside the gateway: off-wasm (in `cargo test`) this panics, so
/// keep the policy in functions that take the verification result.
/// A plugin that never calls it does not import it and needs no grant.
pub mod keys {
    pub use crate::bindings::gateway::plugin::keys::{VerifiedToken, VerifyError};

    /// Checks the signature of `token` (a compact JWT) with key set `key_set`.
    /// `Ok` holds the header and claims as JSON text; `exp`, `nbf`, `iss`
    /// and `aud` are not checked yet.
    pub fn verify_jwt(key_set: &str, token: &str) -> Result<VerifiedToken, VerifyError> {
        crate::bindings::gateway::plugin::keys::verify_jwt(key_set, token)
    }

    /// Whether key set `key_set` is granted to this plugin; call it from
    /// [`Plugin::new`](crate::Plugin::new) to refuse a config naming a set
    /// the plugin could never use.
    pub fn granted(key_set: &str) -> bool {
        crate::bindings::gateway::plugin::keys::granted(key_set)
    }
}

/// Shared counters for rate limits, in the store the operator chose
/// (`state:` in the gateway's config: the gateway's memory, or Redis so that
/// several gateways hold one limit): a host service a plugin must be granted
/// (`plugins.grants.<plugin>.state: {}`). The host namespaces keys per
/// plugin, so one plugin can neither read nor spend another's counters.
///
/// Only works inside the gateway: off-wasm (in `cargo test`) this panics, so
/// keep the policy in functions that take the [`Decision`](state::Decision).
/// A plugin that never calls it does not import it and needs no grant.
pub mod state {
    pub use crate::bindings::gateway::plugin::state::{Budget, Decision, Limit, StateError};

    /// Decides and records in one atomic step (never read-then-write): the
    /// request is allowed only when every limit allows it, and is then
    /// counted against each; a refused request is counted against none.
    /// [`Decision::budgets`] has one budget per limit, in the order given.
    ///
    /// The host refuses ([`StateError::Invalid`]) no limits or more than 16,
    /// a zero `requests`, `period_ms` or `burst`, and a key over 512 bytes.
    pub fn check_limits(limits: &[Limit]) -> Result<Decision, StateError> {
        crate::bindings::gateway::plugin::state::check_limits(limits)
    }
}

/// HTTP calls to the operator's named upstream pools: a host service a
/// plugin must be granted (`plugins.grants.<plugin>.outbound: { pools:
/// [NAME, ...] }`). The calls of one [`send_all`](outbound::send_all) run at
/// once in the gateway, through the pools' balancing, health checks and
/// connections; the hook waits for them without holding a gateway thread.
/// `x-request-id` and trace headers of the request being handled go along.
///
/// Only works inside the gateway: off-wasm (in `cargo test`) this panics.
/// A plugin that never calls it does not import it and needs no grant.
pub mod outbound {
    pub use crate::bindings::gateway::plugin::outbound::{Call, CallError, Reply};
    pub use crate::bindings::gateway::plugin::types::Header;

    /// Sends `calls` at once; their outcomes come back in the same order,
    /// when all have answered or `batch_timeout_ms` has passed (those still
    /// waiting are [`CallError::TimedOut`]). At most 16 calls.
    pub fn send_all(calls: &[Call], batch_timeout_ms: u32) -> Vec<Result<Reply, CallError>> {
        crate::bindings::gateway::plugin::outbound::send_all(calls, batch_timeout_ms)
    }

    /// Whether pool `pool` is granted to this plugin; call it from
    /// [`Plugin::new`](crate::Plugin::new) to refuse a config naming a pool
    /// the plugin could never call.
    pub fn granted(pool: &str) -> bool {
        crate::bindings::gateway::plugin::outbound::granted(pool)
    }
}

/// Exports a [`Plugin`] type as the component's hooks. Use it once per crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(dead_code)]
        pub struct __GatewayPluginExport;

        impl $crate::bindings::exports::gateway::plugin::hooks::Guest for __GatewayPluginExport {
            fn init(
                config: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::gateway::plugin::types::Capabilities,
                $crate::bindings::gateway::plugin::types::ConfigError,
            > {
                $crate::__runtime::init::<$plugin>(&config)
            }

            fn on_request() -> $crate::bindings::gateway::plugin::types::RequestAction {
                $crate::__runtime::on_request::<$plugin>()
            }

            fn on_response() -> $crate::bindings::gateway::plugin::types::ResponseAction {
                $crate::__runtime::on_response::<$plugin>()
            }
        }

        // Exported symbols only exist in the wasm build; a host build (for
        // `cargo test` of the plugin's logic) links without them.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin_world!(__GatewayPluginExport with_types_in $crate::bindings);
    };
}

/// The glue `export_plugin!` expands to: keeps the plugin value between calls
/// and turns the SDK's answers into WIT types.
#[doc(hidden)]
pub mod __runtime {
    use std::any::Any;
    use std::cell::RefCell;

    use crate::bindings::gateway::plugin::types as wit;
    use crate::{Action, Plugin, Request, Response};

    thread_local! {
        // A component instance is single-threaded; one plugin value per instance.
        static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
        // Set by the trait's default hooks: the plugin did not write that hook.
        static DEFAULT_HOOK_RAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub fn default_hook_ran() {
        DEFAULT_HOOK_RAN.with(|flag| flag.set(true));
    }

    /// Runs a hook and says whether it was the trait's default.
    fn run_hook<R>(hook: impl FnOnce() -> R) -> (R, bool) {
        DEFAULT_HOOK_RAN.with(|flag| flag.set(false));
        let result = hook();
        (result, DEFAULT_HOOK_RAN.with(|flag| flag.get()))
    }

    pub fn init<P: Plugin>(config: &str) -> Result<wit::Capabilities, wit::ConfigError> {
        // A panic's message would go to stderr, which goes nowhere in the
        // gateway: send it to the gateway's log, tagged with plugin and route.
        #[cfg(target_arch = "wasm32")]
        std::panic::set_hook(Box::new(|info| {
            crate::log::error(&format!("panicked: {info}"))
        }));
        let config: P::Config = parse_config(config)?;
        let plugin = P::new(config).map_err(|message| wit::ConfigError {
            field: String::new(),
            message,
        })?;
        let caps = plugin.capabilities();
        PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(wit::Capabilities {
            request_body: caps.request_body,
            response_body: caps.response_body,
        })
    }

    /// The config, or the path of the field that did not fit and why.
    pub fn parse_config<C: serde::de::DeserializeOwned>(
        config: &str,
    ) -> Result<C, wit::ConfigError> {
        let mut json = serde_json::Deserializer::from_str(config);
        serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let field = match e.path().to_string() {
                root if root == "." => String::new(),
                path => path,
            };
            // The position is in the JSON the gateway made from YAML: no use to the user.
            let text = e.inner().to_string();
            let message = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(m, _)| m);
            wit::ConfigError {
                field,
                message: format!("invalid config: {message}"),
            }
        })
    }

    fn with_plugin<P: Plugin, R>(f: impl FnOnce(&P) -> R) -> R {
        PLUGIN.with(|slot| {
            let slot = slot.borrow();
            match slot.as_ref().and_then(|p| p.downcast_ref::<P>()) {
                Some(plugin) => f(plugin),
                // The host always calls init first; reaching this is a host bug.
                None => panic!("plugin hook called before init"),
            }
        })
    }

    pub fn on_request<P: Plugin>() -> wit::RequestAction {
        let mut request = Request::gateway();
        match run_hook(|| with_plugin::<P, _>(|p| p.on_request(&mut request))) {
            (_, true) => wit::RequestAction::NotImplemented,
            (Action::Respond(response), false) => wit::RequestAction::Respond(response.into_wit()),
            (Action::Continue, false) => wit::RequestAction::Continue,
        }
    }

    pub fn on_response<P: Plugin>() -> wit::ResponseAction {
        let mut response = Response::gateway();
        match run_hook(|| with_plugin::<P, _>(|p| p.on_response(&mut response))) {
            ((), true) => wit::ResponseAction::NotImplemented,
            ((), false) => wit::ResponseAction::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::__runtime::parse_config;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        origins: Vec<u32>,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        max_age: u32,
    }

    fn refused(json: &str) -> (String, String) {
        match parse_config::<Config>(json) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => (e.field, e.message),
        }
    }

    #[test]
    fn a_config_that_does_not_fit_names_the_field() {
        let (field, message) = refused(r#"{"origins":[1,2,"x"]}"#);
        assert_eq!(field, "origins[2]");
        assert!(
            message.starts_with("invalid config: invalid type"),
            "{message}"
        );
        assert!(!message.contains("line"), "{message}");
        assert_eq!(
            refused(r#"{"origins":[],"nested":{"max_age":-1}}"#).0,
            "nested.max_age"
        );
        assert_eq!(refused(r#"{"origins":[],"other":1}"#).0, "other");
        assert_eq!(refused(r#"{}"#).0, "");
    }
}
