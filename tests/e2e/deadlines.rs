//! Hook deadlines count the CPU time a hook used, so a busy machine does
//! not fail plugins for time their thread spent waiting for a core; a
//! wall-clock ceiling still ends a call that takes too long for any reason.
//!
//! The gateway is pinned to one core and busy threads of the test process
//! are pinned beside it, so its threads get a fraction of that core.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, PluginDir, send, upstream};

/// The core the gateway and the hogs share.
const CORE: usize = 0;

/// Busy threads pinned to `CORE`; they stop when dropped, and after a
/// minute in any case. Threads, not processes, so that nothing outlives
/// the test.
struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn start(count: usize) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    pin_this_thread();
                    let started = Instant::now();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(60)
                    {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Pins the calling thread to `CORE` (its id from `/proc/thread-self`).
fn pin_this_thread() {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .expect("a thread id")
        .to_string();
    let status = Command::new("taskset")
        .args(["-p", "-c", &CORE.to_string(), &tid])
        .output()
        .expect("run taskset");
    assert!(status.status.success(), "taskset: {status:?}");
}

fn pin(gw: &Gateway) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &CORE.to_string(), &gw.pid().to_string()])
        .output()
        .expect("run taskset");
    assert!(status.status.success(), "taskset: {status:?}");
}

/// Spins `iterations` in the probe's request hook; (status, wall µs it took).
async fn spin(gw: &Gateway, path: &str, iterations: u64) -> (u16, Option<u64>, String) {
    let request = Request::get(gw.url(path))
        .header("x-spin-iterations", iterations.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(request).await;
    let spun = (reply.status == 200)
        .then(|| reply.upstream_header("x-spun-us"))
        .flatten()
        .and_then(|us| us.parse().ok());
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    (reply.status.as_u16(), spun, body)
}

#[tokio::test]
async fn a_hook_is_charged_for_the_cpu_it_used_not_for_waiting_for_a_core() {
    let plugins = PluginDir::with(&["probe"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{}upstreams:\n{}routes:
  - name: work
    upstream: svc
    match: {{ path_prefix: /work }}
    plugins: [{{ name: probe, config: {{ spin_from_header: true }}, limits: {{ deadline: 20ms }} }}]
  - name: ceiling
    upstream: svc
    match: {{ path_prefix: /ceiling }}
    plugins: [{{ name: probe, config: {{ spin_from_header: true }}, limits: {{ deadline: 20ms, wall_deadline: 25ms }} }}]
  - name: runaway
    upstream: svc
    match: {{ path_prefix: /runaway }}
    plugins: [{{ name: probe, config: {{ fail_on: request, how: loop }}, limits: {{ deadline: 20ms }} }}]
",
        plugins.section(""),
        upstream("svc", &[&svc], "")
    ));
    pin(&gw);

    // Alone on its core: how many iterations make at least 5ms of work (the
    // fastest of eight runs, as other tests may be running beside this one).
    let mut per_ms = Vec::new();
    for _ in 0..8 {
        let (status, spun, body) = spin(&gw, "/work", 1_000_000).await;
        assert_eq!(status, 200, "{body}");
        let us = spun.expect("the probe reports its time").max(1);
        per_ms.push(1_000_000 * 1000 / us);
    }
    let five_ms = per_ms.iter().max().copied().unwrap_or(1) * 5;
    eprintln!("calibration: {per_ms:?} iterations per ms");

    // Five ms of work under a 20ms deadline: it passes however long it
    // waited. More busy threads until the hook's wall time is stretched past
    // its deadline (a loaded machine may have made the calibration slow).
    // Up to 24 of them: more would stretch a runaway hook's 20ms of CPU past
    // its default 1s wall-clock ceiling.
    let mut hogs = Vec::new();
    let mut longest = 0;
    for more in [6, 6, 12] {
        hogs.push(Hogs::start(more));
        let count: usize = hogs.iter().map(|h: &Hogs| h.threads.len()).sum();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let (status, spun, body) = spin(&gw, "/work", five_ms).await;
            assert_eq!(status, 200, "a short hook failed under contention: {body}");
            eprintln!("under contention ({count} hogs): {spun:?}µs");
            longest = longest.max(spun.unwrap_or(0));
        }
        if longest > 40_000 {
            break;
        }
    }
    assert!(
        longest > 20_000,
        "the hogs did not stretch the hook past its deadline in wall time ({longest}µs), so this proved nothing"
    );

    // A hook that never stops is still stopped, by its CPU deadline.
    let (status, _, body) = spin(&gw, "/runaway", 0).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ran past its 20ms deadline"), "{body}");

    // A hook whose wall time passes its ceiling is stopped, though its CPU
    // time (about 10ms) is within its deadline. How far the hogs stretch one
    // call varies (a calibration slowed by other tests also shortens the
    // work), so it is tried until one call is stretched past the ceiling.
    let mut stopped = None;
    for _ in 0..10 {
        let (status, _, body) = spin(&gw, "/ceiling", five_ms * 2).await;
        if status != 200 {
            stopped = Some((status, body));
            break;
        }
    }
    let (status, body) = stopped.expect("no call was stretched past the 25ms ceiling in ten tries");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("ran past its 25ms wall-clock ceiling"),
        "{body}"
    );
}
