//! Hot reload: watch the config file, the plugin folder and the TLS files
//! the config names (and SIGHUP), debounce bursts of events, rebuild the
//! snapshot off the request path and swap it in. A failed reload keeps the
//! running snapshot (and its certificates) and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{self, Config};
use crate::server::{Gateway, StartError};
use crate::snapshot::plugin_dir;

/// What asked for a reload.
#[derive(Debug)]
enum Trigger {
    Files(PathBuf),
    Signal,
    /// `POST /admin/reload`, which waits for the record.
    Admin(crate::reloads::ReloadRequest),
}

/// What a reload reads besides the config file: the plugin folder, and the
/// certificate, key and CA files of listeners and upstreams.
#[derive(Debug, Clone, Default, PartialEq)]
struct Watched {
    plugins: Option<PathBuf>,
    files: Vec<PathBuf>,
}

impl Watched {
    fn of(config: &Config) -> Self {
        let base = config.origin.base_dir();
        let mut files = Vec::new();
        for listener in &config.listen.0 {
            if let Some(tls) = &listener.tls {
                files.extend(crate::tls::certificates::files(&tls.certificates, &base));
            }
        }
        for upstream in config.upstreams.values() {
            if let Some(tls) = &upstream.tls {
                files.extend(crate::tls::origin::Origin::files(tls, &base));
            }
        }
        Self {
            plugins: config.plugins.as_ref().map(|p| plugin_dir(config, p)),
            files,
        }
    }

    /// Both: what a failed config named besides what the running one does.
    fn with(&self, other: &Watched) -> Watched {
        let mut files = self.files.clone();
        files.extend(
            other
                .files
                .iter()
                .filter(|f| !self.files.contains(f))
                .cloned(),
        );
        Watched {
            plugins: self.plugins.clone().or_else(|| other.plugins.clone()),
            files,
        }
    }

    /// The folders to watch (files are replaced by renames, so their
    /// folders are watched, not the files).
    fn folders(&self) -> Vec<PathBuf> {
        // Canonical, so that one folder named two ways is watched once.
        let mut folders: Vec<PathBuf> = self.plugins.iter().map(|p| canonical(p)).collect();
        for file in &self.files {
            let folder = canonical_parent(file);
            if !folders.contains(&folder) {
                folders.push(folder);
            }
        }
        folders
    }
}

/// Starts watching `config_file` (and its plugin folder and TLS files) and
/// listening for SIGHUP; runs until the process ends.
pub fn spawn(gateway: Arc<Gateway>, config_file: PathBuf, config: &Config) {
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = config.reload;
    let watched = Watched::of(config);
    let watcher = if settings.watch {
        match watch(&config_file, &watched.folders(), tx.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::error!(%error, "cannot watch files; reload with SIGHUP");
                None
            }
        }
    } else {
        None
    };
    // Admin requests join the same queue, so reloads never overlap.
    let (admin_tx, mut admin_rx) = mpsc::unbounded_channel();
    gateway.reloads.take_requests_from(admin_tx);
    let admin = tx.clone();
    tokio::spawn(async move {
        while let Some(reply) = admin_rx.recv().await {
            if admin.send(Trigger::Admin(reply)).is_err() {
                return;
            }
        }
    });
    let signals = tx.clone();
    // Registered here, not in the task: until it is, SIGHUP's default action
    // ends the process, and the caller announces it is listening right after.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hup) = hup else {
            tracing::error!("cannot listen for SIGHUP");
            return;
        };
        while hup.recv().await.is_some() {
            if signals.send(Trigger::Signal).is_err() {
                return;
            }
        }
    });
    tokio::spawn(run(
        gateway,
        config_file,
        watched,
        settings.debounce.0,
        rx,
        watcher,
    ));
}

/// Watches the config file's folder (editors replace files by renaming) and
/// `folders`; events go to `tx`. A folder that cannot be watched (one the
/// gateway may read files in but not list, like Debian's
/// /etc/ssl/private) is logged and the others are still watched.
fn watch(
    config_file: &Path,
    folders: &[PathBuf],
    tx: mpsc::UnboundedSender<Trigger>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Opening and reading change nothing.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            let _ = tx.send(Trigger::Files(path));
        }
    })?;
    let folder = config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    for folder in folders {
        if let Err(error) = watcher.watch(folder, RecursiveMode::NonRecursive) {
            tracing::error!(%error, folder = %folder.display(), "cannot watch a folder the config names; changes there need SIGHUP");
        }
    }
    Ok(watcher)
}

