//! The rate-limit plugin: a route answers `429` to a client (or consumer, or
//! API key) that sends more than its budget, counted in the gateway's shared
//! state, so that every instance of the plugin, and with Redis every
//! gateway, spends one budget.
//!
//! ```yaml
//! plugins:                                   # in the gateway config
//!   grants: { rate-limit: { state: {} } }      # the plugin may use the shared state
//! routes:
//!   - name: orders
//!     plugins:
//!       - name: rate-limit
//!         config:
//!           limits:                            # 1 to 16; a request must fit every one
//!             - { requests: 100, per: 1m, burst: 20 }   # burst: default = requests
//!             - { requests: 10000, per: 1d }
//!           key: [client_ip]                   # the default; 1 to 8 parts of
//!                                              # client_ip, route, header:NAME, context:NAME
//!           policy: fail_open                  # or fail_closed; default fail_open
//!           headers: true                      # RateLimit-* headers; default true
//! ```
//!
//! The counters live in the store the gateway's `state:` names (its memory
//! by default, or Redis). Each limit is a GCRA budget (the token bucket's arithmetic, kept by the
//! gateway): `requests` per `per` on average, at most `burst` at once. A
//! client not seen for a while has a full budget, so it gets `burst`
//! requests straight away and then one every `per / requests`. `per` is a
//! whole number and a unit, `ms`, `s`, `m`, `h` or `d`, from 1ms to 366d.
//! All of a route's limits are decided in one atomic step: a request is let
//! through only when every limit allows it, and only then counted against
//! each.
//!
//! `key` says what is counted: `client_ip`, `route` (the route's name),
//! `header:NAME` (its first value) or `context:NAME` (a value an earlier
//! plugin of the chain set, such as `consumer` from auth). A header or
//! context value that is missing or empty falls back to the client's
//! address, so requests without it are limited per client and never
//! share one budget. Counters are kept per key and limit: two routes with
//! the same limit and the same `key` spend one budget (a client's `100/1m`
//! covers both); add `route` to `key` to give each route its own.
//! A header chosen by the client (an unchecked API key) lets a client pick a
//! new budget per request: key on values a client cannot choose, such as
//! `context:consumer` after auth.
//!
//! A refused request gets `429 rate_limited` (the gateway's JSON error) with
//! `Retry-After` in seconds. With `headers` on, allowed responses carry
//! `RateLimit-Limit` (the burst), `RateLimit-Remaining` and `RateLimit-Reset`
//! (seconds until the budget is full) of the limit closest to refusing, as in
//! draft-ietf-httpapi-ratelimit-headers (and Kong); a `429` carries them too,
//! with `0` remaining. When the store cannot decide (Redis down or slow),
//! `fail_open` lets requests through without headers (the gateway logs and
//! counts the failures) and `fail_closed` answers `503 rate_limit_unavailable`.
//!
//! The plugin needs the `state` grant; a gateway that does not grant it
//! refuses to load the plugin.

pub mod config;
pub mod key;

use plugin_sdk::prelude::*;
use plugin_sdk::state::{Budget, Decision, Limit, StateError};
use plugin_sdk::{Context, Headers};

pub use config::Config;
use config::Policy;

pub const LIMIT_HEADER: &str = "ratelimit-limit";
pub const REMAINING_HEADER: &str = "ratelimit-remaining";
pub const RESET_HEADER: &str = "ratelimit-reset";
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// Context keys holding the budget the response hook shows.
pub const LIMIT_KEY: &str = "rate-limit.limit";
pub const REMAINING_KEY: &str = "rate-limit.remaining";
pub const RESET_KEY: &str = "rate-limit.reset";

pub struct RateLimit {
    cfg: Config,
    /// Each limit's key suffix, in the order of `cfg.limits`.
    suffixes: Vec<String>,
}

impl Plugin for RateLimit {
    type Config = Config;

    /// Every check is made as the config is read (see [`config`]).
    fn new(cfg: Config) -> Result<Self, String> {
        let suffixes = cfg.limits.iter().map(|rule| rule.key_suffix()).collect();
        Ok(Self { cfg, suffixes })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        let outcome = plugin_sdk::state::check_limits(&self.limits_for(req));
        if let Err(StateError::Invalid(why)) = &outcome {
            // Never expected: the config keeps within what the host accepts.
            log::error(&format!("the gateway refused the limits: {why}"));
        }
        self.decide(req, outcome)
    }

    fn on_response(&self, resp: &mut Response) {
        if !self.cfg.headers {
            return;
        }
        let Some(shown) = Shown::stashed(resp.context()) else {
            return;
        };
        // This plugin's own 429 (or a later instance's) has its headers already.
        if resp.status() == 429 && resp.headers().contains(REMAINING_HEADER) {
            return;
        }
        shown.write(resp.headers());
    }
}

