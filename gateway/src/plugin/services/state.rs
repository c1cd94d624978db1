//! `gateway:plugin/state`: rate-limit decisions in the gateway's shared
//! store (`state:` in config: memory or Redis). Granted as
//! `plugins.grants.<plugin>.state: {}`. Keys are stored under the plugin's
//! name, so plugins cannot touch each other's counters.
//!
//! The call may wait on Redis, so it is an async import: a plugin that
//! imports it runs its hooks on wasmtime's async path (a fiber that is
//! suspended while the store answers, holding no gateway thread), while
//! every other plugin keeps the synchronous path. See docs/plugins.md,
//! "Host calls that wait", for the measurements behind that choice.

use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use super::{HostService, NotGranted, Resources};
use crate::plugin::bindings::gateway::plugin::state;
use crate::plugin::host::HostState;
use crate::plugin::instance::MAX_WAITS_PER_HOOK;
use crate::state::{Decision, Limit, StateError, StateStore};

pub struct State;

/// Nothing to choose yet: the grant is `state: {}`.
#[derive(Debug)]
pub struct StateGrant;

impl<'de> Deserialize<'de> for StateGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(settings) if settings.is_empty() => Ok(Self),
            _ => Err(serde::de::Error::custom(
                "the state service takes no settings: write `state: {}`",
            )),
        }
    }
}

impl HostService for State {
    const GRANT: &'static str = "state";
    const INTERFACE: &'static str = "gateway:plugin/state";
    const WAITS: bool = true;
    type Grant = StateGrant;
    type Shared = Arc<StateStore>;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        state::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn configure(_grant: StateGrant, resources: &Resources) -> Result<Arc<StateStore>, String> {
        resources
            .state
            .clone()
            .ok_or_else(|| "the gateway's state store could not be built (see `state:`)".into())
    }
}

impl state::Host for HostState {
    async fn check_limits(
        &mut self,
        limits: Vec<state::Limit>,
    ) -> wasmtime::Result<Result<state::Decision, state::StateError>> {
        let store = super::shared::<State>(&self.granted)
            .ok_or(NotGranted(State::INTERFACE))?
            .clone();
        let limits: Vec<Limit> = limits
            .into_iter()
            .map(|l| Limit {
                key: l.key,
                requests: l.requests,
                period_ms: l.period_ms,
                burst: l.burst,
            })
            .collect();
        let namespace = self.plugin_name().clone();
        if !store.waits() {
            // In memory: no wait, and the work is the plugin's to pay for.
            let result = store.check(&namespace, &limits).await;
            return Ok(result.map(decision).map_err(error));
        }
        // Each wait is not counted against the deadlines, so their number
        // is bounded instead (and there are none in `init`).
        self.waits_left = self
            .waits_left
            .checked_sub(1)
            .ok_or(TooManyWaits(MAX_WAITS_PER_HOOK))?;
        let paused = self.clock.pause();
        let result = store.check(&namespace, &limits).await;
        self.clock.resume(paused);
        Ok(result.map(decision).map_err(error))
    }
}

fn decision(decision: Decision) -> state::Decision {
    state::Decision {
        allowed: decision.allowed,
        retry_after_ms: decision.retry_after_ms,
        budgets: decision
            .budgets
            .into_iter()
            .map(|b| state::Budget {
                limit: b.limit,
                remaining: b.remaining,
                reset_ms: b.reset_ms,
            })
            .collect(),
    }
}

fn error(error: StateError) -> state::StateError {
    match error {
        StateError::Unavailable(why) => state::StateError::Unavailable(why),
        StateError::Invalid(why) => state::StateError::Invalid(why),
    }
}

/// A hook that waited on the store more often than it may (or in `init`).
#[derive(Debug, thiserror::Error)]
#[error("check-limits waits on the store: at most {0} calls per hook, none in init")]
pub struct TooManyWaits(pub u32);
