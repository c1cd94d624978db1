//! The running gateway (its snapshot, swapped on reload) and its
//! client-facing listeners: each plain (HTTP/1.1 and h2c) or TLS (HTTP/1.1
//! and HTTP/2 by ALPN), sharing the connection limits, and graceful
//! shutdown that lets requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::tls::Listen;
use crate::config::{Config, ConfigError, ServerConfig};
use crate::connection;
use crate::edge;
use crate::plugin::{PluginError, PluginRuntime};
use crate::reloads::ReloadLog;
use crate::snapshot::Snapshot;
use crate::tls;

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
    /// The admin API's bearer token: a reload changes it at once (a leaked
    /// one can be revoked); a config without `admin:` keeps the last one.
    admin_token: ArcSwap<Option<Arc<str>>>,
}

/// The parts of a config read once, when the listeners start.
#[derive(Debug)]
struct ListenerSettings {
    listen: Listen,
    admin: Option<crate::config::AdminConfig>,
    server: ServerConfig,
    /// Where the access log goes (its `sample` applies on reload).
    access_log: Option<(String, crate::config::access_log::LogFormat)>,
    /// Where spans are exported.
    trace: crate::config::trace::TraceConfig,
}

impl ListenerSettings {
    fn of(config: &Config) -> Self {
        Self {
            listen: config.listen.clone(),
            admin: config.admin.clone(),
            server: config.server.clone(),
            access_log: Self::access_log_of(config),
            trace: config.trace.clone(),
        }
    }

    fn access_log_of(config: &Config) -> Option<(String, crate::config::access_log::LogFormat)> {
        config
            .access_log
            .as_ref()
            .map(|log| (log.to.clone(), log.format))
    }

    /// The same addresses, each plain or TLS as before, in the same order,
    /// with the same handshake timeouts: certificates may change, the rest
    /// of a listener needs a restart.
    fn same_listeners(&self, config: &Config) -> bool {
        let shape = |listen: &Listen| -> Vec<_> {
            listen
                .0
                .iter()
                .map(|l| (l.address, l.tls.as_ref().map(|t| t.handshake_timeout)))
                .collect()
        };
        shape(&self.listen) == shape(&config.listen)
    }

    /// The certificates each running listener serves after a reload: those
    /// loaded for the new config's TLS listener at its place, or else at its
    /// address; a listener the new config has no TLS listener for keeps
    /// those it has.
    fn certificates_after_reload(
        &self,
        config: &Config,
        loaded: &[Option<Arc<tls::CertificateSet>>],
        running: &[Option<Arc<tls::CertificateSet>>],
    ) -> Vec<Option<Arc<tls::CertificateSet>>> {
        let new = &config.listen.0;
        let serves = |j: usize, address| new[j].address == address && new[j].tls.is_some();
        self.listen
            .0
            .iter()
            .enumerate()
            .map(|(i, started)| {
                let place = (i < new.len() && serves(i, started.address))
                    .then_some(i)
                    .or_else(|| (0..new.len()).find(|&j| serves(j, started.address)));
                place
                    .and_then(|j| loaded.get(j).cloned().flatten())
                    .or_else(|| running.get(i).cloned().flatten())
            })
            .collect()
    }

