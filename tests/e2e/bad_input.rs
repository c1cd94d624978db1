//! Bad requests and bad configs get a clear answer, and nothing else breaks.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::gateway::{binary, write_config};
use crate::support::{Backend, Gateway, get, raw, upstream};

async fn gateway(extra: &str) -> (Backend, Gateway) {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "{extra}upstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[&svc], "")
    ));
    (svc, gw)
}

#[tokio::test]
async fn a_request_without_host_gets_a_json_400() {
    let (svc, gw) = gateway("").await;
    let response = raw(gw.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("\"code\":\"bad_request\""), "{response}");
    assert!(response.contains("Host header"), "{response}");
    assert_eq!(svc.served(), 0);
    assert_eq!(
        get(&gw.url("/")).await.status,
        200,
        "the gateway keeps serving"
    );
}

#[tokio::test]
async fn malformed_http_and_oversized_heads_are_refused() {
    let (_svc, gw) = gateway("server: { max_header_bytes: 16384 }\n").await;
    let response = raw(gw.addr, "THIS IS NOT HTTP\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    let huge = "x".repeat(64 * 1024);
    let response = raw(
        gw.addr,
        &format!("GET / HTTP/1.1\r\nHost: a\r\nx-big: {huge}\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:?}");
    assert_eq!(
        get(&gw.url("/")).await.status,
        200,
        "the gateway keeps serving"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    let (_svc, gw) = gateway("server: { header_read_timeout: 300ms }\n").await;
    let started = Instant::now();
    // `raw` gives up after 5 s; the gateway must close well before that.
    let _ = raw(gw.addr, "GET / HTTP/1.1\r\nHost: a\r\nx-slow: ").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(get(&gw.url("/")).await.status, 200);
    // The same on a kept-alive connection, after a complete request.
    let started = Instant::now();
    let out = raw(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nx-slow: ",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn run_refuses_an_invalid_config_with_file_line_and_field() {
    let (_dir, path) =
        write_config("listen: 127.0.0.1:0\nroutes:\n  - name: a\n    upstream: nowhere\n");
    let output = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:4: routes[0].upstream: no upstream named \"nowhere\"",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn run_says_when_the_config_file_is_missing_or_the_port_is_taken() {
    let output = Command::new(binary())
        .args(["run", "--config", "/nonexistent/gw.yaml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/gw.yaml: cannot read the config file"),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (_dir, path) = write_config(&format!("listen: {addr}\n"));
    let output = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
