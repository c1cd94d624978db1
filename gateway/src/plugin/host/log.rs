//! `gateway:plugin/log`: plugin lines in the gateway's log, tagged with the
//! plugin and route.

use super::HostState;
use crate::plugin::bindings::{Level, gateway::plugin::log};

impl log::Host for HostState {
    fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let (plugin, route) = (&*self.plugin, &*self.route);
        match level {
            Level::Trace => tracing::trace!(plugin, route, "{message}"),
            Level::Debug => tracing::debug!(plugin, route, "{message}"),
            Level::Info => tracing::info!(plugin, route, "{message}"),
            Level::Warn => tracing::warn!(plugin, route, "{message}"),
            Level::Error => tracing::error!(plugin, route, "{message}"),
        }
        Ok(())
    }
}
