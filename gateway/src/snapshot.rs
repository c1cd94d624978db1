//! The whole runtime state built from one config: routes and upstream pools.
//! Immutable; a new config builds a new snapshot.

use std::sync::Arc;

use crate::config::Config;
use crate::error::ProxyError;
use crate::routing::{Route, Router};
use crate::upstream::{Upstream, spawn_health_checks};

#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    upstreams: Vec<Arc<Upstream>>,
}

impl Snapshot {
    /// Builds from a validated config; health checks start with `start`.
    pub fn new(config: &Config) -> Result<Self, ProxyError> {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| Arc::new(Upstream::new(name, upstream)))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                upstreams
                    .iter()
                    .position(|u| u.name == route.upstream)
                    .map(|index| Route::from_config(route, index))
                    .ok_or_else(|| {
                        ProxyError::Internal(format!(
                            "route \"{}\" names unknown upstream \"{}\"",
                            route.name, route.upstream
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            router: Router::new(routes),
            upstreams,
        })
    }

    /// Starts background work (active health checks); needs a Tokio runtime.
    pub fn start(&self) {
        for upstream in &self.upstreams {
            spawn_health_checks(upstream);
        }
    }

    pub fn upstream(&self, index: usize) -> Result<&Upstream, ProxyError> {
        self.upstreams
            .get(index)
            .map(|u| u.as_ref())
            .ok_or_else(|| ProxyError::Internal(format!("no upstream at index {index}")))
    }
}
