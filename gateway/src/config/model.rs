//! The configuration file's shape. Every field is checked while it is read, so
//! a loaded `Config` holds only parsed, valid values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::size::ByteSize;
use crate::balance::HashOn;
use crate::edge::forwarded::Cidr;
use crate::edge::path::EscapedSlashes;
use crate::routing::{HostPattern, PathPattern};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One address, or a list of listeners (plain or TLS).
    #[serde(default = "default_listen")]
    pub listen: super::tls::Listen,
    /// Reserved for the admin API (status, reloads); validated now.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub plugins: Option<PluginsConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Keys that signed tokens are verified with, by set name.
    #[serde(default)]
    pub key_sets: BTreeMap<String, super::key_sets::KeySetConfig>,
    /// Where plugins' shared counters live (rate limits).
    #[serde(default)]
    pub state: super::state::StateConfig,
    /// One line per request (off when absent).
    #[serde(default)]
    pub access_log: Option<super::access_log::AccessLogConfig>,
    /// Span export (`trace.otlp`, with the `otlp` cargo feature).
    #[serde(default)]
    pub trace: super::trace::TraceConfig,
    /// Where this config came from, for errors found after parsing.
    #[serde(skip)]
    pub origin: Origin,
}

/// The file a config was read from, the line of each field in it, and its
/// version (a digest of its text, shown by the admin API).
#[derive(Debug, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub lines: super::yaml::LineMap,
    /// The first 16 hex digits of the SHA-256 of the text as read.
    pub version: String,
}

impl Origin {
    /// The folder relative paths in the config are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

fn default_listen() -> super::tls::Listen {
    super::tls::Listen::one(SocketAddr::from(([0, 0, 0, 0], 8080)))
}

/// The admin API's listener and who may use it.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback by default: the admin API reloads configs and shows pools.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// When set, every admin request needs `Authorization: Bearer TOKEN`
    /// (write it as `${ADMIN_TOKEN}`).
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Every `NAME.wasm` here is plugin `NAME`; relative to the config file.
    pub dir: PathBuf,
    /// Compiled plugin code is kept here by content hash, so a restart does
    /// not recompile unchanged plugins. Default: `$XDG_CACHE_HOME/gateway`
    /// (or `~/.cache/gateway`); relative to the config file.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Defaults for every plugin; a chain entry's `limits` overrides them.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Largest body buffered for plugins that ask for bodies (else 413 / 502).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: ByteSize,
    /// Host services granted per plugin: plugin name, then service key,
    /// then what that service takes (`{ secret-reader: { env: [API_KEY] } }`).
    /// Nothing is granted by default.
    #[serde(default)]
    pub grants: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Plugin instances that may exist at once, all routes and reloads
    /// together (each reserves address space for the largest memory).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
}

fn default_max_instances() -> u32 {
    1000
}

/// Most plugin instances a config may ask for.
pub const MAX_PLUGIN_INSTANCES: u32 = 10_000;

fn default_max_body() -> ByteSize {
    ByteSize::mib(1)
}

/// How long one hook call may run, and how large a plugin's memory may grow.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// CPU time one hook call may use.
    pub deadline: HumanDuration,
    /// Wall time after which a call ends whatever CPU it used; default ten
    /// times `deadline`, and at least 1s.
    pub wall_deadline: Option<HumanDuration>,
    pub memory: ByteSize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            deadline: HumanDuration(std::time::Duration::from_millis(20)),
            wall_deadline: None,
            memory: ByteSize::mib(16),
        }
    }
}

/// Per-plugin overrides of `plugins.limits`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimitsOverride {
    #[serde(default)]
    pub deadline: Option<HumanDuration>,
    #[serde(default)]
    pub wall_deadline: Option<HumanDuration>,
    #[serde(default)]
    pub memory: Option<ByteSize>,
}

/// Client-facing listener limits and shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub drain_timeout: HumanDuration,
    /// A client must send its request head within this time (slowloris guard).
    pub header_read_timeout: HumanDuration,
    /// Longest wait between two pieces of a client's request body.
    pub body_idle_timeout: HumanDuration,
    /// `%2F` and `%5C` in paths: refused, or kept encoded as data.
    pub escaped_slashes: EscapedSlashes,
    /// Peers whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are kept.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request head (request line plus headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Open client connections at most; past it the gateway stops accepting
    /// (new clients wait in the kernel's backlog) until one closes.
    pub max_connections: usize,
    /// Open connections from one client address at most; 0 is no limit.
    pub max_connections_per_address: usize,
    /// A connection with no request for this long is closed (HTTP/2 too).
    pub idle_timeout: HumanDuration,
    /// A client that reads nothing of its answer for this long is cut off.
    pub send_timeout: HumanDuration,
    /// A WebSocket (or other upgraded) connection with no byte either way
    /// for this long is closed.
    pub websocket_idle_timeout: HumanDuration,
    pub http2: Http2Config,
    /// Threads serving requests; 0 means one per CPU core.
    pub workers: usize,
}