    /// A warning for each section a reload changed but cannot apply.
    fn needs_restart(&self, config: &Config) -> Vec<String> {
        let mut warnings = Vec::new();
        let addresses = |listen: &Listen| -> Vec<_> {
            listen
                .0
                .iter()
                .map(|l| (l.address, l.tls.is_some()))
                .collect()
        };
        if addresses(&self.listen) == addresses(&config.listen) && !self.same_listeners(config) {
            warnings.push(
                "listen: a changed handshake_timeout takes effect when the gateway restarts".into(),
            );
        } else if !self.same_listeners(config) {
            warnings.push(format!(
                "listen changed to {}; the gateway keeps listening on {} until it restarts (a TLS listener takes the certificates of the new config's TLS listener at its address, and keeps its own where there is none)",
                describe(&config.listen),
                describe(&self.listen)
            ));
        }
        let listen = |admin: &Option<crate::config::AdminConfig>| admin.as_ref().map(|a| a.listen);
        if config.admin.is_none() && self.admin.is_some() {
            warnings.push(
                "admin removed; the admin API keeps running, with its last token, until the gateway restarts".into(),
            );
        } else if listen(&config.admin) != listen(&self.admin) {
            warnings.push(
                "admin.listen changed; the admin API keeps its address until the gateway restarts (a changed token applies now)".into(),
            );
        }
        if config.trace != self.trace {
            warnings.push("trace changed; span export changes when the gateway restarts".into());
        }
        if Self::access_log_of(config) != self.access_log {
            warnings.push(
                "access_log changed; where and how it is written changes when the gateway restarts (its sample applies now)".into(),
            );
        }
        if config.server != self.server {
            warnings
                .push("server changed; its settings take effect when the gateway restarts".into());
        }
        warnings
    }
}

/// `listen` as a list of URLs.
fn describe(listen: &Listen) -> String {
    let urls: Vec<String> = listen
        .0
        .iter()
        .map(|l| {
            format!(
                "{}://{}",
                if l.tls.is_some() { "https" } else { "http" },
                l.address
            )
        })
        .collect();
    urls.join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugins(#[from] PluginError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS for {address}: {source}")]
    Tls {
        address: SocketAddr,
        source: rustls::Error,
    },
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
            admin_token: ArcSwap::from_pointee(admin_token(config)),
        };
        let warnings = gateway.snapshot().warnings.clone();
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        gateway.reloads.record("startup", started, Ok(warnings));
        Ok(Arc::new(gateway))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The token every admin request must bear, if one is set.
    pub fn admin_token(&self) -> Option<Arc<str>> {
        self.admin_token.load().as_ref().clone()
    }

    /// Builds a snapshot of `config` beside the running one and swaps it in;
    /// requests in flight finish on the old one. Returns the warnings.
    pub async fn apply(&self, config: &Config) -> Result<Vec<String>, StartError> {
        let plugins = self.plugin_runtime(config)?;
        let current = self.snapshot();
        let mut next = Snapshot::new(config, plugins.as_ref(), Some(&current)).await?;
        // Indexed by the running listeners, which a reload does not change.
        next.certificates = self.started_with.certificates_after_reload(
            config,
            &next.certificates,
            &current.certificates,
        );
        let next = Arc::new(next);
        next.start();
        let mut warnings = next.warnings.clone();
        warnings.extend(self.started_with.needs_restart(config));
        self.snapshot.store(next.clone());
        if config.admin.is_some() {
            self.admin_token.store(Arc::new(admin_token(config)));
        }
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

/// A listening socket, and its TLS acceptor on a TLS listener.
#[derive(Debug)]
pub struct Bound {
    pub listener: TcpListener,
    pub tls: Option<Arc<tls::Acceptor>>,
    /// The same address bound again with `SO_REUSEPORT`, one socket for each
    /// other worker: the kernel spreads new connections over them all.
    others: Vec<std::net::TcpListener>,
}

impl Bound {
    /// `http://ADDRESS` or `https://ADDRESS`, with the port actually bound.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.listener.local_addr() {
            Ok(address) => format!("{scheme}://{address}"),
            Err(_) => format!("{scheme}://?"),
        }
    }
}