impl RateLimit {
    /// The limits `req` is checked against: one per configured limit, each
    /// under the request's key and that limit's suffix.
    pub fn limits_for(&self, req: &Request) -> Vec<Limit> {
        let base = key::request_key(&self.cfg.key, req);
        self.cfg
            .limits
            .iter()
            .zip(&self.suffixes)
            .map(|(rule, suffix)| Limit {
                key: format!("{base}{suffix}"),
                requests: rule.requests,
                period_ms: rule.period_ms,
                burst: rule.burst,
            })
            .collect()
    }

    /// What to do with the host's answer.
    pub fn decide(&self, req: &Request, outcome: Result<Decision, StateError>) -> Action {
        match outcome {
            Ok(decision) if decision.allowed => {
                if self.cfg.headers
                    && let Some(shown) = Shown::tightest(&decision.budgets)
                {
                    shown.stash(req.context());
                }
                Action::Continue
            }
            Ok(decision) => Action::Respond(self.refuse(req, &decision)),
            // The host logs and counts store failures; Invalid was logged.
            Err(StateError::Unavailable(_) | StateError::Invalid(_)) => match self.cfg.policy {
                Policy::FailOpen => Action::Continue,
                Policy::FailClosed => Action::Respond(Response::error_for(
                    req,
                    503,
                    "rate_limit_unavailable",
                    "the rate-limit store cannot be reached",
                )),
            },
        }
    }

    /// The `429` for a refused request.
    pub fn refuse(&self, req: &Request, decision: &Decision) -> Response {
        let wait = retry_after_seconds(decision.retry_after_ms);
        let response = Response::error_for(
            req,
            429,
            "rate_limited",
            &format!("too many requests; retry in {wait} s"),
        )
        .with_header(RETRY_AFTER_HEADER, &wait.to_string());
        if self.cfg.headers
            && let Some(shown) = Shown::tightest(&decision.budgets)
        {
            Shown {
                remaining: 0,
                ..shown
            }
            .write(response.headers());
        }
        response
    }
}

/// The budget a response shows, as its `RateLimit-*` headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// The limit's burst: what a full budget allows.
    pub limit: u64,
    pub remaining: u64,
    /// Whole seconds until the budget is full, rounded up.
    pub reset_seconds: u64,
}

impl Shown {
    fn of(budget: &Budget) -> Self {
        Self {
            limit: budget.limit,
            remaining: budget.remaining,
            reset_seconds: budget.reset_ms.div_ceil(1000),
        }
    }

    /// The budget closest to refusing: the fewest requests remaining, and
    /// of those the one slowest to refill.
    pub fn tightest(budgets: &[Budget]) -> Option<Self> {
        budgets
            .iter()
            .map(Self::of)
            .reduce(|a, b| if b.tighter_than(&a) { b } else { a })
    }

    fn tighter_than(&self, other: &Self) -> bool {
        (self.remaining, other.reset_seconds) < (other.remaining, self.reset_seconds)
    }

    /// Leaves this budget for the response hook, unless the context holds a
    /// tighter one already (from another rate-limit on the chain).
    pub fn stash(&self, context: &Context) {
        if Self::stashed(context).is_some_and(|old| !self.tighter_than(&old)) {
            return;
        }
        context.set(LIMIT_KEY, &self.limit.to_string());
        context.set(REMAINING_KEY, &self.remaining.to_string());
        context.set(RESET_KEY, &self.reset_seconds.to_string());
    }

    /// The budget the request hook left, if any.
    pub fn stashed(context: &Context) -> Option<Self> {
        let read = |key: &str| context.get(key)?.parse::<u64>().ok();
        Some(Self {
            limit: read(LIMIT_KEY)?,
            remaining: read(REMAINING_KEY)?,
            reset_seconds: read(RESET_KEY)?,
        })
    }

    /// Sets the `RateLimit-*` headers.
    pub fn write(&self, headers: &Headers) {
        headers.insert(LIMIT_HEADER, &self.limit.to_string());
        headers.insert(REMAINING_HEADER, &self.remaining.to_string());
        headers.insert(RESET_HEADER, &self.reset_seconds.to_string());
    }
}

/// `Retry-After` for a wait of `ms`: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

