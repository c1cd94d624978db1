//! Large bodies stream through in both directions without being buffered.

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::{Backend, Gateway, upstream};

const GIB: u64 = 1024 * 1024 * 1024;
/// Far below 1 GiB: a gateway that buffered a body could not stay under it.
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn one_gib_up_and_down_with_flat_gateway_memory() {
    let svc = Backend::start("svc").await;
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: svc, timeout: 5m }}\n",
        upstream("svc", &[&svc], "")
    ));

    // Upload: the client makes the body as it sends, the backend counts it.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = GIB / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let request = Request::post(gw.url("/upload"))
        .header("content-length", GIB.to_string())
        .body(StreamBody::new(stream))
        .expect("request");
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.expect("upload");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echo["body_bytes"], GIB);

    // Download: counted frame by frame, never held whole.
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let response = client
        .get(
            gw.url(&format!("/download?bytes={GIB}"))
                .parse()
                .expect("uri"),
        )
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("frame")
            .data_ref()
            .map(|d| d.len() as u64)
            .unwrap_or(0);
    }
    assert_eq!(received, GIB);

    let peak = gw.peak_rss_kib();
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "gateway peak RSS {peak} KiB while streaming 2 GiB"
    );
}