async fn run(
    gateway: Arc<Gateway>,
    config_file: PathBuf,
    mut watched: Watched,
    debounce: Duration,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    mut watcher: Option<notify::RecommendedWatcher>,
) {
    while let Some(first) = rx.recv().await {
        // Admin requests waiting for this attempt's record (several asked
        // together share one reload).
        let mut replies = Vec::new();
        let trigger = match first {
            Trigger::Signal => "SIGHUP".to_string(),
            Trigger::Admin(waiting) => {
                replies.push(waiting);
                // Whatever else is queued is covered too: the reload reads
                // the files as they are now.
                while let Ok(Trigger::Admin(more)) = rx.try_recv() {
                    replies.push(more);
                }
                "POST /admin/reload".to_string()
            }
            Trigger::Files(path) => {
                if !relevant(&path, &config_file, &watched) {
                    continue;
                }
                if !settle(&mut rx, debounce, &config_file, &watched, &mut replies).await {
                    return;
                }
                format!("file change: {}", path.display())
            }
        };
        let started = Instant::now();
        let (result, named) = reload(&gateway, &config_file).await;
        match &result {
            Ok(warnings) => {
                tracing::info!(%trigger, ms = started.elapsed().as_millis() as u64, "reloaded");
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
            }
            Err(error) => {
                tracing::error!(%trigger, "reload failed; still serving the previous configuration:\n{error}");
            }
        }
        // Files a new config names are watched from now on, even when it
        // failed (fixing them is what reloads it); those the running config
        // no longer names are let go once a reload succeeds.
        if let (Some(named), Some(watcher)) = (named, watcher.as_mut()) {
            let now = if result.is_ok() {
                named
            } else {
                watched.with(&named)
            };
            if now != watched {
                rewatch(watcher, &watched, &now, &config_file);
                watched = now;
            }
        }
        let record = gateway.reloads.record(&trigger, started, result);
        crate::metrics::metrics().reloaded(record.ok);
        for reply in replies {
            let _ = reply.send(record.clone());
        }
    }
}

/// Watches the folders `after` adds to `before` and lets go of those it
/// drops (but the config file's own).
fn rewatch(
    watcher: &mut notify::RecommendedWatcher,
    before: &Watched,
    after: &Watched,
    config_file: &Path,
) {
    let (before, after) = (before.folders(), after.folders());
    for folder in after.iter().filter(|f| !before.contains(f)) {
        if let Err(error) = watcher.watch(folder, RecursiveMode::NonRecursive) {
            tracing::error!(%error, folder = %folder.display(), "cannot watch a folder the config names; changes there need SIGHUP");
        }
    }
    let config_folder = canonical_parent(config_file);
    for folder in before
        .iter()
        .filter(|f| !after.contains(f) && **f != config_folder)
    {
        let _ = watcher.unwatch(folder);
    }
}

/// Reads the config and swaps in a snapshot of it; says what files the
/// config names whenever it could be read, even if it did not load.
async fn reload(
    gateway: &Gateway,
    config_file: &Path,
) -> (Result<Vec<String>, String>, Option<Watched>) {
    let config = match config::load(config_file) {
        Ok(config) => config,
        Err(error) => return (Err(error.to_string()), None),
    };
    let applied = gateway.apply(&config).await;
    (
        applied.map_err(|e: StartError| e.to_string()),
        Some(Watched::of(&config)),
    )
}

/// The config file itself, a `.wasm` file in the plugin folder, or a TLS
/// file the config names.
/// Waits for a burst of relevant events (write, rename, partial writes) to
/// go quiet for `debounce`, but no longer than `MAX_SETTLE` in all; events
/// for other files in the folders (a log written every second, say) do not
/// extend the wait. False when the event channel closed.
async fn settle(
    rx: &mut mpsc::UnboundedReceiver<Trigger>,
    debounce: Duration,
    config_file: &Path,
    watched: &Watched,
    replies: &mut Vec<crate::reloads::ReloadRequest>,
) -> bool {
    let give_up = tokio::time::Instant::now() + MAX_SETTLE.max(debounce);
    let mut quiet_until = tokio::time::Instant::now() + debounce;
    loop {
        let until = quiet_until.min(give_up);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Trigger::Files(path))) if relevant(&path, config_file, watched) => {
                quiet_until = tokio::time::Instant::now() + debounce;
            }
            // An admin request arriving meanwhile is answered by this reload.
            Ok(Some(Trigger::Admin(reply))) => replies.push(reply),
            Ok(Some(_)) => {}
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Longest a burst of file events may postpone a reload.
const MAX_SETTLE: Duration = Duration::from_secs(5);

/// Whether an event on `path` may change what the gateway loads: the config
/// file, a plugin file, a TLS file, or a Kubernetes-style `..data` link
/// (ConfigMaps and Secrets swap the `..data` symlink atomically; the file
/// names stay links into it) in any of their folders.
fn relevant(path: &Path, config_file: &Path, watched: &Watched) -> bool {
    let same_file = |a: &Path, b: &Path| {
        a.file_name() == b.file_name() && canonical_parent(a) == canonical_parent(b)
    };
    if same_file(path, config_file) || watched.files.iter().any(|f| same_file(path, f)) {
        return true;
    }
    let in_folder = |dir: &Path| canonical(path.parent().unwrap_or(dir)) == canonical(dir);
    let plugins = watched.plugins.as_deref();
    let swapped_link = path
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with(".."));
    if swapped_link
        && (in_folder(&canonical_parent(config_file))
            || plugins.is_some_and(in_folder)
            || watched.folders().iter().any(|f| in_folder(f)))
    {
        return true;
    }
    path.extension().is_some_and(|e| e == "wasm") && plugins.is_some_and(in_folder)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn canonical_parent(path: &Path) -> PathBuf {
    canonical(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}
