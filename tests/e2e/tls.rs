//! TLS: one gateway serving plain HTTP and HTTPS (HTTP/1.1 and HTTP/2 by
//! ALPN) with certificates chosen by SNI and swapped on disk without a
//! restart, and talking TLS to `https://` upstreams: checked against a CA,
//! by name, with a client certificate, over HTTP/2 where the target picks it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::tls::{Issued, KeyType, Pki, TlsConnection};
use crate::support::{Backend, Gateway, Metrics, PluginDir, upstream};

/// `listen:` with a plain listener then a TLS one serving `certificates`.
fn listen(certificates: &[&Issued], extra: &str) -> String {
    let list: Vec<String> = certificates.iter().map(|c| c.yaml()).collect();
    format!(
        "listen:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n    tls:\n      certificates: [{}]\n{extra}",
        list.join(", ")
    )
}

fn routes(svc: &Backend) -> String {
    format!(
        "upstreams:\n{}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: svc\n",
        upstream("svc", &[svc], "")
    )
}

/// curl against the gateway's TLS listener, resolving `name` to it (on a
/// thread of its own: the backends run on the test's one thread).
async fn curl(gw: &Gateway, pki: &Pki, name: &str, args: &[&str]) -> (String, String) {
    let addr = gw.tls_addr();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.ca_file())
        .arg("--resolve")
        .arg(format!("{name}:{}:127.0.0.1", addr.port()))
        .args(args)
        .arg(format!("https://{name}:{}/hello", addr.port()));
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("curl thread")
        .expect("run curl (apt-get install curl)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn curl_gets_answers_over_https_with_http2_and_http11_beside_plain_http() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("api", &["api.test"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(&listen(&[&cert], ""), 2, &routes(&svc));
    assert!(gw.listeners[0].starts_with("http://") && gw.listeners[1].starts_with("https://"));

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (out, err) = curl(&gw, &pki, "api.test", &[flag, "-w", "\n%{http_version}"]).await;
        let (body, seen) = out.rsplit_once('\n').unwrap_or_default();
        assert_eq!(seen, version, "{flag}: {out} {err}");
        let echo: serde_json::Value = serde_json::from_str(body).expect("JSON from the backend");
        assert_eq!(echo["path"], "/hello");
        assert_eq!(
            echo["headers"]["x-forwarded-proto"][0], "https",
            "the upstream is told the client used https"
        );
    }
    let plain = crate::support::get(&gw.url("/hello")).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
}

#[tokio::test]
async fn an_h2_client_resumes_its_session_and_tls12_works_too() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("api", &["api.test"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(&listen(&[&cert], ""), 2, &routes(&svc));

    let client = pki.client(&["h2", "http/1.1"]);
    let mut first = TlsConnection::open(gw.tls_addr(), "api.test", client.clone())
        .await
        .expect("handshake");
    assert_eq!(first.alpn.as_deref(), Some("h2"));
    assert_eq!(first.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert!(!first.resumed);
    let reply = first.get("api.test", "/a").await.expect("request");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["version"],
        "HTTP/1.1",
        "HTTP/2 in, HTTP/1.1 out"
    );
    let mut again = TlsConnection::open(gw.tls_addr(), "api.test", client)
        .await
        .expect("handshake");
    assert!(
        again.resumed,
        "the second handshake resumed the first session"
    );
    assert_eq!(
        again.get("api.test", "/b").await.expect("request").status,
        200
    );

    // A TLS 1.2 client, with HTTP/1.1 by ALPN; it resumes by session id.
    let tls12 = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki_root(&pki)).expect("root");
        let mut config =
            rustls::ClientConfig::builder_with_provider(crate::support::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .expect("TLS 1.2")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    };
    let mut old = TlsConnection::open(gw.tls_addr(), "api.test", tls12.clone())
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(old.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(old.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(
        old.get("api.test", "/c").await.expect("request").status,
        200
    );
    let resumed = TlsConnection::open(gw.tls_addr(), "api.test", tls12)
        .await
        .expect("handshake");
    assert!(resumed.resumed, "TLS 1.2 resumed too");
}

fn pki_root(pki: &Pki) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pki.ca_file()).expect("CA")
}

