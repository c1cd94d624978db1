//! An upstream's protection settings: when a target is ejected from its pool
//! (`passive_health`), and how much a pool takes on at once and how much it
//! retries (`circuit_breaker`). Here only their shapes and ranges; the rules
//! themselves are in `crate::balance::health` and `crate::upstream`.

use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;

/// Outlier ejection: a target leaves its pool after failures in a row or a
/// high error rate, for `cooldown`; then one probe request decides whether
/// it returns (half-open).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthConfig {
    /// Requests in a row that got no answer (refused, reset, timed out);
    /// 0 turns this rule off.
    pub max_fails: u32,
    /// `5xx` answers in a row; 0 (the default) turns this rule off.
    pub max_5xx: u32,
    /// Off when absent.
    pub error_rate: Option<ErrorRateConfig>,
    pub cooldown: HumanDuration,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        Self {
            max_fails: 3,
            max_5xx: 0,
            error_rate: None,
            cooldown: HumanDuration(Duration::from_secs(10)),
        }
    }
}

/// Eject a target whose share of failed requests (no answer, or `5xx`)
/// passes `threshold` within a window, once it had `min_requests` there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateConfig {
    /// A share: `0.5` ejects at half the requests failing.
    pub threshold: f64,
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_min_requests() -> u32 {
    20
}

/// How much one pool takes on: requests at once, requests waiting for one
/// of those places, and retries.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Requests sent to the pool's targets and waiting for their response
    /// head at once; 0 (the default) sets no limit.
    pub max_in_flight: u32,
    /// Requests that wait for a place when `max_in_flight` is reached;
    /// past both the client gets `503 upstream_overloaded`.
    pub max_pending: u32,
    pub retry_budget: RetryBudgetConfig,
}

/// Retries within each window are at most `ratio` of the requests sent
/// there, or `min_retries`, whichever is more.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub min_retries: u32,
    pub window: HumanDuration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries: 10,
            window: default_window(),
        }
    }
}

/// Longest counting window for error rates and retry budgets.
const MAX_WINDOW: Duration = Duration::from_secs(600);

impl PassiveHealthConfig {
    /// What is out of range, as (field under `passive_health`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.cooldown.0.is_zero() {
            problems.push(("cooldown".into(), "must be more than 0".into()));
        }
        if let Some(rate) = &self.error_rate {
            if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
                problems.push((
                    "error_rate.threshold".into(),
                    format!(
                        "a share of requests, more than 0 and at most 1 (0.5 for half), not {}",
                        rate.threshold
                    ),
                ));
            }
            window_problems("error_rate.window", rate.window, &mut problems);
            if rate.min_requests == 0 {
                problems.push((
                    "error_rate.min_requests".into(),
                    "must be at least 1".into(),
                ));
            }
        }
        problems
    }
}

impl CircuitBreakerConfig {
    /// What is out of range, as (field under `circuit_breaker`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.max_pending > 0 && self.max_in_flight == 0 {
            problems.push((
                "max_pending".into(),
                "requests only wait for a place when max_in_flight is set".into(),
            ));
        }
        let budget = &self.retry_budget;
        if !(0.0..=1.0).contains(&budget.ratio) {
            problems.push((
                "retry_budget.ratio".into(),
                format!(
                    "a share of requests from 0 to 1 (0.2 for a fifth), not {}",
                    budget.ratio
                ),
            ));
        }
        window_problems("retry_budget.window", budget.window, &mut problems);
        problems
    }
}

fn window_problems(field: &str, window: HumanDuration, problems: &mut Vec<(String, String)>) {
    if window.0 < Duration::from_secs(1) || window.0 > MAX_WINDOW {
        problems.push((field.into(), "must be from 1s to 10m".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_named() {
        let health = PassiveHealthConfig {
            error_rate: Some(ErrorRateConfig {
                threshold: 1.5,
                window: HumanDuration(Duration::from_millis(10)),
                min_requests: 0,
            }),
            cooldown: HumanDuration(Duration::ZERO),
            ..PassiveHealthConfig::default()
        };
        let fields: Vec<String> = health.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "cooldown",
                "error_rate.threshold",
                "error_rate.window",
                "error_rate.min_requests"
            ]
        );
        let breaker = CircuitBreakerConfig {
            max_in_flight: 0,
            max_pending: 5,
            retry_budget: RetryBudgetConfig {
                ratio: -0.1,
                ..RetryBudgetConfig::default()
            },
        };
        let fields: Vec<String> = breaker.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["max_pending", "retry_budget.ratio"]);
        assert!(PassiveHealthConfig::default().problems().is_empty());
        assert!(CircuitBreakerConfig::default().problems().is_empty());
    }
}
