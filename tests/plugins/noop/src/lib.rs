//! A plugin that implements no hooks: the gateway learns so on the first
//! request and stops calling it (the benchmark's no-op plugin).

use plugin_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {}

struct Noop;

impl Plugin for Noop {
    type Config = Config;

    fn new(_config: Config) -> Result<Self, String> {
        Ok(Noop)
    }
}

export_plugin!(Noop);
