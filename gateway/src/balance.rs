//! Choosing a target of an upstream pool: algorithms and target health.

pub mod health;
mod ring;
mod round_robin;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::HeaderMap;

use crate::config::{Balance, TargetConfig};
use health::{Ejection, Health, Outcome, Transition};
use ring::Ring;
use round_robin::RoundRobin;

/// Where consistent hashing takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
}

impl HashOn {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("`{text}` is not a hash key; write header:NAME, cookie:NAME or client_ip");
        if text == "client_ip" {
            return Ok(Self::ClientIp);
        }
        match text.split_once(':') {
            Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| bad()),
            Some(("cookie", name)) if !name.is_empty() => Ok(Self::Cookie(name.to_string())),
            _ => Err(bad()),
        }
    }

    /// The key for this request, if the request carries one.
    fn key<'a>(&self, request: &'a RequestInfo<'a>) -> Option<std::borrow::Cow<'a, [u8]>> {
        match self {
            Self::Header(name) => request.headers.get(name).map(|v| v.as_bytes().into()),
            Self::Cookie(name) => request
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_bytes().into()),
            Self::ClientIp => Some(request.client_ip.to_string().into_bytes().into()),
        }
    }
}

/// What a balancer may look at to choose.
#[derive(Debug)]
pub struct RequestInfo<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// One target of a pool as the balancer sees it.
#[derive(Debug)]
pub struct Target {
    pub authority: http::uri::Authority,
    pub weight: u32,
    pub health: Health,
    /// Requests currently waiting on this target (for least_request).
    in_flight: AtomicUsize,
}

impl Target {
    /// Requests sent to this target whose answer head has not arrived.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Algorithm {
    RoundRobin(RoundRobin),
    LeastRequest,
    Random,
    ConsistentHash(Ring, HashOn),
}

/// A pool of targets and the rule that picks among them.
#[derive(Debug)]
pub struct Pool {
    targets: Vec<Target>,
    algorithm: Algorithm,
    ejection: Ejection,
}

impl Pool {
    pub fn new(
        targets: &[TargetConfig],
        balance: Balance,
        hash_on: Option<HashOn>,
        ejection: Ejection,
    ) -> Self {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let algorithm = match (balance, hash_on) {
            (Balance::ConsistentHash, Some(on)) => Algorithm::ConsistentHash(
                Ring::new(targets.iter().map(|t| (t.url.authority.as_str(), t.weight))),
                on,
            ),
            (Balance::LeastRequest, _) => Algorithm::LeastRequest,
            (Balance::Random, _) => Algorithm::Random,
            // Validation requires hash_on for consistent_hash; round robin otherwise.
            _ => Algorithm::RoundRobin(RoundRobin::new(&weights)),
        };
        Self {
            targets: targets
                .iter()
                .map(|t| Target {
                    authority: t.url.authority.clone(),
                    weight: t.weight,
                    health: Health::default(),
                    in_flight: AtomicUsize::new(0),
                })
                .collect(),
            algorithm,
            ejection,
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// `round_robin`, `least_request`, `random` or `consistent_hash`.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::RoundRobin(_) => "round_robin",
            Algorithm::LeastRequest => "least_request",
            Algorithm::Random => "random",
            Algorithm::ConsistentHash(..) => "consistent_hash",
        }
    }

    /// Picks an available target, never `exclude` (the one a retry is leaving).
    pub fn pick(&self, request: &RequestInfo, exclude: Option<usize>) -> Option<usize> {
        let now = health::now_ms();
        let usable = |i: usize| Some(i) != exclude && self.targets[i].health.is_available(now);
        match &self.algorithm {
            // A retry's pick leaves the cycle where it was: otherwise the
            // target after a failing one would get every retry and the
            // failing one every first attempt.
            Algorithm::RoundRobin(_) if exclude.is_some() => self.weighted_random(usable),
            Algorithm::RoundRobin(rr) => rr.pick(usable),
            Algorithm::LeastRequest => self.least_request(usable),
            Algorithm::Random => self.weighted_random(usable),
            Algorithm::ConsistentHash(ring, on) => match on.key(request) {
                Some(key) => ring.pick(&key, usable),
                // Envoy's choice: a request without the key is spread at random.
                None => self.weighted_random(usable),
            },
        }
    }

    /// Power of two choices: of two random usable targets, the one with fewer
    /// requests in flight relative to its weight.
    fn least_request(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.targets.len();
        let (a, b) = (fastrand::usize(..n), fastrand::usize(..n));
        let (a, b) = if a != b && usable(a) && usable(b) {
            (a, b)
        } else {
            let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
            match candidates.len() {
                0 => return None,
                1 => return Some(candidates[0]),
                len => {
                    let first = fastrand::usize(..len);
                    let second = (first + 1 + fastrand::usize(..len - 1)) % len;
                    (candidates[first], candidates[second])
                }
            }
        };
        let load = |i: usize| {
            let t = &self.targets[i];
            (t.in_flight.load(Relaxed) as u64, u64::from(t.weight))
        };
        let ((la, wa), (lb, wb)) = (load(a), load(b));
        Some(if la * wb <= lb * wa { a } else { b })
    }

