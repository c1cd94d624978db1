//! The whole runtime state built from one config: routes with their plugin
//! chains, and upstream pools. Immutable; a new config builds a new snapshot.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError, PluginsConfig, RouteConfig};
use crate::error::ProxyError;
use crate::plugin::chain::ChainEntry;
use crate::plugin::{Chain, PluginError, PluginRuntime};
use crate::routing::{Route, Router};
use crate::upstream::{Upstream, spawn_health_checks};

#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    upstreams: Vec<Arc<Upstream>>,
}

impl Snapshot {
    /// Builds from a validated config, loading every plugin a route names
    /// and running its `init`. Health checks start with `start`.
    pub async fn new(
        config: &Config,
        plugins: Option<&PluginRuntime>,
    ) -> Result<Self, ConfigError> {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, upstream)| Arc::new(Upstream::new(name, upstream)))
            .collect();
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut problems = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let Some(upstream) = upstreams.iter().position(|u| u.name == route.upstream) else {
                problems.push((
                    format!("routes[{i}].upstream"),
                    format!("no upstream named \"{}\"", route.upstream),
                ));
                continue;
            };
            match build_chain(config, i, route, plugins).await {
                Ok(chain) => routes.push(Route::from_config(route, upstream, chain)),
                Err(mut found) => problems.append(&mut found),
            }
        }
        if !problems.is_empty() {
            return Err(config.errors(problems));
        }
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

/// The plugin folder of `config`, resolved against the config file's folder.
pub fn plugin_dir(config: &Config, plugins: &PluginsConfig) -> PathBuf {
    config.origin.base_dir().join(&plugins.dir)
}

/// Loads route `i`'s plugins; problems come back as (field, message).
async fn build_chain(
    config: &Config,
    i: usize,
    route: &RouteConfig,
    runtime: Option<&PluginRuntime>,
) -> Result<Chain, Vec<(String, String)>> {
    let (Some(settings), Some(runtime)) = (&config.plugins, runtime) else {
        return match route.plugins.is_empty() {
            true => Ok(Chain::default()),
            false => Err(vec![(
                format!("routes[{i}].plugins"),
                "no `plugins: { dir: … }` is configured".into(),
            )]),
        };
    };
    let dir = plugin_dir(config, settings);
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (j, plugin) in route.plugins.iter().enumerate() {
        let at = format!("routes[{i}].plugins[{j}]");
        let path = dir.join(format!("{}.wasm", plugin.name));
        if !path.is_file() {
            problems.push((
                format!("{at}.name"),
                format!(
                    "no plugin \"{}\": {} does not exist",
                    plugin.name,
                    path.display()
                ),
            ));
            continue;
        }
        let loaded = match runtime.load(&plugin.name, &path) {
            Ok(loaded) => loaded,
            Err(e) => {
                problems.push((
                    format!("{at}.name"),
                    format!("plugin \"{}\": {e}", plugin.name),
                ));
                continue;
            }
        };
        let limits = crate::plugin::chain::limits(&settings.limits, &plugin.limits);
        // An absent config reaches the plugin as `{}`, so all-default configs parse.
        let json = match &plugin.config {
            serde_json::Value::Null => "{}".to_string(),
            value => value.to_string(),
        };
        match ChainEntry::new(loaded, &route.name, json, limits).await {
            Ok(entry) => entries.push(entry),
            Err(PluginError::Refused(message)) => problems.push((
                format!("{at}.config"),
                format!(
                    "plugin \"{}\" refused the config of route \"{}\": {message}",
                    plugin.name, route.name
                ),
            )),
            Err(e) => problems.push((
                format!("{at}.name"),
                format!("plugin \"{}\" {e}", plugin.name),
            )),
        }
    }
    if problems.is_empty() {
        Ok(Chain::new(entries, settings.max_body_bytes.0))
    } else {
        Err(problems)
    }
}
