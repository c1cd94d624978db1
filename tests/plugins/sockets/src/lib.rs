//! A plugin that opens a TCP connection, so its component imports
//! `wasi:sockets`, which the gateway never grants: it must be refused at
//! load, naming the interface.

use plugin_sdk::prelude::*;

#[derive(Deserialize, Default)]
struct Config {}

struct Sockets;

impl Plugin for Sockets {
    type Config = Config;

    fn new(_config: Config) -> Result<Self, String> {
        Ok(Sockets)
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let reached = std::net::TcpStream::connect("127.0.0.1:9").is_ok();
        request
            .headers()
            .insert("x-network-reached", &reached.to_string());
        Action::Continue
    }
}

export_plugin!(Sockets);
