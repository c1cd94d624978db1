//! The worker threads: how many serve requests, which one is running the
//! code at hand, and starting one with a single-threaded runtime of its own.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

use crate::config::{MAX_WORKERS, ServerConfig};

/// Threads serving requests, fixed by the first call (the gateway's start),
/// since a reload cannot change how many run (`server` needs a restart):
/// every snapshot then sizes its per-worker state for the running workers.
pub fn count(settings: &ServerConfig) -> usize {
    static FIXED: OnceLock<usize> = OnceLock::new();
    *FIXED.get_or_init(|| resolve(settings))
}

/// `server.workers`, where 0 is `TOKIO_WORKER_THREADS` when that is set (as
/// tokio's own default reads it), else one per CPU this process may run on
/// (a `taskset` or cgroup limit counts); at most `MAX_WORKERS`.
fn resolve(settings: &ServerConfig) -> usize {
    if settings.workers > 0 {
        return settings.workers;
    }
    if let Ok(value) = std::env::var(ENV) {
        match value.parse::<usize>() {
            Ok(n) if n > 0 => return n.min(MAX_WORKERS),
            _ => tracing::warn!(%value, "{ENV} is not a positive number; ignored"),
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
}

const ENV: &str = "TOKIO_WORKER_THREADS";

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The worker running this code: 0 on the thread that started the gateway
/// (and on any thread that is not a worker), else the worker's number.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Starts worker `index` (from 1) on a thread of its own, running `work` on
/// a single-threaded runtime until it returns; `None` (logged) when the
/// thread or its runtime cannot start.
pub fn spawn<F, W>(index: usize, work: W) -> Option<std::thread::JoinHandle<()>>
where
    W: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let run = move || {
        CURRENT.with(|current| current.set(index));
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                runtime.block_on(work());
                // A blocking task (a name lookup) must not hold up the exit.
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            }
            Err(error) => {
                tracing::error!(worker = index, %error, "cannot start a worker's runtime")
            }
        }
    };
    std::thread::Builder::new()
        .name(format!("worker-{index}"))
        .spawn(run)
        .inspect_err(
            |error| tracing::error!(worker = index, %error, "cannot start a worker thread"),
        )
        .ok()
}
