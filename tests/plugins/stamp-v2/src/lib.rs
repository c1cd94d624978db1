//! Version 2 of the stamp plugin: marks responses `x-plugin-version: 2`.
//! Hot-reload tests swap this file with its twin and watch the answers change.

const VERSION: &str = "2";

#[path = "../../stamp.rs"]
mod stamp;

plugin_sdk::export_plugin!(stamp::Stamp);