/// HTTP/2 limits for client connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged to see that the client is there.
    pub keepalive_interval: HumanDuration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: HumanDuration,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            keepalive_interval: HumanDuration(std::time::Duration::from_secs(60)),
            keepalive_timeout: HumanDuration(std::time::Duration::from_secs(20)),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            drain_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            header_read_timeout: HumanDuration(std::time::Duration::from_secs(10)),
            body_idle_timeout: HumanDuration(std::time::Duration::from_secs(60)),
            escaped_slashes: EscapedSlashes::Reject,
            trusted_proxies: Vec::new(),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 0,
            idle_timeout: HumanDuration(std::time::Duration::from_secs(180)),
            send_timeout: HumanDuration(std::time::Duration::from_secs(60)),
            websocket_idle_timeout: HumanDuration(std::time::Duration::from_secs(600)),
            http2: Http2Config::default(),
            workers: 0,
        }
    }
}

/// How the running gateway picks up changes to its files.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the config file and the plugin folder; off leaves SIGHUP only.
    pub watch: bool,
    /// Quiet time after the last file event before reloading, so that an
    /// editor's or deploy tool's burst of writes becomes one reload.
    pub debounce: HumanDuration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: HumanDuration(std::time::Duration::from_millis(150)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub passive_health: super::breaker::PassiveHealthConfig,
    #[serde(default)]
    pub circuit_breaker: super::breaker::CircuitBreakerConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Send the client's Host to the target (true) or the target's own authority (false).
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    /// How `https://` targets are checked and reached.
    #[serde(default)]
    pub tls: Option<super::tls::UpstreamTls>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub url: TargetUrl,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `http://host:port` or `https://host:port` of one upstream target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TargetUrl {
    /// `host:port`, as sent in the request line's authority and default Host.
    pub authority: http::uri::Authority,
    /// `https://`: the gateway talks TLS to this target.
    pub https: bool,
}

impl TryFrom<String> for TargetUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| format!("`{text}` is not a URL; write it like http://10.0.0.5:8080"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{text}` must start with http:// or https://")),
        };
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!(
                "`{text}` must not have a path; use a route `rewrite`"
            ));
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("`{text}` has no host"));
        };
        if authority.as_str().contains('@') {
            // It would be sent as the Host and shown in metrics and logs.
            return Err(
                "a target URL cannot carry credentials (user:password@); send an Authorization header with the transform plugin".into(),
            );
        }
        if authority.port_u16().is_none() {
            // An explicit port keeps `http://host` from meaning different things to different readers.
            return Err(format!(
                "`{text}` needs an explicit port, like http://{authority}:80"
            ));
        }
        Ok(Self { authority, https })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: String,
    #[serde(default = "default_check_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_check_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
}

fn default_check_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_check_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}
fn default_healthy_after() -> u32 {
    2
}
fn default_unhealthy_after() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    pub connect: HumanDuration,
    /// Until the upstream's response head arrives; a route `timeout` overrides it.
    pub request: HumanDuration,
    /// Longest wait between two pieces of the response body.
    pub body_idle: HumanDuration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: HumanDuration(std::time::Duration::from_secs(5)),
            request: HumanDuration(std::time::Duration::from_secs(30)),
            body_idle: HumanDuration(std::time::Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    pub idle_timeout: HumanDuration,
    pub max_idle_per_target: usize,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self {
            idle_timeout: HumanDuration(std::time::Duration::from_secs(60)),
            max_idle_per_target: 128,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Higher wins before any specificity rule.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub strip_prefix: Option<PathPattern>,
    #[serde(default)]
    pub rewrite: Option<PathPattern>,
    pub upstream: String,
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub host: Option<HostPattern>,
    #[serde(default)]
    pub path: Option<PathPattern>,
    #[serde(default)]
    pub path_prefix: Option<PathPattern>,
    #[serde(default)]
    pub methods: Vec<MethodName>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MethodName(pub http::Method);

impl TryFrom<String> for MethodName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        http::Method::from_bytes(text.to_ascii_uppercase().as_bytes())
            .map(MethodName)
            .map_err(|_| format!("`{text}` is not an HTTP method"))
    }
}

/// Header presence (no `value`) or exact value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    pub name: HeaderNameConfig,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderNameConfig(pub http::HeaderName);

impl TryFrom<String> for HeaderNameConfig {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        http::HeaderName::from_bytes(text.as_bytes())
            .map(HeaderNameConfig)
            .map_err(|_| format!("`{text}` is not a valid header name"))
    }
}

/// A plugin in a route's chain: the file `plugins.dir/NAME.wasm`, the
/// config its `init` receives (as JSON), and optional limit overrides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub limits: PluginLimitsOverride,
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PathPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for HashOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HashOn::parse(&text).map_err(serde::de::Error::custom)
    }
}
