//! Keeping a key set's keys fresh: fetching its JWKS on an interval and on
//! demand (rate-limited), and re-reading key files when they change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::KeySet;

/// Fetches the set's JWKS now, then every `refresh`, and when a token asks
/// (an unknown `kid`) but never twice within `min_refresh_interval`. A
/// failed fetch keeps the keys in use and is retried sooner (1 s, doubling,
/// up to `min_refresh_interval`).
pub fn spawn_fetcher(set: &Arc<KeySet>) {
    let weak: Weak<KeySet> = Arc::downgrade(set);
    let (wanted, stop) = (set.wanted.clone(), set.stop.clone());
    let config = set.config.clone();
    tokio::spawn(async move {
        let mut retry = Duration::from_secs(1).min(config.min_refresh_interval.0);
        loop {
            let Some(set) = weak.upgrade() else { return };
            let fetched_at = Instant::now();
            let fetched = match &set.fetcher {
                Some(fetcher) => fetcher.fetch(config.fetch_timeout.0).await,
                None => return,
            };
            let next = match fetched {
                Ok(keys) => {
                    set.replace(keys, "fetch");
                    retry = Duration::from_secs(1).min(config.min_refresh_interval.0);
                    config.refresh.0
                }
                Err(error) => {
                    tracing::warn!(
                        key_set = %set.name,
                        %error,
                        keys_in_use = set.current.load().keys.len(),
                        "JWKS fetch failed; the keys in use stay"
                    );
                    let wait = retry;
                    retry = (retry * 2).min(config.min_refresh_interval.0);
                    wait
                }
            };
            drop(set);
            tokio::select! {
                _ = tokio::time::sleep_until(fetched_at + next) => {}
                _ = wanted.notified() => {
                    // Asked for by a token: not before the minimum interval
                    // (nor later than the fetch was due anyway).
                    let due = fetched_at + config.min_refresh_interval.0.min(next);
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = stop.notified() => return,
                    }
                }
                _ = stop.notified() => return,
            }
        }
    });
}

/// Re-reads the set's files when one changes (editors and ConfigMaps
/// replace files, so their folders are watched). A file that no longer
/// reads or parses is logged and the keys in use stay.
pub fn spawn_file_watch(set: &Arc<KeySet>) {
    let files: Vec<PathBuf> = match &set.config.jwks_file {
        Some(file) => vec![set.base_dir.join(file)],
        None => set
            .config
            .pem_files
            .iter()
            .map(|f| set.base_dir.join(f))
            .collect(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watched = files.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|path| concerns(path, &watched)) {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::error!(key_set = %set.name, %error, "cannot watch key files; reload with SIGHUP");
            return;
        }
    };
    for folder in folders(&files) {
        use notify::Watcher;
        if let Err(error) = watcher.watch(&folder, notify::RecursiveMode::NonRecursive) {
            tracing::error!(key_set = %set.name, folder = %folder.display(), %error, "cannot watch key files; reload with SIGHUP");
        }
    }
    let weak = Arc::downgrade(set);
    let stop = set.stop.clone();
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                _ = stop.notified() => return,
            }
            // Let a burst of writes (or a rename) finish.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            let Some(set) = weak.upgrade() else { return };
            match super::read_files(&set.config, &set.base_dir) {
                Ok(keys) => set.replace(keys, "file"),
                Err(error) => tracing::error!(
                    key_set = %set.name,
                    %error,
                    "key file unreadable; the keys in use stay"
                ),
            }
        }
    });
}

/// A change to one of `files`, or a ConfigMap-style `..data` swap next to one.
fn concerns(path: &Path, files: &[PathBuf]) -> bool {
    files.iter().any(|file| {
        let same_folder = path.parent() == file.parent()
            || path.parent().map(canonical) == file.parent().map(canonical);
        same_folder
            && (path.file_name() == file.file_name()
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("..")))
    })
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn folders(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    folders.sort();
    folders.dedup();
    folders
}