#[tokio::test]
async fn the_name_a_client_asks_for_chooses_the_certificate_of_any_key_type() {
    let pki = Pki::new("test CA");
    let default = pki.issue("default", &["default.test"]);
    let rsa = pki.issue_key("rsa", &["rsa.test"], KeyType::Rsa);
    let ed = pki.issue_key("ed", &["ed.test"], KeyType::Ed25519);
    let wild = pki.issue("wild", &["*.example.test"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(&listen(&[&default, &rsa, &ed, &wild], ""), 2, &routes(&svc));

    let client = pki.client(&["http/1.1"]);
    for (sni, expected) in [
        ("default.test", &default),
        ("rsa.test", &rsa),
        ("ed.test", &ed),
        ("www.example.test", &wild),
        ("unknown.test", &default),
    ] {
        let connection = TlsConnection::open(gw.tls_addr(), sni, client.clone()).await;
        match connection {
            Ok(mut connection) => {
                assert_eq!(connection.peer, expected.der(), "{sni}");
                let reply = connection.get(sni, "/").await.expect("request");
                assert_eq!(reply.status, 200, "{sni}");
            }
            // A name no certificate has gets the default one, which the
            // client rightly refuses for that name.
            Err(error) => {
                assert_eq!(sni, "unknown.test", "{sni}: {error}");
                assert!(error.contains("not valid for name"), "{error}");
            }
        }
    }
    // By IP address no name is sent: the default certificate.
    let by_ip = TlsConnection::open(gw.tls_addr(), "127.0.0.1", client).await;
    assert!(
        by_ip.is_err_and(|e| e.contains("not valid for name")),
        "the default certificate is not for 127.0.0.1"
    );
}

#[tokio::test]
async fn plugins_see_the_tls_session_and_its_server_name() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("api", &["api.test"]);
    let svc = Backend::start("svc").await;
    let plugins = PluginDir::with(&["probe"]);
    let yaml = format!(
        "plugins: {{ dir: \"{}\" }}\nupstreams:\n{}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: svc\n    plugins: [{{ name: probe, config: {{ report_tls: true }} }}]\n",
        plugins.path().display(),
        upstream("svc", &[&svc], "")
    );
    let gw = Gateway::start_listening(&listen(&[&cert], ""), 2, &yaml);

    let (out, err) = curl(&gw, &pki, "api.test", &["--http2"]).await;
    let echo: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out} {err}"));
    assert_eq!(echo["headers"]["x-tls"][0], "TLSv1.3 sni=api.test alpn=h2");
    let plain = crate::support::get(&gw.url("/")).await;
    assert_eq!(plain.upstream_header("x-tls").as_deref(), Some("none"));
}

/// Writes `from`'s files over `to`'s by renaming, as deploy tools do.
fn swap_files(from: &Issued, to: &Issued) {
    for (source, target) in [(&from.key, &to.key), (&from.cert, &to.cert)] {
        let temp = target.with_extension("tmp");
        std::fs::copy(source, &temp).expect("copy");
        std::fs::rename(&temp, target).expect("rename");
    }
}

