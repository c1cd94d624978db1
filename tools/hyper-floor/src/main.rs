//! The least a reverse proxy built on hyper does, for bench/run: each
//! request goes as it came to one upstream over a kept-alive HTTP/1.1
//! connection and its answer comes back as it came. No routing, header
//! rules, limits or logs. Run like the gateway: one current-thread tokio
//! runtime, jemalloc.
//!
//!   hyper-floor LISTEN UPSTREAM pool    idle upstream connections in a list,
//!                                       each driven by a task of its own (the
//!                                       gateway's way, hyper's usual one)
//!   hyper-floor LISTEN UPSTREAM pinned  each client connection has its own
//!                                       upstream connection, driven by the
//!                                       client connection's task
//!
//! The gap between the gateway and `pool` is the gateway's own cost; the
//! gap between `pool` and nginx is hyper's (and tokio's).

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Pool,
    Pinned,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream, mode] => match (listen.parse(), upstream.parse(), mode.as_str()) {
            (Ok(listen), Ok(upstream), "pool") => Some((listen, upstream, Mode::Pool)),
            (Ok(listen), Ok(upstream), "pinned") => Some((listen, upstream, Mode::Pinned)),
            _ => None,
        },
        _ => None,
    };
    let Some((listen, upstream, mode)) = parsed else {
        eprintln!("usage: hyper-floor LISTEN_ADDR UPSTREAM_ADDR pool|pinned");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hyper-floor: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, upstream, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper-floor: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, mode: Mode) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        let _ = client.set_nodelay(true);
        tokio::spawn(async move {
            let client = TokioIo::new(client);
            let server = hyper::server::conn::http1::Builder::new();
            match mode {
                Mode::Pool => {
                    let service = service_fn(move |request| pooled(upstream, request));
                    let _ = server.serve_connection(client, service).await;
                }
                Mode::Pinned => {
                    let Ok((sender, connection)) = connect(upstream).await else {
                        return;
                    };
                    let sender = Arc::new(tokio::sync::Mutex::new(sender));
                    let service = service_fn(move |request| {
                        let sender = sender.clone();
                        async move {
                            let sent = sender.lock().await.send_request(request).await;
                            Ok::<_, Infallible>(answer(sent))
                        }
                    });
                    // Both ends in this one task; the upstream connection
                    // ends when the client's does (its sender is dropped).
                    let _ = tokio::join!(server.serve_connection(client, service), connection);
                }
            }
        });
    }
}

type Connection = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Incoming>;

async fn connect(upstream: SocketAddr) -> Result<(SendRequest<Incoming>, Connection), String> {
    let stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())
}

thread_local! {
    static IDLE: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

async fn pooled(
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let ready = IDLE.with_borrow_mut(|idle| {
        idle.retain(|sender| !sender.is_closed());
        let at = idle.iter().position(|sender| sender.is_ready())?;
        Some(idle.swap_remove(at))
    });
    let mut sender = match ready {
        Some(sender) => sender,
        None => match connect(upstream).await {
            Ok((sender, connection)) => {
                tokio::spawn(connection);
                sender
            }
            Err(_) => return Ok(bad_gateway()),
        },
    };
    let sent = sender.send_request(request).await;
    // Back at once: ready again once the answer's body has been read.
    IDLE.with_borrow_mut(|idle| idle.push(sender));
    Ok(answer(sent))
}

type Body = Either<Incoming, Empty<Bytes>>;

fn answer(sent: hyper::Result<Response<Incoming>>) -> Response<Body> {
    match sent {
        Ok(response) => response.map(Either::Left),
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
