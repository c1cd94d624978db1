//! The whole runtime state built from one config: routes with their plugin
//! chains, and upstream pools. Immutable; a new config builds a new snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError, PluginsConfig, RouteConfig, join_field};
use crate::error::ProxyError;
use crate::keys::KeySet;
use crate::plugin::chain::ChainEntry;
use crate::plugin::runtime::LoadedPlugin;
use crate::plugin::services::{self, Granted, Resources};
use crate::plugin::{Chain, PluginError, PluginRuntime};
use crate::routing::{Route, Router};
use crate::state::StateStore;
use crate::tls::CertificateSet;
use crate::tls::origin::Origin;
use crate::upstream::{Upstream, spawn_health_checks};

#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    upstreams: Vec<Arc<Upstream>>,
    /// The certificates of each listener, in `listen`'s order (`None` for a
    /// plain one); after a reload, in the order of the running listeners
    /// (`Gateway::apply`).
    pub certificates: Vec<Option<Arc<CertificateSet>>>,
    /// `key_sets:`, by name.
    pub key_sets: BTreeMap<String, Arc<KeySet>>,
    /// Plugins' shared counters (`state:`); `None` if it could not be built.
    pub state: Option<Arc<StateStore>>,
    /// The plugins the routes use, by name.
    pub plugins: BTreeMap<String, PluginInUse>,
    /// What built but deserves attention (a plugin file removed, say).
    pub warnings: Vec<String>,
    /// Which config this is, for the admin API.
    pub source: Source,
    /// The share of requests written to the access log; `None` when off.
    pub access_sample: Option<f64>,
    /// The metrics of requests that matched no route.
    pub unrouted: crate::metrics::RouteMetrics,
}

/// The config file a snapshot was built from, its version (a digest of its
/// text) and when it was loaded.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    pub version: String,
    pub loaded_at: std::time::SystemTime,
}

/// A loaded plugin, the host services it was granted, and whether its file
/// is still where it was loaded from.
#[derive(Debug, Clone)]
pub struct PluginInUse {
    pub loaded: Arc<LoadedPlugin>,
    pub granted: Arc<Granted>,
    pub file_present: bool,
    pub routes: Vec<String>,
}

