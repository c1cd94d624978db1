//! A WebAssembly plugin-driven API gateway: the proxy core.
//!
//! `config` reads YAML into a checked `Config`; `snapshot` compiles it into a
//! route table (`routing`) with plugin chains (`plugin`) and upstream pools
//! (`upstream`, `balance`), and the key sets plugins verify tokens with
//! (`keys`); `server` accepts connections on its listeners (plain or
//! `tls`) and runs `proxy::handle` on each request; `reload` swaps in a new
//! snapshot when files change, and `reloads` records the attempts; `workers`
//! are the threads serving requests, each with its own runtime.

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod body;
pub mod config;
pub mod connection;
pub mod edge;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod observed;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod reloads;
pub mod routing;
pub mod scaffold;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod trace;
pub mod tunnel;
pub mod upstream;
pub mod workers;

pub use server::{Bound, Gateway, StartError, bind, serve};
