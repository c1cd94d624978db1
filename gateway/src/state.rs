//! Shared counters for plugins (the `state` host service): rate-limit
//! decisions made and recorded in one atomic step, in this process's memory
//! or in Redis. A store outlives reloads, so counters survive config changes.

mod gcra;
mod memory;
mod redis;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use gcra::{Budget, Decision, Limit};

use crate::config::state::StateConfig;
use crate::metrics::RateLimitMetrics;

/// Most limits one decision may take.
pub const MAX_LIMITS: usize = 16;
/// Longest key a plugin may name.
pub const MAX_KEY_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The store did not answer in time or cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Limits the store refuses.
    #[error("{0}")]
    Invalid(String),
}

/// The store a gateway's plugins count in, with what the admin API shows.
pub struct StateStore {
    config: StateConfig,
    backend: Backend,
    stats: Stats,
}

enum Backend {
    Memory(memory::MemoryStore),
    Redis(Box<redis::RedisStore>),
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("backend", &self.config.backend())
            .finish_non_exhaustive()
    }
}

/// Counts for the admin API and `/metrics`, and the pacing of the failure
/// warning.
struct Stats {
    counted: RateLimitMetrics,
    warned: Mutex<Option<(Instant, u64)>>,
    /// The last decision failed: the next that succeeds says so.
    failing: AtomicBool,
}

/// While the store fails, one warning per this long (with how many failed).
const WARN_EVERY: Duration = Duration::from_secs(10);

impl StateStore {
    /// A store for `config`; Redis connects on first use (and reconnects by
    /// itself), so a gateway starts while Redis is down.
    pub fn new(config: &StateConfig) -> Result<Self, String> {
        let backend = match config {
            StateConfig::Memory { max_keys } => {
                Backend::Memory(memory::MemoryStore::new(*max_keys))
            }
            StateConfig::Redis {
                url,
                timeout,
                max_waiting,
            } => Backend::Redis(Box::new(redis::RedisStore::new(
                url,
                timeout.0,
                *max_waiting,
            )?)),
        };
        Ok(Self {
            config: config.clone(),
            backend,
            stats: Stats {
                counted: crate::metrics::metrics().rate_limits(config.backend()),
                warned: Mutex::new(None),
                failing: AtomicBool::new(false),
            },
        })
    }

    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Whether a decision may wait on the network (the call then suspends
    /// its hook, and the wait is not the plugin's time).
    pub fn waits(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Decides whether a request within `limits` is allowed and, if so,
    /// counts it against every one, in one atomic step. Keys are stored
    /// under `namespace` (the plugin's name).
    pub async fn check(&self, namespace: &str, limits: &[Limit]) -> Result<Decision, StateError> {
        validate(limits)?;
        let result = match &self.backend {
            Backend::Memory(store) => Ok(store.check(namespace, limits)),
            Backend::Redis(store) => store.check(namespace, limits).await,
        };
        match &result {
            Ok(decision) if decision.allowed => self.stats.counted.allowed.inc(),
            Ok(_) => self.stats.counted.limited.inc(),
            Err(error) => {
                self.failed(error);
                0
            }
        };
        if result.is_ok() && self.stats.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                backend = self.config.backend(),
                "rate-limit store answering again"
            );
        }
        result
    }

    /// Counts a failure and warns, at most once per `WARN_EVERY`.
    fn failed(&self, error: &StateError) {
        let total = self.stats.counted.errors.inc() + 1;
        self.stats.failing.store(true, Ordering::Relaxed);
        let Ok(mut warned) = self.stats.warned.lock() else {
            return;
        };
        let due = warned.is_none_or(|(at, _)| at.elapsed() >= WARN_EVERY);
        if due {
            let since = warned.map_or(total, |(_, then)| total.saturating_sub(then));
            tracing::warn!(
                backend = self.config.backend(),
                failures = since,
                "rate-limit store unavailable: {error}; routes apply their policy (fail_open or fail_closed)"
            );
            *warned = Some((Instant::now(), total));
        }
    }

    /// What `/admin/state` shows.
    pub fn status(&self) -> serde_json::Value {
        let keys = match &self.backend {
            Backend::Memory(store) => Some(store.len()),
            Backend::Redis(_) => None,
        };
        let counted = &self.stats.counted;
        let mut status = serde_json::json!({
            "backend": self.config.backend(),
            "decisions": counted.allowed.get() + counted.limited.get() + counted.errors.get(),
            "refused": counted.limited.get(),
            "failures": counted.errors.get(),
        });
        if let (Some(keys), Some(map)) = (keys, status.as_object_mut()) {
            map.insert("keys".into(), keys.into());
        }
        status
    }
}

fn validate(limits: &[Limit]) -> Result<(), StateError> {
    let invalid = |why: String| Err(StateError::Invalid(why));
    if limits.is_empty() || limits.len() > MAX_LIMITS {
        return invalid(format!(
            "between 1 and {MAX_LIMITS} limits, not {}",
            limits.len()
        ));
    }
    for limit in limits {
        if limit.key.len() > MAX_KEY_BYTES {
            return invalid(format!(
                "a key of {} bytes (at most {MAX_KEY_BYTES})",
                limit.key.len()
            ));
        }
        if limit.requests == 0 || limit.period_ms == 0 || limit.burst == 0 {
            return invalid("requests, period-ms and burst must be at least 1".into());
        }
        if limit.period_ms > gcra::MAX_PERIOD_MS || limit.burst > gcra::MAX_BURST {
            return invalid(format!(
                "a period over {} ms or a burst over {}",
                gcra::MAX_PERIOD_MS,
                gcra::MAX_BURST
            ));
        }
    }
    Ok(())
}
