//! `gateway:plugin/{types,message,request,response}`: the message of the
//! hook in progress, read and edited in place in the `Exchange`.

use super::HostState;
use crate::plugin::bindings::{Header, gateway::plugin as wit};

/// The types interface has no functions; its host side is empty.
impl wit::types::Host for HostState {}

fn header_records(lines: Vec<(String, String)>) -> Vec<Header> {
    lines
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

impl wit::message::Host for HostState {
    fn get_header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.exchange.header(&name))
    }
    fn get_header_values(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.exchange.header_all(&name))
    }
    fn get_headers(&mut self) -> wasmtime::Result<Vec<Header>> {
        Ok(header_records(self.exchange.header_lines()))
    }
    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_header(&name, value, false)?)
    }
    fn append_header(&mut self, name: String, value: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_header(&name, value, true)?)
    }
    fn remove_header(&mut self, name: String) -> wasmtime::Result<bool> {
        Ok(self.exchange.remove_header(&name)?)
    }
    fn get_body(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.exchange.body())
    }
    fn set_body(&mut self, body: Vec<u8>) -> wasmtime::Result<()> {
        self.exchange.set_body(body);
        Ok(())
    }
}

impl wit::request::Host for HostState {
    fn method(&mut self) -> wasmtime::Result<String> {
        Ok(self.exchange.method()?)
    }
    fn set_method(&mut self, method: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_method(&method)?)
    }
    fn path(&mut self) -> wasmtime::Result<String> {
        Ok(self.exchange.path()?)
    }
    fn set_path(&mut self, path: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_path(&path)?)
    }
    fn query(&mut self) -> wasmtime::Result<String> {
        Ok(self.exchange.query()?)
    }
    fn set_query(&mut self, query: String) -> wasmtime::Result<()> {
        Ok(self.exchange.set_query(&query)?)
    }
    fn get_header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.exchange.request_header(&name)?)
    }
    fn get_header_values(&mut self, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.exchange.request_header_all(&name)?)
    }
    fn get_headers(&mut self) -> wasmtime::Result<Vec<Header>> {
        Ok(header_records(self.exchange.request_header_lines()?))
    }
}

impl wit::response::Host for HostState {
    fn status(&mut self) -> wasmtime::Result<u16> {
        Ok(self.exchange.status()?)
    }
    fn set_status(&mut self, status: u16) -> wasmtime::Result<()> {
        Ok(self.exchange.set_status(status)?)
    }
}