/// Binds every listener of `config`, once for each worker; a TLS one serves
/// the certificates of the gateway's current snapshot for its place in
/// `listen`. Call it within the tokio runtime that will serve them (the
/// first worker's): its sockets register with it.
pub fn bind(gateway: &Arc<Gateway>, config: &Config) -> Result<Vec<Bound>, StartError> {
    let workers = crate::workers::count(&config.server);
    let mut bound = Vec::new();
    for (i, listener) in config.listen.0.iter().enumerate() {
        let address = listener.address;
        let error = |source| StartError::Bind { address, source };
        // With several workers the port is first checked to be free: a
        // socket sharing it (`SO_REUSEPORT`) would otherwise join another
        // process's group (`:0` picks the port here).
        let port = match workers {
            1 => address,
            _ => free_port(address).map_err(error)?,
        };
        let socket = listen(port, workers > 1).map_err(error)?;
        let port = socket.local_addr().map_err(error)?;
        let others = (1..workers)
            .map(|_| listen(port, true).and_then(TcpListener::into_std))
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        let tls = match &listener.tls {
            None => None,
            Some(settings) => {
                let gateway = gateway.clone();
                let certificates: tls::accept::Certificates =
                    Arc::new(move || gateway.snapshot().certificates.get(i).cloned().flatten());
                let acceptor = tls::Acceptor::new(certificates, settings.handshake_timeout.0)
                    .map_err(|source| StartError::Tls { address, source })?;
                Some(Arc::new(acceptor))
            }
        };
        bound.push(Bound {
            listener: socket,
            tls,
            others,
        });
    }
    Ok(bound)
}

/// Connections the kernel completes for us before we accept them. tokio's
/// `TcpListener::bind` asks for 1,024: a burst of thousands of new HTTP/2
/// clients on one worker overflowed it and a quarter of them were reset. Linux
/// caps it at `net.core.somaxconn` (4,096 by default since 5.4).
const LISTEN_BACKLOG: u32 = 4096;

/// `address` with its port, once a socket that shares no port could bind it.
fn free_port(address: SocketAddr) -> std::io::Result<SocketAddr> {
    bound_socket(address, false)?.local_addr()
}

fn listen(address: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    bound_socket(address, reuse_port)?.listen(LISTEN_BACKLOG)
}

/// A socket bound to `address`, not listening yet.
fn bound_socket(address: SocketAddr, reuse_port: bool) -> std::io::Result<TcpSocket> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted gateway rebinds at once.
    socket.set_reuseaddr(true)?;
    // Only with several workers, whose sockets share the port.
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(address)?;
    Ok(socket)
}

/// Accepts connections on every listener until `shutdown` resolves, then
/// asks every open one to finish and waits up to `drain_timeout` for them
/// (tunnels included). At most `max_connections` are open at once, all
/// listeners and workers together: past it each accept loop holds one more
/// client waiting for a place (see `accept`) and the rest wait in the
/// kernel's backlog.
///
/// The calling task's runtime is the first worker; each other worker is a
/// thread with a single-threaded runtime of its own, accepting on its own
/// copy of every listener. A connection stays on the worker that accepted
/// it, so its requests never cross threads (nginx's model); the snapshot,
/// the limits and the drain are shared by all.
pub async fn serve(
    mut listeners: Vec<Bound>,
    gateway: Arc<Gateway>,
    settings: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let shared = Accepting {
        connections: Arc::new(connection::Listener {
            snapshot: Box::new(move || gateway.snapshot()),
            http1: http1_builder(settings),
            http2: http2_builder(settings),
            rules: Arc::new(edge::Rules::new(settings)),
            header_timeout: settings.header_read_timeout.0,
            idle_timeout: settings.idle_timeout.0,
            send_timeout: settings.send_timeout.0,
            // The body idle timeouts bound a request that still moves; past
            // this a closing connection is dropped.
            close_grace: settings.body_idle_timeout.0,
            max_head: settings.max_header_bytes,
            drain: connection::Drain::default(),
            per_address: connection::PerAddress::new(settings.max_connections_per_address),
        }),
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        stop: stopped,
    };
    let (finish, finished) = watch::channel(false);
    let others = listeners.iter().map(|bound| bound.others.len()).max();
    let workers: Vec<Worker> = (0..others.unwrap_or(0))
        .map(|i| {
            let sockets = listeners
                .iter_mut()
                .filter_map(|bound| Some((bound.others.pop()?, bound.tls.clone())))
                .collect();
            Worker::spawn(i + 1, sockets, shared.clone(), finished.clone())
        })
        .collect();
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|bound| {
            tokio::spawn(
                shared
                    .clone()
                    .accept_until_stopped(bound.listener, bound.tls),
            )
        })
        .collect();
    shutdown.await;
    stop.send_replace(true);
    for listener in accepting {
        let _ = listener.await;
    }
    let mut threads = Vec::new();
    for worker in workers {
        let _ = worker.accepting.await;
        threads.extend(worker.thread);
    }

    let drain = &shared.connections.drain;
    tracing::info!(
        connections = drain.open(),
        "shutting down; draining requests in flight"
    );
    tokio::select! {
        () = drain.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.drain_timeout.0) => {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
    }
    // The workers' runtimes end, closing what is left of their connections.
    finish.send_replace(true);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

