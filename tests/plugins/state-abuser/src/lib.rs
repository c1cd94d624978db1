//! A plugin that asks the `state` host service for decisions `calls` times
//! per request (a hostile one asks without end), and with `in_init: true`
//! also from `init`. It forwards how many decisions it got in request
//! header `x-decisions`.
//!
//! Config: `calls: N`, `in_init: bool`.

use plugin_sdk::prelude::*;
use plugin_sdk::state::{Limit, check_limits};

#[derive(Deserialize)]
struct Config {
    calls: u32,
    #[serde(default)]
    in_init: bool,
}

struct StateAbuser {
    calls: u32,
}

/// A budget no test spends.
fn limit() -> Limit {
    Limit {
        key: "abuser".into(),
        requests: 1_000_000_000,
        period_ms: 1000,
        burst: 1_000_000_000,
    }
}

impl Plugin for StateAbuser {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.in_init {
            let _ = check_limits(&[limit()]);
        }
        Ok(Self {
            calls: config.calls,
        })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let decided = (0..self.calls)
            .filter(|_| check_limits(&[limit()]).is_ok())
            .count();
        request
            .headers()
            .insert("x-decisions", &decided.to_string());
        Action::Continue
    }
}

export_plugin!(StateAbuser);
