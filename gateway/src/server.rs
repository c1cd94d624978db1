//! The client-facing listener: HTTP/1.1 and h2c on one port, header limits,
//! and graceful shutdown that lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, ServerConfig};
use crate::plugin::{PluginError, PluginRuntime};
use crate::proxy;
use crate::snapshot::Snapshot;

/// A running gateway's state: the plugin engine and the current snapshot,
/// swapped whole on reload.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Kept for as long as any snapshot may use its plugins (it drives deadlines).
    _plugins: Option<PluginRuntime>,
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
        let (snapshot, plugins) = build(config).await?;
        snapshot.start();
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            _plugins: plugins,
        }))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// Builds a snapshot of `config`, with a plugin engine when it has a
/// `plugins:` section. `gateway validate` uses this too: it checks everything
/// short of serving.
pub async fn build(config: &Config) -> Result<(Snapshot, Option<PluginRuntime>), StartError> {
    let plugins = match &config.plugins {
        Some(settings) => {
            let cache = match &settings.cache_dir {
                Some(dir) => config.origin.base_dir().join(dir),
                None => PluginRuntime::default_cache_dir(),
            };
            Some(PluginRuntime::new(&cache)?)
        }
        None => None,
    };
    let snapshot = Snapshot::new(config, plugins.as_ref()).await?;
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
        let service = service_fn(move |request| {
            // Each request runs to the end on the snapshot it started with.
            let snapshot = gateway.snapshot();
            async move { Ok::<_, Infallible>(proxy::handle(&snapshot, request, client).await) }
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
