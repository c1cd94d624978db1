//! How much one pool takes on (`circuit_breaker`): requests in flight at
//! once, requests waiting for one of those places, and a retry budget that
//! keeps retries to a share of the requests sent.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::balance::health::{Window, now_ms};
use crate::config::breaker::CircuitBreakerConfig;

#[derive(Debug)]
pub struct Breaker {
    places: Option<Places>,
    budget: RetryBudget,
}

/// `max_in_flight` places, and up to `max_pending` requests waiting for one.
#[derive(Debug)]
struct Places {
    free: Semaphore,
    max_pending: usize,
    pending: AtomicUsize,
}

#[derive(Debug)]
struct RetryBudget {
    ratio: f64,
    min_retries: u32,
    window: Duration,
    /// Requests sent (first) and retries (second) in the current window.
    counts: Window,
}

/// The pool's places and waiting line are full.
#[derive(Debug)]
pub struct Full;

/// A request's place in the pool, given back when it drops; `waited` is how
/// long it queued for it.
pub struct Place<'a> {
    _permit: Option<SemaphorePermit<'a>>,
    pub waited: Duration,
}

impl Breaker {
    pub fn new(config: &CircuitBreakerConfig) -> Self {
        let places = (config.max_in_flight > 0).then(|| Places {
            free: Semaphore::new(config.max_in_flight as usize),
            max_pending: config.max_pending as usize,
            pending: AtomicUsize::new(0),
        });
        let budget = &config.retry_budget;
        Self {
            places,
            budget: RetryBudget {
                ratio: budget.ratio,
                min_retries: budget.min_retries,
                window: budget.window.0,
                counts: Window::default(),
            },
        }
    }

    /// A place for one request: at once when one is free, else after
    /// waiting at most `wait` in a line of at most `max_pending`.
    pub async fn admit(&self, wait: Duration) -> Result<Place<'_>, Full> {
        let Some(places) = &self.places else {
            return Ok(Place {
                _permit: None,
                waited: Duration::ZERO,
            });
        };
        if let Ok(permit) = places.free.try_acquire() {
            return Ok(Place {
                _permit: Some(permit),
                waited: Duration::ZERO,
            });
        }
        let joined = places.pending.fetch_update(Relaxed, Relaxed, |n| {
            (n < places.max_pending).then_some(n + 1)
        });
        if joined.is_err() {
            return Err(Full);
        }
        let started = Instant::now();
        let permit = tokio::time::timeout(wait, places.free.acquire()).await;
        places.pending.fetch_sub(1, Relaxed);
        match permit {
            Ok(Ok(permit)) => Ok(Place {
                _permit: Some(permit),
                waited: started.elapsed(),
            }),
            // Timed out in line (the semaphore is never closed).
            _ => Err(Full),
        }
    }

    /// Counts a request sent, toward what the retry budget allows.
    pub fn sent(&self) {
        self.budget.counts.add(now_ms(), self.budget.window, false);
    }

    /// Whether a retry fits the budget; if so it is counted.
    pub fn may_retry(&self) -> bool {
        let budget = &self.budget;
        budget
            .counts
            .add_second_within(now_ms(), budget.window, |sent| {
                let share = (budget.ratio * f64::from(sent)).floor() as u32;
                share.max(budget.min_retries)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::breaker::RetryBudgetConfig;

    fn breaker(max_in_flight: u32, max_pending: u32, ratio: f64, min_retries: u32) -> Breaker {
        Breaker::new(&CircuitBreakerConfig {
            max_in_flight,
            max_pending,
            retry_budget: RetryBudgetConfig {
                ratio,
                min_retries,
                ..RetryBudgetConfig::default()
            },
        })
    }

    #[tokio::test]
    async fn past_its_places_and_line_a_pool_refuses() {
        let b = breaker(2, 1, 0.2, 0);
        let wait = Duration::from_secs(5);
        let first = b.admit(wait).await.expect("a place");
        let _second = b.admit(wait).await.expect("a place");
        // The third waits in line; a fourth finds the line full.
        let third = b.admit(wait);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut third)
                .await
                .is_err(),
            "the third waits"
        );
        assert!(b.admit(wait).await.is_err(), "the line is full");
        drop(first);
        let third = third.await.expect("the freed place");
        assert!(third.waited > Duration::ZERO);
        // Waiting is bounded too.
        assert!(b.admit(Duration::from_millis(10)).await.is_err());
    }

    #[tokio::test]
    async fn without_max_in_flight_every_request_has_a_place() {
        let b = breaker(0, 0, 0.2, 0);
        let places: Vec<_> =
            futures_util::future::join_all((0..100).map(|_| b.admit(Duration::ZERO))).await;
        assert!(places.iter().all(Result::is_ok));
    }

    #[test]
    fn retries_stay_within_their_share_of_requests() {
        let b = breaker(0, 0, 0.2, 2);
        // Before any request: the minimum.
        assert!(b.may_retry());
        assert!(b.may_retry());
        assert!(!b.may_retry());
        for _ in 0..20 {
            b.sent();
        }
        // A fifth of 20 is 4: two more than the two already made.
        assert!(b.may_retry());
        assert!(b.may_retry());
        assert!(!b.may_retry());
    }
}
