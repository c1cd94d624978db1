//! Loading and checking the YAML configuration; every problem names file, line and field.

pub mod access_log;
pub mod breaker;
mod duration;
pub mod key_sets;
mod model;
mod size;
pub mod state;
pub mod tls;
pub mod trace;
mod yaml;

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use duration::HumanDuration;
pub use model::*;
pub use size::ByteSize;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    /// The field, as `routes[2].upstream`.
    pub field: String,
    pub message: String,
}

/// `field` (a path as serde reports it: `origins[2]`, `a.b`, or empty for
/// the whole) below the field `at`.
pub fn join_field(at: &str, field: &str) -> String {
    if field.is_empty() || field.starts_with('[') {
        format!("{at}{field}")
    } else {
        format!("{at}.{field}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Problems { file, problems })]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

struct Problems<'a> {
    file: &'a Path,
    problems: &'a [Problem],
}

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: ", self.file.display(), p.line)?;
            if !p.field.is_empty() {
                write!(f, "{}: ", p.field)?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

/// Reads, parses and checks the file at `file`, expanding `${VAR}` from the process environment.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let read_error = |source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    };
    // Read at most one byte past the bound, whatever the file (or device) is.
    let mut text = String::new();
    std::io::Read::take(
        std::fs::File::open(file).map_err(read_error)?,
        MAX_CONFIG_BYTES + 1,
    )
    .read_to_string(&mut text)
    .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(read_error(std::io::Error::other(format!(
            "the file is larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        ))));
    }
    from_text(&text, file, &|name| std::env::var(name).ok())
}

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Parses and checks `text` read from `file` (named in errors); `env` resolves `${VAR}`.
pub fn from_text(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut config = parse(text, env).map_err(|problems| ConfigError::Invalid {
        file: file.to_path_buf(),
        problems,
    })?;
    config.origin.file = file.to_path_buf();
    config.origin.version = version_of(text);
    Ok(config)
}

/// A config text's version: the start of its SHA-256, in hex.
fn version_of(text: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest memory limit a plugin may be given (the pooling allocator's slot size).
pub const MAX_PLUGIN_MEMORY: ByteSize = ByteSize::mib(256);

impl Config {
    /// Problems found after parsing (say, by loading plugins), located like the others.
    pub fn errors(&self, problems: Vec<(String, String)>) -> ConfigError {
        ConfigError::Invalid {
            file: self.origin.file.clone(),
            problems: problems
                .into_iter()
                .map(|(field, message)| Problem {
                    line: self.origin.lines.line_of(&field),
                    field,
                    message,
                })
                .collect(),
        }
    }
}

/// Parses and checks config text; `env` resolves `${VAR}`.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<Problem>> {
    let doc = yaml::parse(text, env).map_err(|e| {
        vec![Problem {
            line: e.line,
            field: e.path,
            message: e.message,
        }]
    })?;
    let mut config: Config = serde_path_to_error::deserialize(doc.value).map_err(|e| {
        let mut field = e.path().to_string();
        if field == "." {
            field.clear();
        }
        let message = e.inner().to_string();
        vec![Problem {
            line: doc.lines.line_of(&field),
            field,
            message,
        }]
    })?;
    let problems = check(&config);
    config.origin.lines = doc.lines;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems
            .into_iter()
            .map(|(field, message)| Problem {
                line: config.origin.lines.line_of(&field),
                field,
                message,
            })
            .collect())
    }
}

/// Rules that span fields: references, combinations, ranges.
fn check(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut problem = |field: String, message: String| problems.push((field, message));
    for (field, message) in config.trace.problems() {
        problem(join_field("trace", &field), message);
    }
    if let Some(log) = &config.access_log {
        for (field, message) in log.problems() {
            problem(join_field("access_log", &field), message);
        }
    }
    for (field, message) in config.listen.problems() {
        problem(join_field("listen", &field), message);
    }
    check_server(&config.server, &mut problem);
    if let Some(token) = config.admin.as_ref().and_then(|a| a.token.as_ref()) {
        if token.len() < 16 {
            problem(
                "admin.token".into(),
                "must be at least 16 characters: use a long random value, like ${ADMIN_TOKEN} set from `openssl rand -hex 32`".into(),
            );
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            // A trailing newline from a secret file would never match.
            problem(
                "admin.token".into(),
                "must be printable characters only, with no spaces or line ends".into(),
            );
        }
    }
    for (name, upstream) in &config.upstreams {
        check_upstream(&format!("upstreams.{name}"), upstream, &mut problem);
    }
    for (field, message) in config.state.problems() {
        problem(join_field("state", &field), message);
    }
    for (name, set) in &config.key_sets {
        check_key_set(&format!("key_sets.{name}"), set, config, &mut problem);
    }
    if let Some(plugins) = &config.plugins {
        if !(1..=MAX_PLUGIN_INSTANCES).contains(&plugins.max_instances) {
            problem(
                "plugins.max_instances".into(),
                format!("must be between 1 and {MAX_PLUGIN_INSTANCES}"),
            );
        }
        let limits = plugins.limits;
        check_limits(
            "plugins.limits",
            &PluginLimitsOverride {
                deadline: Some(limits.deadline),
                wall_deadline: limits.wall_deadline,
                memory: Some(limits.memory),
            },
            None,
            &mut problem,
        );
    }
    let mut names = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if route.name.trim().is_empty() {
            problem(format!("{at}.name"), "a route needs a name".into());
        } else if route.name == crate::metrics::UNROUTED {
            problem(
                format!("{at}.name"),
                "(unrouted) names requests no route matched in the metrics; choose another".into(),
            );
        } else if !names.insert(route.name.as_str()) {
            problem(
                format!("{at}.name"),
                format!("another route is already named \"{}\"", route.name),
            );
        }
        check_route(&at, route, config, &mut problem);
    }
    problems
}

type Report<'a> = dyn FnMut(String, String) + 'a;

/// A zero duration where a wait must have a length.
fn positive(at: String, duration: HumanDuration, problem: &mut Report) {
    if duration.0.is_zero() {
        problem(at, "must be more than 0".into());
    }
}

/// A zero count where there must be at least one.
fn at_least_one(at: String, count: usize, problem: &mut Report) {
    if count == 0 {
        problem(at, "must be at least 1".into());
    }
}

/// Each worker is a thread with its own sockets and upstream connections.
pub const MAX_WORKERS: usize = 1024;

fn check_server(server: &ServerConfig, problem: &mut Report) {
    for (field, duration) in [
        ("header_read_timeout", server.header_read_timeout),
        ("body_idle_timeout", server.body_idle_timeout),
        ("websocket_idle_timeout", server.websocket_idle_timeout),
        ("idle_timeout", server.idle_timeout),
        ("send_timeout", server.send_timeout),
        ("http2.keepalive_interval", server.http2.keepalive_interval),
        ("http2.keepalive_timeout", server.http2.keepalive_timeout),
    ] {
        positive(format!("server.{field}"), duration, problem);
    }
    at_least_one(
        "server.max_connections".into(),
        server.max_connections,
        problem,
    );
    if server.workers > MAX_WORKERS {
        problem(
            "server.workers".into(),
            format!("at most {MAX_WORKERS} (0 is one per CPU)"),
        );
    }
    at_least_one(
        "server.http2.max_concurrent_streams".into(),
        server.http2.max_concurrent_streams as usize,
        problem,
    );
}

fn check_key_set(at: &str, set: &key_sets::KeySetConfig, config: &Config, problem: &mut Report) {
    for (field, message) in set.problems() {
        problem(join_field(at, &field), message);
    }
    if let Some(fetch) = &set.jwks_upstream
        && !config.upstreams.contains_key(&fetch.upstream)
    {
        problem(
            format!("{at}.jwks_upstream.upstream"),
            format!("no upstream named \"{}\"", fetch.upstream),
        );
    }
}

fn check_upstream(at: &str, up: &UpstreamConfig, problem: &mut Report) {
    if up.targets.is_empty() {
        problem(
            format!("{at}.targets"),
            "an upstream needs at least one target".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, target) in up.targets.iter().enumerate() {
        if !(1..=1000).contains(&target.weight) {
            problem(
                format!("{at}.targets[{i}].weight"),
                format!("weight must be between 1 and 1000, not {}", target.weight),
            );
        }
        if !seen.insert(target.url.authority.as_str()) {
            problem(
                format!("{at}.targets[{i}].url"),
                format!("target {} is listed twice", target.url.authority),
            );
        }
    }
    match &up.tls {
        Some(_) if !up.targets.iter().any(|t| t.url.https) => problem(
            format!("{at}.tls"),
            "applies to https:// targets, and this upstream has none".into(),
        ),
        Some(tls) => {
            for (field, message) in tls.problems() {
                problem(join_field(&format!("{at}.tls"), &field), message);
            }
        }
        None => {}
    }
    for (field, message) in up.passive_health.problems() {
        problem(format!("{at}.passive_health.{field}"), message);
    }
    for (field, message) in up.circuit_breaker.problems() {
        problem(format!("{at}.circuit_breaker.{field}"), message);
    }
    match (up.balance, &up.hash_on) {
        (Balance::ConsistentHash, None) => problem(
            format!("{at}.hash_on"),
            "balance: consistent_hash needs hash_on (header:NAME, cookie:NAME or client_ip)".into(),
        ),
        (b, Some(_)) if b != Balance::ConsistentHash => problem(
            format!("{at}.hash_on"),
            "hash_on only applies to balance: consistent_hash".into(),
        ),
        _ => {}
    }
    if let Some(hc) = &up.health_check {
        if !hc.path.starts_with('/') {
            problem(
                format!("{at}.health_check.path"),
                "must start with `/`".into(),
            );
        }
        positive(format!("{at}.health_check.interval"), hc.interval, problem);
        positive(format!("{at}.health_check.timeout"), hc.timeout, problem);
        for (field, count) in [
            ("healthy_after", hc.healthy_after),
            ("unhealthy_after", hc.unhealthy_after),
        ] {
            at_least_one(
                format!("{at}.health_check.{field}"),
                count as usize,
                problem,
            );
        }
    }
    positive(
        format!("{at}.timeouts.connect"),
        up.timeouts.connect,
        problem,
    );
    positive(
        format!("{at}.timeouts.request"),
        up.timeouts.request,
        problem,
    );
    positive(
        format!("{at}.timeouts.body_idle"),
        up.timeouts.body_idle,
        problem,
    );
}

fn check_route(at: &str, route: &RouteConfig, config: &Config, problem: &mut Report) {
    if !config.upstreams.contains_key(&route.upstream) {
        problem(
            format!("{at}.upstream"),
            format!("no upstream named \"{}\"", route.upstream),
        );
    }
    let m = &route.matcher;
    if m.path.is_some() && m.path_prefix.is_some() {
        problem(
            format!("{at}.match.path"),
            "use either path or path_prefix, not both".into(),
        );
    }
    for (h, header) in m.headers.iter().enumerate() {
        let valid = header
            .value
            .as_deref()
            .is_none_or(|v| http::HeaderValue::from_str(v).is_ok());
        if !valid {
            problem(
                format!("{at}.match.headers[{h}].value"),
                "not a valid header value (visible ASCII only)".into(),
            );
        }
    }
    if route.strip_prefix.is_some() && route.rewrite.is_some() {
        problem(
            format!("{at}.rewrite"),
            "use either strip_prefix or rewrite, not both".into(),
        );
    }
    if let Some(rewrite) = &route.rewrite {
        let matched = m.path.as_ref().or(m.path_prefix.as_ref());
        for param in rewrite.param_names() {
            if !matched.is_some_and(|p| p.param_names().any(|n| n == param)) {
                problem(
                    format!("{at}.rewrite"),
                    format!("`{{{param}}}` is not captured by this route's match path"),
                );
            }
        }
    }
    if let Some(timeout) = route.timeout {
        positive(format!("{at}.timeout"), timeout, problem);
    }
    if !route.plugins.is_empty() && config.plugins.is_none() {
        problem(
            format!("{at}.plugins"),
            "this route names plugins but no `plugins: { dir: … }` is configured".into(),
        );
    }
    for (p, plugin) in route.plugins.iter().enumerate() {
        let valid = !plugin.name.is_empty()
            && plugin
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            problem(
                format!("{at}.plugins[{p}].name"),
                format!(
                    "`{}` is not a plugin name (letters, digits, `-`, `_`)",
                    plugin.name
                ),
            );
        }
        check_limits(
            &format!("{at}.plugins[{p}].limits"),
            &plugin.limits,
            config.plugins.as_ref().map(|p| &p.limits),
            problem,
        );
    }
}

/// Longest CPU deadline one hook call may have.
pub const MAX_PLUGIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest wall-clock ceiling one hook call may have.
pub const MAX_PLUGIN_WALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Plugin limits at `at`; an entry's are also checked against the
/// `defaults` they override (a wall ceiling below the CPU deadline in
/// effect would make that deadline mean nothing).
fn check_limits(
    at: &str,
    limits: &PluginLimitsOverride,
    defaults: Option<&PluginLimits>,
    problem: &mut Report,
) {
    if limits.deadline.is_some_and(|d| d.0.is_zero()) {
        problem(format!("{at}.deadline"), "must be more than 0".into());
    }
    if limits.deadline.is_some_and(|d| d.0 > MAX_PLUGIN_DEADLINE) {
        problem(
            format!("{at}.deadline"),
            format!("must be at most {}s", MAX_PLUGIN_DEADLINE.as_secs()),
        );
    }
    if limits.wall_deadline.is_some_and(|d| d.0.is_zero()) {
        problem(format!("{at}.wall_deadline"), "must be more than 0".into());
    }
    if limits
        .wall_deadline
        .is_some_and(|d| d.0 > MAX_PLUGIN_WALL_DEADLINE)
    {
        problem(
            format!("{at}.wall_deadline"),
            format!("must be at most {}s", MAX_PLUGIN_WALL_DEADLINE.as_secs()),
        );
    }
    let deadline = limits.deadline.or(defaults.map(|d| d.deadline));
    let wall = limits
        .wall_deadline
        .or(defaults.and_then(|d| d.wall_deadline));
    let overridden = limits.deadline.is_some() || limits.wall_deadline.is_some();
    if let (Some(wall), Some(cpu)) = (wall, deadline)
        && wall.0 < cpu.0
        && (defaults.is_none() || overridden)
    {
        let field = if limits.wall_deadline.is_some() {
            "wall_deadline"
        } else {
            "deadline"
        };
        problem(
            format!("{at}.{field}"),
            format!(
                "the wall_deadline ({}ms) must be at least the deadline ({}ms)",
                wall.0.as_millis(),
                cpu.0.as_millis()
            ),
        );
    }
    if let Some(memory) = limits.memory
        && !(ByteSize::mib(1).0..=MAX_PLUGIN_MEMORY.0).contains(&memory.0)
    {
        problem(
            format!("{at}.memory"),
            format!("must be between 1MiB and {MAX_PLUGIN_MEMORY}, not {memory}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, &|_| None) {
            Ok(_) => vec![],
            Err(ps) => ps
                .into_iter()
                .map(|p| format!("{}: {}: {}", p.line, p.field, p.message))
                .collect(),
        }
    }

    const UPSTREAM: &str =
        "upstreams:\n  users:\n    targets:\n      - { url: \"http://127.0.0.1:9001\" }\n";

    #[test]
    fn accepts_the_documented_example() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/example.yaml"
        ))
        .expect("config/example.yaml exists");
        let config = parse(&text, &|_| Some("value".into())).expect("example config is valid");
        assert!(!config.routes.is_empty());
    }

    #[test]
    fn names_a_missing_upstream_with_its_line() {
        let text = format!(
            "{UPSTREAM}routes:\n  - name: a\n    upstream: users\n  - name: b\n    upstream: orders\n"
        );
        assert_eq!(
            problems(&text),
            vec!["9: routes[1].upstream: no upstream named \"orders\""]
        );
    }

    #[test]
    fn workers_past_the_bound_are_named_with_their_line() {
        let text = format!(
            "server:\n  workers: 5000\n{UPSTREAM}routes:\n  - {{ name: a, upstream: users }}\n"
        );
        assert_eq!(
            problems(&text),
            vec!["2: server.workers: at most 1024 (0 is one per CPU)"]
        );
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        let text = format!(
            "{UPSTREAM}routes:\n  - name: a\n    upstream: users\n    match:\n      hots: x\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("9: routes[0].match.hots: unknown field `hots`"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let text = "upstreams:\n  u:\n    timeouts: { connect: 5 }\n    targets: []\n";
        let found = problems(text);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("3: upstreams.u.timeouts.connect: invalid type"),
            "{found:?}"
        );
    }

    #[test]
    fn reports_every_cross_field_problem() {
        let text = "upstreams:\n  u:\n    balance: consistent_hash\n    targets: []\nroutes:\n  - name: a\n    upstream: u\n  - name: a\n    upstream: u\n    match: { path: /a, path_prefix: /b }\n";
        assert_eq!(
            problems(text),
            vec![
                "4: upstreams.u.targets: an upstream needs at least one target",
                "2: upstreams.u.hash_on: balance: consistent_hash needs hash_on (header:NAME, cookie:NAME or client_ip)",
                "8: routes[1].name: another route is already named \"a\"",
                "10: routes[1].match.path: use either path or path_prefix, not both",
            ]
        );
    }

    #[test]
    fn plugin_deadlines_are_bounded_and_the_ceiling_is_above_the_deadline_in_effect() {
        let text = format!(
            "plugins:\n  dir: p\n  limits: {{ deadline: 2m, wall_deadline: 5s }}\n{UPSTREAM}routes:\n  - name: a\n    upstream: users\n    plugins:\n      - {{ name: x, limits: {{ deadline: 10s }} }}\n      - {{ name: y, limits: {{ deadline: 10ms, wall_deadline: 5ms }} }}\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                "3: plugins.limits.deadline: must be at most 60s",
                "3: plugins.limits.wall_deadline: the wall_deadline (5000ms) must be at least the deadline (120000ms)",
                "12: routes[0].plugins[0].limits.deadline: the wall_deadline (5000ms) must be at least the deadline (10000ms)",
                "13: routes[0].plugins[1].limits.wall_deadline: the wall_deadline (5ms) must be at least the deadline (10ms)",
            ]
        );
    }

    #[test]
    fn rewrite_may_only_use_captured_params() {
        let text = format!(
            "{UPSTREAM}routes:\n  - name: a\n    upstream: users\n    match: {{ path: '/u/{{id}}' }}\n    rewrite: '/users/{{uid}}'\n"
        );
        assert_eq!(
            problems(&text),
            vec!["9: routes[0].rewrite: `{uid}` is not captured by this route's match path"]
        );
    }
}
