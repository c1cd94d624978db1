//! The client-facing listener: HTTP/1.1 and h2c on one port, header limits,
//! and graceful shutdown that lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, ServerConfig};
use crate::edge::{self, framing};
use crate::plugin::{PluginError, PluginRuntime};
use crate::proxy;
use crate::reload::ReloadLog;
use crate::snapshot::Snapshot;

/// A running gateway's state: the plugin engine, the current snapshot
/// (swapped whole on reload), and the record of reloads.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Created with the first config that has plugins; lives as long as any
    /// snapshot may use its plugins (it drives their deadlines).
    plugins: Mutex<Option<Arc<PluginRuntime>>>,
    /// Where the gateway listens; changing it needs a restart.
    listen: SocketAddr,
    pub reloads: ReloadLog,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugins(#[from] PluginError),
}

impl Gateway {
    /// Loads plugins, builds the first snapshot and starts its background work.
    pub async fn start(config: &Config) -> Result<Arc<Self>, StartError> {
        let started = Instant::now();
        let (snapshot, plugins) = build(config).await?;
        snapshot.start();
        let gateway = Self {
            reloads: ReloadLog::default(),
            listen: config.listen,
            plugins: Mutex::new(plugins),
            snapshot: ArcSwap::from_pointee(snapshot),
        };
        let warnings = gateway.snapshot().warnings.clone();
        gateway.reloads.record("startup", started, Ok(warnings));
        Ok(Arc::new(gateway))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Builds a snapshot of `config` beside the running one and swaps it in;
    /// requests in flight finish on the old one. Returns the warnings.
    pub async fn apply(&self, config: &Config) -> Result<Vec<String>, StartError> {
        let plugins = self.plugin_runtime(config)?;
        let current = self.snapshot();
        let next = Arc::new(Snapshot::new(config, plugins.as_ref(), Some(&current)).await?);
        next.start();
        let mut warnings = next.warnings.clone();
        if config.listen != self.listen {
            warnings.push(format!(
                "listen changed to {}; the gateway keeps listening on {} until it restarts",
                config.listen, self.listen
            ));
        }
        self.snapshot.store(next.clone());
        if let Some(runtime) = &plugins {
            // Compiled code only the old snapshots use goes with them.
            runtime.retain(|loaded| {
                next.plugins
                    .get(&*loaded.name)
                    .is_some_and(|p| p.loaded.sha256 == loaded.sha256)
            });
        }
        Ok(warnings)
    }

    /// The plugin engine, created on first need.
    fn plugin_runtime(&self, config: &Config) -> Result<Option<Arc<PluginRuntime>>, StartError> {
        let mut slot = self
            .plugins
            .lock()
            .map_err(|_| PluginError::Engine("the plugin engine lock was poisoned".into()))?;
        if slot.is_none() {
            *slot = runtime_for(config)?;
        }
        Ok(slot.clone())
    }
}

/// A plugin engine when `config` has a `plugins:` section.
fn runtime_for(config: &Config) -> Result<Option<Arc<PluginRuntime>>, PluginError> {
    let Some(settings) = &config.plugins else {
        return Ok(None);
    };
    let cache = match &settings.cache_dir {
        Some(dir) => config.origin.base_dir().join(dir),
        None => PluginRuntime::default_cache_dir(),
    };
    Ok(Some(Arc::new(PluginRuntime::new(&cache)?)))
}

/// Builds a snapshot of `config`, with a plugin engine when it has a
/// `plugins:` section. `gateway validate` uses this too: it checks everything
/// short of serving.
pub async fn build(config: &Config) -> Result<(Snapshot, Option<Arc<PluginRuntime>>), StartError> {
    let plugins = runtime_for(config)?;
    let snapshot = Snapshot::new(config, plugins.as_ref(), None).await?;
    Ok((snapshot, plugins))
}

/// Accepts connections until `shutdown` resolves, then waits up to
/// `drain_timeout` for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    settings: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout.0)
        // hyper answers 431 when the head outgrows its read buffer.
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let rules = Arc::new(edge::Rules::new(settings));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let (stream, framing) = framing::Watched::new(stream, settings.max_header_bytes);
        let peer = Arc::new(edge::Client::new(client, rules.clone(), Some(framing)));
        let service = service_fn(move |request| {
            // Each request runs to the end on the snapshot it started with.
            let snapshot = gateway.snapshot();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(proxy::handle(&snapshot, request, &peer).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down; draining requests in flight"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.drain_timeout.0) => {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
    }
}
