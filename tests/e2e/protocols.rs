//! HTTP/2 clients and WebSocket upgrades through the gateway.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Backend, Gateway, upstream};

fn gateway(backend: &Backend) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: svc }}\n",
        upstream("svc", &[backend], "")
    ))
}

#[tokio::test]
async fn an_http2_client_is_proxied_to_an_http1_upstream() {
    let svc = Backend::start("svc").await;
    let gw = gateway(&svc);
    // Prior-knowledge h2c on the same port as HTTP/1.1.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for i in 0..3 {
        let request = Request::post(gw.url(&format!("/h2/{i}?x=1")))
            .body(Full::new(Bytes::from_static(b"hello")))
            .expect("request");
        let response = client.request(request).await.expect("h2 request");
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["uri"], format!("/h2/{i}?x=1"));
        assert_eq!(echo["body_bytes"], 5);
        assert_eq!(echo["headers"]["x-forwarded-host"][0], gw.addr.to_string());
    }
}

#[tokio::test]
async fn a_websocket_echo_works_through_the_gateway() {
    let svc = Backend::start("svc").await;
    let gw = gateway(&svc);
    let url = format!("ws://{}/ws", gw.addr);
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "the gateway"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(echoed.to_text().expect("text"), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    let echoed = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(echoed.into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.expect("close");
}
