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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
    /// What the listeners were started with; changing it needs a restart.
    started_with: ListenerSettings,
    pub reloads: ReloadLog,
}

/// The parts of a config read once, when the listeners start.
#[derive(Debug)]
struct ListenerSettings {
    listen: SocketAddr,
    admin: Option<crate::config::AdminConfig>,
    server: ServerConfig,
}

impl ListenerSettings {
    fn of(config: &Config) -> Self {
        Self {
            listen: config.listen,
            admin: config.admin.clone(),
            server: config.server.clone(),
        }
    }

    /// A warning for each section a reload changed but cannot apply.
    fn needs_restart(&self, config: &Config) -> Vec<String> {
        let mut warnings = Vec::new();
        if config.listen != self.listen {
            warnings.push(format!(
                "listen changed to {}; the gateway keeps listening on {} until it restarts",
                config.listen, self.listen
            ));
        }
        if config.admin != self.admin {
            warnings.push(
                "admin changed; the admin API keeps its address until the gateway restarts".into(),
            );
        }
        if config.server != self.server {
            warnings
                .push("server changed; its settings take effect when the gateway restarts".into());
        }
        warnings
    }
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
            started_with: ListenerSettings::of(config),
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
        warnings.extend(self.started_with.needs_restart(config));
        self.snapshot.store(next.clone());
        current.retire();
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
    Ok(Some(Arc::new(PluginRuntime::new(
        &cache,
        settings.max_instances,
    )?)))
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
/// `drain_timeout` for open requests to finish. At most
/// `max_connections` are open at once: past it the loop stops accepting and
/// new clients wait in the kernel's backlog.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    settings: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder(settings));
    let rules = Arc::new(edge::Rules::new(settings));
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let header_timeout = settings.header_read_timeout.0;
    let max_head = settings.max_header_bytes;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let accepting = async {
            let slot = slots.clone().acquire_owned().await;
            (slot, accept(&listener).await)
        };
        let (slot, (stream, client)) = tokio::select! {
            accepted = accepting => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let rules = rules.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The semaphore is never closed, so a slot is always granted.
            let slot = slot.ok().map(Arc::new);
            // A client that sends nothing is closed after the header timeout,
            // before hyper's own timer (which starts once a protocol is known).
            if !first_bytes_within(&stream, header_timeout).await {
                return;
            }
            let (stream, framing) = framing::watch(stream, max_head);
            let peer = Arc::new(edge::Client::new(client, rules, Some(framing), slot));
            let service = service_fn(move |request| {
                // Each request runs to the end on the snapshot it started with.
                let snapshot = gateway.snapshot();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(proxy::handle(&snapshot, request, &peer).await) }
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
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

/// The next connection; on an error (out of file descriptors, say) it backs
/// off briefly rather than spinning, and keeps accepting.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// hyper's HTTP/1.1 and HTTP/2 settings from `server:`.
fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also closes a kept-alive connection that sends no next request.
        .header_read_timeout(settings.header_read_timeout.0)
        // hyper answers 431 when the head outgrows its read buffer.
        .max_buf_size(settings.max_header_bytes.max(8192));
    let h2 = &settings.http2;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(h2.max_concurrent_streams)
        .keep_alive_interval(h2.keepalive_interval.0)
        .keep_alive_timeout(h2.keepalive_timeout.0)
        // What a client may send before the gateway reads it: 256 KiB a
        // stream, 1 MiB a connection, whatever the upstream's pace.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_send_buf_size(256 * 1024)
        // Rapid reset (CVE-2023-44487): streams a client opens and cancels
        // at once are bounded; past it the connection gets GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// Waits until the client sends its first bytes, or says it never did. An
/// HTTP/2 preface that arrives in pieces is waited for whole, since hyper's
/// protocol sniffing reads it with no time limit.
async fn first_bytes_within(stream: &TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) if n == PREFACE.len() || seen[..n] != PREFACE[..n] => return true,
            // Part of a preface: peek returns the same bytes until more come.
            // Waiting longer each time: peek cannot wait for *more* bytes.
            Ok(Ok(_)) => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(pause))
                    .await
                    .is_err()
                {
                    return false;
                }
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}
