//! Small HTTP clients for tests: hyper over real sockets, and raw TCP for
//! requests a well-behaved client would not send.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Which backend answered (from the echo body).
    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first value the backend received for header `name`.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_string)
    }

    /// The gateway's error message, as the client reads it.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The request id the gateway answered with.
    pub fn request_id(&self) -> String {
        self.headers["x-request-id"]
            .to_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The gateway's own error code, checking the whole JSON error shape.
    pub fn error_code(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/json");
        let json = self.json();
        let error = &json["error"];
        assert_eq!(error["status"], self.status.as_u16(), "{json}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert_eq!(
            error["request_id"].as_str(),
            self.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            "{json}"
        );
        error["code"].as_str().unwrap_or_default().to_string()
    }
}

pub async fn get(url: &str) -> Reply {
    send(
        Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await
}

/// GET `url` with one header set.
pub async fn get_with(url: &str, name: &str, value: &str) -> Reply {
    send(
        Request::get(url)
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await
}

/// `count` GETs of `url` at once, each on a connection of its own; every
/// one must be answered 200.
pub async fn get_all_at_once(url: &str, count: usize) {
    let requests: Vec<_> = (0..count)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request"), 200);
    }
}

/// A connection to `addr` that was served one request and stays open
/// (kept alive).
pub async fn served_and_kept(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stream
}

pub async fn send(request: Request<Full<Bytes>>) -> Reply {
    send_with(Client::builder(TokioExecutor::new()).build_http(), request).await
}

/// Sends `request` from the loopback address `local` (any of 127.0.0.0/8),
/// so the gateway sees another client address.
pub async fn send_from(local: std::net::IpAddr, request: Request<Full<Bytes>>) -> Reply {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(local));
    send_with(
        Client::builder(TokioExecutor::new()).build(connector),
        request,
    )
    .await
}

async fn send_with<C>(client: Client<C, Full<Bytes>>, request: Request<Full<Bytes>>) -> Reply
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let response = client
        .request(request)
        .await
        .expect("request reaches the gateway");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends raw bytes and returns everything the server sends before closing.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
