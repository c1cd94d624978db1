//! Whether a target may receive traffic: active checks and passive ejection.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Milliseconds since the process first asked; a cheap, monotonic clock for atomics.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One target's health, shared by the request path and the checker task.
#[derive(Debug)]
pub struct Health {
    /// Set by active checks; targets start healthy so a cold start serves at once.
    active_up: AtomicBool,
    /// Failures in a row seen by real requests.
    failures_in_a_row: AtomicU32,
    /// Passively ejected until this `now_ms()`; 0 when not ejected.
    ejected_until: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            active_up: AtomicBool::new(true),
            failures_in_a_row: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }
}

/// Passive ejection settings of one pool.
#[derive(Debug, Clone, Copy)]
pub struct Ejection {
    /// 0 disables passive ejection.
    pub max_fails: u32,
    pub cooldown: Duration,
}

impl Health {
    pub fn is_available(&self, now: u64) -> bool {
        self.active_up.load(Relaxed) && now >= self.ejected_until.load(Relaxed)
    }

    pub fn record_success(&self) {
        if self.failures_in_a_row.load(Relaxed) != 0 {
            self.failures_in_a_row.store(0, Relaxed);
        }
    }

    /// Counts a failed request; ejects the target once it reaches `max_fails`
    /// in a row. After the cool-down one more failure ejects it again at once.
    pub fn record_failure(&self, rule: Ejection) {
        if rule.max_fails == 0 {
            return;
        }
        let failures = self.failures_in_a_row.fetch_add(1, Relaxed) + 1;
        if failures >= rule.max_fails {
            let cooldown = u64::try_from(rule.cooldown.as_millis()).unwrap_or(u64::MAX);
            let until = now_ms().saturating_add(cooldown);
            self.ejected_until.store(until, Relaxed);
        }
    }

    pub fn set_active(&self, up: bool) {
        self.active_up.store(up, Relaxed);
    }

    pub fn is_active_up(&self) -> bool {
        self.active_up.load(Relaxed)
    }

    /// How much longer a passive ejection lasts (zero when not ejected),
    /// and the failures in a row seen so far.
    pub fn ejection(&self, now: u64) -> (Duration, u32) {
        let until = self.ejected_until.load(Relaxed);
        (
            Duration::from_millis(until.saturating_sub(now)),
            self.failures_in_a_row.load(Relaxed),
        )
    }
}

/// Turns a stream of probe results into up/down with thresholds, like
/// nginx's `rise`/`fall` and Envoy's healthy/unhealthy thresholds.
#[derive(Debug, Default)]
pub struct Thresholds {
    successes: u32,
    failures: u32,
}

impl Thresholds {
    /// Feeds one probe result; returns the new state when it flips.
    pub fn observe(
        &mut self,
        ok: bool,
        currently_up: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!currently_up && self.successes >= healthy_after).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (currently_up && self.failures >= unhealthy_after).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_ejection_after_max_fails_in_a_row() {
        let h = Health::default();
        let rule = Ejection {
            max_fails: 2,
            cooldown: Duration::from_secs(60),
        };
        h.record_failure(rule);
        h.record_success();
        h.record_failure(rule);
        assert!(
            h.is_available(now_ms()),
            "a success in between resets the count"
        );
        h.record_failure(rule);
        assert!(!h.is_available(now_ms()));
        assert!(
            h.is_available(now_ms() + 61_000),
            "available again after the cool-down"
        );
    }

    #[test]
    fn thresholds_flip_only_after_enough_results_in_a_row() {
        let mut t = Thresholds::default();
        assert_eq!(t.observe(false, true, 2, 3), None);
        assert_eq!(t.observe(false, true, 2, 3), None);
        assert_eq!(t.observe(true, true, 2, 3), None);
        assert_eq!(t.observe(false, true, 2, 3), None);
        assert_eq!(t.observe(false, true, 2, 3), None);
        assert_eq!(t.observe(false, true, 2, 3), Some(false));
        assert_eq!(t.observe(true, false, 2, 3), None);
        assert_eq!(t.observe(true, false, 2, 3), Some(true));
    }
}
