//! A real Redis for the shared-state tests: the `redis-server` binary on a
//! free loopback port, which a test stops and starts again, and a TCP proxy
//! in front of it that makes every answer late.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long Redis may take to answer its first `PING`.
const READY: Duration = Duration::from_secs(10);

/// A `redis-server` child process, without persistence, in a folder of its own.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts Redis on a free loopback port and waits until it answers `PING`.
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        // The port is free when asked for, but something else may take it
        // before Redis binds it: then another one.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match launch(port, dir.path()) {
                Ok(child) => {
                    return Redis {
                        child: Some(child),
                        port,
                        dir,
                    };
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a gateway's `state.url` names.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server, like a crash: open connections are cut and the port
    /// refuses new ones. Nothing was saved, so its counters are gone.
    /// Runs one command (as `redis-cli` would) and returns Redis's answer
    /// line, such as `+OK` or `$2`.
    pub fn command(&self, args: &[&str]) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port()));
        let mut stream = TcpStream::connect(addr).expect("connect to redis");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send to redis");
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            answer.push(byte[0]);
        }
        String::from_utf8_lossy(&answer).trim_end().to_string()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty, as nothing was
    /// saved), waiting for the port to be free again if need be.
    pub fn restart(&mut self) {
        self.stop();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match launch(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) if Instant::now() >= until => {
                    panic!("redis-server did not start again on {}: {why}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs Debian's `redis-server` the first time a test needs it and it
/// is missing, as `.ci/run` does, so `cargo test --workspace` needs no
/// set-up of its own on a fresh machine (it needs root, as CI has).
fn ensure_installed() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let present = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if present {
            return;
        }
        eprintln!("redis-server is missing: installing Debian's package for the rate-limit tests");
        let installed = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server",
            ])
            .stdout(Stdio::null())
            .status();
        if !installed.is_ok_and(|s| s.success()) {
            eprintln!("could not install redis-server (apt-get, as root): install it yourself");
        }
    });
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `redis-server` on `port` with its files in `dir`; returns it once it
/// answers `PING`, or what it printed if it exits (the port was taken) or
/// stays silent.
fn launch(port: u16, dir: &Path) -> Result<Child, String> {
    ensure_installed();
    let out_path = dir.join(format!("redis-{port}.out"));
    let out = File::create(&out_path).expect("redis output file");
    let err = out.try_clone().expect("redis output file");
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-server not found: apt-get install redis-server")
        }
        Err(e) => panic!("cannot run redis-server: {e}"),
    };
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}):\n{}", printed()));
        }
        if pong(port) {
            return Ok(child);
        }
        if started.elapsed() > READY {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no PONG within {READY:?}:\n{}", printed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether Redis on `port` answers `PING` with `+PONG`.
fn pong(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"+PONG")
}

/// A TCP proxy on a free loopback port in front of a Redis: what the client
/// sends goes straight through; every chunk Redis answers is held back by the
/// delay in force when it arrived (a slow network or a busy server, not a
/// narrow one: answers in flight together arrive late together).
pub struct SlowProxy {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    accept_loop: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SlowProxy {
    /// Starts forwarding to `127.0.0.1:target_port`, with no delay yet.
    pub async fn start(target_port: u16) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (delay, list) = (delay_ms.clone(), connections.clone());
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let connection = tokio::spawn(relay(client, target_port, delay.clone()));
                if let Ok(mut list) = list.lock() {
                    list.push(connection);
                }
            }
        });
        SlowProxy {
            addr,
            delay_ms,
            accept_loop,
            connections,
        }
    }

    /// The URL a gateway's `state.url` names to go through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds back every chunk Redis sends from now on by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        if let Ok(mut list) = self.connections.lock() {
            for connection in list.drain(..) {
                connection.abort();
            }
        }
    }
}

/// Forwards one client connection to Redis and back, late.
async fn relay(client: tokio::net::TcpStream, target_port: u16, delay_ms: Arc<AtomicU64>) {
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    // Answers are stamped with when they may go on as they arrive, so one
    // held back does not hold back those behind it any longer.
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let arrivals = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                    let due = tokio::time::Instant::now() + delay;
                    if due_tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let answers = async {
        while let Some((due, chunk)) = due_rx.recv().await {
            tokio::time::sleep_until(due).await;
            if client_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, arrivals, answers);
}
