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
///
/// Its circuit is closed (takes traffic), open (ejected by an outlier rule
/// until its cool-down ends) or half-open (after the cool-down: one probe
/// request at a time, whose outcome closes or opens it again).
#[derive(Debug)]
pub struct Health {
    /// Set by active checks; targets start healthy so a cold start serves at once.
    active_up: AtomicBool,
    /// Requests in a row that got no answer.
    failures_in_a_row: AtomicU32,
    /// `5xx` answers in a row.
    errors_in_a_row: AtomicU32,
    /// Ejected until this `now_ms()`, half-open after it; 0 when closed.
    ejected_until: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    /// Requests and failures in the current error-rate window.
    window: Window,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            active_up: AtomicBool::new(true),
            failures_in_a_row: AtomicU32::new(0),
            errors_in_a_row: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            window: Window::default(),
        }
    }
}

/// A pool's outlier rules (`passive_health`).
#[derive(Debug, Clone, Copy)]
pub struct Ejection {
    /// Requests in a row without an answer; 0 turns the rule off.
    pub max_fails: u32,
    /// `5xx` answers in a row; 0 turns the rule off.
    pub max_5xx: u32,
    pub error_rate: Option<ErrorRate>,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ErrorRate {
    pub threshold: f64,
    pub window: Duration,
    pub min_requests: u32,
}

impl Ejection {
    /// Whether a `5xx` answer counts as a failure under these rules.
    pub fn counts_5xx(&self) -> bool {
        self.max_5xx > 0 || self.error_rate.is_some()
    }
}

/// How one request to a target went, as its health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer (a `5xx` too, unless the rules count those).
    Answered,
    /// No answer: refused, reset, timed out.
    NoAnswer,
    /// A `5xx` answer, under rules that count those.
    ServerError,
}

/// What one outcome did to a target's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Ejected: by a rule while closed, or by a failed probe.
    Opened,
    /// Its half-open probe was answered: back in the pool.
    Closed,
}

/// A target's circuit, as `/admin/pools` and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl Health {
    pub fn circuit(&self, now: u64) -> Circuit {
        match self.ejected_until.load(Relaxed) {
            0 => Circuit::Closed,
            until if now < until => Circuit::Open,
            _ => Circuit::HalfOpen,
        }
    }

    /// Whether a request may be sent: active checks up, and the circuit
    /// closed, or half-open with no probe in flight.
    pub fn is_available(&self, now: u64) -> bool {
        self.active_up.load(Relaxed)
            && match self.circuit(now) {
                Circuit::Closed => true,
                Circuit::Open => false,
                Circuit::HalfOpen => !self.probing.load(Relaxed),
            }
    }

    /// A request is being sent; true when it is the half-open probe (the
    /// caller ends the probe with `end_probe` whatever its outcome).
    pub fn start_request(&self, now: u64) -> bool {
        self.circuit(now) == Circuit::HalfOpen
            && self
                .probing
                .compare_exchange(false, true, Relaxed, Relaxed)
                .is_ok()
    }

    pub fn end_probe(&self) {
        self.probing.store(false, Relaxed);
    }

    /// Counts one request's outcome under `rule`, and says when that opened
    /// or closed the target's circuit. While half-open only the probe (`probe`) decides: its answer
    /// closes the circuit, its failure opens it again at once; requests
    /// sent before the ejection count for nothing.
    pub fn record(&self, outcome: Outcome, rule: &Ejection, probe: bool) -> Option<Transition> {
        let now = now_ms();
        let until = self.ejected_until.load(Relaxed);
        let circuit = match until {
            0 => Circuit::Closed,
            until if now < until => Circuit::Open,
            _ => Circuit::HalfOpen,
        };
        if circuit != Circuit::Closed && !probe {
            return None;
        }
        if let (Some(rate), Circuit::Closed) = (&rule.error_rate, circuit) {
            let failed = outcome != Outcome::Answered;
            let (requests, failures) = self.window.add(now, rate.window, failed);
            if failed
                && requests >= rate.min_requests
                && f64::from(failures) >= rate.threshold * f64::from(requests)
            {
                return self.eject(now, until, rule);
            }
        }
        match (outcome, circuit) {
            (Outcome::Answered, _) => {
                reset(&self.failures_in_a_row);
                reset(&self.errors_in_a_row);
                // The probe came back: the target returns to the pool.
                (circuit == Circuit::HalfOpen
                    && self
                        .ejected_until
                        .compare_exchange(until, 0, Relaxed, Relaxed)
                        .is_ok())
                .then_some(Transition::Closed)
            }
            (_, Circuit::HalfOpen | Circuit::Open) => self.eject(now, until, rule),
            (Outcome::NoAnswer, Circuit::Closed) => {
                in_a_row(&self.failures_in_a_row, rule.max_fails)
                    .then(|| self.eject(now, until, rule))
                    .flatten()
            }
            (Outcome::ServerError, Circuit::Closed) => {
                in_a_row(&self.errors_in_a_row, rule.max_5xx)
                    .then(|| self.eject(now, until, rule))
                    .flatten()
            }
        }
    }

    /// Opens the circuit from the state `from` it was read in; nothing when
    /// another request changed it first (so one trip counts once).
    fn eject(&self, now: u64, from: u64, rule: &Ejection) -> Option<Transition> {
        let cooldown = u64::try_from(rule.cooldown.as_millis()).unwrap_or(u64::MAX);
        let until = now.saturating_add(cooldown).max(1);
        let opened = self
            .ejected_until
            .compare_exchange(from, until, Relaxed, Relaxed)
            .is_ok();
        if opened {
            // The counts in a row stay for the admin API; the probe's
            // answer clears them.
            self.window.clear(now);
        }
        opened.then_some(Transition::Opened)
    }

    pub fn set_active(&self, up: bool) {
        self.active_up.store(up, Relaxed);
    }

    pub fn is_active_up(&self) -> bool {
        self.active_up.load(Relaxed)
    }

    /// How much longer an ejection lasts (zero when not ejected).
    pub fn ejected_for(&self, now: u64) -> Duration {
        Duration::from_millis(self.ejected_until.load(Relaxed).saturating_sub(now))
    }

    /// (requests without an answer, `5xx` answers) in a row so far.
    pub fn in_a_row(&self) -> (u32, u32) {
        (
            self.failures_in_a_row.load(Relaxed),
            self.errors_in_a_row.load(Relaxed),
        )
    }
}

