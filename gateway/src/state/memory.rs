//! The in-process store: arrival times in sharded maps shared by every
//! worker thread. A key is dropped once its budget is full again (it then
//! means the same as no key); when a shard is full, of a few keys sampled
//! the one whose budget is closest to full is forgotten (which grants the
//! least), as Redis samples for its own eviction: constant work per
//! request, however large the store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::gcra::{self, Decision, Limit};

const SHARDS: usize = 64;
/// Each shard drops its expired keys once per this many writes.
const SWEEP_EVERY: u32 = 4096;
/// Keys sampled for eviction when a shard is full.
const EVICTION_SAMPLE: usize = 8;

pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    per_shard: usize,
    /// Times are counted from here, in µs.
    epoch: Instant,
}

#[derive(Default)]
struct Shard {
    arrivals: HashMap<String, u64>,
    writes: u32,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.arrivals.len()))
            .sum()
    }

    /// One atomic decision: the shards of all keys are held together
    /// (locked in index order, so two decisions cannot deadlock).
    pub fn check(&self, namespace: &str, limits: &[Limit]) -> Decision {
        let keys: Vec<String> = limits
            .iter()
            .map(|l| format!("{namespace}\u{0}{}", l.key))
            .collect();
        let shard_of: Vec<usize> = keys
            .iter()
            .map(|k| (self.hasher.hash_one(k) as usize) % SHARDS)
            .collect();
        let mut order = shard_of.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = order
            .iter()
            .map(|&i| (i, self.shards[i].lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        let now = self.now();
        let stored: Vec<Option<u64>> = keys
            .iter()
            .zip(&shard_of)
            .map(|(key, &i)| {
                held(&mut guards, i)
                    .arrivals
                    .get(key)
                    .copied()
                    .filter(|&t| t > now)
            })
            .collect();
        let (decision, next) = gcra::decide(now, limits, &stored);
        if decision.allowed {
            for ((key, &i), arrival) in keys.iter().zip(&shard_of).zip(next) {
                held(&mut guards, i).store(key, arrival, now, self.per_shard, &keys);
            }
        }
        decision
    }

    fn now(&self) -> u64 {
        // Starts at one second so "no key" (the arrival time `now`) is never 0.
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX) + 1_000_000
    }
}

/// Shard `i` among the locked ones (every key's shard is locked).
fn held<'a>(guards: &'a mut [(usize, MutexGuard<'_, Shard>)], i: usize) -> &'a mut Shard {
    let at = guards
        .iter()
        .position(|(index, _)| *index == i)
        .unwrap_or(0);
    &mut guards[at].1
}

impl Shard {
    /// Stores `key`; when the shard is full, another key goes, never one
    /// of the decision's own (`deciding`).
    fn store(&mut self, key: &str, arrival: u64, now: u64, capacity: usize, deciding: &[String]) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.arrivals.retain(|_, &mut t| t > now);
        }
        if let Some(stored) = self.arrivals.get_mut(key) {
            *stored = arrival;
            return;
        }
        if self.arrivals.len() >= capacity {
            // The map's order is random per store (its hasher's seed), so the
            // first keys met are a sample.
            let soonest = self
                .arrivals
                .iter()
                .filter(|(k, _)| !deciding.contains(k))
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone());
            if let Some(soonest) = soonest {
                self.arrivals.remove(&soonest);
            }
        }
        self.arrivals.insert(key.to_string(), arrival);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(key: &str, requests: u64) -> Limit {
        Limit {
            key: key.into(),
            requests,
            period_ms: 3_600_000,
            burst: requests,
        }
    }

    #[test]
    fn namespaces_keep_plugins_apart() {
        let store = MemoryStore::new(1000);
        let one = [limit("client", 1)];
        assert!(store.check("a", &one).allowed);
        assert!(!store.check("a", &one).allowed);
        assert!(
            store.check("b", &one).allowed,
            "plugin b has its own counter"
        );
    }

    #[test]
    fn the_store_stays_within_its_bound() {
        let store = MemoryStore::new(SHARDS * 2);
        for i in 0..10_000 {
            store.check("p", &[limit(&format!("client-{i}"), 5)]);
        }
        assert!(store.len() <= SHARDS * 2, "{}", store.len());
    }

    #[test]
    fn decisions_across_threads_are_exact() {
        let store = std::sync::Arc::new(MemoryStore::new(1000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| {
                            store
                                .check("p", &[limit("one", 100), limit("two", 1000)])
                                .allowed
                        })
                        .count()
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(allowed, 100);
    }
}
