//! `gateway:plugin/context`: the request's context, shared by its whole
//! chain. Outside a request (in `init`) the context is the route alone.

use super::HostState;
use crate::plugin::bindings::gateway::plugin::context;
use crate::plugin::exchange::WrongHook;
use crate::plugin::request_context::RequestContext;

impl HostState {
    fn request_context(&self) -> Result<&RequestContext, WrongHook> {
        self.exchange
            .context
            .as_ref()
            .ok_or(WrongHook("the request context"))
    }
}

impl context::Host for HostState {
    fn route(&mut self) -> wasmtime::Result<String> {
        Ok(self.route.to_string())
    }
    fn request_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.request_context()?.request_id())
    }
    fn client_address(&mut self) -> wasmtime::Result<String> {
        Ok(self.request_context()?.client_address())
    }
    fn tls(&mut self) -> wasmtime::Result<Option<context::TlsSession>> {
        Ok(self
            .request_context()?
            .tls()
            .map(|session| context::TlsSession {
                server_name: session.server_name.clone(),
                version: session.version.to_string(),
                alpn: session.alpn.clone(),
            }))
    }
    fn params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.request_context()?.params().clone())
    }
    fn upstream(&mut self) -> wasmtime::Result<String> {
        Ok(self.request_context()?.upstream().to_string())
    }
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.request_context()?.get(&key).map(str::to_string))
    }
    fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        let exchange = &mut self.exchange;
        let Some(context) = exchange.context.as_mut() else {
            return Err(WrongHook("the request context").into());
        };
        if let Err(full) = context.set(key, value) {
            // Like an invalid header: the request fails once the hook returns.
            exchange.invalid.get_or_insert(full.to_string());
        }
        Ok(())
    }
    fn remove(&mut self, key: String) -> wasmtime::Result<bool> {
        match self.exchange.context.as_mut() {
            Some(context) => Ok(context.remove(&key)),
            None => Err(WrongHook("the request context").into()),
        }
    }
}
