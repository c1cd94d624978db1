//! End-to-end tests: the real `gateway` binary between real HTTP clients and
//! real backend servers, all on loopback. Each module reads as a description
//! of one area of behaviour.

mod support;

mod access_log;
mod admin;
mod aggregate;
mod attacks;
mod auth;
mod bad_input;
mod balancing;
mod breaker;
mod cli;
mod cors;
mod deadlines;
mod grants;
mod health;
mod held;
mod idle;
mod metrics;
#[cfg(feature = "otlp")]
mod otlp;
mod plugin_context;
mod plugins;
mod protocols;
mod proxy_headers;
mod rate_limit;
mod reload;
mod routing;
mod shutdown;
mod streaming;
mod tls;
mod transform;
mod validate;
mod workers;
