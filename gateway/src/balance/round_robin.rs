//! Smooth weighted round robin (nginx's algorithm), precomputed into a cycle
//! so that picking is one atomic increment instead of a lock.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug)]
pub struct RoundRobin {
    cycle: Vec<usize>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            cycle: smooth_cycle(weights),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next target in the cycle that `usable` accepts.
    pub fn pick(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Relaxed);
        (0..len)
            .map(|step| self.cycle[(start + step) % len])
            .find(|&target| usable(target))
    }
}

/// One full period of smooth weighted round robin: each step every target gains
/// its weight, the largest current value is chosen and loses the total.
fn smooth_cycle(weights: &[u32]) -> Vec<usize> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        current[best] -= total;
        cycle.push(best);
    }
    cycle
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_by_weight_like_nginx() {
        // nginx's documented example: weights 5,1,1 give a a b a c a a.
        assert_eq!(smooth_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_cycle(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn skips_unusable_targets_without_stalling() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let picks: Vec<_> = (0..4).map(|_| rr.pick(|t| t != 1)).collect();
        assert_eq!(picks, vec![Some(0), Some(2), Some(2), Some(0)]);
        assert_eq!(rr.pick(|_| false), None);
    }
}