impl Snapshot {
    /// Builds from a validated config, loading every plugin a route names
    /// and running its `init`. Upstreams whose config is unchanged from
    /// `previous` are carried over with their connections and health.
    /// Health checks start with `start`.
    pub async fn new(
        config: &Config,
        plugins: Option<&Arc<PluginRuntime>>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, ConfigError> {
        let mut built = Built::default();
        if let Some(admin) = &config.admin
            && !admin.listen.ip().is_loopback()
            && admin.token.is_none()
        {
            built.warnings.push(format!(
                "admin.listen: {} is reachable beyond this machine and admin.token is not set: anyone who can reach it can reload the config and read pools and routes",
                admin.listen
            ));
        }
        let certificates = certificates(config, &mut built);
        let upstreams = upstreams(config, previous, &mut built);
        let key_sets = key_sets(config, &upstreams, previous, &mut built);
        let resources = Resources {
            state: state_store(config, previous, &mut built),
            upstreams: upstreams.clone(),
            broken_key_sets: config
                .key_sets
                .keys()
                .filter(|name| !key_sets.contains_key(*name))
                .cloned()
                .collect(),
            key_sets,
        };
        if let Some(settings) = &config.plugins {
            configure_grants(settings, &resources, &mut built);
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let Some(upstream) = upstreams.iter().position(|u| *u.name == *route.upstream) else {
                if config.upstreams.contains_key(&route.upstream) {
                    continue; // That upstream's own problem is reported.
                }
                built.problems.push((
                    format!("routes[{i}].upstream"),
                    format!("no upstream named \"{}\"", route.upstream),
                ));
                continue;
            };
            if let Some(chain) = build_chain(config, i, route, plugins, previous, &mut built).await
            {
                routes.push(Route::from_config(route, upstream, chain));
            }
        }
        if let Some(settings) = &config.plugins {
            for name in settings.grants.keys() {
                if !built.plugins.contains_key(name) {
                    built.warnings.push(format!(
                        "plugins.grants.{name}: no route uses plugin \"{name}\"; its grants have no effect"
                    ));
                }
            }
        }
        if let Some(log) = &config.access_log
            && let Some(problem) = log.folder_problem(&config.origin.base_dir())
        {
            built.problems.push(("access_log.to".into(), problem));
        }
        if !built.problems.is_empty() {
            return Err(config.errors(built.problems));
        }
        Ok(Self {
            router: Router::new(routes),
            certificates,
            upstreams,
            key_sets: resources.key_sets,
            state: resources.state,
            plugins: built.plugins,
            warnings: built.warnings,
            access_sample: config.access_log.as_ref().map(|log| log.sample),
            unrouted: crate::metrics::RouteMetrics::new(crate::metrics::UNROUTED),
            source: Source {
                file: config.origin.file.clone(),
                version: config.origin.version.clone(),
                loaded_at: std::time::SystemTime::now(),
            },
        })
    }

    /// Starts background work (active health checks, key fetches and file
    /// watches) where it has not started yet; needs a Tokio runtime.
    pub fn start(&self) {
        for upstream in &self.upstreams {
            spawn_health_checks(upstream);
        }
        for set in self.key_sets.values() {
            set.start();
        }
    }

    /// Called once a newer snapshot serves: requests still on this one keep
    /// no plugin instances idle (see `Chain::retire`).
    pub fn retire(&self) {
        for route in self.router.routes() {
            route.plugins.retire();
        }
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    pub fn upstream(&self, index: usize) -> Result<&Upstream, ProxyError> {
        self.upstreams
            .get(index)
            .map(|u| u.as_ref())
            .ok_or_else(|| ProxyError::Internal(format!("no upstream at index {index}")))
    }
}

/// Each listener's certificates, read and checked; a problem names the
/// file's field, and a certificate near its end date gets a warning.
fn certificates(config: &Config, built: &mut Built) -> Vec<Option<Arc<CertificateSet>>> {
    let base = config.origin.base_dir();
    let now = std::time::SystemTime::now();
    let mut sets = Vec::new();
    for (i, listener) in config.listen.0.iter().enumerate() {
        let Some(tls) = &listener.tls else {
            sets.push(None);
            continue;
        };
        match CertificateSet::load(&tls.certificates, &base, now) {
            Ok((set, warnings)) => {
                built.warnings.extend(
                    warnings
                        .into_iter()
                        .map(|(j, w)| format!("listen[{i}].tls.certificates[{j}].cert: {w}")),
                );
                sets.push(Some(Arc::new(set)));
            }
            Err(problems) => {
                for (j, error) in problems {
                    built.problems.push((
                        format!("listen[{i}].tls.certificates[{j}].{}", error.field),
                        error.message,
                    ));
                }
                sets.push(None);
            }
        }
    }
    sets
}

/// The upstream pools. One whose config and TLS files are unchanged from
/// `previous` is carried over with its connections and health.
fn upstreams(
    config: &Config,
    previous: Option<&Snapshot>,
    built: &mut Built,
) -> Vec<Arc<Upstream>> {
    let base = config.origin.base_dir();
    let mut upstreams = Vec::new();
    for (name, upstream) in &config.upstreams {
        let at = format!("upstreams.{name}");
        let origin = if upstream.targets.iter().any(|t| t.url.https) {
            let tls = upstream.tls.clone().unwrap_or_default();
            match Origin::new(&tls, &base) {
                Ok(origin) => Some(origin),
                Err((field, message)) => {
                    let field = match upstream.tls {
                        Some(_) => format!("{at}.tls.{field}"),
                        None => format!("{at}.targets"),
                    };
                    built.problems.push((field, message));
                    continue;
                }
            }
        } else {
            None
        };
        let same = previous.and_then(|p| {
            p.upstreams
                .iter()
                .find(|u| *u.name == **name && u.config == *upstream && u.origin == origin)
        });
        if let Some(kept) = same {
            upstreams.push(kept.clone());
            continue;
        }
        match Upstream::new(
            name,
            upstream,
            origin,
            crate::workers::count(&config.server),
        ) {
            Ok(built_upstream) => upstreams.push(Arc::new(built_upstream)),
            Err(message) => built.problems.push((format!("{at}.targets"), message)),
        }
    }
    upstreams
}

/// The plugin folder of `config`, resolved against the config file's folder.
pub fn plugin_dir(config: &Config, plugins: &PluginsConfig) -> PathBuf {
    config.origin.base_dir().join(&plugins.dir)
}

/// What building the chains collects along the way.
#[derive(Default)]
struct Built {
    plugins: BTreeMap<String, PluginInUse>,
    /// Each plugin's configured grants; `None` where they were refused
    /// (reported once, whichever routes use the plugin).
    grants: BTreeMap<String, Option<Arc<Granted>>>,
    warnings: Vec<String>,
    problems: Vec<(String, String)>,
}

/// Loads route `i`'s plugins; problems go into `built`, and `None` comes back.
async fn build_chain(
    config: &Config,
    i: usize,
    route: &RouteConfig,
    runtime: Option<&Arc<PluginRuntime>>,
    previous: Option<&Snapshot>,
    built: &mut Built,
) -> Option<Chain> {
    let (Some(settings), Some(runtime)) = (&config.plugins, runtime) else {
        if route.plugins.is_empty() {
            return Some(Chain::default());
        }
        built.problems.push((
            format!("routes[{i}].plugins"),
            "no `plugins: { dir: … }` is configured".into(),
        ));
        return None;
    };
    let dir = plugin_dir(config, settings);
    let mut entries = Vec::new();
    let problems_before = built.problems.len();
    for (j, plugin) in route.plugins.iter().enumerate() {
        let at = format!("routes[{i}].plugins[{j}]");
        let Some(in_use) = load(runtime, settings, &dir, &plugin.name, previous, built, &at).await
        else {
            continue;
        };
        if let Some(in_use) = built.plugins.get_mut(&plugin.name)
            && !in_use.routes.contains(&route.name)
        {
            in_use.routes.push(route.name.clone());
        }
        let limits = crate::plugin::chain::limits(&settings.limits, &plugin.limits);
        // An absent config reaches the plugin as `{}`, so all-default configs parse.
        let json = match &plugin.config {
            serde_json::Value::Null => "{}".to_string(),
            value => value.to_string(),
        };
        match ChainEntry::new(in_use.loaded, &route.name, json, limits, in_use.granted).await {
            Ok(entry) => entries.push(entry),
            Err(PluginError::Refused { field, message }) => built.problems.push((
                join_field(&format!("{at}.config"), &field),
                format!(
                    "plugin \"{}\" refused the config of route \"{}\": {message}",
                    plugin.name, route.name
                ),
            )),
            Err(e) => built.problems.push((
                format!("{at}.name"),
                format!("plugin \"{}\" {e}", plugin.name),
            )),
        }
    }
    (built.problems.len() == problems_before)
        .then(|| Chain::new(entries, settings.max_body_bytes.0))
}

/// The compiled plugin `name` with its grants: from its file (compiled off
/// the async workers), or, when the file is gone, the version already running.
async fn load(
    runtime: &Arc<PluginRuntime>,
    settings: &PluginsConfig,
    dir: &std::path::Path,
    name: &str,
    previous: Option<&Snapshot>,
    built: &mut Built,
    at: &str,
) -> Option<PluginInUse> {
    if let Some(in_use) = built.plugins.get(name) {
        return Some(in_use.clone());
    }
    let path = dir.join(format!("{name}.wasm"));
    let (loaded, file_present) = if path.is_file() {
        let compiling = {
            let (runtime, name, path) = (runtime.clone(), name.to_string(), path.clone());
            tokio::task::spawn_blocking(move || runtime.load(&name, &path))
        };
        let result = match compiling.await {
            Ok(result) => result,
            Err(e) => Err(PluginError::Engine(format!("the compile task failed: {e}"))),
        };
        match result {
            Ok(loaded) => (loaded, true),
            Err(e) => {
                built
                    .problems
                    .push((format!("{at}.name"), format!("plugin \"{name}\": {e}")));
                return None;
            }
        }
    } else if let Some(running) = previous.and_then(|p| p.plugins.get(name)) {
        built.warnings.push(format!(
            "plugin \"{name}\": {} was removed; routes keep the version loaded before (sha256 {})",
            path.display(),
            running.loaded.sha256
        ));
        (running.loaded.clone(), false)
    } else {
        built.problems.push((
            format!("{at}.name"),
            format!("no plugin \"{name}\": {} does not exist", path.display()),
        ));
        return None;
    };
    let granted = grants(settings, name, &loaded, built, at)?;
    let in_use = PluginInUse {
        loaded,
        granted,
        file_present,
        routes: Vec::new(),
    };
    built.plugins.insert(name.to_string(), in_use.clone());
    Some(in_use)
}

/// The key sets of `config`: a fetched set with an unchanged config is
/// carried over from `previous` with its keys; others are read anew.
fn key_sets(
    config: &Config,
    upstreams: &[Arc<Upstream>],
    previous: Option<&Snapshot>,
    built: &mut Built,
) -> BTreeMap<String, Arc<KeySet>> {
    let base_dir = config.origin.base_dir();
    let mut sets = BTreeMap::new();
    for (name, set) in &config.key_sets {
        let previous = previous.and_then(|p| p.key_sets.get(name));
        let result = match previous.filter(|kept| kept.can_keep(set, &base_dir, upstreams)) {
            Some(kept) => kept.use_upstreams(upstreams).map(|()| kept.clone()),
            None => KeySet::new(
                name,
                set,
                base_dir.clone(),
                upstreams,
                previous.map(|p| &**p),
            )
            .map(Arc::new),
        };
        match result {
            Ok(built_set) => {
                sets.insert(name.clone(), built_set);
            }
            Err(message) => {
                let field = set.sources().first().map_or("", |s| s.field());
                built
                    .problems
                    .push((join_field(&format!("key_sets.{name}"), field), message));
            }
        }
        let https_pool = |pool: &str| {
            config
                .upstreams
                .get(pool)
                .is_some_and(|u| u.targets.iter().all(|t| t.url.https))
        };
        if let Some(source) = set.insecure_source(https_pool) {
            built.warnings.push(format!(
                "key_sets.{name}.{source}: keys are fetched over plain HTTP; anyone on that network path can serve keys of their own and sign any token. Use an https jwks_url (or https:// targets) where you can"
            ));
        }
    }
    sets
}

/// The store of `state:`: the previous one while its config is unchanged, so
/// counters survive reloads; a new one otherwise.
fn state_store(
    config: &Config,
    previous: Option<&Snapshot>,
    built: &mut Built,
) -> Option<Arc<StateStore>> {
    let kept = previous
        .and_then(|p| p.state.as_ref())
        .filter(|store| *store.config() == config.state);
    if let Some(kept) = kept {
        return Some(kept.clone());
    }
    match StateStore::new(&config.state) {
        Ok(store) => Some(Arc::new(store)),
        Err(message) => {
            built.problems.push(("state".into(), message));
            None
        }
    }
}

/// Builds every plugin's grants from `plugins.grants`, used by a route or
/// not, so a bad grant is an error wherever it is.
fn configure_grants(settings: &PluginsConfig, resources: &Resources, built: &mut Built) {
    for (name, grants) in &settings.grants {
        let granted = match services::configure(grants, resources) {
            Ok(granted) => Some(Arc::new(granted)),
            Err(problems) => {
                let base = format!("plugins.grants.{name}");
                built.problems.extend(
                    problems
                        .into_iter()
                        .map(|(field, message)| (join_field(&base, &field), message)),
                );
                None
            }
        };
        built.grants.insert(name.clone(), granted);
    }
}

/// The host services `plugins.grants.<name>` grants, checked against what
/// the plugin imports: an import without a grant is a problem at the chain
/// entry, a grant without an import a warning.
fn grants(
    settings: &PluginsConfig,
    name: &str,
    loaded: &LoadedPlugin,
    built: &mut Built,
    at: &str,
) -> Option<Arc<Granted>> {
    let empty = BTreeMap::new();
    let config = settings.grants.get(name).unwrap_or(&empty);
    let granted = match built.grants.get(name) {
        Some(Some(granted)) => granted.clone(),
        // Refused, and already reported.
        Some(None) => return None,
        None => Arc::default(),
    };
    let mut missing = false;
    for key in &loaded.services {
        if !granted.has(key) {
            missing = true;
            built.problems.push((
                format!("{at}.name"),
                format!(
                    "plugin \"{name}\" imports {}, which it is not granted; grant it under plugins.grants.{name}.{key}",
                    services::interface_of(key).unwrap_or(key),
                ),
            ));
        }
    }
    for key in config.keys() {
        if !loaded.services.contains(&key.as_str()) {
            built.warnings.push(format!(
                "plugins.grants.{name}.{key}: plugin \"{name}\" does not import {}; the grant has no effect",
                services::interface_of(key).unwrap_or(key),
            ));
        }
    }
    (!missing).then_some(granted)
}
