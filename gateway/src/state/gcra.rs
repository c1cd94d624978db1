//! The rate-limit arithmetic (GCRA, the generic cell rate algorithm): one
//! stored number per key, the time at which its budget would be full again
//! (the "theoretical arrival time"), so a decision is one read and one
//! write with no timer. Times are in microseconds. The Redis script does the
//! same arithmetic; both take `T` and the tolerance from `Params`.

/// Longest period a limit may have (a leap year).
pub const MAX_PERIOD_MS: u64 = 366 * 86_400_000;
/// Largest burst a limit may have.
pub const MAX_BURST: u64 = 1_000_000_000;
/// The tolerance is capped so that every sum stays exact in a double (Lua's
/// numbers): 2^52 µs is about 142 years.
const MAX_TOLERANCE_US: u64 = 1 << 52;

/// One budget to decide against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: String,
    pub requests: u64,
    pub period_ms: u64,
    pub burst: u64,
}

/// One limit's budget after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub retry_after_ms: u64,
    pub budgets: Vec<Budget>,
}

/// A limit as the algorithm uses it: `interval` between requests on
/// average, and how far ahead of now a key's arrival time may run (`burst`
/// intervals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub interval: u64,
    pub tolerance: u64,
}

impl Params {
    pub fn of(limit: &Limit) -> Self {
        let period_us = limit.period_ms.saturating_mul(1000);
        let interval = (period_us / limit.requests.max(1)).max(1);
        Self {
            interval,
            tolerance: interval
                .saturating_mul(limit.burst.max(1))
                .min(MAX_TOLERANCE_US),
        }
    }
}

/// Decides at `now` over the stored arrival times `stored` (one per limit,
/// `None` for a key not held): the decision, and the arrival times to store
/// when it allows (each kept until its value, when the budget is full again).
pub fn decide(now: u64, limits: &[Limit], stored: &[Option<u64>]) -> (Decision, Vec<u64>) {
    let mut allowed = true;
    let mut retry_after = 0;
    let mut next = Vec::with_capacity(limits.len());
    let mut states = Vec::with_capacity(limits.len());
    for (limit, stored) in limits.iter().zip(stored) {
        let params = Params::of(limit);
        let arrival = stored.unwrap_or(now).max(now);
        let after = arrival.saturating_add(params.interval);
        if after - now > params.tolerance {
            allowed = false;
            retry_after = retry_after.max(after - now - params.tolerance);
        }
        next.push(after);
        states.push((limit, params, arrival, after));
    }
    let budgets = states
        .into_iter()
        .map(|(limit, params, arrival, after)| {
            // What the budget holds once this decision stands.
            let held = if allowed { after } else { arrival };
            Budget {
                limit: limit.burst,
                remaining: params.tolerance.saturating_sub(held - now) / params.interval,
                reset_ms: (held - now).div_ceil(1000),
            }
        })
        .collect();
    let decision = Decision {
        allowed,
        retry_after_ms: retry_after.div_ceil(1000),
        budgets,
    };
    (decision, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn limit(requests: u64, period_ms: u64, burst: u64) -> Limit {
        Limit {
            key: "k".into(),
            requests,
            period_ms,
            burst,
        }
    }

    /// Runs decisions at the given times, storing as a store would.
    fn run(limits: &[Limit], times: &[u64]) -> Vec<Decision> {
        let mut stored = vec![None; limits.len()];
        times
            .iter()
            .map(|&now| {
                let (decision, next) = decide(now, limits, &stored);
                if decision.allowed {
                    stored = next.into_iter().map(Some).collect();
                }
                decision
            })
            .collect()
    }

    #[test]
    fn a_fresh_key_gets_its_burst_at_once_then_the_rate() {
        // 4 per 2s is one per 500ms; a burst of 2.
        let limits = [limit(4, 2000, 2)];
        let at = SECOND * 100;
        let d = run(&limits, &[at, at, at]);
        assert_eq!(
            d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(
            d[0].budgets[0],
            Budget {
                limit: 2,
                remaining: 1,
                reset_ms: 500
            }
        );
        assert_eq!(d[1].budgets[0].remaining, 0);
        assert_eq!(d[2].retry_after_ms, 500);
        // One interval later, exactly one more.
        let d = run(&limits, &[at, at, at + SECOND / 2, at + SECOND / 2]);
        assert_eq!(
            d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
    }

    #[test]
    fn exactly_the_burst_passes_in_a_rush() {
        let limits = [limit(100, 60_000, 20)];
        let times = vec![SECOND; 1000];
        let passed = run(&limits, &times).iter().filter(|d| d.allowed).count();
        assert_eq!(passed, 20);
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        // 10 per second, burst 10, one request every 10 ms for 10 s: the
        // first second's burst plus ten a second after.
        let limits = [limit(10, 1000, 10)];
        let times: Vec<u64> = (0..1000).map(|i| SECOND + i * 10_000).collect();
        let passed = run(&limits, &times).iter().filter(|d| d.allowed).count();
        assert!((109..=110).contains(&passed), "{passed}");
    }

    #[test]
    fn a_refused_request_spends_no_limit() {
        // 2 a second and 3 an hour: the hour refuses the 4th, and the
        // second's budget it would have spent is still there.
        let limits = [limit(2, 1000, 2), limit(3, 3_600_000, 3)];
        let times = [SECOND, 3 * SECOND, 5 * SECOND, 7 * SECOND];
        let d = run(&limits, &times);
        assert_eq!(
            d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(
            d[3].budgets[0].remaining, 2,
            "the per-second budget is untouched"
        );
        assert_eq!(d[3].budgets[1].remaining, 0);
        assert!(d[3].retry_after_ms > 1_000_000);
    }

    #[test]
    fn huge_numbers_saturate_not_overflow() {
        let limits = [limit(1, MAX_PERIOD_MS, MAX_BURST)];
        let (decision, next) = decide(u64::MAX - 10, &limits, &[Some(u64::MAX)]);
        assert!(decision.budgets.len() == 1 && next.len() == 1);
        let fast = [limit(u64::MAX, 1, 1)];
        assert_eq!(Params::of(&fast[0]).interval, 1);
    }
}