export_plugin!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: serde_json::Value) -> RateLimit {
        let cfg = plugin_sdk::__runtime::parse_config::<Config>(&config.to_string())
            .unwrap_or_else(|e| panic!("{}: {}", e.field, e.message));
        RateLimit::new(cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    fn budget(limit: u64, remaining: u64, reset_ms: u64) -> Budget {
        Budget {
            limit,
            remaining,
            reset_ms,
        }
    }

    fn decision(allowed: bool, retry_after_ms: u64, budgets: Vec<Budget>) -> Decision {
        Decision {
            allowed,
            retry_after_ms,
            budgets,
        }
    }

    fn shown(limit: u64, remaining: u64, reset_seconds: u64) -> Shown {
        Shown {
            limit,
            remaining,
            reset_seconds,
        }
    }

    fn headers_of(resp: &Response) -> [Option<String>; 3] {
        [LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER].map(|h| resp.headers().get(h))
    }

    fn some(values: [&str; 3]) -> [Option<String>; 3] {
        values.map(|v| Some(v.to_string()))
    }

    fn error_code(resp: &Response) -> String {
        let body: serde_json::Value =
            serde_json::from_slice(&resp.body().unwrap_or_default()).unwrap_or_default();
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn each_limit_gets_its_own_counter() {
        let two = plugin(serde_json::json!({
            "limits": [{ "requests": 100, "per": "1m", "burst": 20 }, { "requests": 10000, "per": "1d" }]
        }));
        let limits = two.limits_for(&Request::new("GET", "/"));
        let keys: Vec<&str> = limits.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                r#"[["ip","127.0.0.1"]]|100/60000/20"#,
                r#"[["ip","127.0.0.1"]]|10000/86400000/10000"#
            ]
        );
        assert_eq!(
            limits
                .iter()
                .map(|l| (l.requests, l.period_ms, l.burst))
                .collect::<Vec<_>>(),
            [(100, 60_000, 20), (10_000, 86_400_000, 10_000)]
        );
        // Another route with one of the same limits shares its counter...
        let same = plugin(
            serde_json::json!({ "limits": [{ "requests": 100, "per": "60s", "burst": 20 }] }),
        );
        assert_eq!(same.limits_for(&Request::new("GET", "/"))[0].key, keys[0]);
        // ...unless the limit differs, or the key names the route.
        let other = plugin(serde_json::json!({ "limits": [{ "requests": 100, "per": "1m" }] }));
        assert!(!keys.contains(&other.limits_for(&Request::new("GET", "/"))[0].key.as_str()));
        let per_route = plugin(serde_json::json!({
            "limits": [{ "requests": 100, "per": "1m", "burst": 20 }], "key": ["client_ip", "route"]
        }));
        assert!(
            per_route.limits_for(&Request::new("GET", "/"))[0]
                .key
                .contains(r#"["route","test"]"#)
        );
    }

    #[test]
    fn keys_fit_the_host_whatever_the_request() {
        let name = "n".repeat(200);
        let wide = plugin(serde_json::json!({
            "limits": [{ "requests": config::MAX_COUNT, "per": "366d", "burst": config::MAX_COUNT }],
            "key": (0..8).map(|i| format!("header:{name}{i}")).collect::<Vec<_>>()
        }));
        let limits = wide.limits_for(&Request::new("GET", "/"));
        assert!(
            limits[0].key.len() <= key::MAX_KEY_BYTES,
            "{}",
            limits[0].key
        );
    }

    #[test]
    fn the_tightest_budget_is_shown() {
        assert_eq!(Shown::tightest(&[]), None);
        let budgets = [
            budget(20, 5, 1000),
            budget(100, 3, 500),
            budget(50, 3, 90_001),
        ];
        assert_eq!(Shown::tightest(&budgets), Some(shown(50, 3, 91)));
        // Ties keep the first of equals.
        let budgets = [budget(20, 3, 1000), budget(30, 3, 1000)];
        assert_eq!(Shown::tightest(&budgets), Some(shown(20, 3, 1)));
        // Reset rounds up to whole seconds.
        assert_eq!(Shown::tightest(&[budget(1, 1, 0)]), Some(shown(1, 1, 0)));
        assert_eq!(Shown::tightest(&[budget(1, 1, 1)]), Some(shown(1, 1, 1)));
        assert_eq!(Shown::tightest(&[budget(1, 1, 2000)]), Some(shown(1, 1, 2)));
    }

    #[test]
    fn a_tighter_budget_already_stashed_is_kept() {
        let req = Request::new("GET", "/");
        let context = req.context();
        shown(100, 50, 10).stash(context);
        shown(20, 7, 3).stash(context);
        assert_eq!(Shown::stashed(context), Some(shown(20, 7, 3)));
        shown(10, 9, 60).stash(context);
        assert_eq!(Shown::stashed(context), Some(shown(20, 7, 3)));
        shown(10, 7, 60).stash(context);
        assert_eq!(Shown::stashed(context), Some(shown(10, 7, 60)));
        assert_eq!(context.get(LIMIT_KEY).as_deref(), Some("10"));
        assert_eq!(context.get(REMAINING_KEY).as_deref(), Some("7"));
        assert_eq!(context.get(RESET_KEY).as_deref(), Some("60"));
        // Something unreadable there is replaced.
        context.set(REMAINING_KEY, "many");
        shown(10, 9, 60).stash(context);
        assert_eq!(Shown::stashed(context), Some(shown(10, 9, 60)));
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_seconds(0), 1);
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(1000), 1);
        assert_eq!(retry_after_seconds(1001), 2);
        assert_eq!(retry_after_seconds(59_500), 60);
    }

    #[test]
    fn an_allowed_request_goes_on_and_its_response_shows_the_budget() {
        let plugin = plugin(
            serde_json::json!({ "limits": [{ "requests": 10, "per": "1s" }, { "requests": 100, "per": "1m" }] }),
        );
        let req = Request::new("GET", "/");
        let outcome = Ok(decision(
            true,
            0,
            vec![budget(10, 9, 100), budget(100, 99, 600)],
        ));
        assert!(matches!(plugin.decide(&req, outcome), Action::Continue));
        let mut resp = Response::new(200).with_request(&req);
        plugin.on_response(&mut resp);
        assert_eq!(headers_of(&resp), some(["10", "9", "1"]));
        // An upstream's 429 gets the headers too.
        let mut resp = Response::new(429).with_request(&req);
        plugin.on_response(&mut resp);
        assert_eq!(headers_of(&resp), some(["10", "9", "1"]));
    }

    #[test]
    fn a_refused_request_gets_429_with_retry_after() {
        let plugin = plugin(
            serde_json::json!({ "limits": [{ "requests": 10, "per": "1s" }, { "requests": 100, "per": "1m" }] }),
        );
        let req = Request::new("GET", "/");
        // An earlier rate-limit of the chain allowed it with budget left.
        shown(1000, 500, 30).stash(req.context());
        let outcome = Ok(decision(
            false,
            1500,
            vec![budget(10, 4, 600), budget(100, 0, 60_000)],
        ));
        let Action::Respond(resp) = plugin.decide(&req, outcome) else {
            panic!("let through")
        };
        assert_eq!(resp.status(), 429);
        assert_eq!(error_code(&resp), "rate_limited");
        assert_eq!(resp.headers().get(RETRY_AFTER_HEADER).as_deref(), Some("2"));
        assert_eq!(headers_of(&resp), some(["100", "0", "60"]));
        // The response hook leaves the plugin's own 429 as it is.
        let mut resp = resp.with_request(&req);
        plugin.on_response(&mut resp);
        assert_eq!(headers_of(&resp), some(["100", "0", "60"]));
    }

    #[test]
    fn without_headers_only_retry_after_is_sent() {
        let plugin = plugin(
            serde_json::json!({ "limits": [{ "requests": 1, "per": "1s" }], "headers": false }),
        );
        let req = Request::new("GET", "/");
        let outcome = Ok(decision(true, 0, vec![budget(1, 0, 1000)]));
        assert!(matches!(plugin.decide(&req, outcome), Action::Continue));
        assert_eq!(Shown::stashed(req.context()), None);
        let mut resp = Response::new(200).with_request(&req);
        plugin.on_response(&mut resp);
        assert_eq!(headers_of(&resp), [None, None, None]);
        let outcome = Ok(decision(false, 0, vec![budget(1, 0, 1000)]));
        let Action::Respond(resp) = plugin.decide(&req, outcome) else {
            panic!("let through")
        };
        assert_eq!(resp.headers().get(RETRY_AFTER_HEADER).as_deref(), Some("1"));
        assert_eq!(headers_of(&resp), [None, None, None]);
    }

    #[test]
    fn a_store_that_cannot_decide_fails_as_the_policy_says() {
        let errors = || {
            [
                StateError::Unavailable("timed out".into()),
                StateError::Invalid("no limits".into()),
            ]
        };
        let open = plugin(serde_json::json!({ "limits": [{ "requests": 1, "per": "1s" }] }));
        for error in errors() {
            let req = Request::new("GET", "/");
            assert!(matches!(open.decide(&req, Err(error)), Action::Continue));
            let mut resp = Response::new(200).with_request(&req);
            open.on_response(&mut resp);
            assert_eq!(headers_of(&resp), [None, None, None]);
        }
        let closed = plugin(
            serde_json::json!({ "limits": [{ "requests": 1, "per": "1s" }], "policy": "fail_closed" }),
        );
        for error in errors() {
            let req = Request::new("GET", "/");
            let Action::Respond(resp) = closed.decide(&req, Err(error)) else {
                panic!("let through")
            };
            assert_eq!(resp.status(), 503);
            assert_eq!(error_code(&resp), "rate_limit_unavailable");
            assert_eq!(resp.headers().get(RETRY_AFTER_HEADER), None);
        }
    }
}
