//! A plugin that reads an environment variable through the `env` host
//! service (granted per plugin in config) and forwards it in request header
//! `x-secret` (`none` when it reads nothing).
//!
//! Config: `name: VARIABLE`.

use plugin_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {
    name: String,
}

struct SecretReader {
    name: String,
}

impl Plugin for SecretReader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Self { name: config.name })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let value = plugin_sdk::env::get(&self.name).unwrap_or_else(|| "none".into());
        request.headers().insert("x-secret", &value);
        Action::Continue
    }
}

export_plugin!(SecretReader);