/// Waits until a new handshake asking for `sni` shows `expected`.
async fn new_handshakes_show(gw: &Gateway, pki: &Pki, sni: &str, expected: &Issued) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let connection = TlsConnection::open(gw.tls_addr(), sni, pki.client(&["http/1.1"])).await;
        if connection.is_ok_and(|c| c.peer == expected.der()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_serves_new_handshakes_while_open_connections_keep_sending() {
    let pki = Pki::new("test CA");
    let live = pki.issue("live", &["api.test"]);
    let renewed = pki.issue("renewed", &["api.test"]);
    let old = live.der();
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(&listen(&[&live], ""), 2, &routes(&svc));

    let mut open = TlsConnection::open(gw.tls_addr(), "api.test", pki.client(&["http/1.1"]))
        .await
        .expect("handshake");
    assert_eq!(open.peer, old);
    let sending = tokio::spawn(async move {
        let mut sent = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let reply = open
                .get("api.test", "/")
                .await
                .expect("the open connection keeps working");
            assert_eq!(reply.status, 200);
            sent += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (sent, open.peer)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    swap_files(&renewed, &live);
    assert!(
        new_handshakes_show(&gw, &pki, "api.test", &renewed).await,
        "new handshakes get the renewed certificate:\n{}",
        gw.stderr()
    );
    let (sent, peer) = sending.await.expect("sender");
    assert!(sent > 20, "{sent} requests on the open connection");
    assert_eq!(peer, old, "the open connection kept its session");
    assert!(gw.stderr().contains("reloaded"), "{}", gw.stderr());
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_old_certificate_until_fixed() {
    let pki = Pki::new("test CA");
    let live = pki.issue("live", &["api.test"]);
    let renewed = pki.issue("renewed", &["api.test"]);
    let other = pki.issue("other", &["api.test"]);
    let original = pki.issue("original", &["api.test"]);
    swap_files(&original, &live);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(&listen(&[&live], ""), 2, &routes(&svc));

    // A key that does not belong to the certificate: the reload fails.
    std::fs::copy(&renewed.cert, &live.cert).expect("copy");
    std::fs::copy(&other.key, &live.key).expect("copy");
    let log = gw.log_with(&["reload failed"]).await;
    assert!(log.contains("does not match the certificate"), "{log}");
    assert!(log.contains("listen[1].tls.certificates[0].key"), "{log}");
    assert!(new_handshakes_show(&gw, &pki, "api.test", &original).await);
    // Garbage in the certificate file: still the old one.
    std::fs::write(&live.cert, "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(new_handshakes_show(&gw, &pki, "api.test", &original).await);
    // Fixed: the new one.
    swap_files(&renewed, &live);
    assert!(new_handshakes_show(&gw, &pki, "api.test", &renewed).await);
}

#[tokio::test]
async fn a_config_that_changes_the_listeners_still_renews_the_running_ones_certificates() {
    let pki = Pki::new("test CA");
    let first = pki.issue("first", &["api.test"]);
    let renewed = pki.issue("renewed", &["api.test"]);
    let svc = Backend::start("svc").await;
    // A fixed port, as real configs have (a running listener is known by its
    // configured address).
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let both = format!(
        "listen:\n  - address: 127.0.0.1:0\n  - address: {address}\n    tls: {{ certificates: [{}] }}\n",
        first.yaml()
    );
    let gw = Gateway::start_listening(&both, 2, &routes(&svc));
    assert!(new_handshakes_show(&gw, &pki, "api.test", &first).await);
    // The plain listener is dropped, the TLS one now names the renewed pair.
    let yaml = format!(
        "listen:\n  - address: {address}\n    tls: {{ certificates: [{}] }}\n{}",
        renewed.yaml(),
        routes(&svc)
    );
    std::fs::write(&gw.config_path, yaml).expect("write config");
    let log = gw.log_with(&["listen changed", "until it restarts"]).await;
    assert!(log.contains("reloaded"), "{log}");
    assert!(
        new_handshakes_show(&gw, &pki, "api.test", &renewed).await,
        "{log}"
    );
    assert_eq!(
        crate::support::get(&gw.url("/")).await.status,
        200,
        "still listening"
    );
}

fn validate(yaml: &str) -> (bool, String) {
    let (_dir, path) = crate::support::gateway::write_config(yaml);
    let out = Command::new(crate::support::gateway::binary())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run validate");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn unusable_certificates_are_refused_at_load_by_file_and_field() {
    let pki = Pki::new("test CA");
    let good = pki.issue("good", &["api.test"]);
    let other = pki.issue("other", &["api.test"]);
    let expired = pki.issue_valid("expired", &["api.test"], (-30, -1));
    let soon = pki.issue_valid("soon", &["api.test"], (-30, 5));
    let upstreams = "upstreams: { a: { targets: [{ url: \"http://127.0.0.1:1\" }] } }\n";
    let with = |cert: &Path, key: &Path| {
        let pair = Issued {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        validate(&format!("{}{upstreams}", listen(&[&pair], "")))
    };

    let (ok, out) = with(&pki.dir.path().join("missing.pem"), &good.key);
    assert!(!ok);
    assert!(
        out.contains(":5: listen[1].tls.certificates[0].cert: cannot read")
            && out.contains("missing.pem"),
        "{out}"
    );
    let (ok, out) = with(&good.cert, &other.key);
    assert!(
        !ok && out.contains("listen[1].tls.certificates[0].key: the key in"),
        "{out}"
    );
    assert!(out.contains("does not match the certificate"), "{out}");
    let (ok, out) = with(&expired.cert, &expired.key);
    assert!(!ok && out.contains("expired on"), "{out}");
    let (ok, out) = with(&soon.cert, &soon.key);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: listen[1].tls.certificates[0].cert:") && out.contains("renew it"),
        "{out}"
    );
    let (ok, out) = with(&good.cert, &good.key);
    assert!(ok && !out.contains("warning"), "{out}");

    // An X.509 v1 certificate (openssl's `x509 -req` without extensions).
    let dir = pki.dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output();
        assert!(out.is_ok_and(|o| o.status.success()), "openssl {args:?}");
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=v1.test",
        "-keyout",
        "v1.key",
        "-out",
        "v1.csr",
    ]);
    run(&[
        "x509", "-req", "-in", "v1.csr", "-signkey", "v1.key", "-days", "30", "-out", "v1.pem",
    ]);
    let (ok, out) = with(&dir.join("v1.pem"), &dir.join("v1.key"));
    assert!(
        !ok && out.contains("certificates[0].cert") && out.contains("X.509 v1"),
        "{out}"
    );
    // A cut-off file is said to be one, not shown as bytes.
    let pem = std::fs::read_to_string(&good.cert).expect("read");
    std::fs::write(dir.join("cut.pem"), &pem[..pem.len() / 3]).expect("write");
    let (ok, out) = with(&dir.join("cut.pem"), &good.key);
    assert!(!ok && out.contains("has no END line"), "{out}");
}

#[tokio::test]
async fn a_certificate_file_that_failed_a_reload_is_loaded_once_it_is_fixed() {
    let pki = Pki::new("test CA");
    let first = pki.issue("first", &["api.test"]);
    let second = pki.issue("second", &["other.test"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(&listen(&[&first], ""), 2, &routes(&svc));
    // A second certificate in a folder of its own, not readable yet.
    let folder = tempfile::tempdir().expect("dir");
    let added = Issued {
        cert: folder.path().join("other.pem"),
        key: folder.path().join("other.key"),
    };
    std::fs::write(&added.cert, "not yet").expect("write");
    std::fs::copy(&second.key, &added.key).expect("copy");
    let yaml = listen(&[&first, &added], "");
    std::fs::write(&gw.config_path, format!("{yaml}{}", routes(&svc))).expect("write config");
    gw.log_with(&["reload failed"]).await;
    assert!(new_handshakes_show(&gw, &pki, "api.test", &first).await);
    // Fixing the file is enough: its folder is watched already.
    swap_files(&second, &added);
    assert!(
        new_handshakes_show(&gw, &pki, "other.test", &second).await,
        "{}",
        gw.stderr()
    );
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_handshake_is_closed() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("api", &["api.test"]);
    let svc = Backend::start("svc").await;
    let listen = format!(
        "listen:\n  - address: 127.0.0.1:0\n    tls: {{ certificates: [{}], handshake_timeout: 300ms }}\n",
        cert.yaml()
    );
    let gw = Gateway::start_listening(
        &listen,
        1,
        &format!("admin: {{ listen: 127.0.0.1:0 }}\n{}", routes(&svc)),
    );
    let addr = gw.listeners[0]
        .trim_start_matches("https://")
        .parse()
        .expect("addr");
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    // The start of a ClientHello, and then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xf0])
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed: {closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Others are served meanwhile.
    let mut fine = TlsConnection::open(addr, "api.test", pki.client(&["h2"]))
        .await
        .expect("handshake");
    assert_eq!(
        fine.get("api.test", "/").await.expect("request").status,
        200
    );
    // Both handshakes are counted, by how they ended.
    let metrics = Metrics::scrape(&gw).await;
    let handshakes = |result| metrics.value("gateway_tls_handshakes_total", &[("result", result)]);
    assert_eq!(handshakes("timeout"), 1.0, "{}", metrics.text);
    assert_eq!(handshakes("ok"), 1.0);
}

#[tokio::test]
async fn http2_over_tls_keeps_the_stream_limits_and_ends_rapid_resets() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("api", &["api.test"]);
    let svc = Backend::start("svc").await;
    let gw = Gateway::start_listening(
        &listen(
            &[&cert],
            "server: { http2: { max_concurrent_streams: 8 } }\n",
        ),
        2,
        &routes(&svc),
    );
    let tcp = TcpStream::connect(gw.tls_addr()).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("api.test").expect("name");
    let tls = tokio_rustls::TlsConnector::from(pki.client(&["h2"]))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (client, connection) = h2::client::handshake(tls).await.expect("h2");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = || {
        http::Request::get("https://api.test/slow?ms=500")
            .body(())
            .expect("request")
    };
    let (response, _) = client.send_request(request(), true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    assert_eq!(
        client.current_max_send_streams(),
        8,
        "the limit is advertised"
    );
    for _ in 0..5000 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((_response, mut stream)) = client.send_request(request(), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the gateway ends the connection")
        .expect("task");
    assert!(ended.is_err(), "{ended:?}");
    assert!(
        svc.served() <= 1 + 20,
        "{} reached the backend",
        svc.served()
    );
    // Still serving.
    let mut fine = TlsConnection::open(gw.tls_addr(), "api.test", pki.client(&["h2"]))
        .await
        .expect("handshake");
    assert_eq!(
        fine.get("api.test", "/").await.expect("request").status,
        200
    );
}

/// A gateway in front of one https upstream with `tls` settings.
fn gateway_to(backend: &Backend, tls: &str) -> Gateway {
    let extra = if tls.is_empty() {
        String::new()
    } else {
        format!("    tls: {tls}\n")
    };
    // One worker, whose pool the tests count (each worker has its own).
    Gateway::start(&format!(
        "server: {{ workers: 1 }}\nupstreams:\n{}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: svc\n",
        upstream("svc", &[backend], &extra)
    ))
}

#[tokio::test]
async fn an_https_upstream_is_checked_against_the_configured_ca_and_pooled() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("backend", &["backend.test", "127.0.0.1"]);
    let svc = Backend::start_tls("secure", pki.acceptor(&cert, &["http/1.1"], false)).await;
    assert!(svc.url().starts_with("https://"));

    // Checked against the target's address (in the certificate as an IP).
    let gw = gateway_to(
        &svc,
        &format!("{{ ca_file: \"{}\" }}", pki.ca_file().display()),
    );
    for _ in 0..5 {
        let reply = crate::support::get(&gw.url("/")).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.backend(), "secure");
        assert_eq!(
            reply.json()["tls_server_name"],
            serde_json::Value::Null,
            "no SNI for an IP"
        );
    }
    assert_eq!(svc.connections_accepted(), 1, "one pooled TLS connection");

    // `server_name`: sent by SNI and checked.
    let named = gateway_to(
        &svc,
        &format!(
            "{{ ca_file: \"{}\", server_name: backend.test }}",
            pki.ca_file().display()
        ),
    );
    let reply = crate::support::get(&named.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["tls_server_name"], "backend.test");
}

#[tokio::test]
async fn without_a_ca_file_the_systems_trusted_roots_are_used() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("backend", &["127.0.0.1"]);
    let svc = Backend::start_tls("secure", pki.acceptor(&cert, &["http/1.1"], false)).await;
    let yaml = format!(
        "upstreams:\n{}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: svc\n",
        upstream("svc", &[&svc], "")
    );
    // The system's roots, as OpenSSL-based tools find them: here only the test CA.
    let ca = pki.ca_file();
    let trusting =
        Gateway::start_with_env(&yaml, &[("SSL_CERT_FILE", ca.to_str().expect("utf-8"))]);
    assert_eq!(crate::support::get(&trusting.url("/")).await.status, 200);
    // With the machine's own roots, the test CA is a stranger; a machine
    // with no roots at all refuses the config, saying what to do.
    match Gateway::try_start(&yaml) {
        Ok(system) => assert_eq!(crate::support::get(&system.url("/")).await.status, 502),
        Err(stderr) => assert!(
            stderr.contains("no trusted root certificates found") && stderr.contains("ca_file"),
            "{stderr}"
        ),
    }
}

#[tokio::test]
async fn an_upstream_certificate_that_does_not_check_out_is_a_502_with_the_reason_logged() {
    let pki = Pki::new("test CA");
    let stranger = Pki::new("someone else");
    let foreign = stranger.issue("backend", &["127.0.0.1"]);
    let misnamed = pki.issue("misnamed", &["other.test"]);
    for (issued, by, why) in [
        (&foreign, &stranger, "UnknownIssuer"),
        (&misnamed, &pki, "NotValidForName"),
    ] {
        let svc = Backend::start_tls("secure", by.acceptor(issued, &["http/1.1"], false)).await;
        let gw = gateway_to(
            &svc,
            &format!("{{ ca_file: \"{}\" }}", pki.ca_file().display()),
        );
        let reply = crate::support::get(&gw.url("/")).await;
        assert_eq!(reply.status, 502, "{why}");
        assert_eq!(reply.error_code(), "upstream_unavailable");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            !body.contains("certificate") && !body.contains(why),
            "the client is not told why: {body}"
        );
        let log = gw.log_with(&["request failed", why]).await;
        assert!(log.contains("invalid peer certificate"), "{log}");
        assert_eq!(svc.served(), 0);
    }
}

#[tokio::test]
async fn a_target_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("backend", &["127.0.0.1"]);
    let client = pki.issue("gateway-client", &["gateway.test"]);
    let svc = Backend::start_tls("mtls", pki.acceptor(&cert, &["http/1.1"], true)).await;
    let ca = pki.ca_file();

    let without = gateway_to(&svc, &format!("{{ ca_file: \"{}\" }}", ca.display()));
    assert_eq!(crate::support::get(&without.url("/")).await.status, 502);
    let with = gateway_to(
        &svc,
        &format!(
            "{{ ca_file: \"{}\", client_certificate: {} }}",
            ca.display(),
            client.yaml()
        ),
    );
    let reply = crate::support::get(&with.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "mtls");
}

#[tokio::test]
async fn http2_is_used_towards_a_target_that_picks_it_by_alpn_when_asked() {
    let pki = Pki::new("test CA");
    let cert = pki.issue("backend", &["127.0.0.1"]);
    let svc = Backend::start_tls("h2", pki.acceptor(&cert, &["h2", "http/1.1"], false)).await;
    let ca = pki.ca_file();

    let h1 = gateway_to(&svc, &format!("{{ ca_file: \"{}\" }}", ca.display()));
    assert_eq!(
        crate::support::get(&h1.url("/")).await.json()["version"],
        "HTTP/1.1"
    );
    let h2 = gateway_to(
        &svc,
        &format!("{{ ca_file: \"{}\", http2: true }}", ca.display()),
    );
    let accepted = svc.connections_accepted();
    let replies = futures_util::future::join_all((0..10).map(|i| {
        let url = h2.url(&format!("/slow?ms=100&i={i}"));
        async move { crate::support::get(&url).await }
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply.status, 200);
        let echo = reply.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["headers"]["x-forwarded-proto"][0], "http");
    }
    assert_eq!(
        svc.connections_accepted() - accepted,
        1,
        "ten requests at once shared one HTTP/2 connection"
    );
}

#[test]
fn upstream_tls_settings_are_checked_at_load() {
    let (ok, out) = validate(
        "upstreams:\n  a:\n    targets: [{ url: \"http://127.0.0.1:1\" }]\n    tls: { http2: true }\n",
    );
    assert!(
        !ok && out.contains("upstreams.a.tls: applies to https:// targets"),
        "{out}"
    );
    let (ok, out) = validate(
        "upstreams:\n  a:\n    targets: [{ url: \"https://127.0.0.1:1\" }]\n    tls: { ca_file: /nonexistent/ca.pem }\n",
    );
    assert!(
        !ok && out.contains("upstreams.a.tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{out}"
    );
    let (ok, out) = validate(
        "upstreams:\n  a:\n    targets: [{ url: \"https://127.0.0.1:1\" }]\n    tls: { server_name: \"bad name!\" }\n",
    );
    assert!(!ok && out.contains("upstreams.a.tls.server_name"), "{out}");
}