/// What every worker's accept loops share.
#[derive(Clone)]
struct Accepting {
    connections: Arc<connection::Listener>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl Accepting {
    /// One listener's accept loop; the socket closes when it ends.
    async fn accept_until_stopped(
        mut self,
        listener: TcpListener,
        tls: Option<Arc<tls::Acceptor>>,
    ) {
        loop {
            let (slot, stream, client) = tokio::select! {
                accepted = accept(&listener, &self.slots) => accepted,
                _ = self.stop.wait_for(|stop| *stop) => return,
            };
            let _ = stream.set_nodelay(true);
            let drain = self.connections.drain.guard();
            tokio::spawn(
                self.connections
                    .clone()
                    .serve(stream, client, tls.clone(), slot, drain),
            );
        }
    }
}

/// A worker besides the first, accepting on its own sockets.
struct Worker {
    /// `None` when it could not start (its sockets are closed).
    thread: Option<std::thread::JoinHandle<()>>,
    /// Resolves once its accept loops have ended.
    accepting: tokio::sync::oneshot::Receiver<()>,
}

type Sockets = Vec<(std::net::TcpListener, Option<Arc<tls::Acceptor>>)>;

impl Worker {
    /// Accepts on `sockets` until told to stop, then keeps serving the
    /// connections it has until `finished`.
    fn spawn(
        index: usize,
        sockets: Sockets,
        shared: Accepting,
        mut finished: watch::Receiver<bool>,
    ) -> Self {
        let (accepted_all, accepting) = tokio::sync::oneshot::channel();
        let thread = crate::workers::spawn(index, move || async move {
            let mut loops = Vec::new();
            for (socket, tls) in sockets {
                match TcpListener::from_std(socket) {
                    Ok(listener) => loops.push(tokio::spawn(
                        shared.clone().accept_until_stopped(listener, tls),
                    )),
                    Err(error) => {
                        tracing::error!(worker = index, %error, "cannot accept on a listener");
                    }
                }
            }
            for accepting in loops {
                let _ = accepting.await;
            }
            let _ = accepted_all.send(());
            let _ = finished.wait_for(|finished| *finished).await;
        });
        Self { thread, accepting }
    }
}

/// The next connection and its place under `slots`. Past the limit it waits
/// for a place and this loop accepts no other, so new clients queue in the
/// kernel's backlog meanwhile. It accepts before it waits: a loop holding a
/// place while no client came to its own socket would keep it from a client
/// waiting on another listener's or another worker's. An accept error (out
/// of file descriptors, say) backs off briefly rather than spinning, and
/// accepting goes on.
pub async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, TcpStream, SocketAddr) {
    let (stream, client) = loop {
        match listener.accept().await {
            Ok(accepted) => break accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("connection limits are never closed");
    (slot, stream, client)
}

/// hyper's HTTP/1.1 settings from `server:`.
fn http1_builder(settings: &ServerConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // From a request's first byte (a parked connection's hyper starts
        // there) until its whole head.
        .header_read_timeout(settings.header_read_timeout.0)
        // hyper answers 431 when the head outgrows its read buffer.
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
}

/// hyper's HTTP/2 settings from `server:`.
fn http2_builder(settings: &ServerConfig) -> http2::Builder<TokioExecutor> {
    let h2 = &settings.http2;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
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

/// `admin.token` of `config`.
fn admin_token(config: &Config) -> Option<Arc<str>> {
    config
        .admin
        .as_ref()
        .and_then(|admin| admin.token.as_deref())
        .map(Into::into)
}