fn reset(count: &AtomicU32) {
    if count.load(Relaxed) != 0 {
        count.store(0, Relaxed);
    }
}

/// Adds one to `count`; true when that reaches `max` (never when `max` is 0).
fn in_a_row(count: &AtomicU32, max: u32) -> bool {
    max > 0 && count.fetch_add(1, Relaxed).saturating_add(1) >= max
}

/// Two counts over a tumbling window: they start again from zero once the
/// window has passed. Updates racing a restart may land in either window.
#[derive(Debug, Default)]
pub struct Window {
    started: AtomicU64,
    first: AtomicU32,
    second: AtomicU32,
}

impl Window {
    /// Counts one event in `first`, and in `second` too when `both`;
    /// returns the two counts.
    pub fn add(&self, now: u64, length: Duration, both: bool) -> (u32, u32) {
        self.roll(now, length);
        let first = self.first.fetch_add(1, Relaxed).saturating_add(1);
        let second = if both {
            self.second.fetch_add(1, Relaxed).saturating_add(1)
        } else {
            self.second.load(Relaxed)
        };
        (first, second)
    }

    /// Counts one event in `second` if that keeps it within `allowed` of
    /// the current `first` count; false when it would not.
    pub fn add_second_within(
        &self,
        now: u64,
        length: Duration,
        allowed: impl Fn(u32) -> u32,
    ) -> bool {
        self.roll(now, length);
        let limit = allowed(self.first.load(Relaxed));
        self.second
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }

    fn roll(&self, now: u64, length: Duration) {
        let started = self.started.load(Relaxed);
        let length = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(started) >= length
            && self
                .started
                .compare_exchange(started, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.first.store(0, Relaxed);
            self.second.store(0, Relaxed);
        }
    }

