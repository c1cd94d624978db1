//! The access log: one line per request, JSON (every field) or text, to a
//! file or stdout, for a sampled share of requests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Backend, Gateway, PluginDir, send, upstream};

/// The lines of `file` once there are `count` (written by a thread of the
/// gateway's own, so they may trail the answers a little).
async fn lines(file: &std::path::Path, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= count || started.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_request_is_one_json_line_with_every_field() {
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["probe"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "access_log: {{ to: \"{}\" }}\nplugins: {{ dir: \"{}\" }}\nupstreams:\n{}routes:\n  - name: users\n    match: {{ path_prefix: /users }}\n    upstream: svc\n    plugins: [{{ name: probe, config: {{ tag: a }} }}]\n",
        file.display(),
        plugins.path().display(),
        upstream("svc", &[&svc], "")
    ));
    let upload = Request::post(gw.url("/users/7?x=1"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-request-id", "log-me-1")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .expect("request");
    let reply = send(upload).await;
    assert_eq!(reply.status, 200);
    let missing = crate::support::get(&gw.url("/nowhere")).await;
    assert_eq!(missing.status, 404);

    let lines = lines(&file, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
    for field in [
        "timestamp",
        "request_id",
        "trace_id",
        "client",
        "method",
        "path",
        "route",
        "upstream",
        "target",
        "status",
        "bytes_in",
        "bytes_out",
        "total_ms",
        "upstream_ms",
        "plugins_ms",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    assert_eq!(first["request_id"], "log-me-1");
    assert_eq!(first["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/users/7");
    assert_eq!(first["route"], "users");
    assert_eq!(first["upstream"], "svc");
    assert_eq!(first["target"], svc.url());
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_in"], 1000);
    assert_eq!(first["bytes_out"], reply.body.len());
    assert_eq!(first["completed"], true);
    let total = first["total_ms"].as_f64().expect("total");
    let upstream_ms = first["upstream_ms"].as_f64().expect("upstream time");
    let plugins_ms = first["plugins_ms"].as_f64().expect("plugin time");
    assert!(
        total >= upstream_ms && upstream_ms > 0.0 && plugins_ms > 0.0,
        "{first}"
    );
    let second: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON");
    assert_eq!(second["status"], 404);
    assert_eq!(second["route"], "");
    assert!(
        !gw.stderr().contains("log-me-1"),
        "access lines stay out of the log"
    );
}

#[tokio::test]
async fn text_lines_and_sampling() {
    let svc = Backend::start("svc").await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "access_log: {{ to: \"{}\", format: text, sample: 0.25 }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        file.display(),
        upstream("svc", &[&svc], "")
    ));
    for _ in 0..400 {
        assert_eq!(crate::support::get(&gw.url("/")).await.status, 200);
    }
    // Written off the request path: read once the count stops moving.
    let mut lines = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = std::fs::read_to_string(&file).unwrap_or_default();
        let now: Vec<String> = now.lines().map(str::to_string).collect();
        if !now.is_empty() && now.len() == lines.len() {
            break;
        }
        lines = now;
    }
    assert!(
        (50..=150).contains(&lines.len()),
        "about a quarter of 400: {}",
        lines.len()
    );
    assert!(
        lines[0].contains("status=200") && lines[0].contains("route=\"all\"")
            || lines[0].contains("route=all"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_bad_sample_is_refused() {
    let (_dir, path) = crate::support::gateway::write_config(
        "access_log: { to: stdout, sample: 1.5 }\nupstreams: { a: { targets: [{ url: \"http://127.0.0.1:1\" }] } }\n",
    );
    let out = std::process::Command::new(crate::support::gateway::binary())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains(":1: access_log.sample: must be more than 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_logged_as_499() {
    let svc = Backend::start("svc").await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "access_log: {{ to: \"{}\" }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        file.display(),
        upstream("svc", &[&svc], "")
    ));
    // HTTP/2: a cancelled stream drops the request at once.
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{}/slow?ms=3000", gw.addr))
        .body(())
        .expect("request");
    let (_response, mut stream) = client.send_request(request, true).expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.send_reset(h2::Reason::CANCEL);
    let lines = lines(&file, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["completed"], false);
    assert_eq!(line["path"], "/slow");
}

#[tokio::test]
async fn a_head_answer_is_complete_and_a_request_never_sent_has_no_upstream_time() {
    let svc = Backend::start("svc").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "access_log: {{ to: \"{}\" }}\nupstreams:\n{}  dead:\n    passive_health: {{ max_fails: 1 }}\n    targets: [{{ url: \"{dead_url}\" }}]\nroutes:\n  - {{ name: down, match: {{ path_prefix: /down }}, upstream: dead }}\n  - {{ name: all, upstream: svc }}\n",
        file.display(),
        upstream("svc", &[&svc], "")
    ));
    let head = Request::head(gw.url("/"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(send(head).await.status, 200);
    // Tried and refused (502), then ejected: never sent (503).
    assert_eq!(crate::support::get(&gw.url("/down")).await.status, 502);
    assert_eq!(crate::support::get(&gw.url("/down")).await.status, 503);
    let lines = lines(&file, 3).await;
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(parsed[0]["method"], "HEAD");
    assert_eq!(parsed[0]["completed"], true, "{}", lines[0]);
    assert_eq!(parsed[1]["status"], 502);
    assert!(parsed[1]["upstream_ms"].is_number(), "{}", lines[1]);
    assert_eq!(parsed[2]["status"], 503);
    assert!(parsed[2].get("upstream_ms").is_none(), "{}", lines[2]);
}

#[tokio::test]
async fn text_lines_quote_what_a_client_shaped_to_look_like_fields() {
    let svc = Backend::start("svc").await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "access_log: {{ to: \"{}\", format: text }}\nupstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        file.display(),
        upstream("svc", &[&svc], "")
    ));
    let forged = Request::get(gw.url("/"))
        .header("x-request-id", "a status=500 route=\"admin\"")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(send(forged).await.status, 200);
    let lines = lines(&file, 1).await;
    let line = &lines[0];
    assert!(
        line.contains(r#"request_id="a status=500 route=\"admin\"""#),
        "{line}"
    );
    assert!(line.contains(" status=200 "), "{line}");
    assert!(line.contains(" route=all "), "{line}");
}
