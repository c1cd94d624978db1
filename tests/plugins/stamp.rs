//! The stamp plugin shared by `stamp-v1` and `stamp-v2`: every response
//! says which version of the plugin handled it.

use plugin_sdk::prelude::*;

#[derive(Deserialize, Default)]
pub struct Config {}

pub struct Stamp;

impl Plugin for Stamp {
    type Config = Config;

    fn new(_config: Config) -> Result<Self, String> {
        Ok(Stamp)
    }

    fn on_response(&self, response: &mut Response) {
        response
            .headers_mut()
            .insert("x-plugin-version", super::VERSION);
    }
}
