//! `gateway:plugin/env`: environment variables of the gateway process, by
//! name, for secrets a plugin needs without writing them into the route
//! config. Granted as `plugins.grants.<plugin>.env: [NAME, ...]`; only the
//! names listed can be read, each as it was when the config was loaded.

use wasmtime::component::{HasSelf, Linker};

use super::{HostService, NotGranted, Resources};
use crate::plugin::bindings::gateway::plugin::env;
use crate::plugin::host::HostState;

pub struct Env;

/// The granted names and their values.
pub struct Variables(Vec<(String, Option<String>)>);

impl HostService for Env {
    const GRANT: &'static str = "env";
    const INTERFACE: &'static str = "gateway:plugin/env";
    type Grant = Vec<String>;
    type Shared = Variables;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        env::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn configure(names: Vec<String>, _: &Resources) -> Result<Variables, String> {
        if let Some(bad) = names
            .iter()
            .find(|n| n.is_empty() || n.contains(['=', '\0']))
        {
            return Err(format!("`{bad}` is not an environment variable name"));
        }
        Ok(Variables(
            names
                .into_iter()
                .map(|name| {
                    let value = std::env::var(&name).ok();
                    (name, value)
                })
                .collect(),
        ))
    }
}

impl env::Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        let variables = super::shared::<Env>(&self.granted).ok_or(NotGranted(Env::INTERFACE))?;
        Ok(variables
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, value)| value.clone()))
    }
}
