//! Load for bench/run's TLS rows: CONNECTIONS clients, each opening a TLS
//! connection, sending one `GET /` with `Connection: close`, reading the
//! answer and closing, over and over for SECONDS. Mode `full` makes every
//! handshake a full one (no session kept); `resumed` resumes a session each
//! time (TLS 1.3 tickets). Key exchange is X25519 only, which every peer
//! measured has, so each proxy does the same work.
//!
//! usage: tls-load ADDRESS NAME CA_FILE full|resumed CONNECTIONS SECONDS
//! prints: `requests N full F resumed R errors E`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    full: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
    /// The first error is printed to stderr, to say what went wrong.
    reported: std::sync::atomic::AtomicBool,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "tls-load: {error}\nusage: tls-load ADDRESS NAME CA_FILE full|resumed CONNECTIONS SECONDS"
            );
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [address, name, ca, mode, connections, seconds] = args else {
        return Err("six arguments expected".into());
    };
    let address: SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let name = ServerName::try_from(name.clone()).map_err(|e| format!("{name}: {e}"))?;
    let connections: usize = connections
        .parse()
        .map_err(|e| format!("{connections}: {e}"))?;
    let seconds: u64 = seconds.parse().map_err(|e| format!("{seconds}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let resume = match mode.as_str() {
        "full" => false,
        "resumed" => true,
        other => return Err(format!("mode `{other}`: full or resumed")),
    };
    // Each client resumes its own sessions, as a browser or an app does
    // (a shared store holds at most 8 tickets per server name, too few for
    // many clients at once).
    let connector = move || {
        let mut config = config.clone();
        config.resumption = if resume {
            rustls::client::Resumption::in_memory_sessions(8)
        } else {
            rustls::client::Resumption::disabled()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let counts = Arc::new(Counts::default());
    let until = Instant::now() + Duration::from_secs(seconds);
    runtime.block_on(async {
        let clients: Vec<_> = (0..connections)
            .map(|_| {
                let (connector, name, counts) = (connector(), name.clone(), counts.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        match one_request(&connector, address, name.clone()).await {
                            Ok(resumed) => {
                                counts.requests.fetch_add(1, Ordering::Relaxed);
                                let kind = if resumed {
                                    &counts.resumed
                                } else {
                                    &counts.full
                                };
                                kind.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                if !counts.reported.swap(true, Ordering::Relaxed) {
                                    eprintln!("tls-load: first error: {error}");
                                }
                                counts.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            let _ = client.await;
        }
    });
    println!(
        "requests {} full {} resumed {} errors {}",
        counts.requests.load(Ordering::Relaxed),
        counts.full.load(Ordering::Relaxed),
        counts.resumed.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One connection, one request; says whether the handshake resumed.
async fn one_request(
    connector: &tokio_rustls::TlsConnector,
    address: SocketAddr,
    name: ServerName<'static>,
) -> std::io::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name, tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::with_capacity(2048);
    match tls.read_to_end(&mut answer).await {
        Ok(_) => {}
        // A server closing without TLS's close_notify after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
        return Err(std::io::Error::other(format!("not a 200: {head:?}")));
    }
    Ok(resumed)
}
