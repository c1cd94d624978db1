//! Several workers: each a thread with its own runtime and its own copy of
//! every listener (`SO_REUSEPORT`), so the kernel spreads new connections
//! over them. What they share behaves as with one: balancing, sticky
//! hashing, reloads, the connection limit and shutdown. Upstream keep-alive
//! connections are each worker's own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Backend, Gateway, get, get_all_at_once, get_with, served_and_kept, upstream};

const WORKERS: usize = 4;

fn config(server: &str, pool: &str) -> String {
    format!(
        "server: {{ workers: {WORKERS}{server} }}\nupstreams:\n{pool}routes:\n  - {{ name: all, upstream: pool }}\n"
    )
}

/// How often each worker thread besides the first (`worker-N`) has woken
/// up so far: a worker given no connection sleeps in the kernel throughout.
fn wake_ups(gw: &Gateway) -> HashMap<String, u64> {
    let tasks = format!("/proc/{}/task", gw.pid());
    let mut woken = HashMap::new();
    for task in std::fs::read_dir(&tasks).expect("read the gateway's threads") {
        let dir = task.expect("thread").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with("worker-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        woken.insert(name.trim().to_string(), switches);
    }
    woken
}

#[tokio::test]
async fn connections_spread_over_every_worker_and_weights_still_hold_exactly() {
    let heavy = Backend::start("heavy").await;
    let light = Backend::start("light").await;
    let pool = format!(
        "  pool:\n    targets:\n      - {{ url: \"{}\", weight: 3 }}\n      - {{ url: \"{}\", weight: 1 }}\n",
        heavy.url(),
        light.url()
    );
    let gw = Gateway::start(&config("", &pool));
    // The other workers start as the first begins to serve (their sockets
    // queue connections from the start).
    let until = Instant::now() + Duration::from_secs(5);
    let mut before = wake_ups(&gw);
    while before.len() < WORKERS - 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = wake_ups(&gw);
    }
    assert_eq!(before.len(), WORKERS - 1, "worker threads: {before:?}");
    // Each request on a connection of its own, as many clients would.
    let mut counts = HashMap::new();
    for _ in 0..400 {
        *counts.entry(get(&gw.url("/")).await.backend()).or_insert(0) += 1;
    }
    // The balancer is shared: the weights hold over all workers together.
    assert_eq!(counts["heavy"], 300, "{counts:?}");
    assert_eq!(counts["light"], 100, "{counts:?}");
    let after = wake_ups(&gw);
    for (worker, woken) in &after {
        let served = woken - before.get(worker).copied().unwrap_or(0);
        // About 100 connections each; a worker given none would show ~0.
        assert!(
            served >= 10,
            "{worker} woke {served} times: {before:?} -> {after:?}"
        );
    }
}

#[tokio::test]
async fn sticky_hashing_sends_a_key_to_one_target_whichever_worker_takes_it() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let extra = "    balance: consistent_hash\n    hash_on: header:x-user-id\n";
    let gw = Gateway::start(&config("", &upstream("pool", &[&a, &b, &c], extra)));
    let url = gw.url("/");
    let owner = |user: usize| {
        let url = url.clone();
        async move {
            get_with(&url, "x-user-id", &format!("user-{user}"))
                .await
                .backend()
        }
    };
    let mut owners = Vec::new();
    for user in 0..30 {
        owners.push(owner(user).await);
    }
    // Five more connections per user, landing on whichever worker the
    // kernel picks: the same target every time.
    for _ in 0..5 {
        for (user, first) in owners.iter().enumerate() {
            assert_eq!(&owner(user).await, first, "user-{user} moved");
        }
    }
    let distinct: std::collections::HashSet<_> = owners.iter().collect();
    assert!(distinct.len() > 1, "keys spread over targets: {owners:?}");
}

