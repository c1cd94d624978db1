//! `state:`: where plugins' shared counters live (the `state` host service,
//! used by rate limits). In the gateway's memory by default; in Redis when
//! several gateways must hold one limit.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StateConfig {
    /// Counters in this process, shared by all its threads.
    Memory {
        /// Most keys held at once; when full, the key whose budget is
        /// closest to full again is forgotten first.
        #[serde(default = "default_max_keys")]
        max_keys: usize,
    },
    /// Counters in one Redis server, shared by every gateway using it.
    Redis {
        /// `redis://[user:password@]host:port[/db]`; `${ENV}` works here.
        url: RedisUrl,
        /// Longest wait for one decision (connecting included); past it the
        /// route's policy applies.
        #[serde(default = "default_timeout")]
        timeout: HumanDuration,
        /// Most decisions waiting on Redis at once; more are not sent and
        /// the route's policy applies at once. Each waiting request holds a
        /// plugin instance, so this keeps a slow Redis from taking them all.
        #[serde(default = "default_max_waiting")]
        max_waiting: usize,
    },
}

/// A Redis URL, which may hold a password: shown without it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    /// The URL with any `user:password@` replaced by `***@`, whatever the
    /// URL's shape (a mistyped scheme included): Redis URLs have no `@`
    /// after the host, and a password may hold an unescaped `/` or `:`, so
    /// everything before the last `@` is hidden, but for a `scheme://`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(at) = url.rfind('@') else {
            return url.clone();
        };
        let host = &url[at + 1..];
        match url[..at].split_once("://") {
            Some((scheme, _)) if !scheme.contains(['@', ':', '/']) => {
                format!("{scheme}://***@{host}")
            }
            _ => format!("***@{host}"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self::Memory {
            max_keys: default_max_keys(),
        }
    }
}

fn default_max_keys() -> usize {
    1_000_000
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(20))
}

fn default_max_waiting() -> usize {
    256
}

/// Most decisions a config may let wait on Redis at once.
const MAX_WAITING: usize = 10_000;

/// Most keys an in-process store may be given (a store sweeps a shard of
/// them now and then, under its lock).
const MAX_KEYS: usize = 10_000_000;
/// Longest `timeout`: a request waits at most this on the store.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

impl StateConfig {
    /// What is wrong with it, as (field below `state`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match self {
            Self::Memory { max_keys } => {
                if !(1..=MAX_KEYS).contains(max_keys) {
                    problems.push((
                        "max_keys".into(),
                        format!("must be between 1 and {MAX_KEYS}"),
                    ));
                }
            }
            Self::Redis {
                url,
                timeout,
                max_waiting,
            } => {
                if let Err(why) = check_url(url) {
                    problems.push(("url".into(), why));
                }
                if timeout.0.is_zero() || timeout.0 > MAX_TIMEOUT {
                    problems.push((
                        "timeout".into(),
                        "must be more than 0 and at most 10s".into(),
                    ));
                }
                if !(1..=MAX_WAITING).contains(max_waiting) {
                    problems.push((
                        "max_waiting".into(),
                        format!("must be between 1 and {MAX_WAITING}"),
                    ));
                }
            }
        }
        problems
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Redis { .. } => "redis",
        }
    }
}

/// Messages show the URL without its password.
fn check_url(url: &RedisUrl) -> Result<(), String> {
    let shown = url.redacted();
    let text = url.0.as_str();
    if text.starts_with("rediss://") {
        return Err(
            "TLS to Redis (rediss://) is not built in yet; use redis:// on a trusted network"
                .into(),
        );
    }
    if !["redis://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| text.starts_with(scheme))
    {
        return Err(format!(
            "`{shown}` is not a Redis URL; write it like redis://127.0.0.1:6379"
        ));
    }
    redis::Client::open(text).map(drop).map_err(|e| {
        let why = e.to_string().replace(text, &shown);
        format!(
            "`{shown}` is not a usable Redis URL ({why}); write it like redis://[user:password@]host:port[/db], with `@`, `:` and `/` in the password URL-encoded"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<StateConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn memory_is_the_default_and_redis_needs_a_url() {
        assert_eq!(
            StateConfig::default(),
            parse(serde_json::json!({ "backend": "memory" })).unwrap_or_default()
        );
        let redis =
            parse(serde_json::json!({ "backend": "redis", "url": "redis://127.0.0.1:6379" }));
        assert!(
            matches!(&redis, Ok(StateConfig::Redis { timeout, .. }) if timeout.0 == Duration::from_millis(20)),
            "{redis:?}"
        );
        assert!(parse(serde_json::json!({ "backend": "redis" })).is_err());
        let unknown = parse(serde_json::json!({ "backend": "etcd" }))
            .err()
            .unwrap_or_default();
        assert!(
            unknown.contains("memory") && unknown.contains("redis"),
            "{unknown}"
        );
        let typo = parse(serde_json::json!({ "backend": "memory", "max_key": 3 }))
            .err()
            .unwrap_or_default();
        assert!(typo.contains("max_key"), "{typo}");
    }

    #[test]
    fn bad_urls_and_timeouts_are_refused_by_field() {
        let config = |url: &str, timeout_ms: u64| StateConfig::Redis {
            url: RedisUrl(url.into()),
            timeout: HumanDuration(Duration::from_millis(timeout_ms)),
            max_waiting: 256,
        };
        assert!(config("redis://127.0.0.1:6379/0", 20).problems().is_empty());
        let fields = |c: StateConfig| c.problems().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(fields(config("http://x", 20)), ["url"]);
        assert_eq!(fields(config("rediss://x:6380", 20)), ["url"]);
        assert_eq!(fields(config("redis://127.0.0.1:6379", 0)), ["timeout"]);
        assert_eq!(
            fields(config("redis://127.0.0.1:6379", 11_000)),
            ["timeout"]
        );
        assert_eq!(fields(StateConfig::Memory { max_keys: 0 }), ["max_keys"]);
    }

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        let url = RedisUrl("redis://app:s3cr/t@10.0.0.5:6379/0".into());
        assert_eq!(url.redacted(), "redis://***@10.0.0.5:6379/0");
        assert!(!format!("{url:?}").contains("s3cr"));
        let bad = StateConfig::Redis {
            url: RedisUrl("redis://app:s3cr/t@10.0.0.5:6379/0".into()),
            timeout: HumanDuration(Duration::from_millis(20)),
            max_waiting: 256,
        };
        for (_, message) in bad.problems() {
            assert!(!message.contains("s3cr"), "{message}");
        }
        assert!(!format!("{bad:?}").contains("s3cr"));
        assert_eq!(
            RedisUrl("redis://127.0.0.1:6379".into()).redacted(),
            "redis://127.0.0.1:6379"
        );
        // Mistyped schemes, or none, hide the password too.
        for typo in [
            "redis//:s3cr@127.0.0.1:6379",
            "redis:/:s3cr@127.0.0.1:6379",
            "s3cr@127.0.0.1:6379",
            "redis://u:s3cr@ho@st:1",
        ] {
            let url = RedisUrl(typo.into());
            assert!(
                !url.redacted().contains("s3cr"),
                "{typo}: {}",
                url.redacted()
            );
            let config = StateConfig::Redis {
                url,
                timeout: HumanDuration(Duration::from_millis(20)),
                max_waiting: 256,
            };
            for (_, message) in config.problems() {
                assert!(!message.contains("s3cr"), "{message}");
            }
        }
    }
}