    fn weighted_random(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..self.targets.len())
            .filter(|&i| usable(i))
            .map(|i| u64::from(self.targets[i].weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = fastrand::u64(..total);
        (0..self.targets.len()).filter(|&i| usable(i)).find(|&i| {
            let w = u64::from(self.targets[i].weight);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
    }

    /// Marks a request as sent to `target` until the guard drops; a target
    /// whose circuit is half-open takes it as its probe.
    pub fn start_request(&self, target: usize) -> InFlight<'_> {
        let target = &self.targets[target];
        target.in_flight.fetch_add(1, Relaxed);
        InFlight {
            probe: target.health.start_request(health::now_ms()),
            target,
        }
    }

    /// Counts how a request to `target` went (`probe`: it was the target's
    /// half-open probe); says when that opened or closed its circuit.
    pub fn record(&self, target: usize, outcome: Outcome, probe: bool) -> Option<Transition> {
        self.targets[target]
            .health
            .record(outcome, &self.ejection, probe)
    }

    /// The pool's outlier rules.
    pub fn ejection(&self) -> &Ejection {
        &self.ejection
    }
}

/// Counts one in-flight request for least_request, and ends a half-open
/// probe, when it drops.
#[derive(Debug)]
pub struct InFlight<'a> {
    target: &'a Target,
    probe: bool,
}

impl InFlight<'_> {
    /// Whether this request is its target's half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.target.in_flight.fetch_sub(1, Relaxed);
        if self.probe {
            self.target.health.end_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetUrl;
    use std::time::Duration;

    fn pool(weights: &[u32], balance: Balance, hash_on: Option<HashOn>) -> Pool {
        let targets: Vec<TargetConfig> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| TargetConfig {
                url: TargetUrl::try_from(format!("http://127.0.0.1:{}", 9000 + i)).expect("url"),
                weight,
            })
            .collect();
        let ejection = Ejection {
            max_fails: 1,
            max_5xx: 0,
            error_rate: None,
            cooldown: Duration::from_secs(60),
        };
        Pool::new(&targets, balance, hash_on, ejection)
    }

    fn info(headers: &HeaderMap) -> RequestInfo<'_> {
        RequestInfo {
            headers,
            client_ip: IpAddr::from([127, 0, 0, 1]),
        }
    }

    #[test]
    fn parses_hash_keys() {
        assert_eq!(HashOn::parse("client_ip"), Ok(HashOn::ClientIp));
        assert_eq!(
            HashOn::parse("cookie:sid"),
            Ok(HashOn::Cookie("sid".into()))
        );
        assert!(matches!(
            HashOn::parse("header:x-user-id"),
            Ok(HashOn::Header(_))
        ));
        for bad in ["header:", "cookie:", "ip", "query:x"] {
            assert!(HashOn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_target() {
        let p = pool(&[1, 1], Balance::LeastRequest, None);
        let headers = HeaderMap::new();
        let _busy = p.start_request(0);
        for _ in 0..50 {
            assert_eq!(p.pick(&info(&headers), None), Some(1));
        }
    }

    #[test]
    fn failed_targets_are_skipped_and_excluded_ones_avoided() {
        let headers = HeaderMap::new();
        for balance in [Balance::RoundRobin, Balance::LeastRequest, Balance::Random] {
            let p = pool(&[1, 1, 1], balance, None);
            p.record(0, Outcome::NoAnswer, false);
            for _ in 0..30 {
                let picked = p.pick(&info(&headers), Some(2));
                assert_eq!(picked, Some(1), "{balance:?}");
            }
            p.record(1, Outcome::NoAnswer, false);
            assert_eq!(p.pick(&info(&headers), Some(2)), None, "{balance:?}");
        }
    }

    #[test]
    fn a_retry_does_not_move_round_robin_along() {
        let p = pool(&[1, 1], Balance::RoundRobin, None);
        let headers = HeaderMap::new();
        let mut firsts = Vec::new();
        for _ in 0..6 {
            let first = p.pick(&info(&headers), None).expect("a target");
            firsts.push(first);
            // Every attempt on target 0 is retried on the other.
            if first == 0 {
                assert_eq!(p.pick(&info(&headers), Some(0)), Some(1));
            }
        }
        assert_eq!(firsts, [0, 1, 0, 1, 0, 1], "first attempts alternate");
    }

    #[test]
    fn consistent_hash_reads_cookies_and_falls_back_without_a_key() {
        let p = pool(
            &[1, 1, 1],
            Balance::ConsistentHash,
            Some(HashOn::Cookie("sid".into())),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; sid=alice; b=2".parse().expect("value"),
        );
        let first = p.pick(&info(&headers), None);
        for _ in 0..20 {
            assert_eq!(p.pick(&info(&headers), None), first);
        }
        assert!(p.pick(&info(&HeaderMap::new()), None).is_some());
    }
}
