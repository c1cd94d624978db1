//! `state:`: where plugins' shared counters live (the `state` host service,
//! used by rate limits). In the gateway's memory by default; in Redis when
//! several gateways must hold one limit.

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
        url: String,
        /// Longest wait for one decision (connecting included); past it the
        /// route's policy applies.
        #[serde(default = "default_timeout")]
        timeout: HumanDuration,
    },
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

/// Most keys an in-process store may be given.
const MAX_KEYS: usize = 100_000_000;
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
            Self::Redis { url, timeout } => {
                if let Err(why) = check_url(url) {
                    problems.push(("url".into(), why));
                }
                if timeout.0.is_zero() || timeout.0 > MAX_TIMEOUT {
                    problems.push((
                        "timeout".into(),
                        "must be more than 0 and at most 10s".into(),
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

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        return Err(
            "TLS to Redis (rediss://) is not built in yet; use redis:// on a trusted network"
                .into(),
        );
    }
    if !url.starts_with("redis://")
        && !url.starts_with("redis+unix://")
        && !url.starts_with("unix://")
    {
        return Err(format!(
            "`{url}` is not a Redis URL; write it like redis://127.0.0.1:6379"
        ));
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("`{url}` is not a usable Redis URL: {e}"))
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
            url: url.into(),
            timeout: HumanDuration(Duration::from_millis(timeout_ms)),
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
}