#[tokio::test]
async fn a_reload_reaches_every_worker() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gw = Gateway::start(&config("", &upstream("pool", &[&a], "")));
    assert_eq!(get(&gw.url("/")).await.backend(), "a");
    gw.replace_config(&config("", &upstream("pool", &[&b], "")));
    let until = Instant::now() + Duration::from_secs(10);
    while get(&gw.url("/")).await.backend() != "b" {
        assert!(Instant::now() < until, "the reload was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every later connection, on whichever worker, sees the new config.
    for i in 0..60 {
        assert_eq!(get(&gw.url("/")).await.backend(), "b", "request {i}");
    }
}

#[tokio::test]
async fn max_connections_counts_the_connections_of_every_worker_together() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        ", max_connections: 3",
        &upstream("pool", &[&svc], ""),
    ));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(served_and_kept(gw.addr).await);
    }
    // Whichever worker's socket the next ones land on, they wait.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(gw.addr).await.expect("queued");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        waiting.push(stream);
    }
    let mut buf = [0u8; 4096];
    for stream in &mut waiting {
        let answered = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf));
        assert!(answered.await.is_err(), "served past max_connections");
    }
    // Each held connection that closes lets one waiting client in.
    drop(held);
    for (i, stream) in waiting.iter_mut().enumerate() {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("waiting client {i} served once places freed"))
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "client {i}");
    }
}

#[tokio::test]
async fn each_worker_keeps_at_most_its_own_idle_upstream_connections() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&config(
        "",
        &upstream(
            "pool",
            &[&svc],
            "    keepalive: { max_idle_per_target: 2, idle_timeout: 5s }\n",
        ),
    ));
    svc.set_delay(Duration::from_millis(300));
    get_all_at_once(&gw.url("/"), 100).await;
    assert!(
        svc.connections_accepted() > 2 * WORKERS,
        "the burst needed more"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = svc.connections_open();
    assert!(
        kept <= 2 * WORKERS,
        "{kept} upstream connections kept: more than 2 for each of {WORKERS} workers"
    );
}

#[tokio::test]
async fn sigterm_drains_the_requests_of_every_worker_then_exits() {
    let svc = Backend::start("svc").await;
    let mut gw = Gateway::start(&config(
        ", drain_timeout: 10s",
        &upstream("pool", &[&svc], ""),
    ));
    let slow: Vec<_> = (0..16)
        .map(|_| {
            let url = gw.url("/slow?ms=800");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal(rustix::process::Signal::TERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "no worker accepts once draining"
    );
    for request in slow {
        assert_eq!(request.await.expect("request"), 200, "finished in flight");
    }
    let (status, log) =
        tokio::task::spawn_blocking(move || (gw.wait_exit(Duration::from_secs(5)), gw.stderr()))
            .await
            .expect("wait");
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("all connections drained"), "{log}");
}

#[tokio::test]
async fn a_second_gateway_on_a_port_in_use_fails_to_start_whatever_its_workers() {
    let svc = Backend::start("svc").await;
    let first = Gateway::start(&config("", &upstream("pool", &[&svc], "")));
    let listen = format!("listen: {}\n", first.addr);
    for workers in [WORKERS, 1] {
        let second = Gateway::try_start_listening(
            &listen,
            1,
            &format!(
                "server: {{ workers: {workers} }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: pool }}\n",
                upstream("pool", &[&svc], "")
            ),
        );
        let Err(stderr) = second else {
            panic!("a second gateway with {workers} workers shared the port");
        };
        assert!(
            stderr.contains(&format!("cannot listen on {}", first.addr)),
            "{stderr}"
        );
    }
    // The first still has every request.
    for _ in 0..20 {
        assert_eq!(get(&first.url("/")).await.status, 200);
    }
}

#[tokio::test]
async fn a_tokio_worker_threads_that_is_not_a_number_is_named_and_ignored() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_with_env(
        &format!(
            "upstreams:\n{}routes:\n  - {{ name: all, upstream: pool }}\n",
            upstream("pool", &[&svc], "")
        ),
        &[("TOKIO_WORKER_THREADS", "many")],
    );
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    let log = gw
        .log_with(&["TOKIO_WORKER_THREADS is not a positive number"])
        .await;
    assert!(
        log.contains("TOKIO_WORKER_THREADS is not a positive number; ignored")
            && log.contains("many"),
        "{log}"
    );
}
