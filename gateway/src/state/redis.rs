//! The Redis store: one Lua script per decision (sent by its SHA with
//! `EVALSHA`, loaded once when Redis does not know it), so reading,
//! deciding and writing are one atomic step and one round trip, over one
//! multiplexed connection that reconnects by itself. Redis's own clock is
//! used, so gateways whose clocks differ still share one budget.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Semaphore;

use super::StateError;
use super::gcra::{self, Decision, Limit, Params};
use crate::config::state::RedisUrl;

/// KEYS: one per limit. ARGV: each limit's interval and tolerance (µs).
/// Returns Redis's time (µs) and each key's stored arrival time (0 when
/// none, or when what is stored is not a plausible one: a key someone else
/// wrote is overwritten, never trusted); stores the new ones only when every
/// limit allows. The same rule as `gcra::decide`, which turns the reply into
/// the decision.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local reply = { now }
local next = {}
local allowed = true
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local stored = tonumber(redis.call('GET', key) or '0') or 0
  if stored ~= stored or stored < 0 or stored > now + tolerance + interval then
    stored = 0
  end
  reply[i + 1] = stored
  local arrival = math.max(stored, now)
  next[i] = arrival + interval
  if next[i] - now > tolerance then allowed = false end
end
if allowed then
  for i, key in ipairs(KEYS) do
    local ttl = math.max(1, math.ceil((next[i] - now) / 1000))
    redis.call('SET', key, string.format('%d', next[i]), 'PX', string.format('%d', ttl))
  end
end
return reply
";

/// After a failure that is not a timeout, a new connection is made at most
/// this often (the connection's own reconnect covers broken sockets only; a
/// refused login or `SELECT` would otherwise stick).
const REBUILD_EVERY: Duration = Duration::from_secs(1);

pub struct RedisStore {
    client: redis::Client,
    timeout: Duration,
    script: redis::Script,
    /// Decisions that may wait at once; each holds a plugin instance.
    waiting: Semaphore,
    max_waiting: usize,
    /// Made on first use, inside the runtime (it connects lazily), and
    /// made again after a failure that is not a timeout.
    connection: Mutex<Option<(ConnectionManager, Instant)>>,
}

impl RedisStore {
    pub fn new(url: &RedisUrl, timeout: Duration, max_waiting: usize) -> Result<Self, String> {
        let client = redis::Client::open(url.0.as_str())
            .map_err(|_| format!("`{}` is not a usable Redis URL", url.redacted()))?;
        Ok(Self {
            client,
            timeout,
            script: redis::Script::new(SCRIPT),
            waiting: Semaphore::new(max_waiting),
            max_waiting,
            connection: Mutex::new(None),
        })
    }

    fn connection(&self) -> Result<ConnectionManager, StateError> {
        let mut held = self
            .connection
            .lock()
            .map_err(|_| StateError::Unavailable("redis: connection lock poisoned".into()))?;
        if let Some((connection, _)) = held.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt per connect: a refused connection fails the
            // decision at once (its route's policy applies), not after
            // retries longer than `timeout`; `forget_connection` retries.
            .set_number_of_retries(0);
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StateError::Unavailable(format!("redis: {e}")))?;
        *held = Some((made.clone(), Instant::now()));
        Ok(made)
    }

    /// Drops a connection that failed otherwise than by timing out, so the
    /// next decision connects afresh (not more often than `REBUILD_EVERY`).
    fn forget_connection(&self) {
        if let Ok(mut held) = self.connection.lock()
            && held
                .as_ref()
                .is_some_and(|(_, made)| made.elapsed() >= REBUILD_EVERY)
        {
            *held = None;
        }
    }

    pub async fn check(&self, namespace: &str, limits: &[Limit]) -> Result<Decision, StateError> {
        let Ok(_permit) = self.waiting.try_acquire() else {
            return Err(StateError::Unavailable(format!(
                "{} decisions are already waiting on redis (state.max_waiting)",
                self.max_waiting
            )));
        };
        let mut connection = self.connection()?;
        let mut call = self.script.prepare_invoke();
        for limit in limits {
            call.key(format!("gw:rl:{namespace}:{}", limit.key));
        }
        for limit in limits {
            let params = Params::of(limit);
            call.arg(params.interval).arg(params.tolerance);
        }
        let reply: Vec<u64> =
            tokio::time::timeout(self.timeout, call.invoke_async(&mut connection))
                .await
                .map_err(|_| {
                    StateError::Unavailable(format!(
                        "redis did not answer within {:?}",
                        self.timeout
                    ))
                })?
                .map_err(|e| {
                    self.forget_connection();
                    StateError::Unavailable(format!("redis: {e}"))
                })?;
        let Some((&now, stored)) = reply.split_first() else {
            return Err(StateError::Unavailable(
                "redis: an empty reply to the script".into(),
            ));
        };
        if stored.len() != limits.len() {
            return Err(StateError::Unavailable(
                "redis: a reply of the wrong length".into(),
            ));
        }
        let stored: Vec<Option<u64>> = stored.iter().map(|&t| (t > 0).then_some(t)).collect();
        Ok(gcra::decide(now, limits, &stored).0)
    }
}
