//! What every end-to-end test uses: backends, the gateway process, clients.

pub mod backend;
pub mod client;
pub mod gateway;
pub mod metrics;
pub mod plugins;
pub mod redis;
pub mod tls;
pub mod tokens;

pub use backend::Backend;
pub use client::{get, get_all_at_once, get_with, raw, send, served_and_kept};
pub use gateway::Gateway;
pub use metrics::Metrics;
pub use plugins::PluginDir;
pub use redis::{Redis, SlowProxy};

/// An `upstreams:` entry with these backends as targets and extra settings.
pub fn upstream(name: &str, backends: &[&Backend], extra: &str) -> String {
    let targets: String = backends
        .iter()
        .map(|b| format!("      - {{ url: \"{}\" }}\n", b.url()))
        .collect();
    format!("  {name}:\n{extra}    targets:\n{targets}")
}
