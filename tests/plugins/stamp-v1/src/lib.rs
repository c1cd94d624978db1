//! Version 1 of the stamp plugin: marks responses `x-plugin-version: 1`.
//! Hot-reload tests swap this file with its twin and watch the answers change.

const VERSION: &str = "1";

#[path = "../../stamp.rs"]
mod stamp;

plugin_sdk::export_plugin!(stamp::Stamp);