    fn clear(&self, now: u64) {
        self.started.store(now, Relaxed);
        self.first.store(0, Relaxed);
        self.second.store(0, Relaxed);
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

    fn is_opened(transition: Option<Transition>) -> bool {
        transition == Some(Transition::Opened)
    }

    fn rule(max_fails: u32, max_5xx: u32, error_rate: Option<ErrorRate>) -> Ejection {
        Ejection {
            max_fails,
            max_5xx,
            error_rate,
            cooldown: Duration::from_secs(60),
        }
    }

    #[test]
    fn passive_ejection_after_max_fails_in_a_row() {
        let h = Health::default();
        let rule = rule(2, 0, None);
        assert!(!is_opened(h.record(Outcome::NoAnswer, &rule, false)));
        h.record(Outcome::Answered, &rule, false);
        assert!(!is_opened(h.record(Outcome::NoAnswer, &rule, false)));
        assert!(
            h.is_available(now_ms()),
            "a success in between resets the count"
        );
        assert!(
            is_opened(h.record(Outcome::NoAnswer, &rule, false)),
            "the second in a row ejects"
        );
        assert!(!h.is_available(now_ms()));
        assert_eq!(h.circuit(now_ms()), Circuit::Open);
        assert!(
            h.is_available(now_ms() + 61_000),
            "available again after the cool-down"
        );
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let rule = Ejection {
            cooldown: Duration::from_millis(50),
            ..rule(1, 0, None)
        };
        let h = Health::default();
        assert!(is_opened(h.record(Outcome::NoAnswer, &rule, false)));
        assert!(
            !is_opened(h.record(Outcome::NoAnswer, &rule, false)),
            "a trip counts once"
        );
        std::thread::sleep(Duration::from_millis(70));
        let now = now_ms();
        assert_eq!(h.circuit(now), Circuit::HalfOpen);
        assert!(h.is_available(now));
        assert!(h.start_request(now), "the first request is the probe");
        assert!(!h.is_available(now), "one probe at a time");
        assert!(!h.start_request(now));
        // Requests sent before the ejection decide nothing.
        assert!(!is_opened(h.record(Outcome::Answered, &rule, false)));
        assert!(!is_opened(h.record(Outcome::NoAnswer, &rule, false)));
        assert_eq!(h.circuit(now_ms()), Circuit::HalfOpen);
        // The probe fails: open again, for another cool-down.
        assert!(is_opened(h.record(Outcome::NoAnswer, &rule, true)));
        h.end_probe();
        assert_eq!(h.circuit(now_ms()), Circuit::Open);
        std::thread::sleep(Duration::from_millis(70));
        let now = now_ms();
        assert!(h.start_request(now));
        assert_eq!(
            h.record(Outcome::Answered, &rule, true),
            Some(Transition::Closed)
        );
        h.end_probe();
        assert_eq!(h.circuit(now_ms()), Circuit::Closed, "the probe succeeded");
        assert!(h.is_available(now_ms()));
    }

    #[test]
    fn server_errors_eject_only_under_rules_that_count_them() {
        let h = Health::default();
        let rule = rule(0, 3, None);
        assert!(rule.counts_5xx());
        assert!(!is_opened(h.record(Outcome::ServerError, &rule, false)));
        assert!(!is_opened(h.record(Outcome::ServerError, &rule, false)));
        assert!(is_opened(h.record(Outcome::ServerError, &rule, false)));
        assert!(!self::rule(3, 0, None).counts_5xx());
    }

    #[test]
    fn an_error_rate_ejects_once_enough_requests_were_seen() {
        let h = Health::default();
        let rate = ErrorRate {
            threshold: 0.5,
            window: Duration::from_secs(60),
            min_requests: 10,
        };
        let rule = rule(0, 0, Some(rate));
        // Alternating: never two failures in a row, but half of them fail.
        for i in 0..9 {
            let outcome = if i % 2 == 0 {
                Outcome::Answered
            } else {
                Outcome::ServerError
            };
            assert!(
                !is_opened(h.record(outcome, &rule, false)),
                "request {i}: too few yet"
            );
        }
        assert!(
            is_opened(h.record(Outcome::ServerError, &rule, false)),
            "5 of 10 failed"
        );
        let calm = Health::default();
        for i in 0..30 {
            let outcome = if i % 4 == 0 {
                Outcome::NoAnswer
            } else {
                Outcome::Answered
            };
            assert!(
                !is_opened(calm.record(outcome, &rule, false)),
                "a quarter stays under a half"
            );
        }
    }

    #[test]
    fn a_window_starts_again_once_it_has_passed() {
        let w = Window::default();
        let length = Duration::from_millis(100);
        assert_eq!(w.add(1_000, length, true), (1, 1));
        assert_eq!(w.add(1_050, length, false), (2, 1));
        assert_eq!(w.add(1_100, length, false), (1, 0));
        assert!(w.add_second_within(1_120, length, |first| first + 1));
        assert!(w.add_second_within(1_120, length, |first| first + 1));
        assert!(!w.add_second_within(1_120, length, |first| first + 1));
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
